//! `GET /console`: the embedded web console's page and files, their content types, caching
//! and security headers, and `[console] enabled = false` taking the routes away.

use crate::common::*;

async fn fetch(hub: &TestHub, path: &str) -> reqwest::Response {
    hub.http()
        .get(hub.url(path))
        .send()
        .await
        .expect("GET request")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn the_page_is_html_with_a_strict_content_security_policy() {
    let hub = TestHub::start().await;
    for path in ["/console", "/console/", "/console/index.html"] {
        let response = fetch(&hub, path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            header(&response, "content-type").starts_with("text/html"),
            "{path}: {}",
            header(&response, "content-type")
        );
        let csp = header(&response, "content-security-policy").to_owned();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("connect-src 'self' ws: wss:"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(header(&response, "cache-control"), "no-cache");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        let body = response.text().await.expect("body");
        assert!(
            body.contains("/console/app.js"),
            "the page loads its script"
        );
    }
}

#[tokio::test]
async fn the_assets_have_their_types_and_revalidate_with_an_etag() {
    let hub = TestHub::start().await;
    for (path, kind) in [
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let response = fetch(&hub, path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            header(&response, "content-type").starts_with(kind),
            "{path}"
        );
        assert!(!header(&response, "content-security-policy").is_empty());
        let etag = header(&response, "etag").to_owned();
        assert!(etag.starts_with('"'), "{path}: etag {etag:?}");
        let again = hub
            .http()
            .get(hub.url(path))
            .header("If-None-Match", &etag)
            .send()
            .await
            .expect("GET request");
        assert_eq!(again.status(), 304, "{path}");
    }
    let (status, body) = hub.get("/console/nope.js").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn disabled_the_console_is_not_found() {
    let hub = TestHub::start_with(|s| s.console.enabled = false).await;
    for path in ["/console", "/console/", "/console/app.js"] {
        let (status, body) = hub.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"], "not_found", "{path}");
    }
    // The rest of the hub is unchanged.
    assert_eq!(hub.get("/healthz").await.0, 200);
}
