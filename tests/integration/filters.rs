//! Server-side filters (issue 15): `filter=<event_type>:<filter>` on subscribe and on
//! `GET /v1/events`, and `body.filter` on the in-band subscribe, through real sockets.

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::common::{TestHub, Ws, close, ip, next_json, page_messages, send_json};

/// A query value, encoded as a browser or curl's `--data-urlencode` would.
fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn connect_with(hub: &TestHub, source: IpAddr, query: &str) -> (Ws, Value) {
    hub.subscribe_query(source, "alice", query).await
}

async fn refused(hub: &TestHub, query: &str) -> (u16, Value) {
    let path = format!("/v1/ws/subscribe?{query}");
    let auth = format!("Bearer {}", hub.reader("alice"));
    let result = hub
        .handshake(ip(99), &path, &[("authorization", auth.as_str())])
        .await;
    crate::common::refused_status(&result)
}

async fn publish(hub: &TestHub, channel: &str, message: &str, body: Value) {
    let event = json!({"event_type": channel, "message": message, "body": body});
    assert_eq!(hub.publish(&event).await.0, 202);
}

/// Reads events until one with `message`, returning them all (that one included).
async fn read_until(ws: &mut Ws, message: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let frame = next_json(ws).await;
        let last = frame["message"] == message;
        seen.push(frame);
        if last {
            return seen;
        }
    }
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter_map(|f| f["seq"].as_u64()).collect()
}

#[tokio::test]
async fn a_filtered_subscriber_gets_exactly_the_matching_events_in_order() {
    let hub = TestHub::start().await;
    let filter = enc("pdfm:body.vm_id == vm-2");
    let (mut filtered, _) =
        connect_with(&hub, ip(1), &format!("event_types=pdfm&filter={filter}")).await;
    let (mut everything, _) = connect_with(&hub, ip(2), "event_types=pdfm").await;
    for n in 0..30 {
        let vm = format!("vm-{}", n % 3 + 1);
        publish(&hub, "pdfm", &format!("E{n}"), json!({"vm_id": vm, "n": n})).await;
    }
    publish(&hub, "pdfm", "END", json!({"vm_id": "vm-2"})).await;

    let all = read_until(&mut everything, "END").await;
    assert_eq!(seqs(&all), (1..=31).collect::<Vec<_>>());
    let got = read_until(&mut filtered, "END").await;
    assert!(got.iter().all(|f| f["body"]["vm_id"] == "vm-2"), "{got:?}");
    let wanted: Vec<u64> = all
        .iter()
        .filter(|f| f["body"]["vm_id"] == "vm-2")
        .map(|f| f["seq"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(seqs(&got), wanted);
    assert_eq!(got.len(), 11);
    close(filtered).await;
    close(everything).await;
}

#[tokio::test]
async fn in_starts_with_and_several_channels_each_with_its_own_filter() {
    let hub = TestHub::start().await;
    let query = format!(
        "event_types=pdfm,orchestrator&filter={}&filter={}",
        enc(r#"pdfm:message in [VM_CREATED, "VM_DELETED"]"#),
        enc(r#"orchestrator:body.host.name starts_with "esx-" and body.health.ok == false"#),
    );
    let (mut ws, _) = connect_with(&hub, ip(1), &query).await;
    for message in ["VM_CREATED", "VM_STARTED", "VM_DELETED"] {
        publish(&hub, "pdfm", message, json!({})).await;
    }
    let hosts = [
        ("esx-1", false),
        ("kvm-1", false),
        ("esx-2", true),
        ("esx-3", false),
    ];
    for (name, ok) in hosts {
        let body = json!({"host": {"name": name}, "health": {"ok": ok}});
        publish(&hub, "orchestrator", "HOST_HEALTH_UPDATE", body).await;
    }
    publish(
        &hub,
        "orchestrator",
        "HOST_HEALTH_UPDATE",
        json!({"host": {"name": "esx-end"}, "health": {"ok": false}}),
    )
    .await;
    let (mut pdfm, mut hosts) = (Vec::new(), Vec::new());
    while pdfm.len() + hosts.len() < 5 {
        let frame = next_json(&mut ws).await;
        match frame["body"]["host"]["name"].as_str() {
            Some(host) => hosts.push(host.to_owned()),
            None => pdfm.push(frame["message"].as_str().unwrap_or("?").to_owned()),
        }
    }
    // Each channel in its own order (the two channels may interleave).
    assert_eq!(pdfm, ["VM_CREATED", "VM_DELETED"]);
    assert_eq!(hosts, ["esx-1", "esx-3", "esx-end"]);
}

#[tokio::test]
async fn bad_filters_are_refused_before_the_upgrade_with_the_error_body() {
    let hub = TestHub::start().await;
    for (query, says) in [
        (
            format!("event_types=pdfm&filter={}", enc("pdfm:body.vm_id = 1")),
            "expected `==`",
        ),
        (
            format!("event_types=pdfm&filter={}", enc("pdfm:id == 1")),
            "a field is",
        ),
        (
            format!("event_types=pdfm&filter={}", enc("body.vm_id == 1")),
            "is not <event_type>:<filter>",
        ),
        (
            format!(
                "event_types=pdfm&filter={}",
                enc("orchestrator:message == A")
            ),
            "does not subscribe to",
        ),
        (
            format!("event_types=pdfm&filter={}", enc("nosuch:message == A")),
            "does not subscribe to",
        ),
        (
            format!(
                "event_types=pdfm&filter={}&filter={}",
                enc("pdfm:message == A"),
                enc("pdfm:message == B")
            ),
            "given twice",
        ),
    ] {
        let (status, body) = refused(&hub, &query).await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{query}: {body}");
        assert_eq!(body["code"], 400);
    }
    let (_, body) = refused(
        &hub,
        &format!("event_types=pdfm&filter={}", enc("pdfm:message ==")),
    )
    .await;
    assert_eq!(body["error"], "invalid_filter", "{body}");
    // Nothing leaked: the refused handshakes held no admission slot.
    let (ws, _) = connect_with(&hub, ip(99), "event_types=pdfm").await;
    close(ws).await;
}

#[tokio::test]
async fn resume_replays_only_what_the_filter_passes_then_goes_on_live() {
    let hub = TestHub::start().await;
    for n in 1..=10 {
        publish(&hub, "pdfm", &format!("E{n}"), json!({"odd": n % 2 == 1})).await;
    }
    let query = format!(
        "event_types=pdfm&since=pdfm:2&filter={}",
        enc("pdfm:body.odd == true")
    );
    let (mut ws, body) = connect_with(&hub, ip(1), &query).await;
    assert_eq!(body["recovered"], true, "{body}");
    publish(&hub, "pdfm", "LIVE-EVEN", json!({"odd": false})).await;
    publish(&hub, "pdfm", "LIVE-ODD", json!({"odd": true})).await;
    let got = read_until(&mut ws, "LIVE-ODD").await;
    let messages: Vec<&str> = got.iter().filter_map(|f| f["message"].as_str()).collect();
    assert_eq!(messages, ["E3", "E5", "E7", "E9", "LIVE-ODD"]);
    assert_eq!(seqs(&got), [3, 5, 7, 9, 12]);
}

#[tokio::test]
async fn history_pages_through_the_filter_and_goes_on_from_the_last_event_looked_at() {
    let hub = TestHub::start().await;
    for n in 1..=12 {
        let vm = if n % 4 == 0 { "vm-4" } else { "vm-x" };
        publish(&hub, "pdfm", &format!("E{n}"), json!({"vm_id": vm})).await;
    }
    let filter = enc("body.vm_id == vm-4");
    let (status, page) = hub
        .history(&format!("event_type=pdfm&limit=2&filter={filter}"))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page_messages(&page), ["E4", "E8"]);
    assert_eq!(page["next_since"], 8);
    assert_eq!(page["more"], true);
    // The subscribe form (`<event_type>:<filter>`) reads the same.
    let prefixed = enc("pdfm:body.vm_id == vm-4");
    let (_, rest) = hub
        .history(&format!("event_type=pdfm&since=8&filter={prefixed}"))
        .await;
    assert_eq!(page_messages(&rest), ["E12"]);
    assert_eq!(
        (rest["next_since"].as_u64(), rest["more"].as_bool()),
        (Some(12), Some(false))
    );
    let (status, bad) = hub
        .history(&format!(
            "event_type=pdfm&filter={}",
            enc("body.vm_id in vm-4")
        ))
        .await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (400, Some("invalid_filter")),
        "{bad}"
    );
    let (status, twice) = hub
        .history(&format!("event_type=pdfm&filter={filter}&filter={filter}"))
        .await;
    assert_eq!(status, 400, "{twice}");
}

#[tokio::test]
async fn the_in_band_subscribe_sets_and_replaces_filters_and_refuses_bad_ones() {
    let hub = TestHub::start().await;
    let (mut ws, _) = connect_with(&hub, ip(1), "event_types=system").await;
    let subscribe = |filter: Value| {
        json!({"event_type": "system", "message": "subscribe", "id": "s",
               "body": {"event_types": ["pdfm"], "filter": filter}})
    };
    send_json(&mut ws, &subscribe(json!({"pdfm": "body.vm_id == vm-1"}))).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["message"], "subscribe", "{reply}");
    assert_eq!(reply["body"]["filters"]["pdfm"], "body.vm_id == vm-1");
    publish(&hub, "pdfm", "A", json!({"vm_id": "vm-2"})).await;
    publish(&hub, "pdfm", "B", json!({"vm_id": "vm-1"})).await;
    assert_eq!(next_json(&mut ws).await["message"], "B");

    // A bad filter is an error frame and changes nothing.
    send_json(&mut ws, &subscribe(json!({"pdfm": "body.vm_id =="}))).await;
    let error = next_json(&mut ws).await;
    assert_eq!(error["message"], "error", "{error}");
    assert!(
        error["body"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("expected a value")
    );
    send_json(&mut ws, &subscribe(json!({"orchestrator": "message == A"}))).await;
    let error = next_json(&mut ws).await;
    assert!(
        error["body"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("does not"),
        "{error}"
    );
    send_json(&mut ws, &subscribe(json!("message == A"))).await;
    assert_eq!(next_json(&mut ws).await["message"], "error");

    // Subscribing again with a new filter replaces the old one from the next event on.
    send_json(&mut ws, &subscribe(json!({"pdfm": "body.vm_id == vm-2"}))).await;
    assert_eq!(
        next_json(&mut ws).await["body"]["filters"]["pdfm"],
        "body.vm_id == vm-2"
    );
    publish(&hub, "pdfm", "C", json!({"vm_id": "vm-1"})).await;
    publish(&hub, "pdfm", "D", json!({"vm_id": "vm-2"})).await;
    assert_eq!(next_json(&mut ws).await["message"], "D");
}

#[tokio::test]
async fn many_subscribers_each_with_its_own_vm_get_only_their_own() {
    let hub = TestHub::start().await;
    let mut sockets = Vec::new();
    for n in 0..20u32 {
        let filter = enc(&format!("pdfm:body.vm_id == {n}"));
        let (ws, _) = connect_with(
            &hub,
            ip(10 + n),
            &format!("event_types=pdfm&filter={filter}"),
        )
        .await;
        sockets.push(ws);
    }
    for round in 0..3 {
        for n in 0..20 {
            publish(&hub, "pdfm", &format!("R{round}"), json!({"vm_id": n})).await;
        }
    }
    for (n, ws) in sockets.iter_mut().enumerate() {
        let got = read_until(ws, "R2").await;
        let messages: Vec<&str> = got.iter().filter_map(|f| f["message"].as_str()).collect();
        assert_eq!(messages, ["R0", "R1", "R2"], "subscriber {n}");
        assert!(got.iter().all(|f| f["body"]["vm_id"] == n), "{got:?}");
    }
}
