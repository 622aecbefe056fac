//! The baseline: the physical limit of this machine for the same job, with no hub logic.
//!
//! One thread (a tokio current-thread runtime). WebSocket handshakes are accepted with
//! tungstenite (no auth, no per-IP rule), the welcome frame is sent, and then the server keeps
//! the raw `TcpStream`. `POST /v1/events` (axum, same JSON body as the hub, one event or an
//! array) serialises each event once into the hub's envelope shape, frames the whole batch once
//! with tungstenite's frame API into one buffer, and writes that buffer to every subscriber with
//! a non-blocking `try_write`. What does not fit stays in a per-socket pending buffer, flushed
//! by that socket's task when the socket becomes writable. Nothing is ever dropped.

use std::io::ErrorKind;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const WELCOME_MESSAGE: &str = "WebSocket connection established subscribed to global by default";

/// One subscriber: the raw socket and what did not fit into it yet.
struct Conn {
    stream: TcpStream,
    pending: Mutex<Vec<u8>>,
    wake: Notify,
    closed: AtomicBool,
}

#[derive(Default)]
struct Subscribers {
    list: Mutex<Vec<Arc<Conn>>>,
}

#[derive(Deserialize)]
struct InEvent<'a> {
    #[serde(alias = "type")]
    event_type: String,
    message: String,
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
}

/// The hub's envelope, same keys in the same order.
#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    event_type: &'a str,
    timestamp: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a RawValue>,
}

fn new_id() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

fn timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

pub fn serve() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("baseline: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let (Ok(ws), Ok(http)) = (
            TcpListener::bind("127.0.0.1:0").await,
            TcpListener::bind("127.0.0.1:0").await,
        ) else {
            eprintln!("baseline: cannot bind 127.0.0.1");
            return ExitCode::from(1);
        };
        let (Ok(ws_addr), Ok(http_addr)) = (ws.local_addr(), http.local_addr()) else {
            return ExitCode::from(1);
        };
        println!("baseline listening ws={ws_addr} http={http_addr}");
        let subscribers = Arc::new(Subscribers::default());
        tokio::spawn(accept_loop(ws, Arc::clone(&subscribers)));
        let app = Router::new()
            .route("/v1/events", post(publish))
            .route("/api/v1/events", post(publish))
            .with_state(subscribers);
        match axum::serve(http, app)
            .with_graceful_shutdown(terminated())
            .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("baseline: {e}");
                ExitCode::from(1)
            }
        }
    })
}

async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            term.recv().await;
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn accept_loop(listener: TcpListener, subscribers: Arc<Subscribers>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(subscriber(stream, Arc::clone(&subscribers)));
    }
}

async fn subscriber(stream: TcpStream, subscribers: Arc<Subscribers>) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let welcome_body = serde_json::json!({
        "client_id": uuid::Uuid::new_v4(),
        "subscriptions": ["pdfm", "global"],
    });
    let body = serde_json::value::to_raw_value(&welcome_body).ok();
    let welcome = serde_json::to_string(&Envelope {
        id: &new_id(),
        event_type: "global",
        timestamp: &timestamp(),
        message: WELCOME_MESSAGE,
        body: body.as_deref(),
    })
    .unwrap_or_default();
    if ws.send(Message::text(welcome)).await.is_err() {
        return;
    }
    // From here on the socket is ours: raw bytes, no WebSocket library in the way.
    let conn = Arc::new(Conn {
        stream: ws.into_inner(),
        pending: Mutex::new(Vec::new()),
        wake: Notify::new(),
        closed: AtomicBool::new(false),
    });
    subscribers
        .list
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::clone(&conn));
    let mut scratch = [0u8; 1024];
    'serve: loop {
        tokio::select! {
            readable = conn.stream.readable() => {
                if readable.is_err() {
                    break;
                }
                // The client only ever sends a close or a pong: read and forget.
                match conn.stream.try_read(&mut scratch) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            () = conn.wake.notified() => {
                loop {
                    if conn.stream.writable().await.is_err() {
                        break 'serve;
                    }
                    let mut pending = conn.pending.lock().unwrap_or_else(|p| p.into_inner());
                    match conn.stream.try_write(&pending) {
                        Ok(n) => {
                            pending.drain(..n);
                            if pending.is_empty() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => break 'serve,
                    }
                }
            }
        }
    }
    conn.closed.store(true, Ordering::Release);
}

async fn publish(State(subscribers): State<Arc<Subscribers>>, body: Bytes) -> Response {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let events: Vec<InEvent<'_>> = match first {
        Some(b'[') => match serde_json::from_slice(&body) {
            Ok(events) => events,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        },
        _ => match serde_json::from_slice(&body) {
            Ok(event) => vec![event],
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        },
    };
    // Serialise every event once and frame the whole batch once, into one buffer.
    let mut framed = Vec::with_capacity(events.len() * 256);
    let mut ids = Vec::with_capacity(events.len());
    for event in &events {
        let id = new_id();
        let json = serde_json::to_vec(&Envelope {
            id: &id,
            event_type: &event.event_type,
            timestamp: &timestamp(),
            message: &event.message,
            body: event.body,
        })
        .unwrap_or_default();
        if Frame::message(json, OpCode::Data(Data::Text), true)
            .format(&mut framed)
            .is_err()
        {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        ids.push(id);
    }
    // Write it to every subscriber.
    let mut list = subscribers.list.lock().unwrap_or_else(|p| p.into_inner());
    list.retain(|c| !c.closed.load(Ordering::Acquire));
    for conn in list.iter() {
        let mut pending = conn.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !pending.is_empty() {
            pending.extend_from_slice(&framed);
            continue;
        }
        match conn.stream.try_write(&framed) {
            Ok(n) if n == framed.len() => {}
            Ok(n) => {
                pending.extend_from_slice(&framed[n..]);
                conn.wake.notify_one();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                pending.extend_from_slice(&framed);
                conn.wake.notify_one();
            }
            Err(_) => conn.closed.store(true, Ordering::Release),
        }
    }
    let recipients = list.len() * events.len();
    drop(list);
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "ids": ids, "recipients": recipients })),
    )
        .into_response()
}
