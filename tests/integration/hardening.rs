//! Attacks and faults: forged tokens, protocol abuse, admission races, churn. Each test checks
//! the refusal and that nothing else was harmed (no slot or registry entry left behind).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use events_hub::config::{EVENTS_PUBLISH, READ_ONLY};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::common::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
}

fn far_future() -> u64 {
    jsonwebtoken::get_current_timestamp() + 3600
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("sign")
}

/// A token with `alg: none` and no signature, built by hand as an attacker would.
fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}

async fn status_for(hub: &TestHub, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    let result = hub
        .handshake(ip(1), "/v1/ws/subscribe", &[("authorization", &auth)])
        .await;
    match result {
        Ok(ws) => {
            close(ws).await;
            101
        }
        Err(_) => refused_status(&result).0,
    }
}

#[tokio::test]
async fn forged_and_broken_tokens_get_401() {
    let hub = TestHub::start().await;
    let secret = EncodingKey::from_secret(SECRET.as_bytes());
    let good = json!({"sub": "alice", "exp": far_future(), "claims": [READ_ONLY]});
    let valid = sign(Algorithm::HS256, &secret, &good);
    let mut tampered: Vec<&str> = valid.split('.').collect();
    let forged_body = URL_SAFE_NO_PAD
        .encode(json!({"sub": "alice", "exp": far_future(), "roles": ["SUPER_USER"]}).to_string());
    tampered[1] = &forged_body;
    let cases = [
        ("alg none", unsigned(&good)),
        ("tampered payload", tampered.join(".")),
        (
            "other HMAC algorithm",
            sign(Algorithm::HS512, &secret, &good),
        ),
        (
            "not yet valid",
            sign(
                Algorithm::HS256,
                &secret,
                &json!({"sub": "a", "exp": far_future(), "nbf": far_future() - 60, "claims": [READ_ONLY]}),
            ),
        ),
        (
            "expired",
            sign(
                Algorithm::HS256,
                &secret,
                &json!({"sub": "a", "exp": 1_000_000_000, "claims": [READ_ONLY]}),
            ),
        ),
        (
            "no exp",
            sign(
                Algorithm::HS256,
                &secret,
                &json!({"sub": "a", "claims": [READ_ONLY]}),
            ),
        ),
        (
            "no sub",
            sign(
                Algorithm::HS256,
                &secret,
                &json!({"exp": far_future(), "claims": [READ_ONLY]}),
            ),
        ),
        ("empty", String::new()),
        (
            "oversized",
            format!("{}.{}.x", "a".repeat(5000), "b".repeat(5000)),
        ),
        ("garbage", "%%%.###.@@@".to_owned()),
    ];
    assert_eq!(status_for(&hub, &valid).await, 101, "positive control");
    for (name, token) in cases {
        assert_eq!(status_for(&hub, &token).await, 401, "{name}");
    }
    eventually("no slot held", || hub.state.admission.is_empty()).await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let hub = TestHub::start_with(|s| {
        s.auth.jwt_issuer = "https://issuer.example".into();
        s.auth.jwt_audience = "events-hub".into();
    })
    .await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let token = |iss: &str, aud: &str| {
        sign(
            Algorithm::HS256,
            &key,
            &json!({"sub": "a", "exp": far_future(), "iss": iss, "aud": aud, "claims": [READ_ONLY]}),
        )
    };
    assert_eq!(
        status_for(&hub, &token("https://issuer.example", "events-hub")).await,
        101
    );
    assert_eq!(
        status_for(&hub, &token("https://evil.example", "events-hub")).await,
        401
    );
    assert_eq!(
        status_for(&hub, &token("https://issuer.example", "other")).await,
        401
    );
    let no_iss = sign(
        Algorithm::HS256,
        &key,
        &json!({"sub": "a", "exp": far_future(), "aud": "events-hub", "claims": [READ_ONLY]}),
    );
    assert_eq!(
        status_for(&hub, &no_iss).await,
        401,
        "iss is required once configured"
    );
    let no_aud = sign(
        Algorithm::HS256,
        &key,
        &json!({"sub": "a", "exp": far_future(), "iss": "https://issuer.example", "claims": [READ_ONLY]}),
    );
    assert_eq!(
        status_for(&hub, &no_aud).await,
        401,
        "aud is required once configured"
    );
}

#[tokio::test]
async fn rs256_is_pinned_against_hmac_key_confusion() {
    let hub = TestHub::start_with(|s| {
        s.auth.jwt_algorithm = jsonwebtoken::Algorithm::RS256;
        s.auth.jwt_public_key_file = format!("{FIXTURES}/rsa_public.pem");
    })
    .await;
    let claims = json!({"sub": "alice", "exp": far_future(), "claims": [READ_ONLY]});
    let private = EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).expect("rsa key");
    assert_eq!(
        status_for(&hub, &sign(Algorithm::RS256, &private, &claims)).await,
        101
    );
    // The classic confusion: HS256 "signed" with the public key's PEM bytes as the secret.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&fixture("rsa_public.pem")),
        &claims,
    );
    assert_eq!(status_for(&hub, &confused).await, 401);
    // Another asymmetric algorithm than the configured one.
    let es = EncodingKey::from_ec_pem(&fixture("ec_private.pem")).expect("ec key");
    assert_eq!(
        status_for(&hub, &sign(Algorithm::ES256, &es, &claims)).await,
        401
    );
    assert_eq!(status_for(&hub, &unsigned(&claims)).await, 401);
}

#[tokio::test]
async fn es256_tokens_verify_with_the_configured_public_key() {
    let hub = TestHub::start_with(|s| {
        s.auth.jwt_algorithm = jsonwebtoken::Algorithm::ES256;
        s.auth.jwt_public_key_file = format!("{FIXTURES}/ec_public.pem");
    })
    .await;
    let claims =
        json!({"sub": "alice", "exp": far_future(), "claims": [READ_ONLY, EVENTS_PUBLISH]});
    let es = EncodingKey::from_ec_pem(&fixture("ec_private.pem")).expect("ec key");
    assert_eq!(
        status_for(&hub, &sign(Algorithm::ES256, &es, &claims)).await,
        101
    );
    let hs = EncodingKey::from_secret(SECRET.as_bytes());
    assert_eq!(
        status_for(&hub, &sign(Algorithm::HS256, &hs, &claims)).await,
        401
    );
}

fn rand_mask() -> [u8; 4] {
    let n = uuid::Uuid::new_v4().as_u128();
    (n as u32).to_le_bytes()
}

/// Writes one client frame (masked, as RFC 6455 requires of clients) straight to the socket.
async fn write_frame(ws: &mut Ws, opcode: OpCode, payload: &[u8], fin: bool) {
    let frame = Frame::message(payload.to_vec(), opcode, fin);
    write_raw(ws, frame).await;
}

async fn write_raw(ws: &mut Ws, mut frame: Frame) {
    frame.header_mut().mask = Some(rand_mask());
    let mut bytes = Vec::new();
    frame.format(&mut bytes).expect("format frame");
    match ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => {
            tcp.write_all(&bytes).await.expect("write")
        }
        _ => unreachable!("plain TCP in tests"),
    }
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let hub = TestHub::start().await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "health").await;
    write_frame(
        &mut ws,
        OpCode::Data(Data::Text),
        b"{\"x\":\"\xff\xfe\"}",
        true,
    )
    .await;
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1007);
    eventually("the slot to be freed", || hub.state.admission.is_empty()).await;
}

#[tokio::test]
async fn a_fragmented_message_with_an_interleaved_ping_is_reassembled() {
    let hub = TestHub::start().await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "health").await;
    let message = br#"{"event_type":"health","message":"ping","id":"frag-1"}"#;
    let (a, rest) = message.split_at(10);
    let (b, c) = rest.split_at(20);
    write_frame(&mut ws, OpCode::Data(Data::Text), a, false).await;
    write_frame(&mut ws, OpCode::Data(Data::Continue), b, false).await;
    // Control frames may come between fragments (RFC 6455 5.4).
    write_raw(&mut ws, Frame::ping(&b"mid"[..])).await;
    write_frame(&mut ws, OpCode::Data(Data::Continue), c, true).await;
    let mut got_pong_frame = false;
    let reply = loop {
        match next_message(&mut ws).await {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"mid");
                got_pong_frame = true;
            }
            Message::Text(text) => {
                break serde_json::from_str::<Value>(text.as_str()).expect("json");
            }
            Message::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(reply["message"], "pong");
    assert_eq!(reply["ref_id"], "frag-1");
    // The control frame's answer may follow the reply; either way it must come.
    if !got_pong_frame {
        match next_message(&mut ws).await {
            Message::Pong(payload) => assert_eq!(&payload[..], b"mid"),
            other => panic!("expected the pong to our ping, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_continuation_without_a_start_is_a_protocol_error() {
    let hub = TestHub::start().await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "").await;
    write_frame(&mut ws, OpCode::Data(Data::Continue), b"orphan", true).await;
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1002);
    eventually("the slot to be freed", || hub.state.admission.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_simultaneous_handshakes_admit_exactly_the_limit_every_time() {
    for limit in [1u32, 3] {
        let hub = TestHub::start_with(|s| {
            s.admission.max_connections_per_ip = std::num::NonZero::new(limit).expect("positive")
        })
        .await;
        let token = hub.reader("racer");
        for round in 0..100 {
            let source = ip(round);
            let results =
                futures_util::future::join_all((0..50).map(|_| hub.connect(source, &token, "")))
                    .await;
            let mut accepted = Vec::new();
            for result in results {
                match result {
                    Ok(ws) => accepted.push(ws),
                    Err(_) => assert_eq!(refused_status(&result).0, 409),
                }
            }
            assert_eq!(accepted.len() as u32, limit, "limit {limit}, round {round}");
            for ws in accepted {
                close(ws).await;
            }
        }
        eventually("every slot freed", || hub.state.admission.is_empty()).await;
        assert_eq!(hub.state.hub.client_count(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_with_resets_and_half_open_sockets_leaves_nothing_behind() {
    const CYCLES: u32 = 10_000;
    const CONCURRENCY: u32 = 50;
    events_hub::server::raise_open_files_limit();
    let hub = TestHub::start_with(|s| {
        s.admission.max_connections = std::num::NonZero::new(20_000).expect("positive");
        s.heartbeat.ping_interval_secs = std::num::NonZero::new(1).expect("positive");
        s.heartbeat.idle_timeout_secs = std::num::NonZero::new(2).expect("positive");
    })
    .await;
    let token = hub.reader("churner");
    let mut half_open = Vec::new();
    for wave in 0..CYCLES / CONCURRENCY {
        let attempts = (0..CONCURRENCY).map(|i| {
            let n = wave * CONCURRENCY + i;
            let hub = &hub;
            let token = &token;
            async move {
                let mut ws = hub.connect(ip(n), token, "pdfm").await.expect("handshake");
                let welcome = next_json(&mut ws).await;
                assert_eq!(welcome["event_type"], "global");
                match n % 4 {
                    // Half end cleanly.
                    0 | 1 => {
                        close(ws).await;
                        None
                    }
                    // A quarter vanish with a TCP reset (linger 0, no close frame).
                    2 => {
                        if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_ref() {
                            let _ = tcp.set_zero_linger();
                        }
                        drop(ws);
                        None
                    }
                    // A quarter go silent: open at the TCP level, never reading or answering.
                    _ => Some(ws),
                }
            }
        });
        half_open.extend(
            futures_util::future::join_all(attempts)
                .await
                .into_iter()
                .flatten(),
        );
    }
    // The hub times the silent ones out by itself (no pong within idle_timeout).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while hub.state.hub.client_count() > 0 || !hub.state.admission.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "left behind: {} clients, {} IPs",
            hub.state.hub.client_count(),
            hub.state.admission.live_ips()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(half_open.len() as u32, CYCLES / 4);
    drop(half_open);
    // Still fully working afterwards.
    let (mut ws, _) = hub.subscribe(ip(CYCLES + 1), "after", "pdfm").await;
    hub.publish(&json!({"event_type": "pdfm", "message": "AFTER_CHURN"}))
        .await;
    assert_eq!(next_json(&mut ws).await["message"], "AFTER_CHURN");
    let _ = ws.send(Message::Close(None)).await;
    let _ = ws.next().await;
}
