//! `POST /v1/events`: single, batch, targeted, and every refusal (nothing of a refused batch
//! is published).

use events_hub::config::{EVENTS_PUBLISH, READ_ONLY};
use serde_json::{Value, json};

use crate::common::*;

async fn post_raw(
    hub: &TestHub,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = hub
        .http()
        .post(hub.url("/v1/events"))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    json_response(request.send().await.expect("request")).await
}

#[tokio::test]
async fn a_published_event_reaches_subscribers_stamped_by_the_hub() {
    let hub = TestHub::start().await;
    let (mut a, _) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let (mut b, _) = hub.subscribe(ip(2), "bob", "pdfm,orchestrator").await;
    let (mut c, _) = hub.subscribe(ip(3), "carol", "orchestrator").await;

    let body = json!({"previous_state": "suspended", "current_state": "resuming", "vm_id": "fb83"});
    let (status, receipt) = hub
        .publish(&json!({"event_type": "pdfm", "message": "VM_STATE_CHANGED", "body": body}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(receipt["recipients"], 2);
    let id = receipt["ids"][0].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 64);

    for ws in [&mut a, &mut b] {
        let event = next_json(ws).await;
        assert_eq!(event["id"], id.as_str());
        assert_eq!(event["event_type"], "pdfm");
        assert_eq!(event["message"], "VM_STATE_CHANGED");
        assert_eq!(event["body"], body);
        assert!(
            event.get("client_id").is_none(),
            "broadcasts carry no client_id"
        );
        assert!(
            event["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }
    // carol is not on pdfm: the next thing she sees is the orchestrator event.
    hub.publish(&json!({"type": "orchestrator", "message": "HOST_HEALTH_UPDATE"}))
        .await;
    assert_eq!(next_json(&mut c).await["message"], "HOST_HEALTH_UPDATE");
    assert_eq!(next_json(&mut b).await["message"], "HOST_HEALTH_UPDATE");
}

#[tokio::test]
async fn a_batch_is_published_in_order() {
    let hub = TestHub::start().await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"event_type": "pdfm", "message": format!("E{i}")}))
        .collect();
    let (status, receipt) = hub.publish(&Value::Array(batch)).await;
    assert_eq!(status, 202);
    assert_eq!(receipt["ids"].as_array().map(Vec::len), Some(5));
    assert_eq!(receipt["recipients"], 5);
    for i in 0..5 {
        let event = next_json(&mut ws).await;
        assert_eq!(event["message"], format!("E{i}"));
        assert_eq!(event["id"], receipt["ids"][i]);
    }
}

#[tokio::test]
async fn a_targeted_event_reaches_only_its_client() {
    let hub = TestHub::start().await;
    let (mut a, wa) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let (mut b, _) = hub.subscribe(ip(2), "bob", "pdfm").await;
    let (_c, wc) = hub.subscribe(ip(3), "carol", "orchestrator").await;
    let target = wa["body"]["client_id"].clone();

    let (status, receipt) = hub
        .publish(&json!({"event_type": "pdfm", "message": "FOR_ALICE", "client_id": target}))
        .await;
    assert_eq!((status, receipt["recipients"].as_u64()), (202, Some(1)));
    // To a client not subscribed to the channel, or an unknown one: nobody.
    let (_, receipt) = hub
        .publish(
            &json!({"event_type": "pdfm", "message": "X", "client_id": wc["body"]["client_id"]}),
        )
        .await;
    assert_eq!(receipt["recipients"], 0);
    let (_, receipt) = hub
        .publish(&json!({"event_type": "pdfm", "message": "X", "client_id": uuid::Uuid::new_v4()}))
        .await;
    assert_eq!(receipt["recipients"], 0);

    hub.publish(&json!({"event_type": "pdfm", "message": "FOR_ALL"}))
        .await;
    let first = next_json(&mut a).await;
    assert_eq!(first["message"], "FOR_ALICE");
    assert_eq!(first["client_id"], target);
    assert_eq!(next_json(&mut a).await["message"], "FOR_ALL");
    // bob's first event is the broadcast: the targeted one never reached him.
    assert_eq!(next_json(&mut b).await["message"], "FOR_ALL");
}

#[tokio::test]
async fn refusals_carry_the_error_body_and_publish_nothing() {
    let hub = TestHub::start_with(|s| {
        s.limits.max_publish_bytes = std::num::NonZero::new(4096).expect("positive");
        s.limits.max_batch_events = std::num::NonZero::new(10).expect("positive");
    })
    .await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let publisher = hub.publisher();
    let json_ct = "application/json";
    let valid = json!({"event_type": "pdfm", "message": "OK"});
    let cases: Vec<(u16, Option<String>, &str, Vec<u8>)> = vec![
        (401, None, json_ct, valid.to_string().into()),
        (
            403,
            Some(hub.token("reader", &[READ_ONLY])),
            json_ct,
            valid.to_string().into(),
        ),
        (
            415,
            Some(publisher.clone()),
            "text/plain",
            valid.to_string().into(),
        ),
        (400, Some(publisher.clone()), json_ct, b"{oops".to_vec()),
        (400, Some(publisher.clone()), json_ct, b"[]".to_vec()),
        (
            400,
            Some(publisher.clone()),
            json_ct,
            json!({"event_type": "health", "message": "ping"})
                .to_string()
                .into(),
        ),
        (
            400,
            Some(publisher.clone()),
            json_ct,
            json!({"event_type": "weather", "message": "X"})
                .to_string()
                .into(),
        ),
        (
            400,
            Some(publisher.clone()),
            json_ct,
            json!({"event_type": "pdfm"}).to_string().into(),
        ),
        (
            400,
            Some(publisher.clone()),
            json_ct,
            json!({"event_type": "pdfm", "message": "X", "body": [1]})
                .to_string()
                .into(),
        ),
        (
            400,
            Some(publisher.clone()),
            json_ct,
            json!({"event_type": "pdfm", "message": "X", "client_id": "nope"})
                .to_string()
                .into(),
        ),
        // Valid JSON grammar, but no f64 holds the number: subscribers could not parse it.
        (
            400,
            Some(publisher.clone()),
            json_ct,
            br#"{"event_type":"pdfm","message":"X","body":{"n":1e400}}"#.to_vec(),
        ),
        // One bad event spoils the whole batch.
        (
            400,
            Some(publisher.clone()),
            json_ct,
            json!([valid, {"event_type": "nope", "message": "X"}])
                .to_string()
                .into(),
        ),
        (
            413,
            Some(publisher.clone()),
            json_ct,
            json!({"event_type": "pdfm", "message": "X", "body": {"pad": "x".repeat(5000)}})
                .to_string()
                .into(),
        ),
        (
            413,
            Some(publisher.clone()),
            json_ct,
            Value::Array(vec![valid.clone(); 11]).to_string().into(),
        ),
    ];
    for (expected, token, content_type, body) in cases {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(80)
            .collect::<String>();
        let (status, reply) = post_raw(&hub, token.as_deref(), content_type, body).await;
        assert_eq!(status, expected, "{shown} -> {reply}");
        assert_eq!(reply["code"], expected);
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // None of the refused requests published anything: the first event alice sees is this one.
    hub.publish(&json!({"event_type": "pdfm", "message": "FIRST"}))
        .await;
    assert_eq!(next_json(&mut ws).await["message"], "FIRST");
}

/// `GET /v1/events?event_type=pdfm`: the JSON body (asserting 200).
async fn pdfm_history(hub: &TestHub) -> Value {
    let (status, body) = hub.history("event_type=pdfm").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_publishes_once_and_gets_the_same_receipt() {
    let hub = TestHub::start().await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let token = hub.publisher();
    let event = json!({"event_type": "pdfm", "message": "ONCE"});
    let (status, replayed, first) = publish_keyed(&hub, &token, "retry-1", &event).await;
    assert_eq!((status, replayed.as_deref()), (202, Some("false")));
    let (status, replayed, again) = publish_keyed(&hub, &token, "retry-1", &event).await;
    assert_eq!((status, replayed.as_deref()), (202, Some("true")));
    assert_eq!(first, again, "the same receipt, ids included");
    // A new key publishes; the subscriber sees ONCE exactly once, then NEXT.
    let next = json!({"event_type": "pdfm", "message": "NEXT"});
    assert_eq!(publish_keyed(&hub, &token, "retry-2", &next).await.0, 202);
    assert_eq!(next_json(&mut ws).await["message"], "ONCE");
    assert_eq!(next_json(&mut ws).await["message"], "NEXT");
    let page = pdfm_history(&hub).await;
    assert_eq!(page["last_seq"], 2, "two events in all");
}

#[tokio::test]
async fn concurrent_requests_with_one_key_publish_once() {
    let hub = TestHub::start().await;
    let token = hub.publisher();
    let event = json!({"event_type": "pdfm", "message": "RACE"});
    let requests = (0..16).map(|_| publish_keyed(&hub, &token, "race", &event));
    let answers = futures_util::future::join_all(requests).await;
    assert_published_once(&answers);
    let page = pdfm_history(&hub).await;
    assert_eq!(page["last_seq"], 1);
}

#[tokio::test]
async fn a_key_reused_for_another_body_is_409_and_publishes_nothing() {
    let hub = TestHub::start().await;
    let token = hub.publisher();
    let first = json!({"event_type": "pdfm", "message": "A"});
    assert_eq!(publish_keyed(&hub, &token, "k", &first).await.0, 202);
    let other = json!({"event_type": "pdfm", "message": "B"});
    let (status, _, body) = publish_keyed(&hub, &token, "k", &other).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    assert_eq!(body["code"], 409);
    // Another publisher's identical key is its own key.
    let someone_else = hub.token("other-publisher", &[EVENTS_PUBLISH]);
    assert_eq!(publish_keyed(&hub, &someone_else, "k", &other).await.0, 202);
    let page = pdfm_history(&hub).await;
    assert_eq!(page["last_seq"], 2);
    // A key that is not visible ASCII, or too long: 400 before anything is published.
    for bad in ["", &"x".repeat(256)] {
        let (status, _, body) = publish_keyed(&hub, &token, bad, &first).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_request")),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn with_the_window_off_the_key_is_ignored() {
    let hub = TestHub::start_with(|s| s.limits.idempotency_window_secs = 0).await;
    let token = hub.publisher();
    let event = json!({"event_type": "pdfm", "message": "TWICE"});
    for _ in 0..2 {
        let (status, replayed, _) = publish_keyed(&hub, &token, "k", &event).await;
        assert_eq!((status, replayed.as_deref()), (202, Some("false")));
    }
    let page = pdfm_history(&hub).await;
    assert_eq!(page["last_seq"], 2);
}
