//! History and resume: `seq`/`epoch` on every event, replay on reconnect with `since` or
//! `last_event_id`, `recovered: false` when the history no longer covers the gap, and
//! `GET /v1/events` for polling clients.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use tokio_tungstenite::tungstenite;

use crate::common::*;

/// Publishes events `n` in `range` on `channel`, in batches; `body.n` carries the number.
async fn publish_range(hub: &TestHub, channel: &str, range: std::ops::Range<u64>) {
    let numbers: Vec<u64> = range.collect();
    for chunk in numbers.chunks(500) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|n| json!({"event_type": channel, "message": "N", "body": {"n": n}}))
            .collect();
        let (status, body) = hub.publish(&Value::Array(batch)).await;
        assert_eq!(status, 202, "{body}");
    }
}

/// Connects as `subject` with any query; returns the socket and its welcome body.
async fn connect_with(hub: &TestHub, source: IpAddr, subject: &str, query: &str) -> (Ws, Value) {
    hub.subscribe_query(source, subject, query).await
}

fn seq(event: &Value) -> u64 {
    event["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {event}"))
}

#[tokio::test]
async fn events_carry_seq_and_epoch_after_the_seed_fields() {
    let hub = TestHub::start().await;
    let (mut ws, welcome) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let epoch = welcome["body"]["epoch"]
        .as_u64()
        .expect("welcome has the epoch");
    assert_eq!(
        welcome["body"]["positions"],
        json!({"pdfm": 0, "global": 0})
    );
    assert!(
        welcome["body"].get("recovered").is_none(),
        "no resume asked"
    );

    publish_range(&hub, "pdfm", 0..2).await;
    for expected in 1..=2 {
        let message = next_message(&mut ws).await;
        let text = message.to_text().expect("text");
        let event: Value = serde_json::from_str(text).expect("json");
        assert_eq!(
            (seq(&event), event["epoch"].as_u64()),
            (expected, Some(epoch))
        );
        let at = |key: &str| text.find(&format!("\"{key}\":")).expect(key);
        let order = [
            "id",
            "event_type",
            "timestamp",
            "message",
            "body",
            "seq",
            "epoch",
        ]
        .map(at);
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    // A targeted event is private to one connection: epoch, no seq, and it takes no number.
    let client_id = welcome["body"]["client_id"]
        .as_str()
        .expect("id")
        .to_owned();
    hub.publish(&json!({"event_type": "pdfm", "message": "T", "client_id": client_id}))
        .await;
    let targeted = next_json(&mut ws).await;
    assert_eq!(targeted["message"], "T");
    assert_eq!(targeted["epoch"].as_u64(), Some(epoch));
    assert!(targeted.get("seq").is_none(), "{targeted}");
    publish_range(&hub, "pdfm", 2..3).await;
    assert_eq!(seq(&next_json(&mut ws).await), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_away_while_10000_events_are_published_resumes_with_no_loss_and_no_duplicate() {
    let hub = TestHub::start().await;
    let (mut ws, welcome) = hub.subscribe(ip(1), "alice", "pdfm").await;
    let epoch = welcome["body"]["epoch"].as_u64().expect("epoch");
    publish_range(&hub, "pdfm", 0..1).await;
    let last = seq(&next_json(&mut ws).await);
    close(ws).await;
    eventually("the first socket to be gone", || {
        hub.state.admission.is_empty()
    })
    .await;

    publish_range(&hub, "pdfm", 1..10_001).await;

    let (mut ws, body) = connect_with(
        &hub,
        ip(1),
        "alice",
        &format!("event_types=pdfm&since=pdfm:{last}&epoch={epoch}"),
    )
    .await;
    assert_eq!(body["recovered"], true, "{body}");
    assert_eq!(body["positions"]["pdfm"], last);
    for n in 1..10_001u64 {
        let event = next_json(&mut ws).await;
        assert_eq!((seq(&event), &event["body"]["n"]), (n + 1, &json!(n)));
    }
    // Live after the replay, and nothing replayed twice.
    hub.publish(&json!({"event_type": "pdfm", "message": "END"}))
        .await;
    let end = next_json(&mut ws).await;
    assert_eq!((end["message"].as_str(), seq(&end)), (Some("END"), 10_002));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_again_and_again_under_continuous_publishing_loses_and_repeats_nothing() {
    const RECONNECTS: u32 = 30;
    let hub = Arc::new(TestHub::start().await);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (hub, stop) = (hub.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                publish_range(&hub, "pdfm", n..n + 20).await;
                n += 20;
            }
            hub.publish(&json!({"event_type": "pdfm", "message": "END"}))
                .await;
            n
        })
    };

    let mut expected = 1u64; // the next seq this client must see
    let mut since = None;
    for round in 0..RECONNECTS {
        let query = match since {
            None => "event_types=pdfm".to_owned(),
            Some(s) => format!("event_types=pdfm&since=pdfm:{s}"),
        };
        let (mut ws, body) = connect_with(&hub, ip(1), "alice", &query).await;
        match since {
            None => expected = body["positions"]["pdfm"].as_u64().expect("position") + 1,
            Some(_) => assert_eq!(body["recovered"], true, "round {round}: {body}"),
        }
        // Read a varying number of events, so disconnects land anywhere in a batch.
        for _ in 0..(37 + round * 13) {
            let event = next_json(&mut ws).await;
            assert_eq!(seq(&event), expected, "round {round}");
            expected += 1;
        }
        since = Some(expected - 1);
        if round % 2 == 0 {
            close(ws).await;
        } else {
            drop(ws); // a TCP reset, without a close handshake
        }
        eventually("the socket to be gone", || hub.state.admission.is_empty()).await;
    }
    stop.store(true, Ordering::SeqCst);
    let published = publisher.await.expect("publisher");
    let (mut ws, body) = connect_with(
        &hub,
        ip(1),
        "alice",
        &format!("event_types=pdfm&since=pdfm:{}", expected - 1),
    )
    .await;
    assert_eq!(body["recovered"], true, "{body}");
    loop {
        let event = next_json(&mut ws).await;
        assert_eq!(seq(&event), expected);
        expected += 1;
        if event["message"] == "END" {
            break;
        }
    }
    // Every published event had exactly one seq, then END.
    assert_eq!(expected - 1, published + 1);
}

#[tokio::test]
async fn a_gap_older_than_the_history_says_recovered_false_and_replays_nothing() {
    let hub = TestHub::start_with(|s| s.history.max_events = 100).await;
    let (_, welcome) = hub.subscribe(ip(1), "alice", "pdfm,orchestrator").await;
    let epoch = welcome["body"]["epoch"].as_u64().expect("epoch");
    publish_range(&hub, "pdfm", 0..500).await;
    publish_range(&hub, "orchestrator", 0..3).await;

    // pdfm's gap is too old, orchestrator's is covered: the whole resume is not complete.
    let (mut ws, body) = connect_with(
        &hub,
        ip(2),
        "alice",
        "event_types=pdfm,orchestrator&since=pdfm:1,orchestrator:1",
    )
    .await;
    assert_eq!(body["recovered"], false, "{body}");
    assert_eq!(body["unrecovered"], json!(["pdfm"]));
    let reason = body["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("pdfm: history starts at seq 401"),
        "{reason}"
    );
    assert_eq!(
        body["positions"],
        json!({"pdfm": 500, "orchestrator": 1, "global": 0})
    );
    // orchestrator replays; pdfm starts live, with no partial replay.
    for n in 2..=3 {
        let event = next_json(&mut ws).await;
        assert_eq!(
            (event["event_type"].as_str(), seq(&event)),
            (Some("orchestrator"), n)
        );
    }
    publish_range(&hub, "pdfm", 500..501).await;
    assert_eq!(seq(&next_json(&mut ws).await), 501);

    // Another epoch: the seqs mean nothing here.
    let (_, body) = connect_with(
        &hub,
        ip(3),
        "alice",
        &format!("event_types=pdfm&since=pdfm:501&epoch={}", epoch + 1),
    )
    .await;
    assert_eq!(body["recovered"], false);
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("restarted")),
        "{body}"
    );
    // A seq ahead of the channel comes from before a restart.
    let (_, body) = connect_with(&hub, ip(4), "alice", "event_types=pdfm&since=pdfm:9999").await;
    assert_eq!(body["recovered"], false);
    assert!(
        body["reason"].as_str().is_some_and(|r| r.contains("ahead")),
        "{body}"
    );
}

#[tokio::test]
async fn history_off_resumes_only_when_nothing_was_missed() {
    let hub = TestHub::start_with(|s| {
        s.history.channels.insert(
            "pdfm".into(),
            events_hub::config::ChannelHistorySettings {
                max_events: Some(0),
                ..Default::default()
            },
        );
    })
    .await;
    publish_range(&hub, "pdfm", 0..5).await;
    let (_, body) = connect_with(&hub, ip(1), "alice", "event_types=pdfm&since=pdfm:5").await;
    assert_eq!(body["recovered"], true, "{body}");
    let (_, body) = connect_with(&hub, ip(2), "alice", "event_types=pdfm&since=pdfm:4").await;
    assert_eq!(body["recovered"], false, "{body}");
    // Other channels keep their history.
    publish_range(&hub, "orchestrator", 0..5).await;
    let (mut ws, body) = connect_with(
        &hub,
        ip(3),
        "alice",
        "event_types=orchestrator&since=orchestrator:3",
    )
    .await;
    assert_eq!(body["recovered"], true, "{body}");
    assert_eq!(seq(&next_json(&mut ws).await), 4);
}

#[tokio::test]
async fn last_event_id_resumes_that_events_channel() {
    let hub = TestHub::start().await;
    let (mut ws, _) = hub.subscribe(ip(1), "alice", "pdfm").await;
    publish_range(&hub, "pdfm", 0..3).await;
    let mut last_id = String::new();
    for _ in 0..2 {
        last_id = next_json(&mut ws).await["id"]
            .as_str()
            .expect("id")
            .to_owned();
    }
    close(ws).await;
    let (mut ws, body) = connect_with(
        &hub,
        ip(1),
        "alice",
        &format!("event_types=pdfm&last_event_id={last_id}"),
    )
    .await;
    assert_eq!(body["recovered"], true, "{body}");
    assert_eq!(seq(&next_json(&mut ws).await), 3);

    let unknown = "ab".repeat(32);
    let (_, body) = connect_with(
        &hub,
        ip(2),
        "alice",
        &format!("event_types=pdfm&last_event_id={unknown}"),
    )
    .await;
    assert_eq!(body["recovered"], false);
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&unknown)),
        "{body}"
    );
}

#[tokio::test]
async fn a_bad_resume_request_is_refused_before_the_upgrade() {
    let hub = TestHub::start().await;
    let auth = format!("Bearer {}", hub.reader("alice"));
    for (query, needle) in [
        ("event_types=pdfm&since=pdfm", "<event_type>:<seq>"),
        ("event_types=pdfm&since=pdfm:x", "not a seq"),
        (
            "event_types=pdfm&since=orchestrator:3",
            "does not subscribe",
        ),
        ("event_types=pdfm&since=bogus:3", "not an event type"),
        ("event_types=pdfm&since=pdfm:1&since=pdfm:2", "twice"),
        ("event_types=pdfm&epoch=soon", "epoch"),
    ] {
        let result = hub
            .handshake(
                ip(1),
                &format!("/v1/ws/subscribe?{query}"),
                &[("authorization", auth.as_str())],
            )
            .await;
        let (status, body) = refused_status(&result);
        assert_eq!(status, 400, "{query}");
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(needle)),
            "{query}: {body}"
        );
    }
    assert!(
        hub.state.admission.is_empty(),
        "no slot held by a refused handshake"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_closed_with_4008_resumes_and_loses_nothing() {
    let hub =
        TestHub::start_with(|s| s.hub.send_queue = std::num::NonZero::new(64).expect("positive"))
            .await;
    let (mut stalled, _) = hub.subscribe(ip(1), "slow", "pdfm").await;
    let pad = "x".repeat(1024);
    let mut published = 0u64;
    // Publish until the stalled socket is dropped as a slow consumer (bounded).
    while hub.state.hub.client_count() > 0 {
        assert!(published < 100_000, "the stalled socket was never dropped");
        let batch: Vec<Value> = (published..published + 50)
            .map(|n| json!({"event_type": "pdfm", "message": "N", "body": {"n": n, "pad": pad}}))
            .collect();
        assert_eq!(hub.publish(&Value::Array(batch)).await.0, 202);
        published += 50;
    }
    // Read what the socket still delivers, up to the close.
    let mut last = 0u64;
    loop {
        match next_message(&mut stalled).await {
            tungstenite::Message::Text(text) => {
                let event: Value = serde_json::from_str(text.as_str()).expect("json");
                assert_eq!(seq(&event), last + 1);
                last += 1;
            }
            tungstenite::Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 4008);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(last < published, "the consumer really fell behind");
    eventually("the slot to be freed", || hub.state.admission.is_empty()).await;

    let (mut ws, body) = connect_with(
        &hub,
        ip(1),
        "slow",
        &format!("event_types=pdfm&since=pdfm:{last}"),
    )
    .await;
    assert_eq!(body["recovered"], true, "{body}");
    for expected in last + 1..=published {
        let event = next_json(&mut ws).await;
        assert_eq!(
            (seq(&event), &event["body"]["n"]),
            (expected, &json!(expected - 1))
        );
    }
}

#[tokio::test]
async fn polling_clients_read_the_history_over_rest() {
    let hub = TestHub::start_with(|s| s.history.max_events = 8).await;
    publish_range(&hub, "pdfm", 0..10).await;
    let get = |query: &str, token: String| {
        let request = hub
            .http()
            .get(hub.url(&format!("/v1/events?{query}")))
            .bearer_auth(token);
        async move { json_response(request.send().await.expect("request")).await }
    };

    let (status, page) = get("event_type=pdfm&since=4&limit=3", hub.reader("poller")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["recovered"], true);
    assert_eq!(
        (page["oldest_seq"].as_u64(), page["last_seq"].as_u64()),
        (Some(3), Some(10))
    );
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(seq)
        .collect();
    assert_eq!(seqs, [5, 6, 7]);
    assert_eq!(page["events"][0]["body"]["n"], 4);
    assert_eq!(
        (page["next_since"].as_u64(), page["more"].as_bool()),
        (Some(7), Some(true))
    );

    let (_, page) = get("event_type=pdfm&since=7", hub.reader("poller")).await;
    assert_eq!(page["events"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        (page["next_since"].as_u64(), page["more"].as_bool()),
        (Some(10), Some(false))
    );

    // A cursor older than the history: what is kept, flagged as not recovered.
    let (_, page) = get("event_type=pdfm&since=0&limit=2", hub.reader("poller")).await;
    assert_eq!(page["recovered"], false);
    assert!(
        page["reason"]
            .as_str()
            .is_some_and(|r| r.contains("starts at seq 3")),
        "{page}"
    );
    assert_eq!(page["events"][0]["seq"], 3);

    // A cursor past the end (or from another epoch): nothing, flagged, no overflow.
    let (status, page) = get(
        "event_type=pdfm&since=18446744073709551615",
        hub.reader("poller"),
    )
    .await;
    assert_eq!((status, &page["recovered"]), (200, &json!(false)), "{page}");
    assert!(
        page["reason"].as_str().is_some_and(|r| r.contains("ahead")),
        "{page}"
    );

    for (query, status) in [
        ("since=1", 400),
        ("event_type=bogus", 400),
        ("event_type=pdfm&limit=0", 400),
        ("event_type=pdfm&limit=1001", 400),
        ("event_type=pdfm&since=-1", 400),
    ] {
        let (got, body) = get(query, hub.reader("poller")).await;
        assert_eq!(got, status, "{query}: {body}");
        assert_eq!(body["code"], status);
    }
    let (status, _) = get("event_type=pdfm", hub.publisher()).await;
    assert_eq!(status, 403, "READ_ONLY is needed");
    let response = hub
        .http()
        .get(hub.url("/api/v1/events?event_type=pdfm"))
        .send()
        .await
        .expect("request");
    assert_bearer_challenge(&response);
}

#[tokio::test]
async fn a_resume_with_a_repeated_event_types_parameter_replays_each_event_once() {
    let hub = TestHub::start().await;
    publish_range(&hub, "pdfm", 0..3).await;
    let query = "event_types=pdfm&event_types=PDFM,pdfm&since=pdfm:0";
    let (mut ws, welcome) = connect_with(&hub, ip(1), "alice", query).await;
    for expected in 1..=3 {
        assert_eq!(seq(&next_json(&mut ws).await), expected);
    }
    // The next frame is the next live event, not a second copy of the replay.
    publish_range(&hub, "pdfm", 3..4).await;
    assert_eq!(seq(&next_json(&mut ws).await), 4);
    assert_eq!(welcome["subscriptions"], json!(["pdfm", "global"]));
    assert_eq!(welcome["recovered"], true);
}

/// Publishes one event per message, each its own request, and returns the frames as the history
/// keeps them (their `timestamp` is what `since_time` compares with).
async fn publish_each(hub: &TestHub, messages: &[&str]) -> Vec<Value> {
    for message in messages {
        let event = json!({"event_type": "pdfm", "message": message});
        assert_eq!(hub.publish(&event).await.0, 202);
    }
    let page = history(hub, "event_type=pdfm&limit=1000").await;
    page["events"].as_array().expect("events").clone()
}

async fn history(hub: &TestHub, query: &str) -> Value {
    let (status, body) = hub.history(query).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `since_time` as a query value: `+` would read as a space.
fn at(event: &Value) -> String {
    event["timestamp"]
        .as_str()
        .expect("timestamp")
        .replace('+', "%2B")
}

#[tokio::test]
async fn since_time_replays_every_event_from_that_instant_then_live() {
    let hub = TestHub::start().await;
    let kept = publish_each(&hub, &["A", "B", "C", "D"]).await;
    let query = format!("event_types=pdfm&since_time={}", at(&kept[2]));
    let (mut ws, body) = connect_with(&hub, ip(1), "alice", &query).await;
    assert_eq!(body["recovered"], true, "{body}");
    assert_eq!(next_json(&mut ws).await["message"], "C");
    assert_eq!(next_json(&mut ws).await["message"], "D");
    assert_eq!(
        hub.publish(&json!({"event_type": "pdfm", "message": "E"}))
            .await
            .0,
        202
    );
    let live = next_json(&mut ws).await;
    assert_eq!((live["message"].as_str(), seq(&live)), (Some("E"), 5));

    // The same instant over REST: B's time gives B, C, D, E.
    let page = history(
        &hub,
        &format!("event_type=pdfm&since_time={}", at(&kept[1])),
    )
    .await;
    let messages = page_messages(&page);
    assert_eq!(messages, ["B", "C", "D", "E"]);
    assert_eq!(page["recovered"], true);
    // A time after everything: nothing to replay, live from now.
    let (_, body) = connect_with(
        &hub,
        ip(2),
        "alice",
        "event_types=pdfm&since_time=2999-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(body["recovered"], true, "{body}");
}

#[tokio::test]
async fn since_time_older_than_the_history_says_recovered_false() {
    let hub = TestHub::start_with(|s| s.history.max_events = 2).await;
    let all = publish_each(&hub, &["A", "B"]).await;
    let first = at(&all[0]);
    publish_each(&hub, &["C", "D"]).await;
    // A and B were published after `first`-ish and are gone: the stream starts live, honestly.
    let (_, body) = connect_with(
        &hub,
        ip(1),
        "alice",
        &format!("event_types=pdfm&since_time={first}"),
    )
    .await;
    assert_eq!(body["recovered"], false, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no longer kept")),
        "{body}"
    );
    let page = history(&hub, &format!("event_type=pdfm&since_time={first}")).await;
    assert_eq!(page["recovered"], false, "{page}");
}

#[tokio::test]
async fn since_time_is_refused_when_it_cannot_be_read_or_competes_with_since() {
    let hub = TestHub::start().await;
    let token = hub.reader("alice");
    let auth = format!("Bearer {token}");
    for query in [
        "event_types=pdfm&since_time=yesterday",
        "event_types=pdfm&since_time=2026-12-01T10:00:00",
        "event_types=pdfm&since_time=2026-12-01T10:00:00Z&since=pdfm:1",
    ] {
        let path = format!("/v1/ws/subscribe?{query}");
        let refused = hub
            .handshake(ip(1), &path, &[("authorization", auth.as_str())])
            .await;
        let (status, body) = refused_status(&refused);
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_request")),
            "{query}"
        );
    }
    let response = hub
        .http()
        .get(hub.url("/v1/events?event_type=pdfm&since=1&since_time=2026-12-01T10:00:00Z"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 400);
}
