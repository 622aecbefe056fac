//! Socket edges: closes the hub initiates while the client is still sending (the client must
//! read the close code, never a TCP reset), and a long replay that fills the socket's buffers
//! (it must run as fast as the client reads, never waiting for an unrelated timer).

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::common::*;

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;

/// A client frame (masked, as RFC 6455 requires of clients), as bytes on the wire.
fn client_frame(opcode: OpCode, payload: &[u8], fin: bool) -> Vec<u8> {
    masked(Frame::message(payload.to_vec(), opcode, fin))
}

/// The client's close frame, without a code.
fn client_close() -> Vec<u8> {
    masked(Frame::close(None))
}

fn masked(mut frame: Frame) -> Vec<u8> {
    let mask = (uuid::Uuid::new_v4().as_u128() as u32).to_le_bytes();
    frame.header_mut().mask = Some(mask);
    let mut bytes = Vec::new();
    frame.format(&mut bytes).expect("format frame");
    bytes
}

/// Reads the hub's (unmasked) frames straight off the TCP stream, so that a reset shows as the
/// `io::Error` it is.
struct FrameReader {
    half: OwnedReadHalf,
    buf: Vec<u8>,
}

impl FrameReader {
    /// Buffers at least `n` bytes; `false` on a clean end of stream.
    async fn fill(&mut self, n: usize) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        while self.buf.len() < n {
            let got = self.half.read(&mut chunk).await?;
            if got == 0 {
                return Ok(false);
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(true)
    }

    /// The next frame's opcode and payload; `None` when the hub ended TCP between frames.
    async fn next(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        if !self.fill(2).await? {
            if self.buf.is_empty() {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
        let (header, len) = match self.buf[1] & 0x7f {
            126 => (4, self.length(4).await?),
            127 => (10, self.length(10).await?),
            n => (2, usize::from(n)),
        };
        if !self.fill(header + len).await? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let opcode = self.buf[0] & 0x0f;
        let payload = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        Ok(Some((opcode, payload)))
    }

    /// The extended payload length in the first `header` bytes.
    async fn length(&mut self, header: usize) -> io::Result<usize> {
        if !self.fill(header).await? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let digits = self.buf[2..header].iter();
        let len = digits.fold(0u64, |n, &b| (n << 8) | u64::from(b));
        Ok(usize::try_from(len).expect("a frame length that fits"))
    }

    /// Reads frames up to the hub's close frame and returns its code.
    async fn close_code(&mut self) -> io::Result<u16> {
        loop {
            match self.next().await? {
                Some((OP_CLOSE, payload)) if payload.len() >= 2 => {
                    return Ok(u16::from_be_bytes([payload[0], payload[1]]));
                }
                Some((OP_CLOSE, _)) => return Ok(1005),
                Some(_) => continue,
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        }
    }
}

/// A WebSocket handshake written by hand on a plain TCP stream: the frames that follow are ours
/// to write and read byte by byte. Returns the reader (welcome frame already read) and writer.
async fn raw_subscribe(hub: &TestHub, source: IpAddr) -> (FrameReader, OwnedWriteHalf) {
    let (half, mut write) = tcp_from(source, hub.addr).await.into_split();
    let request = format!(
        "GET /v1/ws/subscribe HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {}\r\n\r\n",
        hub.addr,
        hub.reader("edge")
    );
    write
        .write_all(request.as_bytes())
        .await
        .expect("send the handshake");
    let mut reader = FrameReader {
        half,
        buf: Vec::new(),
    };
    let end = loop {
        if let Some(at) = reader.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let more = reader.buf.len() + 1;
        assert!(reader.fill(more).await.expect("read the answer"), "no 101");
    };
    let head = String::from_utf8_lossy(&reader.buf[..end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    reader.buf.drain(..end);
    let welcome = tokio::time::timeout(WAIT, reader.next()).await;
    assert!(
        matches!(welcome, Ok(Ok(Some((OP_TEXT, _))))),
        "welcome: {welcome:?}"
    );
    (reader, write)
}

/// A raw client that sends `first`, then `more` over and over (at least once) until it has read
/// the hub's close frame; then its own close frame and a TCP half-close.
struct StillSending {
    reader: FrameReader,
    sender: tokio::task::JoinHandle<io::Result<()>>,
    stop: oneshot::Sender<()>,
}

impl StillSending {
    async fn start(hub: &TestHub, source: IpAddr, first: Vec<u8>, more: Vec<u8>) -> Self {
        let (reader, mut write) = raw_subscribe(hub, source).await;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let sender = tokio::spawn(async move {
            write.write_all(&first).await?;
            loop {
                write.write_all(&more).await?;
                if stopped.try_recv() != Err(oneshot::error::TryRecvError::Empty) {
                    break;
                }
            }
            write.write_all(&client_close()).await?;
            write.shutdown().await
        });
        Self {
            reader,
            sender,
            stop,
        }
    }

    /// The client reads the close code `expected` while still sending, answers, and then sees
    /// TCP end cleanly: no reset, neither on its reads nor on its writes.
    async fn expect_close(mut self, expected: u16, what: &str) {
        let code = tokio::time::timeout(WAIT, self.reader.close_code())
            .await
            .unwrap_or_else(|_| panic!("{what}: no close frame in time"));
        let code = code.unwrap_or_else(|e| {
            panic!(
                "{what}: the hub reset the connection instead of closing it with {expected}: {e}"
            )
        });
        assert_eq!(code, expected, "{what}");
        let _ = self.stop.send(());
        let sent = tokio::time::timeout(WAIT, self.sender)
            .await
            .unwrap_or_else(|_| panic!("{what}: the sender did not finish in time"))
            .expect("sender task");
        if let Err(e) = sent {
            panic!("{what}: a client write failed after the {expected}: {e}");
        }
        let end = tokio::time::timeout(WAIT, self.reader.next()).await;
        assert!(
            matches!(end, Ok(Ok(None))),
            "{what}: after the close frame, a clean end of stream; got {end:?}"
        );
    }
}

fn text(payload: &[u8]) -> Vec<u8> {
    client_frame(OpCode::Data(Data::Text), payload, true)
}

/// The header of a masked text frame that announces 64 MiB: its payload keeps arriving.
fn huge_frame_header() -> Vec<u8> {
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(64u64 << 20).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    header
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_big_message_in_fragments_gets_a_1009_the_still_sending_client_reads() {
    let hub = TestHub::start_with(|s| s.limits.max_message_bytes = 4096).await;
    let fragment = [b'x'; 1024];
    let client = StillSending::start(
        &hub,
        ip(1),
        client_frame(OpCode::Data(Data::Text), &fragment, false),
        client_frame(OpCode::Data(Data::Continue), &fragment, false),
    )
    .await;
    client.expect_close(1009, "fragments").await;
    eventually("the slot to be freed", || hub.state.admission.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_close_the_hub_initiates_reaches_a_client_that_is_still_sending() {
    let mut hub = TestHub::start_with(|s| s.limits.max_message_bytes = 4096).await;
    let noise = text(br#"{"event_type":"global","message":"noise"}"#);
    let orphan = client_frame(OpCode::Data(Data::Continue), b"orphan", true);
    let cases = [
        (
            "a too-big frame",
            huge_frame_header(),
            vec![b'x'; 1024],
            1009,
        ),
        ("invalid UTF-8", text(b"\xff\xfe"), noise.clone(), 1007),
        ("an orphan continuation", orphan, noise.clone(), 1002),
        ("a flood", noise.clone(), noise, 1008),
    ];
    for (n, (what, first, more, code)) in (1..).zip(cases) {
        let client = StillSending::start(&hub, ip(n), first, more).await;
        client.expect_close(code, what).await;
    }
    // Shutdown, while the client sends pings (which no rate limit counts).
    let ping = masked(Frame::ping(&b"p"[..]));
    let client = StillSending::start(&hub, ip(9), ping.clone(), ping).await;
    let (_, stopped) = tokio::join!(client.expect_close(1001, "shutdown"), hub.shutdown());
    assert_eq!(stopped, events_hub::server::Stopped::Drained);
}

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
            s.heartbeat.ping_interval_secs = std::num::NonZero::new(60).expect("positive");
            s.heartbeat.idle_timeout_secs = std::num::NonZero::new(120).expect("positive");
            s.history.max_events = 30_000;
            s.history.max_bytes = std::num::NonZero::new(256 * 1024 * 1024).expect("positive");
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
fn set_max_segment(socket: &tokio::net::TcpSocket, mss: u32) {
    socket2::SockRef::from(socket)
        .set_tcp_mss(mss)
        .expect("TCP_MAXSEG");
}
