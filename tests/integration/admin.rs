//! The admin routes (claim `EVENTS_ADMIN`) and the public implementation's `/v1/ws/clients`
//! and `/v1/ws/stats` (Parallels/prl-devops-service, `src/models/event_message.go`:
//! `EventClientInfo`, `EventEmitterStats`; the field names below are its JSON tags).

use std::collections::BTreeSet;

use events_hub::config::{EVENTS_ADMIN, READ_ONLY};
use serde_json::{Value, json};

use crate::common::*;

const ADMIN_ROUTES: [(&str, &str); 5] = [
    ("GET", "/v1/admin/clients"),
    ("GET", "/v1/admin/channels"),
    (
        "DELETE",
        "/v1/admin/clients/7f0c1b1e-9a53-4a57-9d55-0a5f0c1b1e9a",
    ),
    ("GET", "/v1/ws/clients"),
    ("GET", "/v1/ws/stats"),
];

async fn call(hub: &TestHub, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = hub.http().request(method, hub.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    json_response(request.send().await.expect("request")).await
}

async fn admin_get(hub: &TestHub, path: &str) -> Value {
    let (status, body) = call(hub, "GET", path, Some(&hub.token("ops", &[EVENTS_ADMIN]))).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[tokio::test]
async fn every_admin_route_wants_credentials_and_the_admin_claim() {
    let hub = TestHub::start().await;
    let reader = hub.token("reader", &[READ_ONLY]);
    let super_user = mint("root", &[], &["SUPER_USER"], 600);
    for (method, path) in ADMIN_ROUTES {
        for prefix in ["", "/api"] {
            let path = format!("{prefix}{path}");
            let (status, body) = call(&hub, method, &path, None).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (401, Some("unauthorized")),
                "{method} {path}"
            );
            let (status, body) = call(&hub, method, &path, Some(&reader)).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (403, Some("forbidden")),
                "{method} {path}"
            );
            let (status, _) = call(&hub, method, &path, Some(&super_user)).await;
            // The DELETE names no live client: past the claim check, it is a 404.
            let expected = if method == "DELETE" { 404 } else { 200 };
            assert_eq!(status, expected, "{method} {path} as SUPER_USER");
        }
    }
}

#[tokio::test]
async fn the_client_list_shows_who_where_what_and_since_when() {
    let hub = TestHub::start().await;
    let (mut ws, welcome) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let id = welcome["body"]["client_id"]
        .as_str()
        .expect("client id")
        .to_owned();
    let listed = admin_get(&hub, "/v1/admin/clients").await;
    let clients = listed["clients"].as_array().expect("a list");
    assert_eq!(clients.len(), 1);
    let alice = &clients[0];
    assert_eq!(alice["client_id"], id);
    assert_eq!(alice["owner"], json!({"method": "jwt", "subject": "alice"}));
    assert_eq!(alice["ip"], ip(1).to_string());
    assert_eq!(alice["subscriptions"], json!(["pdfm", "global"]));
    assert_eq!(alice["queue_depth"], 0);
    assert_eq!(alice["last_frame_received"], Value::Null);
    let since = alice["connected_since"].as_str().expect("a time");
    chrono::DateTime::parse_from_rfc3339(since).expect("RFC 3339");

    // Any frame from the client counts; this one is answered with an error (alice is not
    // subscribed to `health`), which proves the hub read it.
    send_json(
        &mut ws,
        &json!({"type": "health", "message": "ping", "id": "p1"}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["ref_id"], "p1");
    let listed = admin_get(&hub, "/v1/admin/clients").await;
    let received = listed["clients"][0]["last_frame_received"]
        .as_str()
        .expect("now set");
    chrono::DateTime::parse_from_rfc3339(received).expect("RFC 3339");
}

#[tokio::test]
async fn an_administrator_disconnects_one_client_with_4001() {
    let hub = TestHub::start().await;
    let (mut alice, welcome) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let (mut bob, _) = hub.subscribe(ip(2), "bob", "pdfm").await;
    let id = welcome["body"]["client_id"]
        .as_str()
        .expect("client id")
        .to_owned();
    let admin = hub.token("ops", &[EVENTS_ADMIN]);
    let path = format!("/v1/admin/clients/{id}");
    let (status, body) = call(&hub, "DELETE", &path, Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disconnected"], true);
    assert_eq!(body["close_code"], 4001);
    let (code, reason) = expect_close(&mut alice).await;
    assert_eq!(
        (code, reason.as_str()),
        (4001, "disconnected by an administrator")
    );

    // Bob keeps his socket and every event.
    assert_eq!(
        hub.publish(&json!({"event_type": "pdfm", "message": "AFTER"}))
            .await
            .0,
        202
    );
    assert_eq!(next_json(&mut bob).await["message"], "AFTER");
    eventually("alice to leave the registry", || {
        hub.state.hub.client_count() == 1
    })
    .await;
    let (status, body) = call(&hub, "DELETE", &path, Some(&admin)).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, body) = call(&hub, "DELETE", "/v1/admin/clients/not-a-uuid", Some(&admin)).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    // Alice's slot is free again: she reconnects from the same IP.
    let (_again, _) = hub.subscribe(ip(1), "alice", "pdfm").await;
}

#[tokio::test]
async fn channel_figures_move_with_publishing() {
    let hub = TestHub::start().await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "pdfm").await;
    for message in ["A", "B"] {
        let event = json!({"event_type": "pdfm", "message": message});
        assert_eq!(hub.publish(&event).await.0, 202);
        assert_eq!(next_json(&mut ws).await["message"], message);
    }
    let stats = admin_get(&hub, "/v1/admin/channels").await;
    let pdfm = stats["channels"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|c| c["channel"] == "pdfm")
        .expect("pdfm is listed")
        .clone();
    assert_eq!(pdfm["subscribers"], 1);
    assert_eq!(pdfm["events_published"], 2);
    assert_eq!(pdfm["events_delivered"], 2);
    assert_eq!(pdfm["history"]["last_seq"], 2);
    assert_eq!(pdfm["history"]["events"], 2);
    assert_eq!(pdfm["history"]["oldest_seq"], 1);
    assert!(stats["epoch"].as_u64().is_some());
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

#[tokio::test]
async fn the_public_implementations_shapes_with_counters_that_move() {
    let hub = TestHub::start().await;
    let (mut ws, welcome) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let clients = admin_get(&hub, "/v1/ws/clients").await;
    let info = &clients.as_array().expect("[]EventClientInfo")[0];
    assert_eq!(
        keys(info),
        BTreeSet::from([
            "id",
            "user_id",
            "username",
            "connected_at",
            "last_ping_at",
            "last_pong_at",
            "event_subscriptions",
            "is_alive",
            "queue_depth",
        ])
    );
    assert_eq!(info["id"], welcome["body"]["client_id"]);
    assert_eq!(info["user_id"], "alice");
    assert_eq!(info["is_alive"], true);
    // Go's zero time.Time, as encoding/json writes it: no ping sent yet.
    assert_eq!(info["last_ping_at"], "0001-01-01T00:00:00Z");

    let before = admin_get(&hub, "/v1/ws/stats").await;
    assert_eq!(
        keys(&before),
        BTreeSet::from([
            "total_clients",
            "total_subscriptions",
            "type_stats",
            "clients",
            "messages_sent",
            "start_time",
            "uptime",
        ])
    );
    assert_eq!(before["total_clients"], 1);
    assert_eq!(before["total_subscriptions"], 2, "pdfm and global");
    assert_eq!(before["type_stats"]["pdfm"], 1);
    assert!(before["uptime"].as_str().is_some_and(|u| u.ends_with('s')));
    assert_eq!(
        hub.publish(&json!({"event_type": "pdfm", "message": "COUNTED"}))
            .await
            .0,
        202
    );
    assert_eq!(next_json(&mut ws).await["message"], "COUNTED");
    let after = admin_get(&hub, "/v1/ws/stats").await;
    let sent = |v: &Value| v["messages_sent"].as_u64().expect("a count");
    assert_eq!(sent(&after), sent(&before) + 1);
}

#[tokio::test]
async fn the_client_list_shows_the_last_ping_sent_and_pong_received() {
    let hub = TestHub::start_with(|s| {
        s.heartbeat.ping_interval_secs = std::num::NonZero::new(1).expect("positive");
    })
    .await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let before = admin_get(&hub, "/v1/admin/clients").await;
    assert_eq!(before["clients"][0]["last_ping_sent"], Value::Null);
    assert_eq!(before["clients"][0]["last_pong_received"], Value::Null);
    // The hub's ping arrives; tungstenite queues the pong and writes it with the next frame.
    loop {
        if let tokio_tungstenite::tungstenite::Message::Ping(_) = next_message(&mut ws).await {
            break;
        }
    }
    send_json(
        &mut ws,
        &json!({"type": "health", "message": "ping", "id": "p1"}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["ref_id"], "p1");
    let after = admin_get(&hub, "/v1/admin/clients").await;
    let alice = &after["clients"][0];
    for key in ["last_ping_sent", "last_pong_received"] {
        let at = alice[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} is set: {alice}"));
        chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
    }
    let clients = admin_get(&hub, "/v1/ws/clients").await;
    assert_ne!(clients[0]["last_pong_at"], "0001-01-01T00:00:00Z");
}
