//! Black-box runs of the built binary: start-up output, exit codes, signals, CLI helpers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_events-hub");

/// Kills the child if a test fails half-way, so no process outlives the test.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn hub_command() -> Command {
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
    let addr = banner_address(&first);
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

/// The address in `… listening on http://ADDR` (or `https://`).
pub(crate) fn banner_address(line: &str) -> String {
    line.split("listening on ")
        .nth(1)
        .and_then(|url| url.split("://").nth(1))
        .expect("banner names the address")
        .trim()
        .to_owned()
}

pub(crate) fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

pub(crate) fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
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
    let response = http_client()
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

#[test]
fn sigint_the_moment_the_banner_appears_still_exits_0() {
    // Handlers are installed before the banner is printed, so there is no window in which a
    // signal kills the process outright.
    for _ in 0..5 {
        let (mut hub, _, _) = start(&[("EVENTS_HUB__AUTH__JWT_SECRET", "s")]);
        let status = Command::new("kill")
            .args(["-INT", &hub.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        assert_eq!(wait_exit(&mut hub.0, Duration::from_secs(10)), 0);
    }
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

    for key in [
        "HEADER_READ_TIMEOUT_SECS",
        "BODY_READ_TIMEOUT_SECS",
        "SHUTDOWN_GRACE_SECS",
    ] {
        let var = format!("EVENTS_HUB__SERVER__{key}");
        let (code, _, stderr) = run_to_end(&[], &[(var.as_str(), "0")]);
        assert_eq!(code, 2, "{var}=0");
        assert!(stderr.contains(&key.to_ascii_lowercase()), "{stderr}");
    }

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
    let response = http_client()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_delivers_every_accepted_event_then_the_notice_and_1001() {
    const SOCKETS: u32 = 1_000;
    events_hub::server::raise_open_files_limit();
    let secret = [
        ("EVENTS_HUB__AUTH__JWT_SECRET", SECRET),
        ("EVENTS_HUB__LOG__LEVEL", "warn"),
    ];
    let (mut hub, addr, _) = start(&secret);
    let addr: std::net::SocketAddr = addr.parse().expect("addr");
    let reader = mint("reader", &[events_hub::config::READ_ONLY], &[], 600);

    let mut sockets = Vec::new();
    for chunk in (0..SOCKETS).collect::<Vec<_>>().chunks(100) {
        let connects = chunk.iter().map(|&n| {
            let reader = reader.clone();
            async move {
                let request = format!("ws://{addr}/v1/ws/subscribe?event_types=pdfm");
                let mut request =
                    tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                        request,
                    )
                    .expect("request");
                request.headers_mut().insert(
                    "authorization",
                    format!("Bearer {reader}").parse().expect("header"),
                );
                let tcp = tcp_from(ip(n), addr).await;
                let (mut ws, _) = tokio_tungstenite::client_async(
                    request,
                    tokio_tungstenite::MaybeTlsStream::Plain(tcp),
                )
                .await
                .expect("handshake");
                assert_eq!(next_json(&mut ws).await["event_type"], "global");
                ws
            }
        });
        sockets.extend(futures_util::future::join_all(connects).await);
    }

    // Every subscriber counts pdfm events until the notice, then expects 1001.
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut seen = 0u64;
                loop {
                    let frame = next_json(&mut ws).await;
                    if frame["message"] == "SERVER_SHUTDOWN" {
                        break;
                    }
                    assert_eq!(frame["body"]["seq"], seen, "in order, none skipped");
                    seen += 1;
                }
                let (code, _) = expect_close(&mut ws).await;
                (seen, code)
            })
        })
        .collect();

    // Publish batches until the hub refuses; count what it accepted.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let publisher = tokio::spawn({
        let progress = progress.clone();
        async move {
            let token = mint("pub", &[events_hub::config::EVENTS_PUBLISH], &[], 600);
            let http = http_client();
            let mut accepted = 0u64;
            loop {
                let batch: Vec<serde_json::Value> = (accepted..accepted + 10)
                    .map(|seq| serde_json::json!({"event_type": "pdfm", "message": "SEQ", "body": {"seq": seq}}))
                    .collect();
                let sent = http
                    .post(format!("http://{addr}/v1/events"))
                    .bearer_auth(&token)
                    .json(&batch)
                    .send()
                    .await;
                match sent.map(|r| r.status().as_u16()) {
                    Ok(202) => {
                        accepted += 10;
                        progress.store(accepted, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => return accepted,
                }
            }
        }
    });
    // Signal in the middle of the stream: once a few hundred events went through.
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.load(std::sync::atomic::Ordering::SeqCst) < 300 {
        assert!(
            Instant::now() < deadline && !publisher.is_finished(),
            "the publisher stalled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    sigterm(&hub.0);
    let accepted = publisher.await.expect("publisher");
    for reader in readers {
        let (seen, code) = reader.await.expect("subscriber");
        assert_eq!(code, 1001);
        assert_eq!(
            seen, accepted,
            "every accepted event reached every subscriber before the notice"
        );
    }
    assert_eq!(wait_exit(&mut hub.0, Duration::from_secs(10)), 0);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "within the grace period"
    );
}

#[tokio::test]
async fn no_credential_ever_reaches_the_logs() {
    let api_key = "key-that-must-not-be-logged-4f9a";
    let digest = events_hub::auth::api_key_digest(api_key);
    let dir = std::env::temp_dir().join(format!("events-hub-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\njwt_secret = \"{SECRET}\"\n[[auth.api_keys]]\nname = \"bot\"\nsha256 = \"{digest}\"\nclaims = [\"READ_ONLY\", \"EVENTS_PUBLISH\"]\n"
        ),
    )
    .expect("config");
    let mut command = hub_command();
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().expect("path"),
    ]);
    // The most verbose logging there is, including every dependency.
    command.env("RUST_LOG", "trace");
    let mut child = command.spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("banner").expect("utf-8");
    let addr = first
        .split("listening on http://")
        .nth(1)
        .expect("addr")
        .trim()
        .to_owned();
    let hub = Running(child);

    let token = mint(
        "alice",
        &[
            events_hub::config::READ_ONLY,
            events_hub::config::EVENTS_PUBLISH,
        ],
        &[],
        600,
    );
    let bad_token = format!("{token}x");
    let base = format!("ws://{addr}/v1/ws/subscribe?event_types=pdfm");
    let attempts: Vec<(String, Vec<(&str, String)>)> = vec![
        (
            base.clone(),
            vec![("authorization", format!("Bearer {token}"))],
        ),
        (
            base.clone(),
            vec![("authorization", format!("Bearer {bad_token}"))],
        ),
        (base.clone(), vec![("x-api-key", api_key.to_owned())]),
        (
            base.clone(),
            vec![("x-api-key", format!("{api_key}-wrong"))],
        ),
        (format!("{base}&access_token={token}"), vec![]),
        (format!("{base}&access_token={bad_token}"), vec![]),
        (format!("{base}&authorization=Bearer%20{token}"), vec![]),
        (format!("{base}&authorization=Bearer%20{bad_token}"), vec![]),
        (format!("{base}&authorization={token}"), vec![]),
    ];
    for (url, headers) in attempts {
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
                .expect("request");
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(name, value.parse().expect("header"));
        }
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(request).await {
            let _ = next_json(&mut ws).await;
            close(ws).await;
        }
    }
    let http = http_client();
    let _ = http
        .post(format!("http://{addr}/v1/events"))
        .header("x-api-key", api_key)
        .json(&serde_json::json!({"event_type": "pdfm", "message": "X"}))
        .send()
        .await;
    let _ = http
        .post(format!("http://{addr}/v1/events?access_token={token}"))
        .bearer_auth(&bad_token)
        .json(&serde_json::json!({"event_type": "pdfm", "message": "X"}))
        .send()
        .await;

    sigterm(&hub.0);
    let mut hub = hub;
    assert_eq!(wait_exit(&mut hub.0, Duration::from_secs(10)), 0);
    let logs = stderr_reader.join().expect("stderr");
    assert!(
        logs.contains("request refused"),
        "the refusals were logged at all"
    );
    let signature = token.rsplit('.').next().expect("signature");
    for secret in [token.as_str(), signature, api_key, SECRET] {
        assert!(
            !logs.contains(secret),
            "a credential reached the logs: {secret}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn list_settings_from_the_environment_may_have_spaces() {
    let (mut hub, _, banner) = start(&[
        ("EVENTS_HUB__AUTH__JWT_SECRET", "s"),
        (
            "EVENTS_HUB__HUB__CHANNELS",
            "global, pdfm, health, system, storage",
        ),
        (
            "EVENTS_HUB__ADMISSION__TRUSTED_PROXIES",
            "10.0.0.0/8, 192.168.0.0/16",
        ),
    ]);
    assert!(banner[0].contains("listening on"));
    sigterm(&hub.0);
    assert_eq!(wait_exit(&mut hub.0, Duration::from_secs(10)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_replay_sends_the_whole_replay_then_the_notice_before_exiting() {
    const EVENTS: u64 = 6_000;
    let secret = [
        ("EVENTS_HUB__AUTH__JWT_SECRET", SECRET),
        ("EVENTS_HUB__LOG__LEVEL", "warn"),
    ];
    let (mut hub, addr, _) = start(&secret);
    let http = http_client();
    let publisher = mint("pub", &[events_hub::config::EVENTS_PUBLISH], &[], 600);
    // 1 KiB each: about 6 MB, more than the socket buffers hold, so the replay is still
    // running when the signal comes.
    let pad = "x".repeat(1024);
    for start in (0..EVENTS).step_by(500) {
        let batch: Vec<serde_json::Value> = (start..start + 500)
            .map(|n| serde_json::json!({"event_type": "pdfm", "message": "N", "body": {"n": n, "pad": pad}}))
            .collect();
        let response = http
            .post(format!("http://{addr}/v1/events"))
            .bearer_auth(&publisher)
            .json(&batch)
            .send()
            .await
            .expect("publish");
        assert_eq!(response.status(), 202);
    }

    let request = format!("ws://{addr}/v1/ws/subscribe?event_types=pdfm&since=pdfm:0");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(request)
            .expect("request");
    let reader = mint("reader", &[events_hub::config::READ_ONLY], &[], 600);
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {reader}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    assert_eq!(next_json(&mut ws).await["body"]["recovered"], true);

    // Signal while the client reads nothing, and wait until the hub has stopped accepting.
    sigterm(&hub.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(response) = http.get(format!("http://{addr}/readyz")).send().await {
        if response.status() != 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the hub kept accepting");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for expected in 1..=EVENTS {
        let event = next_json(&mut ws).await;
        assert_eq!(
            event["seq"], expected,
            "the replay continues through shutdown"
        );
    }
    assert_eq!(next_json(&mut ws).await["message"], "SERVER_SHUTDOWN");
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1001);
    assert_eq!(wait_exit(&mut hub.0, Duration::from_secs(15)), 0);
}
