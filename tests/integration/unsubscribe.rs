//! `POST /v1/ws/unsubscribe`: every outcome of SPEC section 7.

use events_hub::config::EVENTS_PUBLISH;
use serde_json::{Value, json};

use crate::common::*;

fn client_id(welcome: &Value) -> String {
    welcome["body"]["client_id"]
        .as_str()
        .expect("client_id")
        .to_owned()
}

#[tokio::test]
async fn removal_is_in_force_when_the_200_is_sent_and_the_socket_stays_open() {
    let hub = TestHub::start().await;
    let (mut ws, welcome) = hub.subscribe(ip(1), "alice", "pdfm,health").await;
    let id = client_id(&welcome);

    let (status, body) = hub
        .unsubscribe("alice", &json!({"client_id": id, "event_types": ["pdfm"]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["message"],
        "Successfully unsubscribed from event types"
    );
    assert_eq!(body["unsubscribed"], json!(["pdfm"]));
    assert_eq!(body["remaining_subscriptions"], json!(["health", "global"]));
    assert!(
        body.get("guidance").is_none(),
        "a clean request has no guidance: {body}"
    );
    for list in ["invalid_event_types", "not_subscribed", "rejected"] {
        assert!(
            body.get(list).is_none(),
            "a clean request has no {list}: {body}"
        );
    }

    // Immediately after the 200: a pdfm event, then a global one. Receiving the global one
    // first proves the pdfm one was never delivered.
    let (_, receipt) = hub
        .publish(&json!({"event_type": "pdfm", "message": "SHOULD_NOT_ARRIVE"}))
        .await;
    assert_eq!(receipt["recipients"], 0);
    hub.publish(&json!({"event_type": "global", "message": "AFTER"}))
        .await;
    assert_eq!(next_json(&mut ws).await["message"], "AFTER");

    // Still subscribed to health: the socket works.
    send_json(
        &mut ws,
        &json!({"event_type": "health", "message": "ping", "id": "p"}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["message"], "pong");
}

#[tokio::test]
async fn removal_holds_under_concurrent_publishing() {
    let hub = TestHub::start().await;
    let (mut ws, welcome) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let id = client_id(&welcome);
    // Publish pdfm events continuously while unsubscribing.
    let publisher = {
        let url = hub.url("/v1/events");
        let token = hub.publisher();
        let http = hub.http();
        tokio::spawn(async move {
            for i in 0..200 {
                let body = json!({"event_type": "pdfm", "message": format!("E{i}")});
                let _ = http.post(&url).bearer_auth(&token).json(&body).send().await;
            }
        })
    };
    let (status, _) = hub
        .unsubscribe("alice", &json!({"client_id": id, "event_types": ["pdfm"]}))
        .await;
    assert_eq!(status, 200);
    let (_, marker) = hub
        .publish(&json!({"event_type": "global", "message": "MARKER"}))
        .await;
    assert_eq!(marker["recipients"], 1);
    // Everything up to the marker may include pdfm events published before the 200; after the
    // marker, no pdfm event may ever arrive.
    loop {
        let frame = next_json(&mut ws).await;
        if frame["message"] == "MARKER" {
            break;
        }
        assert_eq!(frame["event_type"], "pdfm");
    }
    publisher.await.expect("publisher");
    hub.publish(&json!({"event_type": "global", "message": "END"}))
        .await;
    assert_eq!(next_json(&mut ws).await["message"], "END");
}

#[tokio::test]
async fn the_reply_puts_message_first_as_the_seed_shows() {
    let hub = TestHub::start().await;
    let (_ws, welcome) = hub.subscribe(ip(1), "alice", "pdfm,health").await;
    let response = hub
        .http()
        .post(hub.url("/v1/ws/unsubscribe"))
        .bearer_auth(hub.reader("alice"))
        .json(&json!({"client_id": client_id(&welcome), "event_types": ["pdfm"]}))
        .send()
        .await
        .expect("request");
    let text = response.text().await.expect("body");
    assert!(
        text.starts_with(r#"{"message":"Successfully unsubscribed from event types""#),
        "{text}"
    );
}

#[tokio::test]
async fn partial_success_lists_what_was_not_removed_with_guidance() {
    let hub = TestHub::start().await;
    let (_ws, welcome) = hub.subscribe(ip(1), "alice", "pdfm,health").await;
    let id = client_id(&welcome);
    let (status, body) = hub
        .unsubscribe(
            "alice",
            &json!({"client_id": id, "event_types": ["PDFM", "global", "bogus", "orchestrator"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unsubscribed"], json!(["pdfm"]));
    assert_eq!(body["remaining_subscriptions"], json!(["health", "global"]));
    assert_eq!(body["invalid_event_types"], json!(["bogus"]));
    assert_eq!(body["not_subscribed"], json!(["orchestrator"]));
    assert_eq!(body["rejected"], json!(["global"]));
    assert!(body["guidance"].as_str().is_some_and(|g| !g.is_empty()));
}

#[tokio::test]
async fn nothing_removable_is_400_naming_the_valid_channels() {
    let hub = TestHub::start().await;
    let (_ws, welcome) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let id = client_id(&welcome);
    let cases = [
        json!({"client_id": id, "event_types": ["global"]}),
        json!({"client_id": id, "event_types": ["bogus"]}),
        json!({"client_id": id, "event_types": []}),
        json!({"client_id": id, "event_types": ["health"]}), // never subscribed
        json!({"client_id": id}),
        json!({"client_id": "not-a-uuid", "event_types": ["pdfm"]}),
        json!("just a string"),
    ];
    for case in cases {
        let (status, body) = hub.unsubscribe("alice", &case).await;
        assert_eq!(status, 400, "{case} -> {body}");
        assert_eq!(body["code"], 400);
        assert_eq!(body["error"], "bad_request");
        let message = body["message"].as_str().expect("message");
        if case.get("event_types").is_some() && case["client_id"] == id.as_str() {
            assert!(
                message.contains("pdfm") && message.contains("orchestrator"),
                "{message}"
            );
        }
    }
    // Malformed JSON.
    let response = hub
        .http()
        .post(hub.url("/v1/ws/unsubscribe"))
        .bearer_auth(hub.reader("alice"))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    // Nothing was removed by any of these.
    let (status, body) = hub
        .unsubscribe("alice", &json!({"client_id": id, "event_types": ["pdfm"]}))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn another_identity_gets_403_and_an_unknown_client_404() {
    let hub = TestHub::start().await;
    let (mut ws, welcome) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let id = client_id(&welcome);

    let (status, body) = hub
        .unsubscribe(
            "mallory",
            &json!({"client_id": id, "event_types": ["pdfm"]}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "forbidden");

    let (status, body) = hub
        .unsubscribe(
            "alice",
            &json!({"client_id": uuid::Uuid::new_v4(), "event_types": ["pdfm"]}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], 404);

    // Mallory's attempt changed nothing: alice still gets pdfm.
    hub.publish(&json!({"event_type": "pdfm", "message": "STILL_HERE"}))
        .await;
    assert_eq!(next_json(&mut ws).await["message"], "STILL_HERE");

    // After the socket ends, its id is gone.
    close(ws).await;
    let (status, _) = hub
        .unsubscribe("alice", &json!({"client_id": id, "event_types": ["pdfm"]}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn unsubscribe_needs_credentials_and_the_read_claim() {
    let hub = TestHub::start().await;
    let (_ws, welcome) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let body = json!({"client_id": client_id(&welcome), "event_types": ["pdfm"]});
    let response = hub
        .http()
        .post(hub.url("/v1/ws/unsubscribe"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_bearer_challenge(&response);
    let response = hub
        .http()
        .post(hub.url("/api/v1/ws/unsubscribe"))
        .bearer_auth(hub.token("alice", &[EVENTS_PUBLISH]))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 403);
}
