//! The cluster (`[cluster] redis_url`, docs/cluster.md): a real `redis-server` (Debian's
//! package) on a free loopback port with no persistence, and three hub nodes in-process on it.
//! Without `redis-server` on PATH each test says so and passes, unless
//! `EVENTS_HUB_REQUIRE_REDIS=1` (scripts/test.sh sets it), where it fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

/// A `redis-server --save "" --port <free>` in its own temp dir, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    /// `None` (after saying why) when redis-server is not installed and not required.
    async fn start() -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            let required = std::env::var("EVENTS_HUB_REQUIRE_REDIS").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "redis-server is not on PATH and EVENTS_HUB_REQUIRE_REDIS=1"
            );
            eprintln!("skipped: redis-server is not on PATH (apt-get install redis-server)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("events-hub-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let child = spawn_redis(port, &dir);
        let redis = Self { child, port, dir };
        redis.wait_ready().await;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.ping().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> redis::RedisResult<()> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async(&mut conn).await
    }

    async fn command(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis");
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.expect("redis command")
    }

    /// Kills it and starts a new one on the same port: every key is gone (no persistence).
    async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_redis(self.port, &self.dir);
        self.wait_ready().await;
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

fn spawn_redis(port: u16, dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server starts")
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A node on `redis`, ready (its `/readyz` answers 200 once it is connected and caught up).
async fn node(redis: &Redis) -> TestHub {
    node_with(redis, |_| {}).await
}

/// [`node`] with more settings.
async fn node_with(
    redis: &Redis,
    configure: impl FnOnce(&mut events_hub::config::Settings),
) -> TestHub {
    let url = redis.url();
    let hub = TestHub::start_with(|s| {
        s.cluster.redis_url = Some(url);
        configure(s);
    })
    .await;
    wait_ready(&hub).await;
    hub
}

async fn wait_ready(hub: &TestHub) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while hub.get("/readyz").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "node not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish_n(hub: &TestHub, from: &str, n: usize, batch: usize) {
    for start in (0..n).step_by(batch) {
        let events: Vec<Value> = (start..(start + batch).min(n))
            .map(|i| json!({"event_type": "pdfm", "message": format!("{from}-{i}")}))
            .collect();
        let (status, body) = hub.publish(&Value::Array(events)).await;
        assert_eq!(status, 202, "{body}");
    }
}

fn seq(event: &Value) -> u64 {
    event["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {event}"))
}

/// The next `n` events, asserting consecutive seqs from `first`; their messages.
async fn receive(ws: &mut Ws, first: u64, n: usize) -> Vec<String> {
    let mut messages = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let event = next_json(ws).await;
        assert_eq!(seq(&event), first + i, "{event}");
        messages.push(event["message"].as_str().unwrap_or_default().to_owned());
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_publishing_at_once_deliver_one_order_everywhere() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let nodes = [node(&redis).await, node(&redis).await, node(&redis).await];
    let mut sockets = Vec::new();
    for (i, hub) in nodes.iter().enumerate() {
        for j in 0..2 {
            let (ws, welcome) = hub
                .subscribe(ip(10 * i as u32 + j + 1), "alice", "pdfm")
                .await;
            assert_eq!(welcome["body"]["positions"]["pdfm"], 0, "{welcome}");
            sockets.push(ws);
        }
    }
    let epochs: Vec<u64> = nodes.iter().map(|n| n.state.hub.epoch()).collect();
    assert!(
        epochs.iter().all(|&e| e == epochs[0] && e != 0),
        "{epochs:?}"
    );

    const EACH: usize = 150;
    let names = ["a", "b", "c"];
    let publishers = nodes
        .iter()
        .zip(names)
        .map(|(hub, name)| publish_n(hub, name, EACH, 10));
    futures_util::future::join_all(publishers).await;

    let mut orders = Vec::new();
    for ws in &mut sockets {
        orders.push(receive(ws, 1, 3 * EACH).await);
    }
    for order in &orders[1..] {
        assert_eq!(
            order, &orders[0],
            "every socket on every node sees one order"
        );
    }
    // Each publisher's own events keep their order within the one order.
    let mut per_publisher: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for message in &orders[0] {
        let (name, i) = message.split_once('-').expect("name-i");
        let name = names.iter().find(|n| **n == name).expect("known publisher");
        per_publisher
            .entry(name)
            .or_default()
            .push(i.parse().expect("index"));
    }
    for (name, indexes) in per_publisher {
        assert_eq!(indexes, (0..EACH).collect::<Vec<_>>(), "publisher {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_dead_node_resumes_on_another_with_nothing_lost() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let mut a = node(&redis).await;
    let b = node(&redis).await;
    let (mut ws, welcome) = a.subscribe(ip(1), "alice", "pdfm").await;
    let epoch = welcome["body"]["epoch"].as_u64().expect("epoch");
    publish_n(&b, "before", 5, 5).await;
    receive(&mut ws, 1, 5).await;
    a.shutdown().await;
    drop(ws);

    publish_n(&b, "away", 40, 7).await;
    let path = format!("/v1/ws/subscribe?event_types=pdfm&since=pdfm:5&epoch={epoch}");
    let auth = format!("Bearer {}", b.reader("alice"));
    let mut ws = b
        .handshake(ip(1), &path, &[("authorization", auth.as_str())])
        .await
        .expect("handshake on node b");
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["body"]["recovered"], true, "{welcome}");
    assert_eq!(welcome["body"]["epoch"], epoch);
    let replayed = receive(&mut ws, 6, 40).await;
    assert_eq!(replayed[0], "away-0");
    publish_n(&b, "live", 1, 1).await;
    assert_eq!(receive(&mut ws, 46, 1).await, ["live-0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reads_the_same_history() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let nodes = [node(&redis).await, node(&redis).await, node(&redis).await];
    publish_n(&nodes[0], "h", 12, 5).await;
    let mut pages = Vec::new();
    for hub in &nodes {
        let (status, page) = hub.history("event_type=pdfm&since=3&limit=100").await;
        assert_eq!(status, 200, "{page}");
        pages.push(
            page_messages(&page)
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>(),
        );
    }
    let expected: Vec<String> = (3..12).map(|i| format!("h-{i}")).collect();
    for page in &pages {
        assert_eq!(page, &expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pubsub_connection_catches_up_in_order() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let nodes = [node(&redis).await, node(&redis).await];
    let (mut ws, _) = nodes[1].subscribe(ip(1), "alice", "pdfm").await;
    publish_n(&nodes[0], "x", 3, 3).await;
    receive(&mut ws, 1, 3).await;
    redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    // Published while the nodes are (perhaps) reconnecting: caught up from the stream.
    publish_n(&nodes[0], "y", 30, 3).await;
    let caught = receive(&mut ws, 4, 30).await;
    assert_eq!(
        caught,
        (0..30).map(|i| format!("y-{i}")).collect::<Vec<_>>()
    );
    let metrics = nodes[1]
        .http()
        .get(nodes[1].url("/metrics"))
        .send()
        .await
        .expect("scrape");
    let text = metrics.text().await.expect("body");
    assert!(text.contains("events_hub_cluster_connected 1"), "{text}");
    assert!(
        text.contains("events_hub_cluster_events_total{kind=\"reconnect\"}"),
        "{text}"
    );
    assert!(
        !text.contains("events_hub_cluster_events_total{kind=\"reconnect\"} 0"),
        "{text}"
    );
    assert!(
        !text.contains("events_hub_cluster_redis_call_seconds_count 0"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_starts_a_new_epoch_and_live_sockets_resume_into_it() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let nodes = [node(&redis).await, node(&redis).await];
    let (mut ws, welcome) = nodes[1].subscribe(ip(1), "alice", "pdfm").await;
    let old = welcome["body"]["epoch"].as_u64().expect("epoch");
    publish_n(&nodes[0], "old", 2, 2).await;
    receive(&mut ws, 1, 2).await;

    redis.restart().await;
    // The socket's seqs mean nothing in the new epoch: it is closed to resume, as after a
    // single node's restart, and never sees seq 1 under its old epoch.
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 4009, "{reason}");
    for hub in &nodes {
        wait_ready(hub).await;
    }
    let path = format!("/v1/ws/subscribe?event_types=pdfm&since=pdfm:2&epoch={old}");
    let auth = format!("Bearer {}", nodes[1].reader("alice"));
    let mut ws = nodes[1]
        .handshake(ip(2), &path, &[("authorization", auth.as_str())])
        .await
        .expect("the resume is admitted");
    let welcome = next_json(&mut ws).await;
    let body = &welcome["body"];
    assert_eq!(body["recovered"], false, "{welcome}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("epoch {old} is not"))),
        "{welcome}"
    );
    let new = body["epoch"].as_u64().expect("epoch");
    assert_ne!(new, old, "the history was lost: a new epoch");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = nodes[0]
            .publish(&json!({"event_type": "pdfm", "message": "new-0"}))
            .await;
        if status == 202 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishing never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = next_json(&mut ws).await;
    assert_eq!((seq(&event), event["message"].as_str()), (1, Some("new-0")));
    assert_eq!(event["epoch"].as_u64(), Some(new));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_answers_503_then_everything_recovers() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let nodes = [node(&redis).await, node(&redis).await];
    let (mut ws, _) = nodes[1].subscribe(ip(1), "alice", "pdfm").await;
    publish_n(&nodes[0], "p", 1, 1).await;
    receive(&mut ws, 1, 1).await;

    redis.signal("-STOP");
    let (status, body) = nodes[0]
        .publish(&json!({"event_type": "pdfm", "message": "paused"}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    // The idle probe finds the silent pub/sub connection: not ready, new handshakes refused
    // (fail closed), the connected socket kept.
    let deadline = tokio::time::Instant::now() + WAIT;
    while nodes[1].get("/readyz").await.0 != 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never said 503"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = try_subscribe(&nodes[1], ip(2))
        .await
        .expect_err("fail closed");
    assert_eq!(status, 503, "{body}");
    redis.signal("-CONT");

    for hub in &nodes {
        wait_ready(hub).await;
    }
    publish_n(&nodes[0], "q", 3, 3).await;
    // The paused publish may or may not have been taken (503 means "not confirmed"): the
    // socket sees consecutive seqs either way, and the three new events last.
    let mut got = Vec::new();
    while got.len() < 3 {
        let event = next_json(&mut ws).await;
        let message = event["message"].as_str().unwrap_or_default().to_owned();
        if message != "paused" {
            got.push(message);
        }
    }
    assert_eq!(got, ["q-0", "q-1", "q-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_stamped_by_redis_and_found_by_id_and_time_on_any_node() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let nodes = [node(&redis).await, node(&redis).await];
    let (mut ws, _) = nodes[1].subscribe(ip(1), "alice", "pdfm").await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    publish_n(&nodes[0], "t", 4, 4).await;
    let text = match next_message(&mut ws).await {
        tokio_tungstenite::tungstenite::Message::Text(text) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    };
    // The envelope's fields in the SPEC's order, seq and epoch last, as on one node.
    let fields = [
        "\"id\"",
        "\"event_type\"",
        "\"timestamp\"",
        "\"message\"",
        "\"seq\"",
        "\"epoch\"",
    ];
    let at: Vec<usize> = fields.iter().map(|f| text.find(f).expect(f)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
    let first: Value = serde_json::from_str(&text).expect("JSON");
    let stamped = chrono::DateTime::parse_from_rfc3339(first["timestamp"].as_str().expect("ts"))
        .expect("RFC 3339");
    assert!(stamped > before && stamped < chrono::Utc::now() + chrono::Duration::seconds(5));
    assert!(
        first["timestamp"]
            .as_str()
            .is_some_and(|t| t.len() == 27 && t.ends_with('Z'))
    );
    let second = next_json(&mut ws).await;
    close(ws).await;

    // last_event_id of the second event, on the other node: the two after it.
    let id = second["id"].as_str().expect("id");
    let path = format!("/v1/ws/subscribe?event_types=pdfm&last_event_id={id}");
    let auth = format!("Bearer {}", nodes[0].reader("bob"));
    let mut ws = nodes[0]
        .handshake(ip(2), &path, &[("authorization", auth.as_str())])
        .await
        .expect("handshake");
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["body"]["recovered"], true, "{welcome}");
    assert_eq!(receive(&mut ws, 3, 2).await, ["t-2", "t-3"]);

    // since_time before everything: all four.
    let (status, page) = nodes[1]
        .history(&format!(
            "event_type=pdfm&since_time={}",
            before.format("%Y-%m-%dT%H:%M:%SZ")
        ))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page_messages(&page), ["t-0", "t-1", "t-2", "t-3"]);
}

/// The status of a handshake from `source` to `hub` (101 → the socket, kept open).
async fn try_subscribe(hub: &TestHub, source: std::net::IpAddr) -> Result<Ws, (u16, Value)> {
    let result = hub.connect(source, &hub.reader("alice"), "pdfm").await;
    match result {
        Ok(ws) => Ok(ws),
        Err(error) => Err(refused_status(&Err(error))),
    }
}

async fn wait_admitted(hub: &TestHub, source: std::net::IpAddr) -> Ws {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match try_subscribe(hub, source).await {
            Ok(ws) => return ws,
            Err((409, _)) => {}
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the IP was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_per_ip_holds_across_nodes_and_is_freed_on_close() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let nodes = [node(&redis).await, node(&redis).await, node(&redis).await];
    let (ws, _) = nodes[0].subscribe(ip(5), "alice", "pdfm").await;
    for hub in &nodes[1..] {
        let (status, body) = try_subscribe(hub, ip(5)).await.expect_err("refused");
        assert_eq!(status, 409, "{body}");
        assert_eq!(
            body["message"],
            format!(
                "IP address {} already has an active WebSocket connection",
                ip(5)
            )
        );
    }
    close(ws).await;
    let ws = wait_admitted(&nodes[2], ip(5)).await;
    drop(ws);

    // Simultaneous handshakes from one IP on all three nodes: exactly one gets through.
    let attempts = (0..9).map(|i| try_subscribe(&nodes[i % 3], ip(6)));
    let results = futures_util::future::join_all(attempts).await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<u16> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.0))
        .collect();
    assert_eq!(admitted, 1, "{refused:?}");
    assert!(refused.iter().all(|&s| s == 409), "{refused:?}");
}

/// The built binary as a cluster node on `redis`, named `node_id`, with leases (and registry
/// entries) of `lease_ttl_secs`; killed on drop. For what an in-process node cannot do: die
/// (SIGKILL) or stop answering (SIGSTOP).
struct BinaryNode {
    process: crate::binary::Running,
    addr: std::net::SocketAddr,
}

impl BinaryNode {
    async fn start(redis: &Redis, node_id: &str, lease_ttl_secs: u64) -> Self {
        use std::io::BufRead;
        let mut command = crate::binary::hub_command();
        command
            .args(["--listen", "127.0.0.1:0"])
            .env("EVENTS_HUB__AUTH__JWT_SECRET", SECRET)
            .env("EVENTS_HUB__CLUSTER__REDIS_URL", redis.url())
            .env("EVENTS_HUB__CLUSTER__NODE_ID", node_id)
            .env(
                "EVENTS_HUB__CLUSTER__LEASE_TTL_SECS",
                lease_ttl_secs.to_string(),
            )
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("spawn events-hub");
        let stdout = child.stdout.take().expect("stdout");
        let process = crate::binary::Running(child);
        let banner = std::io::BufReader::new(stdout)
            .lines()
            .next()
            .expect("a banner line")
            .expect("utf-8");
        let addr = crate::binary::banner_address(&banner)
            .parse()
            .expect("address");
        let node = Self { process, addr };
        let deadline = tokio::time::Instant::now() + WAIT;
        while node.readyz().await != Some(200) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the binary node never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node
    }

    async fn readyz(&self) -> Option<u16> {
        let url = format!("http://{}/readyz", self.addr);
        let response = http_client().get(url).send().await.ok()?;
        Some(response.status().as_u16())
    }

    /// A handshake from `source` as alice (a reader), with the welcome frame read.
    async fn subscribe(&self, source: std::net::IpAddr, event_types: &str) -> (Ws, Value) {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "ws://{}/v1/ws/subscribe?event_types={event_types}",
            self.addr
        );
        let mut request = url.into_client_request().expect("request");
        let auth = format!(
            "Bearer {}",
            mint("alice", &[events_hub::config::READ_ONLY], &[], 3600)
        );
        request
            .headers_mut()
            .insert("authorization", auth.parse().expect("header"));
        let stream = tcp_from(source, self.addr).await;
        let plain = tokio_tungstenite::MaybeTlsStream::Plain(stream);
        let (mut ws, _) = tokio_tungstenite::client_async(request, plain)
            .await
            .expect("the binary node admits");
        let welcome = next_json(&mut ws).await;
        (ws, welcome)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.process.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    fn kill(&mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
    }
}

/// `max_connections_per_ip = 2` on every node: of three simultaneous handshakes from one IP on
/// three nodes exactly two get through; closing one lets a new one in on another node, and
/// only one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_per_ip_hold_across_nodes_and_a_closed_one_frees_a_slot() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let two = std::num::NonZero::new(2).expect("positive");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(node_with(&redis, |s| s.admission.max_connections_per_ip = two).await);
    }
    let source = ip(9);
    let attempts = nodes.iter().map(|hub| try_subscribe(hub, source));
    let mut admitted = Vec::new();
    for (at, result) in futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .enumerate()
    {
        match result {
            Ok(ws) => admitted.push((at, ws)),
            Err((status, body)) => assert_eq!(
                (status, body),
                (409, busy_body(source)),
                "refused on node {at}"
            ),
        }
    }
    assert_eq!(admitted.len(), 2, "exactly the limit is admitted");

    let (closed_on, ws) = admitted.pop().expect("an admitted socket");
    close(ws).await;
    let elsewhere = &nodes[(closed_on + 1) % 3];
    let _again = wait_admitted(elsewhere, source).await;
    let (status, body) = try_subscribe(&nodes[closed_on], source)
        .await
        .expect_err("full again");
    assert_eq!((status, body), (409, busy_body(source)));
}

/// The SPEC's 409 body for a busy IP.
fn busy_body(source: std::net::IpAddr) -> Value {
    json!({
        "code": 409,
        "error": "connection_limit",
        "message": format!("IP address {source} already has an active WebSocket connection"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_ips_are_freed_when_their_leases_expire() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let survivor = node(&redis).await;
    let mut dying = BinaryNode::start(&redis, "dying", 3).await;
    let (_held, welcome) = dying.subscribe(ip(7), "pdfm").await;
    let (status, _) = try_subscribe(&survivor, ip(7))
        .await
        .expect_err("held elsewhere");
    assert_eq!(status, 409);

    dying.kill();
    let (status, _) = try_subscribe(&survivor, ip(7))
        .await
        .expect_err("still leased");
    assert_eq!(status, 409, "a dead node's lease lasts until it expires");
    wait_admitted(&survivor, ip(7)).await;
    // Its registry entry outlives it, but its client is no live client: 404, for anyone.
    let body = json!({"client_id": welcome["body"]["client_id"], "event_types": ["pdfm"]});
    for caller in ["alice", "mallory"] {
        let (status, reply) = survivor.unsubscribe(caller, &body).await;
        assert_eq!(status, 404, "{caller}: {reply}");
    }
}

/// A client held by a node that stops answering (SIGSTOP: its Redis connections stay open, so
/// the relay is sent, and its registry entry lives until the lease TTL): unsubscribe and a
/// targeted publish through another node answer 503 after the 2 s relay timeout, not later;
/// once it runs again, both work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_makes_relays_answer_503_after_the_timeout_then_recovers() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let other = node(&redis).await;
    let paused = BinaryNode::start(&redis, "paused", 60).await;
    let (mut ws, welcome) = paused.subscribe(ip(8), "pdfm,orchestrator,system").await;
    let client = welcome["body"]["client_id"]
        .as_str()
        .expect("client id")
        .to_owned();
    // The relay works while the node runs.
    let targeted = |channel: &str, message: &str| json!({"event_type": channel, "message": message, "client_id": client});
    let (status, receipt) = other.publish(&targeted("pdfm", "before")).await;
    assert_eq!(
        (status, &receipt["recipients"]),
        (202, &json!(1)),
        "{receipt}"
    );
    assert_eq!(next_json(&mut ws).await["message"], "before");

    paused.signal("-STOP");
    let unavailable = json!({
        "code": 503,
        "error": "unavailable",
        "message": "node paused did not answer within 2s; try again",
    });
    let started = std::time::Instant::now();
    let body = json!({"client_id": client, "event_types": ["pdfm"]});
    assert_eq!(
        other.unsubscribe("alice", &body).await,
        (503, unavailable.clone())
    );
    assert_relay_timed_out(started.elapsed());
    let started = std::time::Instant::now();
    assert_eq!(
        other.publish(&targeted("pdfm", "paused")).await,
        (503, unavailable)
    );
    assert_relay_timed_out(started.elapsed());
    paused.signal("-CONT");

    // 503 means "not confirmed": the stopped node carries out what it was sent once it runs
    // again (pdfm unsubscribed, "paused" perhaps delivered), so what follows does not depend
    // on it: orchestrator and system were never asked about.
    let body = json!({"client_id": client, "event_types": ["orchestrator"]});
    let (status, reply) = other.unsubscribe("alice", &body).await;
    assert_eq!(
        (status, &reply["unsubscribed"]),
        (200, &json!(["orchestrator"])),
        "{reply}"
    );
    let (status, receipt) = other.publish(&targeted("system", "after")).await;
    assert_eq!(
        (status, &receipt["recipients"]),
        (202, &json!(1)),
        "{receipt}"
    );
    let mut got = next_json(&mut ws).await;
    if got["message"] == "paused" {
        got = next_json(&mut ws).await;
    }
    assert_eq!(got["message"], "after", "{got}");
}

/// The relay waited for its 2 s acknowledgement, and not much longer.
fn assert_relay_timed_out(elapsed: Duration) {
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_and_targeted_publish_work_through_a_node_without_the_client() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let nodes = [node(&redis).await, node(&redis).await];
    let (mut ws, welcome) = nodes[0]
        .subscribe(ip(1), "alice", "pdfm,orchestrator")
        .await;
    let client = welcome["body"]["client_id"]
        .as_str()
        .expect("client id")
        .to_owned();

    // Targeted, published on the other node: reaches the one client, counted.
    let (status, receipt) = nodes[1]
        .publish(&json!({"event_type": "pdfm", "message": "FOR_YOU", "client_id": client}))
        .await;
    assert_eq!(
        (status, &receipt["recipients"]),
        (202, &json!(1)),
        "{receipt}"
    );
    let private = next_json(&mut ws).await;
    assert_eq!(
        (private["message"].as_str(), private["client_id"].as_str()),
        (Some("FOR_YOU"), Some(client.as_str()))
    );

    // Someone else's client: 403; an unknown one: 404; both from the other node.
    let body = json!({"client_id": client, "event_types": ["pdfm"]});
    assert_eq!(nodes[1].unsubscribe("mallory", &body).await.0, 403);
    let unknown = json!({"client_id": uuid::Uuid::new_v4(), "event_types": ["pdfm"]});
    assert_eq!(nodes[1].unsubscribe("alice", &unknown).await.0, 404);

    // The owner, through the other node: 200, and in force when it is sent.
    let (status, reply) = nodes[1].unsubscribe("alice", &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["unsubscribed"], json!(["pdfm"]));
    assert_eq!(
        reply["remaining_subscriptions"],
        json!(["orchestrator", "global"])
    );
    let (status, _) = nodes[1]
        .publish(&json!([
            {"event_type": "pdfm", "message": "GONE"},
            {"event_type": "orchestrator", "message": "STILL_HERE"}
        ]))
        .await;
    assert_eq!(status, 202);
    assert_eq!(next_json(&mut ws).await["message"], "STILL_HERE");
    // Two relays answered (the targeted event, the unsubscribe) and timed on the sender.
    let text = nodes[1]
        .http()
        .get(nodes[1].url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    assert!(
        text.contains("events_hub_cluster_relay_seconds_count 2"),
        "{text}"
    );
}

/// How many connections subscribe to `channel`'s Redis channel.
async fn followers(redis: &Redis, channel: &str) -> i64 {
    let name = format!("events-hub:ch:{channel}");
    match redis.command(&["PUBSUB", "NUMSUB", &name]).await {
        redis::Value::Array(items) => match items.get(1) {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("NUMSUB answered {other:?}"),
        },
        other => panic!("NUMSUB answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_follows_a_channel_only_while_it_has_subscribers_to_it() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let nodes = [node(&redis).await, node(&redis).await];
    assert_eq!(followers(&redis, "pdfm").await, 0);
    let (mut first, _) = nodes[0].subscribe(ip(1), "alice", "pdfm").await;
    assert_eq!(followers(&redis, "pdfm").await, 1);
    let (second, _) = nodes[1].subscribe(ip(2), "bob", "pdfm").await;
    assert_eq!(followers(&redis, "pdfm").await, 2);

    close(second).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while followers(&redis, "pdfm").await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 1 never let pdfm go"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Published while node 1 does not follow pdfm; then followed again from the newest seq.
    publish_n(&nodes[0], "while-away", 3, 3).await;
    receive(&mut first, 1, 3).await;
    let (mut again, welcome) = nodes[1].subscribe(ip(3), "carol", "pdfm").await;
    assert_eq!(welcome["body"]["positions"]["pdfm"], 3, "{welcome}");
    publish_n(&nodes[0], "after", 2, 2).await;
    assert_eq!(receive(&mut again, 4, 2).await, ["after-0", "after-1"]);
    assert_eq!(receive(&mut first, 4, 2).await, ["after-0", "after-1"]);
}

/// 5000 events in batches of 100 from one node to sockets on two nodes: every one, in order.
/// Prints the rate (`--nocapture`): a smoke figure on a debug build, not a benchmark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_events_cross_nodes_in_order() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let nodes = [node(&redis).await, node(&redis).await];
    let (mut here, _) = nodes[0].subscribe(ip(1), "alice", "pdfm").await;
    let (mut there, _) = nodes[1].subscribe(ip(2), "bob", "pdfm").await;
    let started = std::time::Instant::now();
    let readers = async {
        let a = receive(&mut here, 1, 5000).await;
        let b = receive(&mut there, 1, 5000).await;
        (a, b)
    };
    let ((a, b), ()) = tokio::join!(readers, publish_n(&nodes[0], "bulk", 5000, 100));
    let elapsed = started.elapsed();
    assert_eq!(a, b);
    eprintln!(
        "cluster: 5000 events published and delivered on two nodes in {elapsed:?} ({:.0} events/s)",
        5000.0 / elapsed.as_secs_f64()
    );
}

/// A node on `redis` that renews (and reports its audience) every second.
async fn quick_node(redis: &Redis) -> TestHub {
    node_with(redis, |s| s.cluster.lease_ttl_secs = 3).await
}

/// Publishes on `hub` until a broadcast's `recipients` is `want` (each in 1..=3 on the way).
async fn wait_recipients(hub: &TestHub, want: u64) {
    let what = format!("recipients {want}");
    eventually_async(&what, Duration::from_millis(100), || async {
        let (status, receipt) = hub
            .publish(&json!({"event_type": "pdfm", "message": "COUNT"}))
            .await;
        assert_eq!(status, 202, "{receipt}");
        let n = receipt["recipients"].as_u64().unwrap_or(0);
        assert!((1..=3).contains(&n), "{receipt}");
        (n == want, n)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_count_the_subscribers_of_every_node() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let nodes = [
        quick_node(&redis).await,
        quick_node(&redis).await,
        quick_node(&redis).await,
    ];
    let mut sockets = Vec::new();
    for (i, hub) in nodes.iter().enumerate() {
        sockets.push(hub.subscribe(ip(40 + i as u32), "alice", "pdfm").await.0);
    }
    // The other nodes' counts arrive with their next renewal (a third of the lease TTL).
    wait_recipients(&nodes[0], 3).await;
    // A socket that leaves is no longer counted once its node reports again.
    drop(sockets.pop());
    wait_recipients(&nodes[0], 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_publishes_once_across_nodes() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (mut ws, _) = b.subscribe(ip(1), "alice", "pdfm").await;
    let once = json!({"event_type": "pdfm", "message": "ONCE"});
    let (status, replayed, first) = publish_keyed(&a, &a.publisher(), "retry-1", &once).await;
    assert_eq!(
        (status, replayed.as_deref()),
        (202, Some("false")),
        "{first}"
    );
    let (status, replayed, again) = publish_keyed(&b, &b.publisher(), "retry-1", &once).await;
    assert_eq!(
        (status, replayed.as_deref()),
        (202, Some("true")),
        "{again}"
    );
    assert_eq!(
        first, again,
        "node B answers node A's receipt, ids included"
    );
    let other = json!({"event_type": "pdfm", "message": "OTHER"});
    let (status, _, body) = publish_keyed(&b, &b.publisher(), "retry-1", &other).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("idempotency_key_reused"))
    );

    // Eight requests with one key, four on each node, at once: one publish, one receipt.
    let race = json!({"event_type": "pdfm", "message": "RACE"});
    let token = a.publisher();
    let requests = (0..8).map(|i| publish_keyed([&a, &b][i % 2], &token, "race", &race));
    let answers = futures_util::future::join_all(requests).await;
    assert_published_once(&answers);

    let (status, body) = a
        .publish(&json!({"event_type": "pdfm", "message": "NEXT"}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(receive(&mut ws, 1, 3).await, ["ONCE", "RACE", "NEXT"]);
    assert_eq!(a.history("event_type=pdfm").await.1["last_seq"], 3);

    // Redis keeps each key for the window, no longer.
    let window_ms = a.state.settings.limits.idempotency_window_secs as i64 * 1000;
    let redis::Value::Array(keys) = redis.command(&["KEYS", "*:idem:*"]).await else {
        panic!("KEYS answers an array");
    };
    assert_eq!(keys.len(), 2, "retry-1 and race");
    for key in keys {
        let redis::Value::BulkString(key) = key else {
            panic!("a key name");
        };
        let key = String::from_utf8(key).expect("utf-8 key");
        let redis::Value::Int(ttl) = redis.command(&["PTTL", &key]).await else {
            panic!("PTTL answers an integer");
        };
        assert!((1..=window_ms).contains(&ttl), "{key:?}: {ttl} ms");
    }
}

/// `events_hub_cluster_events_total{kind}` of `hub`, 0 while it was never counted.
async fn cluster_events(hub: &TestHub, kind: &str) -> u64 {
    let response = hub
        .http()
        .get(hub.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    let text = response.text().await.expect("body");
    let name = format!("events_hub_cluster_events_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&name))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_pubsub_backlog_overflows_catches_up_in_order() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let slow = node_with(&redis, |s| s.cluster.pubsub_backlog = 1).await;
    let publisher = node(&redis).await;
    let (mut ws, _) = slow.subscribe(ip(1), "alice", "pdfm").await;
    // A batch's 100 messages arrive at once, faster than a backlog of one is drained.
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster_events(&slow, "fell_behind").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog never overflowed"
        );
        publish_n(&publisher, &format!("b{sent}"), 100, 100).await;
        sent += 100;
    }
    let messages = receive(&mut ws, 1, sent).await;
    let expected: Vec<String> = (0..sent)
        .step_by(100)
        .flat_map(|b| (0..100).map(move |i| format!("b{b}-{i}")))
        .collect();
    assert_eq!(messages, expected, "nothing lost, nothing out of order");
    // And live again after the catch-up.
    wait_ready(&slow).await;
    publish_n(&publisher, "after", 1, 1).await;
    assert_eq!(receive(&mut ws, sent as u64 + 1, 1).await, ["after-0"]);
    assert!(cluster_events(&slow, "reconnect").await >= 1);
}

/// The connections holding `source`'s slots, as Redis has them.
async fn lease_members(redis: &Redis, source: std::net::IpAddr) -> Vec<String> {
    let key = format!("events-hub:ip:{source}");
    match redis.command(&["ZRANGE", &key, "0", "-1"]).await {
        redis::Value::Array(items) => items
            .iter()
            .map(|v| match v {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("ZRANGE member {other:?}"),
            })
            .collect(),
        other => panic!("ZRANGE answered {other:?}"),
    }
}

/// Polls until `source`'s lease members satisfy `done`.
async fn wait_members(redis: &Redis, source: std::net::IpAddr, done: impl Fn(&[String]) -> bool) {
    eventually_async("lease members", Duration::from_millis(50), || async {
        let members = lease_members(redis, source).await;
        (done(&members), members)
    })
    .await;
}

/// A node whose alive key lapsed (deleted here; in life: the node or Redis stalled past the
/// lease TTL) looks dead, so another node's handshake drops its lease as a dead node's; the
/// node notices at its next heartbeat and takes its leases again, and the IP is full again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_alive_key_lapsed_takes_its_leases_again() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let other = node(&redis).await;
    let mut lapsing = BinaryNode::start(&redis, "lapsing", 3).await;
    let _held = lapsing.subscribe(ip(9), "pdfm").await;
    let is_lapsing = |m: &String| m.starts_with("lapsing:");
    redis.command(&["DEL", "events-hub:alive:lapsing"]).await;
    // Meanwhile the IP looks free: admitted, the lapsed lease dropped.
    let admitted = wait_admitted(&other, ip(9)).await;
    assert!(!lease_members(&redis, ip(9)).await.iter().any(is_lapsing));
    drop(admitted);
    // The next heartbeat finds the key gone and takes the lease again; once the closed
    // socket's lease is freed, the IP is full with the lapsing node's socket alone.
    wait_members(&redis, ip(9), |m| m.len() == 1 && m.iter().all(is_lapsing)).await;
    let (status, body) = try_subscribe(&other, ip(9)).await.expect_err("full again");
    assert_eq!(status, 409, "{body}");
    lapsing.kill();
}

/// An integer reply (or a bulk string holding one, as HGET answers).
fn redis_int(value: redis::Value) -> i64 {
    match value {
        redis::Value::Int(n) => n,
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).parse().expect("a number"),
        other => panic!("not an integer: {other:?}"),
    }
}

/// The frames a channel's stream holds, oldest first (field `f` of each entry).
async fn stream_frames(redis: &Redis, channel: &str) -> Vec<String> {
    let key = format!("events-hub:stream:{channel}");
    let redis::Value::Array(entries) = redis.command(&["XRANGE", &key, "-", "+"]).await else {
        panic!("XRANGE answered something else");
    };
    entries
        .into_iter()
        .map(|entry| {
            let redis::Value::Array(parts) = entry else {
                panic!("entry {entry:?}")
            };
            let Some(redis::Value::Array(fields)) = parts.get(1) else {
                panic!("fields {parts:?}")
            };
            match fields.get(1) {
                Some(redis::Value::BulkString(f)) => String::from_utf8_lossy(f).into_owned(),
                other => panic!("frame {other:?}"),
            }
        })
        .collect()
}

/// `publish.lua` trims each stream to its `[history]` limits as it appends, and keeps the
/// byte count and the newest dropped seq that readers rely on exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limits_trim_the_streams_by_count_and_bytes() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let hub = node_with(&redis, |s| {
        let own = |events, bytes| events_hub::config::ChannelHistorySettings {
            max_events: events,
            max_bytes: bytes,
            max_age_secs: None,
        };
        s.history.channels.insert("pdfm".into(), own(Some(5), None));
        s.history
            .channels
            .insert("orchestrator".into(), own(None, Some(1000)));
    })
    .await;
    publish_n(&hub, "c", 8, 3).await;
    let events: Vec<Value> = (0..9)
        .map(|i| json!({"event_type": "orchestrator", "message": format!("b-{i}")}))
        .collect();
    assert_eq!(hub.publish(&Value::Array(events)).await.0, 202);

    // By count: the newest 5 kept, the 3rd the newest dropped.
    let (status, page) = hub.history("event_type=pdfm&since=0").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page_messages(&page), ["c-3", "c-4", "c-5", "c-6", "c-7"]);
    let dropped = redis
        .command(&["HGET", "events-hub:meta", "dseq:pdfm"])
        .await;
    assert_eq!(redis_int(dropped), 3);

    // By bytes: what is kept fits, one more would not, and the count matches the frames.
    let frames = stream_frames(&redis, "orchestrator").await;
    let kept: usize = frames.iter().map(String::len).sum();
    assert!(
        kept <= 1000 && kept + frames[0].len() > 1000,
        "{kept} bytes in {frames:?}"
    );
    let counted = redis
        .command(&["HGET", "events-hub:meta", "bytes:orchestrator"])
        .await;
    assert_eq!(redis_int(counted), kept as i64);
    let dropped = redis
        .command(&["HGET", "events-hub:meta", "dseq:orchestrator"])
        .await;
    assert_eq!(redis_int(dropped), 9 - frames.len() as i64);
}
