//! `GET /metrics`: each metric moves when its event happens (scrape, act, scrape again), on a
//! hub of its own (every hub has its own registry, so the changes are exact).

use std::collections::HashMap;

use events_hub::config::READ_ONLY;
use serde_json::{Value, json};

use crate::common::*;

/// One scrape: `name{labels}` → value, exactly as the exposition writes them.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    fn get(&self, series: &str) -> f64 {
        *self
            .0
            .get(series)
            .unwrap_or_else(|| panic!("{series} is not in the scrape"))
    }

    /// How much `series` grew since `before`.
    fn delta(&self, before: &Scrape, series: &str) -> f64 {
        self.get(series) - before.0.get(series).copied().unwrap_or(0.0)
    }
}

async fn scrape_at(url: &str) -> Scrape {
    let response = http_client().get(url).send().await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap_or("");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.expect("body");
    assert!(
        text.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF"
    );
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let value = value.parse::<f64>().expect("a number");
            (series.to_owned(), value)
        })
        .collect();
    Scrape(samples)
}

async fn scrape(hub: &TestHub) -> Scrape {
    scrape_at(&hub.url("/metrics")).await
}

const PUBLISHED: &str = "events_hub_events_published_total{channel=\"pdfm\"}";
const DELIVERED: &str = "events_hub_events_delivered_total{channel=\"pdfm\"}";

#[tokio::test]
async fn publishing_and_delivering_move_their_counters() {
    let hub = TestHub::start().await;
    let before = scrape(&hub).await;
    let (mut a, _) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let (mut b, _) = hub.subscribe(ip(2), "bob", "pdfm,orchestrator").await;
    let batch: Vec<Value> = (0..3)
        .map(|i| json!({"event_type": "pdfm", "message": format!("E{i}")}))
        .collect();
    assert_eq!(hub.publish(&Value::Array(batch)).await.0, 202);
    for ws in [&mut a, &mut b] {
        for i in 0..3 {
            assert_eq!(next_json(ws).await["message"], format!("E{i}"));
        }
    }
    let after = scrape(&hub).await;
    assert_eq!(after.delta(&before, PUBLISHED), 3.0);
    assert_eq!(after.delta(&before, DELIVERED), 6.0);
    assert_eq!(
        after.delta(
            &before,
            "events_hub_events_published_total{channel=\"orchestrator\"}"
        ),
        0.0
    );
    assert_eq!(after.delta(&before, "events_hub_sockets_opened_total"), 2.0);
    assert_eq!(after.get("events_hub_connections"), 2.0);
    assert_eq!(after.get("events_hub_subscriptions{channel=\"pdfm\"}"), 2.0);
    assert_eq!(
        after.get("events_hub_subscriptions{channel=\"orchestrator\"}"),
        1.0
    );
    assert_eq!(
        after.get("events_hub_subscriptions{channel=\"global\"}"),
        2.0
    );
    assert_eq!(
        after.get("events_hub_history_events{channel=\"pdfm\"}"),
        3.0
    );
    assert!(after.get("events_hub_history_bytes{channel=\"pdfm\"}") > 100.0);
    // At least one latency sample per socket (one per wake-up, never one per frame beyond it).
    let samples = after.delta(&before, "events_hub_delivery_latency_seconds_count");
    assert!((2.0..=6.0).contains(&samples), "{samples} latency samples");
    assert_eq!(
        after.get("events_hub_delivery_latency_seconds_count"),
        after.get("events_hub_delivery_latency_seconds_bucket{le=\"+Inf\"}")
    );

    close(a).await;
    eventually("alice's socket to end", || {
        hub.state.hub.client_count() == 1
    })
    .await;
    let closed = scrape(&hub).await;
    assert_eq!(
        closed.delta(&after, "events_hub_socket_closes_total{code=\"peer\"}"),
        1.0
    );
    assert_eq!(closed.get("events_hub_connections"), 1.0);
}

#[tokio::test]
async fn refused_handshakes_are_counted_by_status() {
    let hub = TestHub::start().await;
    let before = scrape(&hub).await;
    let no_token = hub.handshake(ip(1), "/v1/ws/subscribe", &[]).await;
    assert_eq!(refused_status(&no_token).0, 401);
    let publisher_only = hub.connect(ip(1), &hub.publisher(), "pdfm").await;
    assert_eq!(refused_status(&publisher_only).0, 403);
    let (_held, _) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let same_ip = hub.connect(ip(1), &hub.reader("bob"), "pdfm").await;
    assert_eq!(refused_status(&same_ip).0, 409);
    let after = scrape(&hub).await;
    for (status, count) in [("401", 1.0), ("403", 1.0), ("409", 1.0), ("429", 0.0)] {
        let series = format!("events_hub_handshakes_refused_total{{status=\"{status}\"}}");
        assert_eq!(after.delta(&before, &series), count, "{series}");
    }
    assert_eq!(after.delta(&before, "events_hub_sockets_opened_total"), 1.0);
}

#[tokio::test]
async fn resumes_are_counted_by_outcome() {
    let hub = TestHub::start().await;
    let (_, welcome) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let epoch = welcome["body"]["epoch"]
        .as_u64()
        .expect("the welcome names the epoch");
    assert_eq!(
        hub.publish(&json!({"event_type": "pdfm", "message": "ONE"}))
            .await
            .0,
        202
    );
    let before = scrape(&hub).await;
    let token = hub.reader("alice");
    let auth = format!("Bearer {token}");
    for (n, query) in [
        (2, format!("event_types=pdfm&since=pdfm:0&epoch={epoch}")),
        (
            3,
            format!("event_types=pdfm&since=pdfm:0&epoch={}", epoch + 1),
        ),
    ] {
        let path = format!("/v1/ws/subscribe?{query}");
        let mut ws = hub
            .handshake(ip(n), &path, &[("authorization", auth.as_str())])
            .await
            .expect("resume handshake");
        next_json(&mut ws).await;
    }
    let after = scrape(&hub).await;
    let outcome = |o: &str| format!("events_hub_resumes_total{{outcome=\"{o}\"}}");
    assert_eq!(after.delta(&before, &outcome("recovered")), 1.0);
    assert_eq!(after.delta(&before, &outcome("incomplete")), 1.0);
}

#[tokio::test]
async fn a_slow_consumer_is_counted_under_4008() {
    let hub = TestHub::start_with(|s| {
        s.hub.send_queue = std::num::NonZero::new(8).expect("positive");
    })
    .await;
    let before = scrape(&hub).await;
    // Never reads: its TCP buffers fill, then its queue, then the hub closes it.
    let (_stalled, _) = hub.subscribe(ip(1), "slow", "pdfm").await;
    let pad = "x".repeat(16 * 1024);
    for _ in 0..500 {
        if hub.state.hub.client_count() == 0 {
            break;
        }
        let batch: Vec<Value> = (0..20)
            .map(|_| json!({"event_type": "pdfm", "message": "PAD", "body": {"pad": pad}}))
            .collect();
        assert_eq!(hub.publish(&Value::Array(batch)).await.0, 202);
    }
    eventually("the slow consumer to be dropped", || {
        hub.state.hub.client_count() == 0
    })
    .await;
    let after = scrape(&hub).await;
    assert_eq!(
        after.delta(&before, "events_hub_socket_closes_total{code=\"4008\"}"),
        1.0
    );
}

#[tokio::test]
async fn shutdown_closes_are_counted_under_1001() {
    let mut hub = TestHub::start().await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let metrics = hub
        .state
        .metrics
        .clone()
        .expect("metrics are on by default");
    hub.shutdown().await;
    assert_eq!(expect_close(&mut ws).await.0, 1001);
    let text = metrics.render(Default::default());
    assert!(
        text.contains("events_hub_socket_closes_total{code=\"1001\"} 1\n"),
        "{text}"
    );
}

#[tokio::test]
async fn source_figures_come_from_the_source_status() {
    let hub = TestHub::start_with(|s| {
        s.sources.demo.enabled = true;
        s.sources.demo.interval_ms = 20;
    })
    .await;
    let series = "events_hub_source_events_published_total{source=\"demo\",index=\"0\"}";
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = scrape(&hub).await;
        if now.0.get(series).is_some_and(|v| *v >= 2.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never moved"
        );
    }
}

#[tokio::test]
async fn with_metrics_off_there_is_no_route_and_the_hub_works() {
    let hub = TestHub::start_with(|s| s.metrics.enabled = false).await;
    let (status, body) = hub.get("/metrics").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "pdfm").await;
    assert_eq!(
        hub.publish(&json!({"event_type": "pdfm", "message": "STILL"}))
            .await
            .0,
        202
    );
    assert_eq!(next_json(&mut ws).await["message"], "STILL");
}

#[tokio::test]
async fn a_metrics_listener_of_its_own_takes_the_route_off_the_main_one() {
    let hub = TestHub::start_with(|s| {
        s.metrics.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    // server::run binds it before it serves the main listener.
    eventually("the metrics listener to be bound", || {
        hub.state.metrics_addr.get().is_some()
    })
    .await;
    let addr = *hub.state.metrics_addr.get().expect("bound");
    let own = scrape_at(&format!("http://{addr}/metrics")).await;
    assert_eq!(own.get("events_hub_connections"), 0.0);
    assert_eq!(hub.get("/metrics").await.0, 404);
    let token = hub.token("reader", &[READ_ONLY]);
    let elsewhere = http_client()
        .get(format!("http://{addr}/v1/events?event_type=pdfm"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET");
    assert_eq!(
        elsewhere.status(),
        404,
        "the metrics listener serves /metrics alone"
    );
}
