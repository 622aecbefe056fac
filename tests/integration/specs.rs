//! `GET /openapi.json` and `GET /asyncapi.json` (also under `/api`): served without credentials,
//! as JSON, byte for byte the committed `docs/` files; and every path `fn app` routes is described
//! in the OpenAPI document.

use serde_json::Value;

use crate::common::*;

const OPENAPI: &str = include_str!("../../docs/openapi.json");
const ASYNCAPI: &str = include_str!("../../docs/asyncapi.json");
/// The source of `fn app`: its `.route("…"` calls are the hub's paths.
const APP_SOURCE: &str = include_str!("../../src/app/mod.rs");

#[tokio::test]
async fn both_documents_are_served_as_json_without_credentials_and_equal_the_files() {
    let hub = TestHub::start().await;
    for (path, file) in [("/openapi.json", OPENAPI), ("/asyncapi.json", ASYNCAPI)] {
        for prefix in ["", "/api"] {
            let url = hub.url(&format!("{prefix}{path}"));
            let response = hub.http().get(&url).send().await.expect("request");
            assert_eq!(response.status(), 200, "{url}");
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert_eq!(content_type, "application/json", "{url}");
            let text = response.text().await.expect("body");
            assert_eq!(text, file, "{url} is not the committed docs file");
            let _: Value = serde_json::from_str(&text).expect("valid JSON");
        }
    }
}

#[test]
fn the_documents_name_their_versions() {
    let openapi: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    let asyncapi: Value = serde_json::from_str(ASYNCAPI).expect("asyncapi.json is JSON");
    assert_eq!(openapi["openapi"], "3.1.0");
    assert_eq!(asyncapi["asyncapi"], "3.0.0");
    // The one shared schema is the same in both.
    assert_eq!(
        openapi["components"]["schemas"]["Event"],
        asyncapi["components"]["schemas"]["Event"]
    );
}

/// Every `.route("<path>"` of `src/app/mod.rs`.
fn app_paths() -> Vec<&'static str> {
    let paths: Vec<&str> = APP_SOURCE
        .split(".route(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(
        paths.len() >= 10,
        "found too few routes in fn app: {paths:?}"
    );
    paths
}

#[test]
fn every_path_of_fn_app_is_in_the_openapi_document() {
    let openapi: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    let described = openapi["paths"].as_object().expect("paths");
    let mut missing = Vec::new();
    for path in app_paths() {
        if !described.contains_key(path) {
            missing.push(path);
        }
    }
    assert!(missing.is_empty(), "not in docs/openapi.json: {missing:?}");
    // Served at the root and under /api: both are servers of the document.
    let servers: Vec<&str> = openapi["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .filter_map(|s| s["url"].as_str())
        .collect();
    assert_eq!(servers, ["/", "/api"]);
    // The subscribe upgrade's protocol belongs to the AsyncAPI document.
    let asyncapi: Value = serde_json::from_str(ASYNCAPI).expect("asyncapi.json is JSON");
    assert_eq!(
        asyncapi["channels"]["subscribe"]["address"],
        "/v1/ws/subscribe"
    );
}

#[tokio::test]
async fn every_described_path_is_routed() {
    // The other direction: nothing in the document is a 404 on the hub (a 401, 405 or 426
    // still means the route exists).
    let hub = TestHub::start().await;
    let openapi: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    for (path, item) in openapi["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            let concrete = path.replace("{id}", "7f0c1b1e-9a53-4a57-9d55-0a5f0c1b1e9a");
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let response = hub
                .http()
                .request(method.clone(), hub.url(&concrete))
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            let (_, body) = json_response(response).await;
            let no_route = status == 404
                && body["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("no route"));
            assert!(!no_route, "{method} {path}: {status} {body}");
        }
    }
}
