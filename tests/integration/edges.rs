//! Socket edges: a long replay that fills the socket's buffers must run as fast as the client
//! reads, never waiting for an unrelated timer.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;

/// Events `range` on pdfm in batches, each with a ~2 KB body; `body.n` carries the number.
async fn publish_large(hub: &TestHub, range: std::ops::Range<u64>) {
    let pad = "p".repeat(2000);
    let numbers: Vec<u64> = range.collect();
    for chunk in numbers.chunks(400) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|n| json!({"event_type": "pdfm", "message": "N", "body": {"n": n, "pad": pad}}))
            .collect();
        let (status, body) = hub.publish(&Value::Array(batch)).await;
        assert_eq!(status, 202, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_replay_of_large_frames_runs_as_fast_as_the_client_reads() {
    const HISTORY: u64 = 20_000;
    const LIVE: u64 = 400;
    let hub = std::sync::Arc::new(
        TestHub::start_with(|s| {
            // The replay must not need a ping to make progress: none comes within the test.
            s.heartbeat.ping_interval_secs = 60;
            s.heartbeat.idle_timeout_secs = 120;
            s.history.max_events = 30_000;
            s.history.max_bytes = 256 * 1024 * 1024;
        })
        .await,
    );
    publish_large(&hub, 0..HISTORY).await;

    let auth = format!("Bearer {}", hub.reader("replayer"));
    let path = "/v1/ws/subscribe?event_types=pdfm&since=pdfm:0";
    let mut ws = narrow_socket(&hub, ip(1), path, &auth).await;
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["body"]["recovered"], true, "{welcome}");
    // Live events while the replay runs: they follow it, with no 4008 on the way.
    let live = {
        let hub = hub.clone();
        tokio::spawn(async move { publish_large(&hub, HISTORY..HISTORY + LIVE).await })
    };

    let mut received = 0u64;
    let read_all = async {
        while received < HISTORY + LIVE {
            let message = ws.next().await.expect("socket open").expect("no error");
            let text = match message {
                Message::Text(text) => text,
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("after {received} events: {other:?}"),
            };
            let event: Value = serde_json::from_str(text.as_str()).expect("json");
            assert_eq!(event["seq"], received + 1, "in order, none skipped");
            received += 1;
        }
    };
    let done = tokio::time::timeout(Duration::from_secs(20), read_all).await;
    assert!(
        done.is_ok(),
        "{received} of {} events within 20 s",
        HISTORY + LIVE
    );
    live.await.expect("live publisher");
    close(ws).await;
}

/// A WebSocket whose TCP path is narrow: a 4 KiB receive buffer and 536-byte segments keep
/// the hub's send buffer small, so its writes fill the socket and return pending often while
/// the client still reads as fast as it can.
async fn narrow_socket(hub: &TestHub, source: IpAddr, path: &str, auth: &str) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    set_max_segment(&socket, 536);
    socket
        .bind(std::net::SocketAddr::new(source, 0))
        .expect("bind source address");
    let stream = socket.connect(hub.addr).await.expect("connect");
    let mut request = format!("ws://{}{}", hub.addr, path)
        .into_client_request()
        .expect("valid request");
    let value = auth.parse().expect("header value");
    request.headers_mut().insert("authorization", value);
    let plain = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (ws, _) = tokio_tungstenite::client_async(request, plain)
        .await
        .expect("handshake succeeds");
    ws
}

/// TCP_MAXSEG before connect: the MSS this client announces, so the hub's segments are small.
fn set_max_segment(socket: &tokio::net::TcpSocket, mss: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket descriptor and a pointer to a live c_int of the given length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            std::ptr::from_ref(&mss).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_MAXSEG: {}", io::Error::last_os_error());
}
