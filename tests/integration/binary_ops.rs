//! Black-box runs of the binary for operations: SIGHUP reloading the TLS certificate, JSON log
//! lines carrying a socket's session, and `authorization=` in the URL never reaching the logs.

use std::io::{BufRead, BufReader};
use std::process::{ChildStderr, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::binary::{Running, banner_address, hub_command, sigterm, wait_exit};
use crate::common::certs::{TestCa, TlsFiles};
use crate::common::*;

/// stderr, line by line as it is written, and all of it once the process ends.
struct Logs {
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Logs {
    fn follow(stderr: ChildStderr) -> Self {
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to [`WAIT`]) for a line containing `text`.
    fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line with {text:?} in {:#?}", self.seen));
            self.seen.push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
    }

    /// Every line, after the process has exited.
    fn all(mut self) -> Vec<String> {
        self.seen.extend(self.lines.iter());
        self.seen
    }
}

/// Starts the binary with JSON logs and `env`; returns it, its address and its stderr.
fn start_json(env: &[(&str, String)]) -> (Running, String, Logs) {
    let mut command = hub_command();
    command.args(["--listen", "127.0.0.1:0", "--log-format", "json"]);
    command.env("EVENTS_HUB__AUTH__JWT_SECRET", SECRET);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn events-hub");
    let stdout = child.stdout.take().expect("stdout");
    let logs = Logs::follow(child.stderr.take().expect("stderr"));
    let first = BufReader::new(stdout)
        .lines()
        .next()
        .expect("a banner line")
        .expect("utf-8");
    let addr = banner_address(&first);
    assert!(
        first.contains("listening on http"),
        "banner with a URL: {first}"
    );
    (Running(child), addr, logs)
}

fn sighup(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn assert_running(hub: &mut Running) {
    assert!(
        hub.0.try_wait().expect("try_wait").is_none(),
        "the hub exited"
    );
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_the_hub_keeps_its_sockets() {
    let ca = TestCa::new();
    let (a, b) = (ca.leaf(), ca.leaf());
    let files = TlsFiles::new(&a);
    let (mut hub, addr, mut logs) = start_json(&[
        ("EVENTS_HUB__SERVER__TLS__CERT", files.cert_str()),
        ("EVENTS_HUB__SERVER__TLS__KEY", files.key_str()),
    ]);
    let addr: std::net::SocketAddr = addr.parse().expect("address");
    let presented = || async {
        let tcp = tcp_from(ip(1), addr).await;
        let tls = ca.connect(tcp).await.expect("TLS handshake");
        tls.get_ref().1.peer_certificates().expect("certificates")[0].clone()
    };
    assert_eq!(presented().await, a.der);

    let url = format!(
        "wss://localhost:{}/v1/ws/subscribe?event_types=health",
        addr.port()
    );
    let mut request = url.into_client_request().expect("request");
    let token = mint("alice", &[events_hub::config::READ_ONLY], &[], 600);
    let bearer = format!("Bearer {token}").parse().expect("header");
    request.headers_mut().insert("authorization", bearer);
    let connector = tokio_tungstenite::Connector::Rustls(ca.client_config());
    let (mut ws, _) = tokio_tungstenite::client_async_tls_with_config(
        request,
        tcp_from(ip(2), addr).await,
        None,
        Some(connector),
    )
    .await
    .expect("wss handshake");
    let _ = next_json(&mut ws).await;

    files.write(&b);
    sighup(&hub.0);
    logs.wait_for("TLS certificate reloaded");
    assert_running(&mut hub);
    assert_eq!(presented().await, b.der);
    // The socket opened before the reload still answers.
    send_json(
        &mut ws,
        &serde_json::json!({"event_type": "health", "message": "ping", "id": "p1"}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["ref_id"], "p1");

    // A bad file on SIGHUP: an error line, the old certificate, the process alive.
    std::fs::write(&files.key, "garbage").expect("write");
    sighup(&hub.0);
    logs.wait_for("TLS reload failed");
    assert_running(&mut hub);
    assert_eq!(presented().await, b.der);

    sigterm(&hub.0);
    assert_eq!(wait_exit(&mut hub.0, Duration::from_secs(10)), 0);
}

/// The `session` span's fields on a JSON line, if it has one.
fn session(line: &Value) -> Option<&Value> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|span| span["name"] == "session")
}

#[tokio::test]
async fn json_logs_carry_the_session_and_no_url_credential() {
    let (mut hub, addr, mut logs) = start_json(&[]);
    let token = mint("alice", &[events_hub::config::READ_ONLY], &[], 600);
    let bad_token = format!("{token}x");
    let base = format!("ws://{addr}/v1/ws/subscribe?event_types=pdfm");

    let url = format!("{base}&authorization=Bearer%20{token}");
    let (mut ws, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("authorization= is accepted");
    assert_eq!(response.status(), 101);
    let welcome = next_json(&mut ws).await;
    close(ws).await;
    logs.wait_for("subscriber disconnected");

    let url = format!("{base}&authorization=Bearer%20{bad_token}");
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    logs.wait_for("request refused");

    // SIGHUP without TLS: said so, and nothing else happens.
    sighup(&hub.0);
    logs.wait_for("nothing to reload");
    assert_running(&mut hub);

    sigterm(&hub.0);
    assert_eq!(wait_exit(&mut hub.0, Duration::from_secs(10)), 0);
    let lines = logs.all();
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let client_id = welcome["body"]["client_id"].as_str().expect("client id");
    let connection: Vec<&Value> = parsed.iter().filter_map(session).collect();
    assert!(
        connection.len() >= 2,
        "connected and disconnected: {lines:#?}"
    );
    for span in connection {
        assert_eq!(span["client_id"], client_id);
        assert_eq!(span["owner"], "alice");
        assert_eq!(span["ip"], "127.0.0.1");
    }
    let signature = token.rsplit('.').next().expect("signature");
    for line in &lines {
        assert!(
            !line.contains(&token) && !line.contains(signature) && !line.contains(SECRET),
            "a credential reached the logs: {line}"
        );
    }
}

#[test]
fn an_unreadable_certificate_stops_start_up_with_exit_2_naming_the_file() {
    let ca = TestCa::new();
    let files = TlsFiles::new(&ca.leaf());
    let missing = "/nonexistent/events-hub/cert.pem";
    let output = hub_command()
        .args(["--listen", "127.0.0.1:0"])
        .env("EVENTS_HUB__AUTH__JWT_SECRET", SECRET)
        .env("EVENTS_HUB__SERVER__TLS__CERT", missing)
        .env("EVENTS_HUB__SERVER__TLS__KEY", files.key_str())
        .output()
        .expect("run events-hub");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("server.tls.cert") && stderr.contains(missing),
        "{stderr}"
    );
}
