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
    eventually("the slot to be freed", || hub.state.ip_slots.is_empty()).await;
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
    let hub = TestHub::start_with(|s| s.admission.max_connections_per_ip = 3).await;
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
    let hub =
        TestHub::start_with(|s| s.admission.trusted_proxies = vec!["127.0.0.0/8".into()]).await;
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
