//! Black-box runs of the built binary: start-up output, exit codes, signals, CLI helpers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_events-hub");

/// Kills the child if a test fails half-way, so no process outlives the test.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hub_command() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("RUST_LOG")
        .env_remove("EVENTS_HUB__AUTH__JWT_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Starts the binary on 127.0.0.1:0 and returns it with the address and the banner lines read
/// up to (and including) the last banner line.
fn start(extra_env: &[(&str, &str)]) -> (Running, String, Vec<String>) {
    let mut command = hub_command();
    command.args(["--listen", "127.0.0.1:0"]);
    for (k, v) in extra_env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn events-hub");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a banner line").expect("utf-8");
    let addr = first
        .split("listening on http://")
        .nth(1)
        .expect("banner names the address")
        .trim()
        .to_owned();
    let mut banner = vec![first];
    if extra_env
        .iter()
        .all(|(k, _)| *k != "EVENTS_HUB__AUTH__JWT_SECRET")
    {
        // Development banner: read through to its last line.
        for line in lines.by_ref() {
            let line = line.expect("utf-8");
            let last = line.starts_with("Tokens stop working");
            banner.push(line);
            if last {
                break;
            }
        }
    }
    (Running(child), addr, banner)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code().expect("exited normally, not by a signal");
        }
        assert!(
            Instant::now() < deadline,
            "the process did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn first_run_prints_a_working_token_and_sigterm_exits_0_after_closing_sockets() {
    let (mut hub, addr, banner) = start(&[]);
    let token = banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("export TOKEN="))
        .expect("the banner prints a token")
        .to_owned();
    assert!(
        banner
            .iter()
            .any(|l| l.trim_start().starts_with("websocat \"ws://127.0.0.1:")),
        "the banner prints a websocat command: {banner:#?}"
    );

    // The printed token subscribes and publishes.
    let request = format!("ws://{addr}/v1/ws/subscribe?event_types=pdfm");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(request)
            .expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    assert_eq!(next_json(&mut ws).await["event_type"], "global");
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/events"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"event_type": "pdfm", "message": "HELLO"}))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 202);
    assert_eq!(next_json(&mut ws).await["message"], "HELLO");

    sigterm(&hub.0);
    assert_eq!(next_json(&mut ws).await["message"], "SERVER_SHUTDOWN");
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1001);
    drop(ws);
    assert_eq!(wait_exit(&mut hub.0, Duration::from_secs(10)), 0);
}

#[tokio::test]
async fn sigint_also_exits_0() {
    let (mut hub, addr, _) = start(&[("EVENTS_HUB__AUTH__JWT_SECRET", "s")]);
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let status = Command::new("kill")
        .args(["-INT", &hub.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert_eq!(wait_exit(&mut hub.0, Duration::from_secs(10)), 0);
}

fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = hub_command();
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run events-hub");
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn invalid_settings_stop_start_up_with_exit_2_naming_the_setting() {
    let (code, _, stderr) = run_to_end(&["--listen", "nowhere"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("server.listen"), "{stderr}");

    let (code, _, stderr) = run_to_end(&[], &[("EVENTS_HUB__HEARTBEAT__PING_INTERVAL_SECS", "0")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("heartbeat.ping_interval_secs"), "{stderr}");

    let (code, _, stderr) = run_to_end(&[], &[("EVENTS_HUB__AUTH__JWT_ALGORITHM", "none")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("auth.jwt_algorithm"), "{stderr}");

    let dir = std::env::temp_dir().join(format!("events-hub-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_secs = \"soon\"\n",
    )
    .expect("write");
    let (code, _, stderr) = run_to_end(&["--config", file.to_str().expect("path")], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("shutdown_grace_secs"), "{stderr}");

    std::fs::write(&file, "[server]\nlisen = \"127.0.0.1:0\"\n").expect("write");
    let (code, _, stderr) = run_to_end(&["--config", file.to_str().expect("path")], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("lisen"), "{stderr}");

    let (code, _, stderr) = run_to_end(&["--config", "/nonexistent/hub.toml"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/hub.toml"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_address_in_use_exits_1_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, _, stderr) = run_to_end(
        &["--listen", &addr],
        &[("EVENTS_HUB__AUTH__JWT_SECRET", "s")],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot listen on") && stderr.contains(&addr),
        "{stderr}"
    );
}

#[tokio::test]
async fn mint_token_signs_with_the_configured_secret() {
    let env = [("EVENTS_HUB__AUTH__JWT_SECRET", "shared-secret")];
    let (code, token, _) = run_to_end(
        &[
            "mint-token",
            "--sub",
            "alice",
            "--claims",
            "READ_ONLY,EVENTS_PUBLISH",
        ],
        &env,
    );
    assert_eq!(code, 0);
    let token = token.trim().to_owned();
    assert_eq!(token.split('.').count(), 3);

    let (_hub, addr, _) = start(&env);
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/events"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"event_type": "global", "message": "MINTED"}))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 202);

    // Without a secret there is nothing to sign with: a clear refusal.
    let (code, _, stderr) = run_to_end(&["mint-token", "--sub", "alice"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("EVENTS_HUB__AUTH__JWT_SECRET"), "{stderr}");
    let (code, _, _) = run_to_end(&["mint-token", "--sub", "a", "--claims", "ROOT"], &env);
    assert_eq!(code, 2);
}

#[test]
fn hash_key_prints_the_sha256_digest() {
    let (code, stdout, _) = run_to_end(&["hash-key", "abc"], &[]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let (code, stdout, _) = run_to_end(&["hash-key", "--generate"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("key:") && stdout.contains("sha256:"));
}
