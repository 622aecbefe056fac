//! Delivery guarantees: per-channel order, slow consumers, heartbeat, shutdown.

use std::time::Duration;

use events_hub::server::Stopped;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_keep_their_order_for_fifty_subscribers() {
    const EVENTS: u64 = 10_000;
    const SUBSCRIBERS: u32 = 50;
    const BATCH: u64 = 100;
    let hub = TestHub::start().await;
    let mut readers = Vec::new();
    for n in 0..SUBSCRIBERS {
        let (mut ws, _) = hub
            .subscribe(ip(100 + n), &format!("sub-{n}"), "pdfm")
            .await;
        readers.push(tokio::spawn(async move {
            for expected in 0..EVENTS {
                let event = next_json(&mut ws).await;
                assert_eq!(event["event_type"], "pdfm");
                assert_eq!(event["body"]["seq"], expected, "subscriber {n}");
            }
            ws
        }));
    }
    for start in (0..EVENTS).step_by(BATCH as usize) {
        let batch: Vec<Value> = (start..start + BATCH)
            .map(|seq| json!({"event_type": "pdfm", "message": "SEQ", "body": {"seq": seq}}))
            .collect();
        let (status, receipt) = hub.publish(&Value::Array(batch)).await;
        assert_eq!(status, 202);
        assert_eq!(receipt["recipients"], BATCH * u64::from(SUBSCRIBERS));
    }
    for reader in readers {
        let mut ws = reader.await.expect("reader saw every event in order");
        // Nothing duplicated after the last one.
        hub.publish(&json!({"event_type": "pdfm", "message": "END"}))
            .await;
        assert_eq!(next_json(&mut ws).await["message"], "END");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_closed_with_4008_and_others_keep_every_event() {
    const HEALTHY: u32 = 100;
    let hub =
        TestHub::start_with(|s| s.hub.send_queue = std::num::NonZero::new(64).expect("positive"))
            .await;
    let (mut stalled, _) = hub.subscribe(ip(1), "slow", "pdfm").await;
    let published = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    // How far each healthy reader got: the publisher never runs ahead of them, so they are
    // healthy by construction and only the stalled one can fall behind.
    let progress: std::sync::Arc<Vec<std::sync::atomic::AtomicU64>> =
        std::sync::Arc::new((0..HEALTHY).map(|_| Default::default()).collect());
    let mut readers = Vec::new();
    for n in 0..HEALTHY {
        let (mut healthy, _) = hub
            .subscribe(ip(10 + n), &format!("fast-{n}"), "pdfm")
            .await;
        let published = published.clone();
        let progress = progress.clone();
        readers.push(tokio::spawn(async move {
            let mut expected = 0u64;
            loop {
                let event = next_json(&mut healthy).await;
                if event["message"] == "DONE" {
                    assert_eq!(
                        expected,
                        published.load(std::sync::atomic::Ordering::SeqCst)
                    );
                    return expected;
                }
                assert_eq!(event["body"]["seq"], expected, "healthy subscriber {n}");
                expected += 1;
                progress[n as usize].store(expected, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }

    // Publish until the stalled client has been dropped from the registry (bounded).
    let pad = "x".repeat(1024);
    let mut seq = 0u64;
    for _ in 0..2_000 {
        if hub.state.hub.client_count() <= HEALTHY as usize {
            break;
        }
        let batch: Vec<Value> = (seq..seq + 50)
            .map(
                |s| json!({"event_type": "pdfm", "message": "SEQ", "body": {"seq": s, "pad": pad}}),
            )
            .collect();
        let (status, _) = hub.publish(&Value::Array(batch)).await;
        assert_eq!(status, 202);
        seq += 50;
        published.store(seq, std::sync::atomic::Ordering::SeqCst);
        eventually("the healthy readers to catch up", || {
            progress
                .iter()
                .all(|p| p.load(std::sync::atomic::Ordering::SeqCst) >= seq)
        })
        .await;
    }
    assert_eq!(
        hub.state.hub.client_count(),
        HEALTHY as usize,
        "the stalled subscriber, and only it, was disconnected"
    );
    // The stalled client, reading at last, finds what was buffered and then the 4008 close.
    let (code, reason) = expect_close(&mut stalled).await;
    assert_eq!((code, reason.as_str()), (4008, "slow consumer"));
    eventually("the slot to be freed", || {
        hub.state.admission.live_ips() == HEALTHY as usize
    })
    .await;

    hub.publish(&json!({"event_type": "pdfm", "message": "DONE"}))
        .await;
    for reader in readers {
        assert_eq!(reader.await.expect("healthy reader"), seq);
    }
}

#[tokio::test]
async fn a_silent_client_is_closed_with_4000_after_the_idle_timeout() {
    let hub = TestHub::start_with(|s| {
        s.heartbeat.ping_interval_secs = std::num::NonZero::new(3600).expect("positive");
        s.heartbeat.idle_timeout_secs = std::num::NonZero::new(1).expect("positive");
    })
    .await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "").await;
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (4000, "heartbeat timeout"));
    eventually("the slot to be freed", || hub.state.admission.is_empty()).await;
}

#[tokio::test]
async fn the_hub_pings_and_a_client_that_answers_stays_connected() {
    let hub = TestHub::start_with(|s| {
        s.heartbeat.ping_interval_secs = std::num::NonZero::new(1).expect("positive");
        s.heartbeat.idle_timeout_secs = std::num::NonZero::new(2).expect("positive");
    })
    .await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "pdfm").await;
    // tungstenite answers each ping with a pong as it reads; three pings span past the idle
    // timeout, so the pongs are what keeps the socket open.
    let mut pings = 0;
    while pings < 3 {
        match next_message(&mut ws).await {
            Message::Ping(_) => pings += 1,
            other => panic!("expected only pings, got {other:?}"),
        }
    }
    hub.publish(&json!({"event_type": "pdfm", "message": "STILL_OPEN"}))
        .await;
    assert_eq!(next_json(&mut ws).await["message"], "STILL_OPEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_announces_then_closes_every_socket_with_1001() {
    let mut hub = TestHub::start().await;
    let mut sockets = Vec::new();
    for n in 0..5 {
        let (ws, _) = hub.subscribe(ip(n), &format!("c{n}"), "pdfm").await;
        sockets.push(ws);
    }
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let notice = next_json(&mut ws).await;
                assert_eq!(notice["event_type"], "global");
                assert_eq!(notice["message"], "SERVER_SHUTDOWN");
                expect_close(&mut ws).await
            })
        })
        .collect();
    let started = std::time::Instant::now();
    assert_eq!(hub.shutdown().await, Stopped::Drained);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "within the grace period"
    );
    for reader in readers {
        let (code, reason) = reader.await.expect("reader");
        assert_eq!((code, reason.as_str()), (1001, "server shutdown"));
    }
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(hub.addr).await.is_err());
}

#[tokio::test]
async fn a_client_that_closes_first_is_answered_and_forgotten() {
    let hub = TestHub::start().await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "pdfm").await;
    ws.close(None).await.expect("close");
    // The server answers the close, then the stream ends.
    let mut saw_close = false;
    while let Some(Ok(message)) = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("in time")
    {
        saw_close |= matches!(message, Message::Close(_));
    }
    assert!(saw_close);
    assert!(hub.state.admission.is_empty());
    assert_eq!(hub.state.hub.client_count(), 0);
}
