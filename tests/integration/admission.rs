//! Per-IP admission: one live socket per client IP, atomic, freed however the socket ends;
//! X-Forwarded-For believed only from trusted proxies.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn second_handshake_from_one_ip_gets_409_and_the_first_is_unaffected() {
    let hub = TestHub::start().await;
    let (mut first, _) = hub.subscribe(ip(7), "alice", "pdfm").await;

    let second = hub.connect(ip(7), &hub.reader("alice"), "pdfm").await;
    let (status, body) = refused_status(&second);
    assert_eq!(status, 409);
    assert_eq!(body["code"], 409);
    assert_eq!(
        body["message"],
        format!(
            "IP address {} already has an active WebSocket connection",
            ip(7)
        )
    );

    // The first connection still receives events.
    let (status, _) = hub
        .publish(&json!({"event_type": "pdfm", "message": "VM_STATE_CHANGED"}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(next_json(&mut first).await["message"], "VM_STATE_CHANGED");

    // Another IP is not affected by this one's slot.
    let (_other, _) = hub.subscribe(ip(8), "bob", "pdfm").await;

    // Once the first closes, its slot is free again.
    close(first).await;
    let (_third, welcome) = hub.subscribe(ip(7), "alice", "pdfm").await;
    assert_eq!(welcome["event_type"], "global");
}

#[tokio::test]
async fn slot_is_freed_when_the_client_vanishes_without_a_close() {
    let hub = TestHub::start().await;
    let (ws, _) = hub.subscribe(ip(3), "alice", "").await;
    drop(ws); // TCP close, no WebSocket close frame
    eventually("the slot to be freed", || hub.state.admission.is_empty()).await;
    eventually("the registry to be empty", || {
        hub.state.hub.client_count() == 0
    })
    .await;
    let (_again, _) = hub.subscribe(ip(3), "alice", "").await;
}

#[tokio::test]
async fn twenty_simultaneous_handshakes_from_one_ip_admit_exactly_one() {
    let hub = TestHub::start().await;
    let token = hub.reader("alice");
    let attempts = (0..20).map(|_| hub.connect(ip(9), &token, "pdfm"));
    let results = futures_util::future::join_all(attempts).await;
    let mut accepted = Vec::new();
    let mut conflicts = 0;
    for result in results {
        match result {
            Ok(ws) => accepted.push(ws),
            Err(_) => {
                let (status, _) = refused_status(&result);
                assert_eq!(status, 409);
                conflicts += 1;
            }
        }
    }
    assert_eq!(accepted.len(), 1, "exactly one 101");
    assert_eq!(conflicts, 19);
    let ws = accepted.first_mut().expect("one socket");
    assert_eq!(next_json(ws).await["event_type"], "global");
}

#[tokio::test]
async fn the_limit_is_configurable() {
    let hub = TestHub::start_with(|s| {
        s.admission.max_connections_per_ip = std::num::NonZero::new(3).expect("positive")
    })
    .await;
    let token = hub.reader("alice");
    let results =
        futures_util::future::join_all((0..10).map(|_| hub.connect(ip(4), &token, ""))).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let hub = TestHub::start().await;
    let auth = format!("Bearer {}", hub.reader("alice"));
    let headers = [
        ("authorization", auth.as_str()),
        ("x-forwarded-for", "203.0.113.1"),
    ];
    let _first = hub
        .handshake(ip(5), "/v1/ws/subscribe", &headers)
        .await
        .expect("first handshake");
    // A forged, different X-Forwarded-For from the same peer changes nothing.
    let forged = [
        ("authorization", auth.as_str()),
        ("x-forwarded-for", "203.0.113.2"),
    ];
    let second = hub.handshake(ip(5), "/v1/ws/subscribe", &forged).await;
    let (status, body) = refused_status(&second);
    assert_eq!(status, 409);
    assert_eq!(
        body["message"],
        format!(
            "IP address {} already has an active WebSocket connection",
            ip(5)
        )
    );
}

#[tokio::test]
async fn x_forwarded_for_from_a_trusted_proxy_names_the_client() {
    let hub = TestHub::start_with(|s| {
        s.admission.trusted_proxies = vec!["127.0.0.0/8".parse().expect("CIDR")]
    })
    .await;
    let auth = format!("Bearer {}", hub.reader("alice"));
    let via = |xff: &'static str| {
        [
            ("authorization", auth.clone()),
            ("x-forwarded-for", xff.to_owned()),
        ]
    };
    let connect = |headers: [(&'static str, String); 2]| {
        let hub = &hub;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            hub.handshake(ip(6), "/v1/ws/subscribe", &headers).await
        }
    };
    // Two clients behind one proxy are two IPs.
    let _a = connect(via("198.51.100.1")).await.expect("client a");
    let _b = connect(via("198.51.100.2, 127.0.0.1"))
        .await
        .expect("client b behind two proxies");
    // The same client through the proxy again: 409 naming the forwarded address.
    let again = connect(via("198.51.100.1")).await;
    let (status, body) = refused_status(&again);
    assert_eq!(status, 409);
    assert_eq!(
        body["message"],
        "IP address 198.51.100.1 already has an active WebSocket connection"
    );
}

#[tokio::test]
async fn the_total_connection_cap_answers_503_with_the_error_body() {
    let hub = TestHub::start_with(|s| {
        s.admission.max_connections = std::num::NonZero::new(2).expect("positive")
    })
    .await;
    let (_a, _) = hub.subscribe(ip(1), "a", "").await;
    let (b, _) = hub.subscribe(ip(2), "b", "").await;
    let third = hub.connect(ip(3), &hub.reader("c"), "").await;
    let (status, body) = refused_status(&third);
    assert_eq!((status, body["code"].as_u64()), (503, Some(503)));
    assert_eq!(body["error"], "unavailable");
    // Refused handshakes hold nothing; a freed place is reusable.
    assert_eq!(hub.state.admission.live_total(), 2);
    close(b).await;
    let (_c, _) = hub.subscribe(ip(3), "c", "").await;
}

#[tokio::test]
async fn the_per_identity_cap_answers_429() {
    let hub = TestHub::start_with(|s| s.admission.max_connections_per_identity = 2).await;
    let (_a1, _) = hub.subscribe(ip(1), "alice", "").await;
    let (_a2, _) = hub.subscribe(ip(2), "alice", "").await;
    let third = hub.connect(ip(3), &hub.reader("alice"), "").await;
    let (status, body) = refused_status(&third);
    assert_eq!(status, 429);
    assert_eq!(body["error"], "too_many_connections");
    // Another identity from that IP is fine, and the IP slot was given back.
    let (_b, _) = hub.subscribe(ip(3), "bob", "").await;
    assert_eq!(hub.state.admission.live_total(), 3);
}

#[tokio::test]
async fn a_browser_origin_outside_the_allowlist_gets_403() {
    let hub = TestHub::start_with(|s| {
        s.admission.allowed_origins = vec!["https://grafana.example.com".into()];
    })
    .await;
    let auth = format!("Bearer {}", hub.reader("alice"));
    let evil = hub
        .handshake(
            ip(1),
            "/v1/ws/subscribe",
            &[("authorization", &auth), ("origin", "https://evil.example")],
        )
        .await;
    let (status, body) = refused_status(&evil);
    assert_eq!(status, 403);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("evil.example"))
    );
    assert!(hub.state.admission.is_empty());
    let _good = hub
        .handshake(
            ip(1),
            "/v1/ws/subscribe",
            &[
                ("authorization", &auth),
                ("origin", "https://grafana.example.com"),
            ],
        )
        .await
        .expect("allowed origin");
    // No Origin at all (wscat, websocat, scripts): allowed.
    let _cli = hub
        .handshake(ip(2), "/v1/ws/subscribe", &[("authorization", &auth)])
        .await
        .expect("no origin");
}

#[tokio::test]
async fn a_client_stalling_in_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = TestHub::start_with(|s| {
        s.server.header_read_timeout_secs = std::num::NonZero::new(1).expect("positive")
    })
    .await;
    let mut stalled = tcp_from(ip(1), hub.addr).await;
    stalled
        .write_all(b"GET /v1/ws/subscribe HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("partial headers");
    // The server ends the connection (EOF or reset, perhaps after a 408) before our deadline.
    let mut seen = Vec::new();
    let outcome = tokio::time::timeout(WAIT, stalled.read_to_end(&mut seen))
        .await
        .expect("the server cuts the stalled client off");
    assert!(
        outcome.is_err() || seen.is_empty() || seen.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    // Meanwhile others are served.
    let (_ws, _) = hub.subscribe(ip(2), "bob", "").await;
}

#[tokio::test]
async fn a_body_trickling_in_too_slowly_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = TestHub::start_with(|s| {
        s.server.body_read_timeout_secs = std::num::NonZero::new(1).expect("positive")
    })
    .await;
    let mut slow = tcp_from(ip(1), hub.addr).await;
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"event_type\"",
        hub.publisher()
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, slow.read_to_end(&mut response))
        .await
        .expect("answered in time");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":408"), "{text}");
}

#[tokio::test]
async fn forwarded_addresses_are_normalised_and_malformed_hops_not_believed() {
    let hub = TestHub::start_with(|s| {
        s.admission.trusted_proxies = vec!["127.0.0.0/8".parse().expect("CIDR")]
    })
    .await;
    let auth = format!("Bearer {}", hub.reader("alice"));
    let via = |xff: &str| {
        let auth = auth.clone();
        let xff = xff.to_owned();
        let hub = &hub;
        async move {
            hub.handshake(
                ip(6),
                "/v1/ws/subscribe",
                &[("authorization", &auth), ("x-forwarded-for", &xff)],
            )
            .await
        }
    };
    // An IPv4-mapped IPv6 address with a port is the plain IPv4 client...
    let _mapped = via("[::ffff:198.51.100.7]:4711").await.expect("first");
    // ...so the same client written with a port only is the same IP: 409 naming it.
    let again = via("198.51.100.7:80").await;
    let (status, body) = refused_status(&again);
    assert_eq!(status, 409);
    assert_eq!(
        body["message"],
        "IP address 198.51.100.7 already has an active WebSocket connection"
    );
    // A malformed hop is not believed: the client is the last address that can be (here the
    // proxy itself), never whatever the garbage would have claimed.
    let _garbage = via("not-an-ip").await.expect("falls back to the proxy");
    let second = via("also garbage, ").await;
    let (status, body) = refused_status(&second);
    assert_eq!(status, 409);
    assert_eq!(
        body["message"],
        format!(
            "IP address {} already has an active WebSocket connection",
            ip(6)
        )
    );
    assert_eq!(hub.state.admission.live_ips(), 2);
}
