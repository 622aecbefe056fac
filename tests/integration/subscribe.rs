//! `GET /v1/ws/subscribe`: authentication, authorization, channel parsing and the welcome frame.

use events_hub::auth::api_key_digest;
use events_hub::config::{ApiKeySettings, EVENTS_PUBLISH, READ_ONLY};
use serde_json::Value;

use crate::common::*;

fn assert_error_body(body: &Value, code: u16) {
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn welcome_is_the_first_frame_with_the_spec_shape() {
    let hub = TestHub::start().await;
    let mut ws = hub
        .connect(ip(1), &hub.reader("alice"), "pdfm,health,orchestrator")
        .await
        .expect("handshake");
    let raw = match next_message(&mut ws).await {
        tokio_tungstenite::tungstenite::Message::Text(t) => t.to_string(),
        other => panic!("first frame must be text, got {other:?}"),
    };
    let welcome: Value = serde_json::from_str(&raw).expect("json");
    let id = welcome["id"].as_str().expect("id");
    assert_eq!(id.len(), 64);
    assert!(
        id.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
    assert_eq!(welcome["event_type"], "global");
    assert_eq!(
        welcome["message"],
        "WebSocket connection established subscribed to global by default"
    );
    let ts = welcome["timestamp"].as_str().expect("timestamp");
    assert!(ts.ends_with('Z') && ts.len() == 27, "{ts}");
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok());
    assert_eq!(
        welcome["body"]["subscriptions"],
        serde_json::json!(["pdfm", "health", "orchestrator", "global"])
    );
    let client_id = welcome["body"]["client_id"].as_str().expect("client_id");
    let parsed = uuid::Uuid::parse_str(client_id).expect("uuid");
    assert_eq!(parsed.get_version_num(), 4);
    assert!(welcome["body"].get("ignored_event_types").is_none());
    // Envelope keys in the SPEC's order.
    let positions: Vec<usize> = [
        "\"id\"",
        "\"event_type\"",
        "\"timestamp\"",
        "\"message\"",
        "\"body\"",
    ]
    .iter()
    .map(|k| raw.find(k).expect("key"))
    .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{raw}");
}

#[tokio::test]
async fn event_types_are_trimmed_case_folded_deduplicated_and_unknown_ones_reported() {
    let hub = TestHub::start().await;
    let (_ws, welcome) = hub
        .subscribe(ip(1), "alice", "%20PDFM,health,,pdfm%20,Bogus,global,nope")
        .await;
    assert_eq!(
        welcome["body"]["subscriptions"],
        serde_json::json!(["pdfm", "health", "global"])
    );
    assert_eq!(
        welcome["body"]["ignored_event_types"],
        serde_json::json!(["bogus", "nope"])
    );
}

#[tokio::test]
async fn missing_event_types_means_global_only() {
    let hub = TestHub::start().await;
    let mut ws = hub
        .handshake(
            ip(1),
            "/api/v1/ws/subscribe",
            &[("authorization", &format!("Bearer {}", hub.reader("a")))],
        )
        .await
        .expect("handshake under /api");
    let welcome = next_json(&mut ws).await;
    assert_eq!(
        welcome["body"]["subscriptions"],
        serde_json::json!(["global"])
    );
}

#[tokio::test]
async fn no_or_bad_credentials_get_401_with_www_authenticate_and_never_101() {
    let hub = TestHub::start().await;
    let wrong_secret = {
        use jsonwebtoken::{EncodingKey, Header};
        let claims =
            serde_json::json!({"sub": "eve", "exp": 4_000_000_000u64, "claims": [READ_ONLY]});
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"other"),
        )
        .expect("token")
    };
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no credentials", vec![]),
        (
            "garbage token",
            vec![("authorization", "Bearer not.a.jwt".into())],
        ),
        (
            "wrong secret",
            vec![("authorization", format!("Bearer {wrong_secret}"))],
        ),
        (
            "basic scheme",
            vec![("authorization", "Basic dXNlcjpwYXNz".into())],
        ),
        ("wrong api key", vec![("x-api-key", "nope".into())]),
    ];
    for (name, headers) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let result = hub.handshake(ip(1), "/v1/ws/subscribe", &headers).await;
        let (status, body) = refused_status(&result);
        assert_eq!(status, 401, "{name}");
        assert_error_body(&body, 401);
    }

    // An expired token (far beyond the 5 s leeway).
    use jsonwebtoken::{EncodingKey, Header};
    let old = serde_json::json!({"sub": "alice", "exp": 1_000_000_000u64, "claims": [READ_ONLY]});
    let old = jsonwebtoken::encode(
        &Header::default(),
        &old,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token");
    let result = hub
        .handshake(
            ip(1),
            "/v1/ws/subscribe",
            &[("authorization", &format!("Bearer {old}"))],
        )
        .await;
    assert_eq!(refused_status(&result).0, 401);

    // The header itself, on a plain HTTP request.
    let response = hub
        .http()
        .get(hub.url("/v1/ws/subscribe"))
        .send()
        .await
        .expect("request");
    assert_bearer_challenge(&response);
    // Refusals hold no slot and register nothing.
    assert!(hub.state.admission.is_empty());
    assert_eq!(hub.state.hub.client_count(), 0);
}

#[tokio::test]
async fn valid_credentials_without_read_only_get_403() {
    let hub = TestHub::start().await;
    let result = hub
        .connect(ip(1), &hub.token("pub", &[EVENTS_PUBLISH]), "pdfm")
        .await;
    let (status, body) = refused_status(&result);
    assert_eq!(status, 403);
    assert_error_body(&body, 403);
    assert!(hub.state.admission.is_empty());
}

#[tokio::test]
async fn super_user_role_holds_every_claim() {
    let hub = TestHub::start().await;
    let token = mint("root", &[], &["SUPER_USER"], 60);
    let mut ws = hub.connect(ip(1), &token, "pdfm").await.expect("handshake");
    assert_eq!(next_json(&mut ws).await["event_type"], "global");
}

#[tokio::test]
async fn api_key_and_query_token_authenticate() {
    let hub = TestHub::start_with(|s| {
        s.auth.api_keys = vec![
            ApiKeySettings {
                name: "ci-bot".into(),
                sha256: api_key_digest("s3cret-key"),
                claims: vec![READ_ONLY.into()],
            },
            ApiKeySettings {
                name: "pusher".into(),
                sha256: api_key_digest("push-only"),
                claims: vec![EVENTS_PUBLISH.into()],
            },
        ];
    })
    .await;
    let mut ws = hub
        .handshake(
            ip(1),
            "/v1/ws/subscribe?event_types=pdfm",
            &[("x-api-key", "s3cret-key")],
        )
        .await
        .expect("API key handshake");
    let welcome = next_json(&mut ws).await;
    assert_eq!(
        welcome["body"]["subscriptions"],
        serde_json::json!(["pdfm", "global"])
    );

    // The key without READ_ONLY: 403, not 101-then-silence.
    let result = hub
        .handshake(ip(2), "/v1/ws/subscribe", &[("x-api-key", "push-only")])
        .await;
    assert_eq!(refused_status(&result).0, 403);

    let token = hub.reader("browser");
    let mut ws = hub
        .handshake(
            ip(3),
            &format!("/v1/ws/subscribe?event_types=health&access_token={token}"),
            &[],
        )
        .await
        .expect("query token handshake");
    assert_eq!(
        next_json(&mut ws).await["body"]["subscriptions"],
        serde_json::json!(["health", "global"])
    );
}

#[tokio::test]
async fn authorization_query_parameter_authenticates_like_access_token() {
    let hub = TestHub::start().await;
    let token = hub.reader("console");
    let mut ws = hub
        .handshake(
            ip(1),
            &format!("/v1/ws/subscribe?event_types=pdfm&authorization=Bearer%20{token}"),
            &[],
        )
        .await
        .expect("authorization= handshake");
    assert_eq!(
        next_json(&mut ws).await["body"]["subscriptions"],
        serde_json::json!(["pdfm", "global"])
    );
    // Not `Bearer <token>`: refused, not read as a bare token.
    let result = hub
        .handshake(
            ip(2),
            &format!("/v1/ws/subscribe?authorization={token}"),
            &[],
        )
        .await;
    assert_eq!(refused_status(&result).0, 401);
    // The header keeps priority: a bad header is 401 even with a good query credential.
    let result = hub
        .handshake(
            ip(3),
            &format!("/v1/ws/subscribe?authorization=Bearer%20{token}"),
            &[("authorization", "Bearer junk")],
        )
        .await;
    assert_eq!(refused_status(&result).0, 401);
    // The first credential parameter wins, as with a repeated access_token.
    let result = hub
        .handshake(
            ip(4),
            &format!("/v1/ws/subscribe?authorization=Bearer%20junk&access_token={token}"),
            &[],
        )
        .await;
    assert_eq!(refused_status(&result).0, 401);
}

#[tokio::test]
async fn query_token_can_be_disabled() {
    let hub = TestHub::start_with(|s| s.auth.allow_query_token = false).await;
    let token = hub.reader("browser");
    let result = hub
        .handshake(
            ip(1),
            &format!("/v1/ws/subscribe?access_token={token}"),
            &[],
        )
        .await;
    assert_eq!(refused_status(&result).0, 401);
    let result = hub
        .handshake(
            ip(2),
            &format!("/v1/ws/subscribe?authorization=Bearer%20{token}"),
            &[],
        )
        .await;
    assert_eq!(refused_status(&result).0, 401);
}

#[tokio::test]
async fn a_plain_http_get_is_told_to_upgrade_and_holds_no_slot() {
    let hub = TestHub::start().await;
    let response = hub
        .http()
        .get(hub.url("/v1/ws/subscribe"))
        .bearer_auth(hub.reader("a"))
        .send()
        .await
        .expect("request");
    let (status, body) = json_response(response).await;
    assert_eq!(status, 426);
    assert_error_body(&body, 426);
    assert!(hub.state.admission.is_empty());
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_error_body() {
    let hub = TestHub::start().await;
    let (status, body) = hub.get("/nope").await;
    assert_eq!(status, 404);
    assert_error_body(&body, 404);
    let (status, body) = json_response(
        hub.http()
            .delete(hub.url("/v1/events"))
            .send()
            .await
            .expect("req"),
    )
    .await;
    assert_eq!(status, 405);
    assert_error_body(&body, 405);
    let (status, body) = hub.get("/api/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, _) = hub.get("/readyz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn access_token_counts_only_on_a_websocket_handshake() {
    let hub = TestHub::start().await;
    let token = hub.token("bot", &[READ_ONLY, EVENTS_PUBLISH]);
    let response = hub
        .http()
        .post(hub.url(&format!("/v1/events?access_token={token}")))
        .json(&serde_json::json!({"event_type": "pdfm", "message": "X"}))
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.status(),
        401,
        "plain HTTP requests must send a header"
    );
}

#[tokio::test]
async fn an_audience_array_is_accepted_when_it_contains_ours() {
    use jsonwebtoken::{EncodingKey, Header};
    let hub = TestHub::start_with(|s| s.auth.jwt_audience = "events-hub".into()).await;
    let claims = serde_json::json!({
        "sub": "alice",
        "exp": jsonwebtoken::get_current_timestamp() + 600,
        "aud": ["grafana", "events-hub"],
        "claims": [READ_ONLY],
    });
    let token = jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token");
    let mut ws = hub.connect(ip(1), &token, "").await.expect("handshake");
    assert_eq!(next_json(&mut ws).await["event_type"], "global");
}

#[tokio::test]
async fn a_repeated_event_types_parameter_subscribes_to_each_channel_once() {
    let hub = TestHub::start().await;
    let path = "/v1/ws/subscribe?event_types=pdfm&event_types=PDFM,pdfm&event_types=bogus,Bogus";
    let auth = format!("Bearer {}", hub.reader("alice"));
    let mut ws = hub
        .handshake(ip(1), path, &[("authorization", auth.as_str())])
        .await
        .expect("handshake");
    let welcome = next_json(&mut ws).await;
    assert_eq!(
        welcome["body"]["subscriptions"],
        serde_json::json!(["pdfm", "global"])
    );
    assert_eq!(
        welcome["body"]["ignored_event_types"],
        serde_json::json!(["bogus"])
    );
}
