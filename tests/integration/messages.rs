//! Client messages on the socket: ping/pong, client-id, error frames, limits.

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

fn assert_error_frame(frame: &Value, client_id: &Value, ref_id: Option<&str>, contains: &str) {
    assert_eq!(frame["event_type"], "global", "{frame}");
    assert_eq!(frame["message"], "error", "{frame}");
    assert_eq!(&frame["client_id"], client_id, "{frame}");
    let text = frame["body"]["error"].as_str().expect("body.error");
    assert!(
        text.contains(contains),
        "{text:?} should mention {contains:?}"
    );
    match ref_id {
        Some(r) => assert_eq!(frame["ref_id"], r, "{frame}"),
        None => assert!(frame.get("ref_id").is_none(), "{frame}"),
    }
}

#[tokio::test]
async fn ping_gets_pong_keyed_by_event_type_or_type() {
    let hub = TestHub::start().await;
    let (mut ws, welcome) = hub.subscribe(ip(1), "alice", "health").await;
    let client_id = &welcome["body"]["client_id"];

    send_json(
        &mut ws,
        &json!({"event_type": "health", "id": "ping-1", "message": "ping"}),
    )
    .await;
    let pong = next_json(&mut ws).await;
    assert_eq!(pong["ref_id"], "ping-1");
    assert_eq!(pong["event_type"], "health");
    assert_eq!(pong["message"], "pong");
    assert_eq!(&pong["client_id"], client_id);
    assert_eq!(pong["id"].as_str().map(str::len), Some(64));
    assert!(pong["timestamp"].as_str().is_some());

    // The seed's Node/Python/Go snippets send `type`, in any case.
    send_json(
        &mut ws,
        &json!({"type": "HEALTH", "message": "Ping", "id": "ping-2"}),
    )
    .await;
    let pong = next_json(&mut ws).await;
    assert_eq!(
        (pong["ref_id"].as_str(), pong["message"].as_str()),
        (Some("ping-2"), Some("pong"))
    );

    // Without an id, ref_id is a fresh 64-hex id.
    send_json(&mut ws, &json!({"event_type": "health", "message": "ping"})).await;
    let pong = next_json(&mut ws).await;
    let ref_id = pong["ref_id"].as_str().expect("ref_id");
    assert_eq!(ref_id.len(), 64);
    assert!(ref_id.chars().all(|c| c.is_ascii_hexdigit()));
}

#[tokio::test]
async fn client_id_request_on_system() {
    let hub = TestHub::start().await;
    let (mut ws, welcome) = hub.subscribe(ip(1), "alice", "system").await;
    let client_id = welcome["body"]["client_id"].clone();
    send_json(
        &mut ws,
        &json!({"type": "system", "message": "client-id", "id": "r-1"}),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["ref_id"], "r-1");
    assert_eq!(reply["event_type"], "system");
    assert_eq!(reply["message"], "client-id");
    assert_eq!(reply["body"]["client-id"], client_id);
    assert_eq!(reply["client_id"], client_id);
}

#[tokio::test]
async fn bad_messages_get_error_frames_and_the_socket_stays_open() {
    let hub = TestHub::start().await;
    let (mut ws, welcome) = hub.subscribe(ip(1), "alice", "health").await;
    let client_id = &welcome["body"]["client_id"];

    ws.send(Message::Text("{not json".into()))
        .await
        .expect("send");
    assert_error_frame(&next_json(&mut ws).await, client_id, None, "malformed JSON");

    send_json(
        &mut ws,
        &json!({"event_type": "weather", "message": "ping", "id": "u-1"}),
    )
    .await;
    assert_error_frame(
        &next_json(&mut ws).await,
        client_id,
        Some("u-1"),
        "unknown event type",
    );

    send_json(
        &mut ws,
        &json!({"event_type": "health", "message": "dance", "id": "u-2"}),
    )
    .await;
    assert_error_frame(
        &next_json(&mut ws).await,
        client_id,
        Some("u-2"),
        "unsupported message",
    );

    // `system` is a real channel, but this client did not subscribe to it.
    send_json(
        &mut ws,
        &json!({"event_type": "system", "message": "client-id", "id": "u-3"}),
    )
    .await;
    assert_error_frame(
        &next_json(&mut ws).await,
        client_id,
        Some("u-3"),
        "not subscribed",
    );

    send_json(&mut ws, &json!({"message": "ping", "id": "u-4"})).await;
    assert_error_frame(
        &next_json(&mut ws).await,
        client_id,
        Some("u-4"),
        "event_type",
    );

    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .expect("send");
    assert_error_frame(&next_json(&mut ws).await, client_id, None, "binary");

    // Still healthy.
    send_json(
        &mut ws,
        &json!({"event_type": "health", "message": "ping", "id": "ok"}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["message"], "pong");
}

#[tokio::test]
async fn an_oversized_text_frame_closes_with_1009_and_frees_the_slot() {
    let hub = TestHub::start_with(|s| s.limits.max_message_bytes = 1024).await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "health").await;
    let big = format!(
        r#"{{"event_type":"health","message":"ping","pad":"{}"}}"#,
        "x".repeat(2048)
    );
    ws.send(Message::Text(big.into())).await.expect("send");
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1009);
    eventually("the slot to be freed", || hub.state.admission.is_empty()).await;
}

#[tokio::test]
async fn a_message_flood_closes_with_1008() {
    let hub = TestHub::start_with(|s| {
        s.limits.client_messages_per_sec = std::num::NonZero::new(1).expect("positive");
        s.limits.client_message_burst = std::num::NonZero::new(5).expect("positive");
    })
    .await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "health").await;
    for i in 0..20 {
        let ping = json!({"event_type": "health", "message": "ping", "id": i.to_string()});
        if ws
            .send(Message::Text(ping.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 1008, "{reason}");
}
