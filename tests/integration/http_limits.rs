//! Requests hyper refuses before any route sees them (a URI over its 65,534-byte limit, more
//! than 100 headers, a request line that is not HTTP) still get the SPEC's JSON error body.
//! Raw sockets: no HTTP client library sends such requests.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// Sends `request` as it is and reads the answer until the hub closes: (head, JSON body).
async fn exchange(hub: &TestHub, request: &[u8]) -> (String, Value) {
    let mut tcp = tcp_from(ip(1), hub.addr).await;
    tcp.write_all(request).await.expect("write");
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut reply))
        .await
        .expect("the hub answers and closes")
        .expect("read");
    let reply = String::from_utf8(reply).expect("UTF-8");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a head and a body");
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.into()));
    (head.to_ascii_lowercase(), body)
}

fn assert_refusal((head, body): &(String, Value), code: u16, kind: &str) {
    assert!(head.starts_with(&format!("http/1.1 {code} ")), "{head}");
    assert!(
        head.contains("\r\ncontent-type: application/json\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["error"], kind, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.len() > 20),
        "{body}"
    );
}

#[tokio::test]
async fn a_uri_over_hypers_limit_gets_414_with_the_error_body() {
    let hub = TestHub::start().await;
    let long = "x".repeat(70_000);
    let request =
        format!("GET /v1/events?event_type=pdfm&pad={long} HTTP/1.1\r\nHost: hub\r\n\r\n");
    assert_refusal(
        &exchange(&hub, request.as_bytes()).await,
        414,
        "uri_too_long",
    );
    // The hub itself is unharmed.
    assert_eq!(hub.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn more_headers_than_hyper_takes_get_431_with_the_error_body() {
    let hub = TestHub::start().await;
    let headers: String = (0..120).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: hub\r\n{headers}\r\n");
    assert_refusal(
        &exchange(&hub, request.as_bytes()).await,
        431,
        "headers_too_large",
    );
}

#[tokio::test]
async fn a_request_that_is_not_http_gets_400_with_the_error_body() {
    let hub = TestHub::start().await;
    assert_refusal(
        &exchange(&hub, b"HELLO / WORLD\r\n\r\n").await,
        400,
        "bad_request",
    );
    let bad_header = b"GET /healthz HTTP/1.1\r\nHost: hub\r\nNo colon here\r\n\r\n";
    assert_refusal(&exchange(&hub, bad_header).await, 400, "bad_request");
}

#[tokio::test]
async fn the_hubs_own_refusals_and_answers_are_left_as_they_are() {
    let hub = TestHub::start().await;
    let (head, body) = exchange(
        &hub,
        b"GET /v1/events HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 401 "), "{head}");
    assert_eq!(body["error"], "unauthorized");
    let (head, body) = exchange(
        &hub,
        b"GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 200 "), "{head}");
    assert_eq!(body["status"], "ok");
}
