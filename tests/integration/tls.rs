//! Native TLS through real sockets: `wss://` delivery, plain HTTP and silent clients on the TLS
//! port, certificate reload without dropping sockets, and start-up refusals naming the file.

use std::time::{Duration, Instant};

use events_hub::app::AppState;
use events_hub::config::Settings;
use events_hub::protocol::PublishEvent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::certs::{Leaf, TestCa, TlsFiles};
use crate::common::*;

async fn tls_hub(files: &TlsFiles, header_timeout_secs: u64) -> TestHub {
    let (cert, key) = (files.cert_str(), files.key_str());
    TestHub::start_with(move |s| {
        s.server.tls.cert = cert;
        s.server.tls.key = key;
        s.server.header_read_timeout_secs =
            std::num::NonZeroU64::new(header_timeout_secs).expect("> 0");
    })
    .await
}

/// Publishes in-process (the HTTP route is covered elsewhere; here the socket is under test).
async fn publish(hub: &TestHub, message: &str) {
    let event: PublishEvent =
        serde_json::from_value(serde_json::json!({"event_type": "pdfm", "message": message}))
            .expect("event");
    let events = hub.state.publisher.prepare(vec![event]).expect("valid");
    hub.state
        .publisher
        .publish(events)
        .await
        .expect("published");
}

/// The leaf certificate a fresh handshake presents.
async fn presented(hub: &TestHub, ca: &TestCa) -> Vec<u8> {
    let tls = ca
        .connect(tcp_from(ip(200), hub.addr).await)
        .await
        .expect("TLS handshake");
    let certs = tls.get_ref().1.peer_certificates().expect("certificates");
    certs[0].as_ref().to_vec()
}

/// Reads until the peer closes or errors; what arrived, or `None` after [`WAIT`].
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| received)
}

#[tokio::test]
async fn a_wss_subscriber_receives_published_events_and_https_answers() {
    let ca = TestCa::new();
    let files = TlsFiles::new(&ca.leaf());
    let hub = tls_hub(&files, 10).await;
    let mut ws = hub
        .connect_tls(&ca, ip(1), &hub.reader("alice"), "pdfm")
        .await
        .expect("wss handshake");
    assert_eq!(
        next_json(&mut ws).await["message"],
        events_hub::protocol::WELCOME_MESSAGE
    );
    publish(&hub, "OVER_TLS").await;
    assert_eq!(next_json(&mut ws).await["message"], "OVER_TLS");

    // A plain request over TLS too, the response read with httparse.
    let mut tls = ca
        .connect(tcp_from(ip(2), hub.addr).await)
        .await
        .expect("TLS");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut bytes)).await;
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    response.parse(&bytes).expect("an HTTP response");
    assert_eq!(response.code, Some(200));
}

#[tokio::test]
async fn plain_http_to_the_tls_port_fails_cleanly_and_the_hub_keeps_serving() {
    let ca = TestCa::new();
    let files = TlsFiles::new(&ca.leaf());
    let hub = tls_hub(&files, 10).await;
    let mut tcp = tcp_from(ip(1), hub.addr).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let received = read_to_close(&mut tcp)
        .await
        .expect("the hub closes a plain-HTTP connection promptly");
    assert!(
        !received.starts_with(b"HTTP/"),
        "no HTTP is spoken before TLS: {received:?}"
    );

    let mut ws = hub
        .connect_tls(&ca, ip(2), &hub.reader("bob"), "pdfm")
        .await
        .expect("the hub still serves wss");
    let _ = next_json(&mut ws).await;
}

#[tokio::test]
async fn a_client_that_never_sends_a_client_hello_is_cut_off_at_the_header_timeout() {
    let ca = TestCa::new();
    let files = TlsFiles::new(&ca.leaf());
    let hub = tls_hub(&files, 1).await;
    let started = Instant::now();
    let mut tcp = tcp_from(ip(1), hub.addr).await;
    let received = read_to_close(&mut tcp)
        .await
        .expect("closed by the hub within the deadline");
    assert!(received.is_empty(), "nothing is sent to a silent client");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "cut off by the timeout, not at once: {elapsed:?}"
    );
}

#[tokio::test]
async fn reload_presents_the_new_certificate_and_keeps_open_sockets() {
    let ca = TestCa::new();
    let (a, b): (Leaf, Leaf) = (ca.leaf(), ca.leaf());
    let files = TlsFiles::new(&a);
    let hub = tls_hub(&files, 10).await;
    let tls = hub.state.tls.clone().expect("TLS is on");
    assert_eq!(presented(&hub, &ca).await, a.der.as_ref());
    let mut ws = hub
        .connect_tls(&ca, ip(1), &hub.reader("alice"), "pdfm")
        .await
        .expect("wss handshake");
    let _ = next_json(&mut ws).await;

    files.write(&b);
    tls.reload().expect("reload");
    assert_eq!(presented(&hub, &ca).await, b.der.as_ref());
    publish(&hub, "AFTER_RELOAD").await;
    assert_eq!(next_json(&mut ws).await["message"], "AFTER_RELOAD");

    // A broken file is refused and the certificate in force stays.
    std::fs::write(&files.cert, "not a certificate").expect("write");
    assert!(tls.reload().is_err());
    assert_eq!(presented(&hub, &ca).await, b.der.as_ref());
}

#[test]
fn unreadable_or_invalid_files_stop_start_up_naming_the_file() {
    let ca = TestCa::new();
    let files = TlsFiles::new(&ca.leaf());
    let build = |cert: &str, key: &str| {
        let mut settings = Settings::defaults();
        settings.auth.jwt_secret = SECRET.into();
        settings.server.tls.cert = cert.into();
        settings.server.tls.key = key.into();
        settings
            .validate()
            .and_then(|()| AppState::build(settings, SECRET).map(|_| ()))
    };
    let (cert, key) = (files.cert_str(), files.key_str());
    assert!(build(&cert, &key).is_ok());

    let missing = "/nonexistent/cert.pem";
    let err = build(missing, &key).expect_err("missing cert");
    assert_eq!(err.key, "server.tls.cert");
    assert!(err.message.contains(missing), "{err}");

    // The key file given as the certificate, and the certificate as the key.
    let err = build(&key, &key).expect_err("not a certificate");
    assert_eq!(err.key, "server.tls.cert");
    assert!(err.message.contains(&key), "{err}");
    let err = build(&cert, &cert).expect_err("not a key");
    assert_eq!(err.key, "server.tls.key");
    assert!(err.message.contains(&cert), "{err}");

    // Another leaf's key does not match the certificate.
    let other = TlsFiles::new(&ca.leaf());
    let err = build(&cert, &other.key_str()).expect_err("mismatched key");
    assert!(err.message.contains(&cert), "{err}");

    let err = build(&cert, "").expect_err("both or neither");
    assert_eq!(err.key, "server.tls.key");
}
