//! The operator's commands run as a user would, as the built binary: `publish`, `tail`,
//! `check-config` against in-process hubs and spawned hub binaries, and `serve --demo`.
//! Every wait is a deadline ([`WAIT`]), never a sleep.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{ChildStdout, Command};

use crate::common::certs::{TestCa, TlsFiles};
use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_events-hub");
const SECRET_ENV: &str = "EVENTS_HUB__AUTH__JWT_SECRET";

/// The binary with a clean environment for the hub's and the client's variables.
fn events_hub(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove(SECRET_ENV)
        .env_remove("EVENTS_HUB_TOKEN")
        .env_remove("EVENTS_HUB_API_KEY")
        .env_remove("EVENTS_HUB_URL")
        .env_remove("EVENTS_HUB_CA_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// `tail` (or any long-running command): spawned, with its stdout as lines.
struct Running {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<ChildStdout>>,
}

fn spawn(mut command: Command) -> Running {
    let mut child = command.spawn().expect("spawn events-hub");
    let stdout = child.stdout.take().expect("stdout");
    Running {
        child,
        lines: tokio::io::BufReader::new(stdout).lines(),
    }
}

impl Running {
    /// The next stdout line as JSON, within [`WAIT`].
    async fn next_json(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("a line in time")
            .expect("stdout readable")
            .expect("a line before the end of stdout");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
    }

    /// Waits for the exit, within [`WAIT`]; returns the code and what is left on stderr.
    async fn exit(mut self) -> (i32, String) {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("exits in time")
            .expect("wait");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut stderr).await;
        }
        (status.code().expect("an exit code"), stderr)
    }
}

/// Runs a command to its end (within [`WAIT`]), with `stdin` as its input.
async fn run(mut command: Command, stdin: &str) -> (i32, String, String) {
    command.stdin(Stdio::piped());
    let mut child = command.spawn().expect("spawn events-hub");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin.as_bytes()).await.expect("write stdin");
    drop(pipe);
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("finishes in time")
        .expect("output");
    (
        output.status.code().expect("an exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn url_of(addr: &str) -> String {
    format!("http://{addr}")
}

/// `tail` of `channels` on the hub at `addr`, with a reader's token in `EVENTS_HUB_TOKEN`.
fn tail(addr: &str, channels: &str, extra: &[&str]) -> Running {
    let url = url_of(addr);
    let mut args = vec!["tail", channels, "--url", url.as_str()];
    args.extend_from_slice(extra);
    let mut command = events_hub(&args);
    command.env("EVENTS_HUB_TOKEN", mint("tail", &["READ_ONLY"], &[], 3600));
    spawn(command)
}

/// `publish …` with a publisher's token given by flag.
fn publish(addr: &str, args: &[&str]) -> Command {
    let url = url_of(addr);
    let token = mint("publisher", &["EVENTS_PUBLISH"], &[], 3600);
    let mut all = vec!["publish"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--url", url.as_str(), "--token", token.as_str()]);
    events_hub(&all)
}

/// `GET /v1/events?event_type=…` with a reader's token.
async fn history(hub: &TestHub, channel: &str) -> (u16, Value) {
    hub.history(&format!("event_type={channel}")).await
}

async fn subscribed(hub: &TestHub, n: usize) {
    let state = hub.state.clone();
    eventually("tail to subscribe", move || state.hub.client_count() == n).await;
}

#[tokio::test]
async fn publish_prints_the_receipt_and_a_piped_tail_prints_the_event_as_a_json_line() {
    let hub = TestHub::start().await;
    let addr = hub.addr.to_string();
    let mut tail = tail(&addr, "pdfm", &["--count", "1"]);
    subscribed(&hub, 1).await;

    let body = r#"{"vm_id":"vm-1","current_state":"running"}"#;
    let (code, stdout, stderr) = run(
        publish(&addr, &["pdfm", "VM_STATE_CHANGED", "--body", body]),
        "",
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let receipt: Value = serde_json::from_str(stdout.trim()).expect("the receipt is JSON");
    assert_eq!(receipt["recipients"], 1);

    let event = tail.next_json().await;
    assert_eq!(event["id"], receipt["ids"][0]);
    assert_eq!(event["event_type"], "pdfm");
    assert_eq!(event["message"], "VM_STATE_CHANGED");
    assert_eq!(
        event["body"],
        json!({"vm_id": "vm-1", "current_state": "running"})
    );
    assert_eq!(event["seq"], 1);
    let (code, stderr) = tail.exit().await;
    assert_eq!(code, 0, "tail --count 1 exits 0 after one event: {stderr}");
}

#[tokio::test]
async fn publish_reads_the_body_from_stdin_and_shows_the_hubs_error_with_exit_1() {
    let hub = TestHub::start_with(|s| {
        s.auth.api_keys.push(events_hub::config::ApiKeySettings {
            name: "ci-bot".into(),
            sha256: events_hub::auth::api_key_digest("ci-key"),
            claims: vec!["EVENTS_PUBLISH".into()],
        });
    })
    .await;
    let addr = hub.addr.to_string();
    let (code, stdout, stderr) = run(
        publish(
            &addr,
            &["orchestrator", "HOST_HEALTH_UPDATE", "--body", "-"],
        ),
        r#"{"host_id":"h-1","state":"healthy"}"#,
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"ids\""), "{stdout}");
    let (status, page) = history(&hub, "orchestrator").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"][0]["body"]["host_id"], "h-1");

    // An API key from the environment works as well as a token.
    let url = url_of(&addr);
    let mut with_key = events_hub(&["publish", "system", "KEYED", "--url", &url]);
    with_key.env("EVENTS_HUB_API_KEY", "ci-key");
    let (code, _, stderr) = run(with_key, "").await;
    assert_eq!(code, 0, "{stderr}");
    let (_, page) = history(&hub, "system").await;
    assert_eq!(page["events"][0]["message"], "KEYED");

    // The hub refuses: exit 1, its error body on stderr.
    let (code, _, stderr) = run(publish(&addr, &["health", "PING"]), "").await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("\"code\":400") && stderr.contains("reserved"),
        "{stderr}"
    );
    // No credential: 401, exit 1.
    let (code, _, stderr) = run(events_hub(&["publish", "pdfm", "X", "--url", &url]), "").await;
    assert_eq!(code, 1);
    assert!(stderr.contains("401"), "{stderr}");
    // Usage errors: exit 2.
    let (code, _, _) = run(publish(&addr, &["pdfm", "X", "--body", "{not json"]), "").await;
    assert_eq!(code, 2);
    let (code, _, _) = run(publish(&addr, &["pdfm"]), "").await;
    assert_eq!(code, 2);
    let (code, _, _) = run(
        events_hub(&["publish", "pdfm", "X", "--url", "ftp://h"]),
        "",
    )
    .await;
    assert_eq!(code, 2);
    // Nothing listening: exit 1.
    let (code, _, stderr) = run(
        events_hub(&["publish", "pdfm", "X", "--url", "http://127.0.0.1:1"]),
        "",
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
}

#[tokio::test]
async fn ndjson_lines_publish_one_event_each_in_order_and_stop_at_a_bad_line() {
    let hub = TestHub::start().await;
    let addr = hub.addr.to_string();
    let mut tail = tail(&addr, "pdfm,orchestrator", &["--count", "4"]);
    subscribed(&hub, 1).await;

    let lines = [
        json!({"event_type": "pdfm", "message": "VM_STATE_CHANGED", "body": {"vm_id": "a"}}),
        json!({"event_type": "orchestrator", "message": "HOST_HEALTH_UPDATE", "body": {"host_id": "h"}}),
        json!({"event_type": "pdfm", "message": "VM_STATE_CHANGED", "body": {"vm_id": "b"}}),
        json!({"event_type": "pdfm", "message": "VM_DELETED", "body": {"vm_id": "a"}}),
    ];
    let input: String = lines.iter().map(|l| format!("{l}\n\n")).collect();
    let (code, stdout, stderr) = run(publish(&addr, &["--ndjson"]), &input).await;
    assert_eq!(code, 0, "{stderr}");
    let receipts: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("receipt line"))
        .collect();
    assert_eq!(receipts.len(), 4, "one receipt per event: {stdout}");

    for (i, line) in lines.iter().enumerate() {
        let event = tail.next_json().await;
        assert_eq!(event["id"], receipts[i]["ids"][0], "event {i} in order");
        assert_eq!(event["message"], line["message"]);
        assert_eq!(event["body"], line["body"]);
    }
    assert_eq!(tail.exit().await.0, 0);

    // A bad line: the lines before it are published, nothing after it; exit 2.
    let input = "{\"event_type\":\"pdfm\",\"message\":\"BEFORE\"}\nnot json\n\
                 {\"event_type\":\"pdfm\",\"message\":\"AFTER\"}\n";
    let (code, stdout, stderr) = run(publish(&addr, &["--ndjson"]), input).await;
    assert_eq!(code, 2);
    assert_eq!(stdout.lines().count(), 1);
    assert!(stderr.contains("line 2"), "{stderr}");
    let (_, page) = history(&hub, "pdfm").await;
    let messages = page_messages(&page);
    assert_eq!(messages.last(), Some(&"BEFORE"), "{messages:?}");
}

/// A hub serving TLS with a leaf of a throw-away CA, the files (kept while the test runs), its
/// `https://` URL, and the CA's certificate as `ca.pem`.
async fn tls_hub() -> (TestHub, TlsFiles, String, String) {
    let ca = TestCa::new();
    let files = TlsFiles::new(&ca.leaf());
    let ca_pem = files.extra("ca.pem", &ca.cert_pem());
    let (cert, key) = (files.cert_str(), files.key_str());
    let hub = TestHub::start_with(move |s| {
        s.server.tls.cert = cert;
        s.server.tls.key = key;
    })
    .await;
    let url = format!("https://127.0.0.1:{}", hub.addr.port());
    (hub, files, url, ca_pem)
}

fn tls_publish(url: &str, extra: &[&str]) -> Command {
    let token = mint("publisher", &["EVENTS_PUBLISH"], &[], 3600);
    let mut args = vec![
        "publish", "pdfm", "OVER_TLS", "--url", url, "--token", &token,
    ];
    args.extend_from_slice(extra);
    events_hub(&args)
}

fn tls_tail(url: &str, extra: &[&str]) -> Command {
    let mut args = vec!["tail", "pdfm", "--count", "1", "--url", url];
    args.extend_from_slice(extra);
    let mut command = events_hub(&args);
    command.env("EVENTS_HUB_TOKEN", mint("tail", &["READ_ONLY"], &[], 3600));
    command
}

#[tokio::test]
async fn publish_and_tail_talk_to_a_tls_hub_whose_private_ca_is_given_by_ca_file() {
    let (hub, _files, url, ca) = tls_hub().await;
    // tail by the environment variable, publish by the flag.
    let mut command = tls_tail(&url, &[]);
    command.env("EVENTS_HUB_CA_FILE", &ca);
    let mut tail = spawn(command);
    subscribed(&hub, 1).await;

    let (code, stdout, stderr) = run(tls_publish(&url, &["--ca-file", &ca]), "").await;
    assert_eq!(code, 0, "{stderr}");
    let receipt: Value = serde_json::from_str(stdout.trim()).expect("the receipt is JSON");
    assert_eq!(receipt["recipients"], 1, "{receipt}");

    let event = tail.next_json().await;
    assert_eq!(event["message"], "OVER_TLS", "{event}");
    let (code, stderr) = tail.exit().await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn an_untrusted_hub_certificate_is_exit_1_naming_ca_file_and_a_bad_ca_file_exit_2() {
    let (_hub, files, url, _ca) = tls_hub().await;
    // The public roots alone do not trust the private CA: exit 1 at once (tail does not retry).
    for command in [tls_publish(&url, &[]), tls_tail(&url, &[])] {
        let (code, _, stderr) = run(command, "").await;
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("certificate is not trusted") && stderr.contains("--ca-file"),
            "{stderr}"
        );
    }
    // A --ca-file that is not PEM, or not there: exit 2, naming the file.
    let not_pem = files.extra("not-a-ca.pem", "this is not a certificate\n");
    let missing = format!("{not_pem}.missing");
    for file in [&not_pem, &missing] {
        for command in [
            tls_publish(&url, &["--ca-file", file]),
            tls_tail(&url, &["--ca-file", file]),
        ] {
            let (code, _, stderr) = run(command, "").await;
            assert_eq!(code, 2, "{stderr}");
            assert!(stderr.contains(file.as_str()), "{stderr}");
        }
    }
}

#[tokio::test]
async fn tail_since_replays_exactly_the_missed_events_then_continues_live() {
    let hub = TestHub::start().await;
    let addr = hub.addr.to_string();
    for i in 1..=5 {
        let (status, _) = hub
            .publish(&json!({"event_type": "pdfm", "message": format!("E{i}")}))
            .await;
        assert_eq!(status, 202);
    }
    let epoch = hub.state.hub.epoch().to_string();
    let mut tail = tail(
        &addr,
        "pdfm",
        &["--since", "2", "--epoch", &epoch, "--count", "4"],
    );
    for seq in 3..=5 {
        let event = tail.next_json().await;
        assert_eq!(event["seq"], seq);
        assert_eq!(event["message"], format!("E{seq}"));
    }
    let (status, _) = hub
        .publish(&json!({"event_type": "pdfm", "message": "LIVE"}))
        .await;
    assert_eq!(status, 202);
    let event = tail.next_json().await;
    assert_eq!(
        (event["seq"].as_u64(), event["message"].as_str()),
        (Some(6), Some("LIVE"))
    );
    assert_eq!(tail.exit().await.0, 0);
    subscribed(&hub, 0).await;

    // A refused subscription (no such channel in since) is final: exit 1 with the hub's reason.
    let refused = self::tail(&addr, "pdfm", &["--since", "orchestrator:1"]);
    let (code, stderr) = refused.exit().await;
    assert_eq!(code, 1);
    assert!(stderr.contains("400"), "{stderr}");
}

/// The hub binary, killed if the test fails half-way.
struct Hub(Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `events-hub serve` on `listen` and returns it with the address from its banner.
fn start_hub(listen: &str, extra: &[&str]) -> (Hub, String) {
    let mut command = std::process::Command::new(BIN);
    command
        .args(["serve", "--listen", listen])
        .args(extra)
        .env_remove("RUST_LOG")
        .env(SECRET_ENV, SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("spawn the hub");
    let stdout = child.stdout.take().expect("stdout");
    let first = BufReader::new(stdout)
        .lines()
        .next()
        .expect("a banner line")
        .expect("utf-8");
    let addr = first
        .split("listening on http://")
        .nth(1)
        .expect("the banner names the address")
        .trim()
        .to_owned();
    (Hub(child), addr)
}

fn sigterm_and_wait(hub: &mut Hub) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &hub.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + WAIT;
    while hub.0.try_wait().expect("try_wait").is_none() {
        assert!(std::time::Instant::now() < deadline, "the hub did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET /readyz` of a hub binary: its live client count.
async fn clients(addr: &str) -> Option<u64> {
    let response = http_client()
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .ok()?;
    response.json::<Value>().await.ok()?["clients"].as_u64()
}

async fn until_clients(addr: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while clients(addr).await != Some(n) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {n} client(s) on {addr} in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish_to(addr: &str, message: &str) {
    let response = http_client()
        .post(format!("http://{addr}/v1/events"))
        .bearer_auth(mint("publisher", &["EVENTS_PUBLISH"], &[], 3600))
        .json(&json!({"event_type": "pdfm", "message": message}))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn a_running_tail_reconnects_across_a_hub_restart_and_loses_nothing_of_the_new_hub() {
    let (mut hub, addr) = start_hub("127.0.0.1:0", &[]);
    let mut tail = tail(&addr, "pdfm", &["--count", "3"]);
    until_clients(&addr, 1).await;
    publish_to(&addr, "BEFORE").await;
    let first = tail.next_json().await;
    assert_eq!(
        (first["message"].as_str(), first["seq"].as_u64()),
        (Some("BEFORE"), Some(1))
    );

    sigterm_and_wait(&mut hub);
    drop(hub);
    let (_hub, again) = start_hub(&addr, &[]);
    assert_eq!(again, addr);
    // Published at once, most likely before tail is back: it must still get both, from the
    // new hub's history, once each.
    publish_to(&addr, "AFTER-1").await;
    publish_to(&addr, "AFTER-2").await;
    for (n, message) in [(1, "AFTER-1"), (2, "AFTER-2")] {
        let event = tail.next_json().await;
        assert_eq!(event["message"], message);
        assert_eq!(event["seq"], n);
        assert_ne!(event["epoch"], first["epoch"], "the new hub's numbering");
    }
    let (code, stderr) = tail.exit().await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("reconnecting"), "{stderr}");
}

#[tokio::test]
async fn check_config_prints_valid_settings_with_secrets_masked_and_names_a_bad_field() {
    let dir = std::env::temp_dir().join(format!("events-hub-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("good.toml");
    let secret = "very-secret-signing-key-4711";
    let digest = "817b823905cc7853f381992575a9041fcdb17fc70e776707abfb4d7c59ecbf3f";
    std::fs::write(
        &good,
        format!(
            "[server]\nlisten = \"127.0.0.1:9999\"\n[auth]\njwt_secret = \"{secret}\"\n\
             [[auth.api_keys]]\nname = \"ci-bot\"\nsha256 = \"{digest}\"\nclaims = [\"READ_ONLY\"]\n"
        ),
    )
    .expect("write");
    let path = good.to_str().expect("path");
    let (code, stdout, stderr) = run(events_hub(&["check-config", path]), "").await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stdout.contains(secret),
        "the secret is not printed: {stdout}"
    );
    assert!(!stdout.contains(digest), "nor the key digest: {stdout}");
    let settings: Value = serde_json::from_str(&stdout).expect("JSON settings");
    assert_eq!(settings["auth"]["jwt_secret"], "***");
    assert_eq!(settings["auth"]["api_keys"][0]["sha256"], "***");
    assert_eq!(settings["auth"]["api_keys"][0]["name"], "ci-bot");
    assert_eq!(
        settings["server"]["listen"], "127.0.0.1:9999",
        "the file's value"
    );
    assert_eq!(settings["hub"]["send_queue"], 4096, "a default");

    let bad = dir.join("bad.toml");
    for (text, field) in [
        ("[hub]\nsend_queue = 0\n", "hub.send_queue"),
        (
            "[sources]\ndemo.enabled = true\ndemo.vm_channel = \"nope\"\n",
            "sources.demo.vm_channel",
        ),
        ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
    ] {
        std::fs::write(&bad, text).expect("write");
        let (code, stdout, stderr) = run(
            events_hub(&["check-config", bad.to_str().expect("path")]),
            "",
        )
        .await;
        assert_eq!(code, 2, "{text}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains(field), "{text}: {stderr}");
    }
    let (code, _, stderr) = run(events_hub(&["check-config", "/nonexistent.toml"]), "").await;
    assert_eq!(code, 2, "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_demo_hub_streams_events_within_a_deadline_and_reports_the_source() {
    let (_hub, addr) = start_hub("127.0.0.1:0", &["--demo"]);
    let mut tail = tail(&addr, "pdfm,orchestrator", &["--count", "3"]);
    let demo = [
        "VM_STATE_CHANGED",
        "HOST_VM_STATE_CHANGED",
        "HOST_HEALTH_UPDATE",
    ];
    for _ in 0..3 {
        let event = tail.next_json().await;
        let message = event["message"].as_str().expect("message");
        assert!(demo.contains(&message), "{event}");
        match message {
            "VM_STATE_CHANGED" => {
                assert_eq!(event["event_type"], "pdfm");
                assert!(event["body"]["vm_id"].is_string());
                assert!(event["body"]["current_state"].is_string());
            }
            _ => {
                assert_eq!(event["event_type"], "orchestrator");
                assert_eq!(event["body"]["host_id"].as_str().map(str::len), Some(64));
            }
        }
    }
    assert_eq!(tail.exit().await.0, 0);
    let ready: Value = http_client()
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["sources"]["demo"][0]["running"], true, "{ready}");
    assert!(
        ready["sources"]["demo"][0]["published"].as_u64() >= Some(3),
        "{ready}"
    );
}

/// A welcome as the hub writes it, for a fake hub.
fn welcome(epoch: u64, pdfm: u64) -> tokio_tungstenite::tungstenite::Message {
    let frame = json!({"id": "0".repeat(64), "event_type": "global",
        "timestamp": "2026-12-01T00:00:00.000000Z",
        "message": events_hub::protocol::WELCOME_MESSAGE,
        "body": {"client_id": "c8798616-47d7-47d8-8c47-031860a7be27", "epoch": epoch,
                 "positions": {"global": 0, "pdfm": pdfm}, "subscriptions": ["pdfm", "global"]}});
    tokio_tungstenite::tungstenite::Message::Text(frame.to_string().into())
}

fn event(epoch: u64, seq: u64) -> tokio_tungstenite::tungstenite::Message {
    let frame = json!({"id": format!("{seq:064}"), "event_type": "pdfm",
        "timestamp": "2026-12-01T00:00:00.000000Z", "message": format!("E{seq}"),
        "seq": seq, "epoch": epoch});
    tokio_tungstenite::tungstenite::Message::Text(frame.to_string().into())
}

// The handshake callback's signature (its large `Err`) is tungstenite's.
#[allow(clippy::result_large_err)]
#[tokio::test]
async fn a_link_gone_silent_is_dropped_after_the_idle_timeout_and_resumed_without_repeats() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    // A fake hub: it answers the handshake and then never reads again (no pong), as a link
    // that died without a FIN looks from the client.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let mut tail = tail(&addr, "pdfm", &["--idle-timeout-secs", "1", "--count", "1"]);
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("tail connects")
        .expect("accept");
    let mut silent = tokio_tungstenite::accept_async(stream)
        .await
        .expect("handshake");
    silent.send(welcome(7, 4)).await.expect("send welcome");

    // tail gives up on it and comes back, resuming from the welcome's positions.
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("tail reconnects")
        .expect("accept");
    let mut query = None;
    let mut second =
        tokio_tungstenite::accept_hdr_async(stream, |request: &Request, response: Response| {
            query = request.uri().query().map(str::to_owned);
            Ok(response)
        })
        .await
        .expect("handshake");
    let url =
        reqwest::Url::parse(&format!("http://x/?{}", query.expect("a query"))).expect("query");
    let pairs: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(pairs.get("event_types").map(String::as_str), Some("pdfm"));
    assert_eq!(
        pairs.get("since").map(String::as_str),
        Some("global:0,pdfm:4")
    );
    assert_eq!(pairs.get("epoch").map(String::as_str), Some("7"));

    // A repeat of what it has is dropped; the next seq is printed.
    second.send(welcome(7, 4)).await.expect("send welcome");
    second.send(event(7, 4)).await.expect("send a repeat");
    second.send(event(7, 5)).await.expect("send the next");
    let printed = tail.next_json().await;
    assert_eq!(printed["seq"], 5, "{printed}");
    let (code, stderr) = tail.exit().await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("nothing heard from the hub for 1 s"),
        "{stderr}"
    );
    drop(silent);
}
