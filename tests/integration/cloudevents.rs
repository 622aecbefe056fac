//! CloudEvents 1.0 through real sockets: publishing in the structured, batch and binary forms,
//! and a subscriber on the `cloudevents.json` subprotocol.
//!
//! Requests are built byte for byte as the CloudEvents Python SDK writes them (PyPI
//! `cloudevents` 2.2, repository cloudevents/sdk-python): `cloudevents/core/formats/json.py`
//! (`JSONFormat.write`: `json.dumps` of the attributes in insertion order, `specversion` added
//! last, then `data`) for structured mode, `cloudevents/core/bindings/http.py` (`to_binary`:
//! one `ce-` header per attribute, `datacontenttype` as `Content-Type`, the data as
//! `json.dumps`) for binary mode. The SDK has no batch writer, so a batch is the JSON array of
//! SDK-written events that cloudevents/spec `cloudevents/formats/json-format.md` §4 defines.
//! The e2e test (tests/e2e/test_cloudevents.py) runs the SDK itself.

use events_hub::config::READ_ONLY;
use events_hub::server::Stopped;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::*;

/// `JSONFormat().write(CloudEvent({...}, {"vm_id": 42, "state": "RUNNING"}))`, as printed
/// by the SDK for these attributes.
fn structured(id: &str) -> String {
    format!(
        r#"{{"type": "com.example.vm.started", "source": "/fleet/host-7", "id": "{id}", "subject": "vm/42", "datacontenttype": "application/json", "time": "2026-12-01T10:00:00Z", "specversion": "1.0", "data": {{"vm_id": 42, "state": "RUNNING"}}}}"#
    )
}

/// `http.to_binary(event, JSONFormat())` of the same event: its headers, then its body.
fn binary_headers(id: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("ce-type", "com.example.vm.started"),
        ("ce-source", "/fleet/host-7"),
        ("ce-id", id),
        ("ce-subject", "vm/42"),
        ("content-type", "application/json"),
        ("ce-time", "2026-12-01T10:00:00Z"),
        ("ce-specversion", "1.0"),
    ]
}
const BINARY_BODY: &str = r#"{"vm_id": 42, "state": "RUNNING"}"#;

async fn post(
    hub: &TestHub,
    query: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, Value, Option<String>) {
    let mut request = hub
        .http()
        .post(hub.url(&format!("/v1/events{query}")))
        .bearer_auth(hub.publisher())
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("POST /v1/events");
    let replayed = crate::common::header_text(&response, "idempotent-replayed");
    let (status, body) = json_response(response).await;
    (status, body, replayed)
}

async fn post_structured(hub: &TestHub, body: String) -> (u16, Value) {
    let ct = [("content-type", "application/cloudevents+json")];
    let (status, body, _) = post(hub, "?event_type=pdfm", &ct, body).await;
    (status, body)
}

/// The messages now kept on `pdfm`.
async fn kept(hub: &TestHub) -> Vec<String> {
    let (status, page) = hub.history("event_type=pdfm").await;
    assert_eq!(status, 200, "{page}");
    page_messages(&page)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

fn assert_refused(status: u16, body: &Value, code: u16, kind: &str, says: &str) {
    assert_eq!(status, code, "{body}");
    assert_eq!(body["code"], code);
    assert_eq!(body["error"], kind);
    let message = body["message"].as_str().expect("message");
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

#[tokio::test]
async fn a_structured_cloudevent_is_published_with_type_as_message_and_data_as_body() {
    let hub = TestHub::start().await;
    let (mut ws, _) = hub.subscribe(ip(1), "ce-reader", "pdfm").await;
    let (status, receipt) = post_structured(&hub, structured("evt-1")).await;
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["repeated"], 0);
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["id"], receipt["ids"][0]);
    assert_eq!(frame["event_type"], "pdfm");
    assert_eq!(frame["message"], "com.example.vm.started");
    assert_eq!(frame["body"], json!({"vm_id": 42, "state": "RUNNING"}));
    assert_eq!(
        frame["origin"],
        json!({"source": "/fleet/host-7", "id": "evt-1", "subject": "vm/42"})
    );
    assert_eq!(frame["seq"], 1);
    close(ws).await;
}

#[tokio::test]
async fn a_retried_cloudevent_publishes_nothing_twice() {
    let hub = TestHub::start().await;
    let ct = [("content-type", "application/cloudevents+json")];
    let (status, first, replayed) = post(&hub, "?event_type=pdfm", &ct, structured("evt-1")).await;
    assert_eq!((status, replayed.as_deref()), (202, Some("false")));
    let (status, again, replayed) = post(&hub, "?event_type=pdfm", &ct, structured("evt-1")).await;
    assert_eq!((status, replayed.as_deref()), (202, Some("true")));
    assert_eq!(again["ids"], first["ids"]);
    assert_eq!(again["repeated"], 1);
    // The same source + id in binary mode is the same event too.
    let (status, binary, _) = post(
        &hub,
        "?event_type=pdfm",
        &binary_headers("evt-1"),
        BINARY_BODY.into(),
    )
    .await;
    assert_eq!((status, &binary["ids"]), (202, &first["ids"]));
    let (status, _) = post_structured(&hub, structured("evt-2")).await;
    assert_eq!(status, 202);
    assert_eq!(kept(&hub).await.len(), 2);
}

#[tokio::test]
async fn a_batch_is_published_in_order_and_a_bad_event_refuses_all_of_it() {
    let hub = TestHub::start().await;
    let (mut ws, _) = hub.subscribe(ip(1), "ce-reader", "pdfm").await;
    let ct = [("content-type", "application/cloudevents-batch+json")];
    let batch = format!("[{}, {}]", structured("b-1"), structured("b-2"));
    let (status, receipt, _) = post(&hub, "?event_type=pdfm", &ct, batch).await;
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["ids"].as_array().map(Vec::len), Some(2));
    for id in ["b-1", "b-2"] {
        assert_eq!(next_json(&mut ws).await["origin"]["id"], id);
    }
    let bad = format!(
        "[{}, {}]",
        structured("b-3"),
        structured("b-4").replace(r#""1.0""#, r#""0.3""#)
    );
    let (status, body, _) = post(&hub, "?event_type=pdfm", &ct, bad).await;
    assert_refused(
        status,
        &body,
        400,
        "bad_request",
        "event 1: specversion \"0.3\"",
    );
    let (status, empty, _) = post(&hub, "?event_type=pdfm", &ct, "[]".into()).await;
    assert_eq!((status, &empty["ids"]), (202, &json!([])));
    assert_eq!(kept(&hub).await.len(), 2, "nothing of the refused batch");
    close(ws).await;
}

#[tokio::test]
async fn a_binary_mode_cloudevent_is_published_and_non_json_data_is_refused() {
    let hub = TestHub::start().await;
    let (mut ws, _) = hub.subscribe(ip(1), "ce-reader", "pdfm").await;
    let (status, receipt, _) = post(
        &hub,
        "?event_type=pdfm",
        &binary_headers("bin-1"),
        BINARY_BODY.into(),
    )
    .await;
    assert_eq!(status, 202, "{receipt}");
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["message"], "com.example.vm.started");
    assert_eq!(frame["body"]["vm_id"], 42);
    assert_eq!(frame["origin"]["subject"], "vm/42");

    let mut text = binary_headers("bin-2");
    text[4] = ("content-type", "text/plain");
    let (status, body, _) = post(&hub, "?event_type=pdfm", &text, "VM 42 started".into()).await;
    assert_refused(status, &body, 415, "unsupported_media_type", "is not JSON");
    let mut avro = binary_headers("bin-3");
    avro[4] = ("content-type", "application/cloudevents+avro");
    let (status, body, _) = post(&hub, "?event_type=pdfm", &avro, String::new()).await;
    assert_refused(
        status,
        &body,
        415,
        "unsupported_media_type",
        "JSON format only",
    );
    assert_eq!(kept(&hub).await.len(), 1);
    close(ws).await;
}

#[tokio::test]
async fn malformed_cloudevents_are_refused_with_the_error_body_and_publish_nothing() {
    let hub = TestHub::start().await;
    let cases = [
        ("{not json".to_owned(), "not a CloudEvent"),
        (
            structured("x").replace(r#""source": "/fleet/host-7", "#, ""),
            "`source` is missing",
        ),
        (
            structured("x").replace(r#""type": "com.example.vm.started", "#, ""),
            "`type` is missing",
        ),
        (
            structured("x").replace(r#""1.0""#, r#""2.0""#),
            "specversion \"2.0\" is not supported",
        ),
        (
            structured("x").replace(r#"{"vm_id": 42, "state": "RUNNING"}"#, "[1, 2]"),
            "must be a JSON object",
        ),
    ];
    for (body, says) in cases {
        let (status, refusal) = post_structured(&hub, body).await;
        assert_refused(status, &refusal, 400, "bad_request", says);
    }
    let mut missing_id = binary_headers("x");
    missing_id.remove(2);
    let (status, refusal, _) =
        post(&hub, "?event_type=pdfm", &missing_id, BINARY_BODY.into()).await;
    assert_refused(status, &refusal, 400, "bad_request", "`id` is missing");
    let ct = [("content-type", "application/cloudevents+json")];
    let (status, refusal, _) = post(&hub, "", &ct, structured("x")).await;
    assert_refused(
        status,
        &refusal,
        400,
        "bad_request",
        "event_type query parameter",
    );
    let (status, refusal, _) = post(&hub, "?event_type=nope", &ct, structured("x")).await;
    assert_refused(status, &refusal, 400, "bad_request", "unknown event_type");
    let keyed = [ct[0], ("idempotency-key", "k-1")];
    let (status, refusal, _) = post(&hub, "?event_type=pdfm", &keyed, structured("x")).await;
    assert_refused(
        status,
        &refusal,
        400,
        "bad_request",
        "send no Idempotency-Key",
    );
    assert!(kept(&hub).await.is_empty());
}

/// A handshake offering `protocols`, written by hand: tungstenite's client refuses an answer
/// that chooses none of them, which RFC 6455 allows and this test wants to see. Returns the
/// socket and the protocol the hub chose.
async fn connect_offering(hub: &TestHub, n: u32, protocols: &str) -> (Ws, Option<String>) {
    let mut stream = tcp_from(ip(n), hub.addr).await;
    let token = hub.token("ce-sub", &[READ_ONLY]);
    let request = format!(
        "GET /v1/ws/subscribe?event_types=pdfm,health HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocols}\r\nAuthorization: Bearer {token}\r\n\r\n",
        hub.addr
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    // Byte by byte up to the blank line, so no frame after the head is read here.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(WAIT, stream.read_u8()).await;
        head.push(byte.expect("in time").expect("head"));
    }
    let head = String::from_utf8(head).expect("ASCII head");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let chosen = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-protocol")
            .then(|| value.trim().to_owned())
    });
    let ws =
        WebSocketStream::from_raw_socket(MaybeTlsStream::Plain(stream), Role::Client, None).await;
    (ws, chosen)
}

#[tokio::test]
async fn a_cloudevents_json_subscriber_reads_every_frame_as_a_cloudevent() {
    let hub = TestHub::start().await;
    let (mut ws, chosen) = connect_offering(&hub, 1, "cloudevents.json").await;
    assert_eq!(chosen.as_deref(), Some("cloudevents.json"));
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["specversion"], "1.0");
    assert_eq!(welcome["type"], "events-hub.welcome");
    assert_eq!(welcome["source"], "/events-hub/global");
    assert_eq!(
        welcome["data"]["subscriptions"],
        json!(["pdfm", "health", "global"])
    );
    let epoch = welcome["data"]["epoch"].to_string();

    let (status, receipt) = post_structured(&hub, structured("evt-1")).await;
    assert_eq!(status, 202);
    let event = next_json(&mut ws).await;
    assert_eq!(event["id"], receipt["ids"][0]);
    assert_eq!(event["type"], "com.example.vm.started");
    assert_eq!(event["source"], "/events-hub/pdfm");
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(event["sequence"], "00000000000000000001");
    assert_eq!(event["epoch"], epoch.as_str());
    assert_eq!(
        (
            &event["subject"],
            &event["originsource"],
            &event["originid"]
        ),
        (&json!("vm/42"), &json!("/fleet/host-7"), &json!("evt-1"))
    );
    assert_eq!(event["data"], json!({"vm_id": 42, "state": "RUNNING"}));
    assert!(event["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    // A plain event too, and the hub's replies and errors: commands stay the hub's JSON.
    let (status, _) = hub
        .publish(&json!({"event_type": "pdfm", "message": "VM_STOPPED"}))
        .await;
    assert_eq!(status, 202);
    let plain = next_json(&mut ws).await;
    assert_eq!(
        (&plain["type"], &plain["sequence"]),
        (&json!("VM_STOPPED"), &json!("00000000000000000002"))
    );
    assert!(plain.get("subject").is_none() && plain.get("data").is_none());
    send_json(
        &mut ws,
        &json!({"event_type": "health", "message": "ping", "id": "p-1"}),
    )
    .await;
    let pong = next_json(&mut ws).await;
    assert_eq!(
        (&pong["type"], &pong["refid"], &pong["source"]),
        (
            &json!("events-hub.pong"),
            &json!("p-1"),
            &json!("/events-hub/health")
        )
    );
    ws.send(Message::Text("{oops".into())).await.expect("send");
    let error = next_json(&mut ws).await;
    assert_eq!(error["type"], "events-hub.error");
    assert!(
        error["data"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("malformed JSON"))
    );
    close(ws).await;
}

#[tokio::test]
async fn the_shutdown_notice_is_a_cloudevent_and_other_protocols_get_plain_frames() {
    let mut hub = TestHub::start().await;
    let (mut plain, chosen) = connect_offering(&hub, 2, "graphql-ws").await;
    assert_eq!(chosen, None, "no protocol the hub speaks: none chosen");
    assert_eq!(
        next_json(&mut plain).await["message"],
        events_hub::protocol::WELCOME_MESSAGE
    );
    let (mut ws, chosen) = connect_offering(&hub, 1, "graphql-ws, cloudevents.json").await;
    assert_eq!(chosen.as_deref(), Some("cloudevents.json"));
    assert_eq!(next_json(&mut ws).await["type"], "events-hub.welcome");
    let reader = tokio::spawn(async move {
        let notice = next_json(&mut ws).await;
        (notice, expect_close(&mut ws).await)
    });
    assert_eq!(hub.shutdown().await, Stopped::Drained);
    let (notice, (code, _)) = reader.await.expect("reader");
    assert_eq!(notice["type"], "events-hub.server_shutdown");
    assert_eq!(notice["data"]["reason"], "the hub is shutting down");
    assert_eq!(code, 1001);
    assert_eq!(next_json(&mut plain).await["message"], "SERVER_SHUTDOWN");
}
