//! Subscriptions changed on a live socket: `subscribe`/`unsubscribe` on the `system` key, and
//! the same requests in sysadm's `events` envelope.

use serde_json::{Value, json};

use crate::common::*;

async fn request(ws: &mut Ws, message: &str, id: &str, event_types: Value) -> Value {
    send_json(
        ws,
        &json!({"event_type": "system", "message": message, "id": id,
                "body": {"event_types": event_types}}),
    )
    .await;
    next_json(ws).await
}

#[tokio::test]
async fn in_band_subscribe_takes_effect_for_the_very_next_event() {
    let hub = TestHub::start().await;
    let (mut ws, welcome) = hub.subscribe(ip(1), "alice", "system").await;
    let client_id = welcome["body"]["client_id"].clone();
    // Published before the subscribe: not for this socket.
    hub.publish(&json!({"event_type": "pdfm", "message": "BEFORE"}))
        .await;

    let ack = request(
        &mut ws,
        "subscribe",
        "s-1",
        json!(["PDFM", "bogus", "system"]),
    )
    .await;
    assert_eq!(ack["event_type"], "system", "{ack}");
    assert_eq!(ack["message"], "subscribe");
    assert_eq!(ack["ref_id"], "s-1");
    assert_eq!(ack["client_id"], client_id);
    assert_eq!(
        ack["body"]["subscriptions"],
        json!(["system", "pdfm", "global"])
    );
    assert_eq!(ack["body"]["ignored_event_types"], json!(["bogus"]));
    assert_eq!(ack["body"]["positions"], json!({"pdfm": 1}));

    hub.publish(&json!({"event_type": "pdfm", "message": "AFTER"}))
        .await;
    let event = next_json(&mut ws).await;
    assert_eq!(
        (event["message"].as_str(), event["seq"].as_u64()),
        (Some("AFTER"), Some(2))
    );

    // The REST unsubscribe sees the in-band subscription.
    let (status, body) = hub
        .unsubscribe(
            "alice",
            &json!({"client_id": client_id, "event_types": ["pdfm"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["remaining_subscriptions"], json!(["system", "global"]));
}

#[tokio::test]
async fn in_band_unsubscribe_stops_the_channel_before_its_answer() {
    let hub = TestHub::start().await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "pdfm,system").await;

    let ack = request(
        &mut ws,
        "unsubscribe",
        "u-1",
        json!("pdfm, global, orchestrator"),
    )
    .await;
    assert_eq!(ack["message"], "unsubscribe", "{ack}");
    assert_eq!(ack["ref_id"], "u-1");
    assert_eq!(ack["body"]["unsubscribed"], json!(["pdfm"]));
    assert_eq!(ack["body"]["subscriptions"], json!(["system", "global"]));
    assert_eq!(ack["body"]["rejected"], json!(["global"]));
    assert_eq!(ack["body"]["not_subscribed"], json!(["orchestrator"]));

    hub.publish(&json!([{"event_type": "pdfm", "message": "GONE"},
                        {"event_type": "global", "message": "MARK"}]))
        .await;
    assert_eq!(next_json(&mut ws).await["message"], "MARK");

    // Nothing removable: an error frame, the socket stays.
    let error = request(&mut ws, "unsubscribe", "u-2", json!(["global"])).await;
    assert_eq!(error["message"], "error", "{error}");
    assert_eq!(error["ref_id"], "u-2");
    assert!(
        error["body"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("`global` cannot be removed"))
    );
    let ack = request(&mut ws, "subscribe", "s-1", json!(["pdfm"])).await;
    assert_eq!(
        ack["body"]["subscriptions"],
        json!(["system", "pdfm", "global"])
    );
}

#[tokio::test]
async fn in_band_requests_that_cannot_be_served_get_error_frames() {
    let hub = TestHub::start().await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "pdfm").await;
    // The `system` key needs a `system` subscription, as every system request does.
    let error = request(&mut ws, "subscribe", "s-1", json!(["orchestrator"])).await;
    assert!(
        error["body"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not subscribed to \"system\"")),
        "{error}"
    );

    let (mut ws, _) = hub.subscribe(ip(2), "alice", "system").await;
    send_json(
        &mut ws,
        &json!({"event_type": "system", "message": "subscribe", "id": "s-2"}),
    )
    .await;
    let error = next_json(&mut ws).await;
    assert!(
        error["body"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("body.event_types")),
        "{error}"
    );
    let error = request(&mut ws, "subscribe", "s-3", json!({"pdfm": true})).await;
    assert!(
        error["body"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("array")),
        "{error}"
    );
    assert_eq!(error["ref_id"], "s-3");
}

#[tokio::test]
async fn a_seed_message_with_an_extra_namespace_field_keeps_its_meaning() {
    let hub = TestHub::start().await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "health").await;
    send_json(
        &mut ws,
        &json!({"event_type": "health", "message": "ping", "id": "p-1", "namespace": "x"}),
    )
    .await;
    let pong = next_json(&mut ws).await;
    assert_eq!(
        (pong["message"].as_str(), pong["ref_id"].as_str()),
        (Some("pong"), Some("p-1")),
        "{pong}"
    );
}

#[tokio::test]
async fn a_sysadm_envelope_client_subscribes_receives_and_unsubscribes() {
    let hub = TestHub::start().await;
    // No event_types: global only, like a client that subscribes after connecting.
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "").await;

    send_json(
        &mut ws,
        &json!({"namespace": "events", "name": "subscribe", "id": "sampleID", "args": ["pdfm", "orchestrator"]}),
    )
    .await;
    let ack = next_json(&mut ws).await;
    assert_eq!(
        (
            ack["namespace"].as_str(),
            ack["name"].as_str(),
            ack["id"].as_str()
        ),
        (Some("events"), Some("response"), Some("sampleID")),
        "{ack}"
    );
    assert_eq!(
        ack["args"]["subscriptions"],
        json!(["pdfm", "orchestrator", "global"])
    );

    hub.publish(
        &json!({"event_type": "pdfm", "message": "VM_STATE_CHANGED", "body": {"vm_id": "1"}}),
    )
    .await;
    let event = next_json(&mut ws).await;
    assert_eq!(
        (event["event_type"].as_str(), event["message"].as_str()),
        (Some("pdfm"), Some("VM_STATE_CHANGED"))
    );

    send_json(
        &mut ws,
        &json!({"namespace": "events", "name": "unsubscribe", "id": 42, "args": ["pdfm"]}),
    )
    .await;
    let ack = next_json(&mut ws).await;
    assert_eq!(
        (ack["name"].as_str(), &ack["id"]),
        (Some("response"), &json!(42)),
        "{ack}"
    );
    assert_eq!(
        ack["args"]["subscriptions"],
        json!(["orchestrator", "global"])
    );
    hub.publish(&json!([{"event_type": "pdfm", "message": "GONE"},
                        {"event_type": "orchestrator", "message": "STILL_HERE"}]))
        .await;
    assert_eq!(next_json(&mut ws).await["message"], "STILL_HERE");

    for (request, needle) in [
        (
            json!({"namespace": "rpc", "name": "subscribe", "id": "x", "args": ["pdfm"]}),
            "namespace",
        ),
        (
            json!({"namespace": "events", "name": "listen", "id": "x", "args": ["pdfm"]}),
            "unsupported name",
        ),
        (
            json!({"namespace": "events", "name": "subscribe", "id": "x"}),
            "args",
        ),
        (
            json!({"namespace": "events", "name": "subscribe", "id": "x", "args": {"a": 1}}),
            "`args` must be",
        ),
        (
            json!({"namespace": "events", "name": "unsubscribe", "id": "x", "args": ["global"]}),
            "cannot be removed",
        ),
    ] {
        send_json(&mut ws, &request).await;
        let error = next_json(&mut ws).await;
        assert_eq!(
            (error["name"].as_str(), error["id"].as_str()),
            (Some("error"), Some("x")),
            "{error}"
        );
        assert!(
            error["args"]["error"]
                .as_str()
                .is_some_and(|e| e.contains(needle)),
            "{needle}: {error}"
        );
    }
}
