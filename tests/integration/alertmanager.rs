//! `POST /v1/sources/alertmanager`: Prometheus Alertmanager's webhook. The payload is built as
//! Alertmanager writes it: `notify/webhook/webhook.go` (`Message`: `template.Data` embedded,
//! `version`, `groupKey`, `truncatedAlerts`) and `template/template.go` (`Data`, `Alert`), as
//! in its own `TestWebhookDefaultPayload` (`notify/webhook/webhook_test.go`): alert `TestAlert`,
//! summary `Test summary`, 2020-01-01 00:00 to 01:00 UTC, receiver `test_receiver`, group key
//! `{}:{alertname="test1"}`, plus a firing alert beside it.

use events_hub::config::READ_ONLY;
use serde_json::{Value, json};

use crate::common::*;

fn notification() -> Value {
    json!({
        "receiver": "test_receiver",
        "status": "firing",
        "alerts": [
            {
                "status": "resolved",
                "labels": {"alertname": "TestAlert"},
                "annotations": {"summary": "Test summary"},
                "startsAt": "2020-01-01T00:00:00Z",
                "endsAt": "2020-01-01T01:00:00Z",
                "generatorURL": "http://generator.url",
                "fingerprint": "8f2ac6ed9d5aab51"
            },
            {
                "status": "firing",
                "labels": {"alertname": "HostDown", "instance": "host-7:9100", "severity": "page"},
                "annotations": {"summary": "host-7 is down"},
                "startsAt": "2026-12-01T23:59:30.123456789Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
                "fingerprint": "1c5e8a4d2b3f6e70"
            }
        ],
        "notification_reason": "",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "routeLabels": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": "{}:{alertname=\"test1\"}",
        "truncatedAlerts": 0
    })
}

async fn post(hub: &TestHub, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = hub
        .http()
        .post(hub.url("/v1/sources/alertmanager"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    json_response(request.send().await.expect("POST")).await
}

async fn enabled_hub() -> TestHub {
    TestHub::start_with(|s| s.sources.alertmanager.enabled = true).await
}

#[tokio::test]
async fn each_alert_is_one_event_and_a_retry_publishes_nothing_twice() {
    let hub = enabled_hub().await;
    let (mut ws, _) = hub.subscribe(ip(1), "sre", "system").await;
    let token = hub.publisher();
    let payload = notification().to_string();
    let (status, first) = post(&hub, Some(&token), &payload).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["repeated"], 0);
    let resolved = next_json(&mut ws).await;
    assert_eq!(
        (
            resolved["event_type"].as_str(),
            resolved["message"].as_str()
        ),
        (Some("system"), Some("ALERT_RESOLVED"))
    );
    assert_eq!(resolved["body"]["alertname"], "TestAlert");
    assert_eq!(resolved["body"]["annotations"]["summary"], "Test summary");
    assert_eq!(resolved["body"]["starts_at"], "2020-01-01T00:00:00Z");
    assert_eq!(resolved["body"]["ends_at"], "2020-01-01T01:00:00Z");
    assert_eq!(resolved["body"]["receiver"], "test_receiver");
    assert_eq!(resolved["body"]["group_key"], "{}:{alertname=\"test1\"}");
    let firing = next_json(&mut ws).await;
    assert_eq!(firing["message"], "ALERT_FIRING");
    assert_eq!(firing["body"]["labels"]["instance"], "host-7:9100");
    assert_eq!(
        firing["body"]["generator_url"],
        "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0"
    );

    // Alertmanager retries the same notification: the same receipt, nothing published.
    let (status, again) = post(&hub, Some(&token), &payload).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["repeated"], 2);
    assert_eq!(again["ids"], first["ids"]);
    let marker = json!({"event_type": "system", "message": "MARKER"});
    assert_eq!(hub.publish(&marker).await.0, 202);
    assert_eq!(
        next_json(&mut ws).await["message"],
        "MARKER",
        "no second copy of either alert"
    );
}

#[tokio::test]
async fn malformed_payloads_get_400_so_alertmanager_does_not_retry_them() {
    let hub = enabled_hub().await;
    let token = hub.publisher();
    let mut old = notification();
    old["version"] = json!("3");
    let mut odd = notification();
    odd["alerts"][0]["status"] = json!("pending");
    let mut no_alerts = notification();
    no_alerts.as_object_mut().expect("object").remove("alerts");
    for (body, says) in [
        ("not json".to_owned(), "not an Alertmanager webhook payload"),
        (old.to_string(), "version \"3\""),
        (odd.to_string(), "alert 0: status \"pending\""),
        (no_alerts.to_string(), "missing field `alerts`"),
    ] {
        let (status, answer) = post(&hub, Some(&token), &body).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("bad_request")),
            "{answer}"
        );
        let message = answer["message"].as_str().unwrap_or("");
        assert!(message.contains(says), "{message}");
    }
    let (_, page) = hub.history("event_type=system").await;
    assert_eq!(page["last_seq"], 0, "nothing was published");
}

#[tokio::test]
async fn the_receiver_is_authenticated_like_publish_and_off_by_default() {
    let hub = enabled_hub().await;
    let payload = notification().to_string();
    assert_eq!(post(&hub, None, &payload).await.0, 401);
    let reader = hub.token("reader", &[READ_ONLY]);
    assert_eq!(post(&hub, Some(&reader), &payload).await.0, 403);
    let off = TestHub::start().await;
    let (status, body) = post(&off, Some(&off.publisher()), &payload).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}
