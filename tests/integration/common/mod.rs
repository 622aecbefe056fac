//! The one test harness: start a hub in-process on 127.0.0.1:0 through the same `AppState::build`
//! and `server::run` as the binary, mint credentials, connect real WebSocket clients from
//! distinct 127.x.y.z source addresses, publish and unsubscribe over real HTTP.

#![allow(dead_code)]

pub mod certs;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use events_hub::app::AppState;
use events_hub::auth::{self, TokenSpec};
use events_hub::config::{EVENTS_PUBLISH, READ_ONLY, Settings};
use events_hub::server::{self, Stopped};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "integration-test-secret";
/// Upper bound for anything the hub should do promptly; a deadline, never a synchronisation sleep.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A distinct loopback source address per simulated client: 127.0.x.y.
pub fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        (n / 250) as u8 % 250,
        (n % 250 + 2) as u8,
    ))
}

pub struct TestHub {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<Stopped>>>,
}

impl TestHub {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Settings::defaults();
        settings.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        settings.auth.jwt_secret = SECRET.into();
        configure(&mut settings);
        settings.validate().expect("test settings are valid");
        let secret = settings.auth.jwt_secret.clone();
        let state = AppState::build(settings, &secret).expect("state builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Triggers the same shutdown sequence as SIGTERM and returns how it ended.
    pub async fn shutdown(&mut self) -> Stopped {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("hub is running");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("run returns within its grace period")
            .expect("run task")
            .expect("run result")
    }

    pub fn token(&self, subject: &str, claims: &[&str]) -> String {
        mint(subject, claims, &[], 3600)
    }

    /// A subscriber's token (READ_ONLY).
    pub fn reader(&self, subject: &str) -> String {
        self.token(subject, &[READ_ONLY])
    }

    /// A publisher's token (EVENTS_PUBLISH).
    pub fn publisher(&self) -> String {
        self.token("publisher", &[EVENTS_PUBLISH])
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// Opens a WebSocket from `source` with `Authorization: Bearer <token>`.
    pub async fn connect(
        &self,
        source: IpAddr,
        token: &str,
        event_types: &str,
    ) -> Result<Ws, Box<tungstenite::Error>> {
        let path = format!("/v1/ws/subscribe?event_types={event_types}");
        let auth = format!("Bearer {token}");
        self.handshake(source, &path, &[("authorization", auth.as_str())])
            .await
    }

    /// Opens a WebSocket and returns it with the welcome frame already read.
    pub async fn subscribe(&self, source: IpAddr, subject: &str, event_types: &str) -> (Ws, Value) {
        let mut ws = self
            .connect(source, &self.reader(subject), event_types)
            .await
            .expect("handshake succeeds");
        let welcome = next_json(&mut ws).await;
        assert_eq!(welcome["message"], events_hub::protocol::WELCOME_MESSAGE);
        (ws, welcome)
    }

    /// Opens a WebSocket with any subscribe query as `subject` (a reader) and returns it with
    /// the welcome's body.
    pub async fn subscribe_query(&self, source: IpAddr, subject: &str, query: &str) -> (Ws, Value) {
        let path = format!("/v1/ws/subscribe?{query}");
        let auth = format!("Bearer {}", self.reader(subject));
        let mut ws = self
            .handshake(source, &path, &[("authorization", auth.as_str())])
            .await
            .expect("handshake succeeds");
        let welcome = next_json(&mut ws).await;
        assert_eq!(welcome["message"], events_hub::protocol::WELCOME_MESSAGE);
        (ws, welcome["body"].clone())
    }

    /// A raw handshake with any path and headers, from `source`.
    pub async fn handshake(
        &self,
        source: IpAddr,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Ws, Box<tungstenite::Error>> {
        let mut request = format!("ws://{}{}", self.addr, path_and_query)
            .into_client_request()
            .expect("valid request");
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let stream = tcp_from(source, self.addr).await;
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .map(|(ws, _)| ws)
            .map_err(Box::new)
    }

    /// A `wss://` handshake from `source` with `Authorization: Bearer <token>`, trusting only
    /// `ca` (the hub must have been started with one of its certificates).
    pub async fn connect_tls(
        &self,
        ca: &certs::TestCa,
        source: IpAddr,
        token: &str,
        event_types: &str,
    ) -> Result<Ws, Box<tungstenite::Error>> {
        let url = format!(
            "wss://localhost:{}/v1/ws/subscribe?event_types={event_types}",
            self.addr.port()
        );
        let mut request = url.into_client_request().expect("valid request");
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header value"),
        );
        let stream = tcp_from(source, self.addr).await;
        let connector = tokio_tungstenite::Connector::Rustls(ca.client_config());
        tokio_tungstenite::client_async_tls_with_config(request, stream, None, Some(connector))
            .await
            .map(|(ws, _)| ws)
            .map_err(Box::new)
    }

    /// An HTTP client whose connections come from `source`.
    pub fn http_from(&self, source: IpAddr) -> reqwest::Client {
        install_ring();
        reqwest::Client::builder()
            .local_address(source)
            .build()
            .expect("http client")
    }

    pub fn http(&self) -> reqwest::Client {
        self.http_from(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// An unauthenticated `GET`; returns status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        json_response(
            self.http()
                .get(self.url(path))
                .send()
                .await
                .expect("GET request"),
        )
        .await
    }

    /// `GET /v1/events?<query>` with a reader's token; returns status and JSON body.
    pub async fn history(&self, query: &str) -> (u16, Value) {
        let response = self
            .http()
            .get(self.url(&format!("/v1/events?{query}")))
            .bearer_auth(self.reader("history-reader"))
            .send()
            .await
            .expect("GET /v1/events");
        json_response(response).await
    }

    /// `POST /v1/events` with a publisher token; returns status and JSON body.
    pub async fn publish(&self, body: &Value) -> (u16, Value) {
        let response = self
            .http()
            .post(self.url("/v1/events"))
            .bearer_auth(self.publisher())
            .json(body)
            .send()
            .await
            .expect("publish request");
        json_response(response).await
    }

    /// `POST /v1/ws/unsubscribe` as `subject`.
    pub async fn unsubscribe(&self, subject: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http()
            .post(self.url("/v1/ws/unsubscribe"))
            .bearer_auth(self.reader(subject))
            .json(body)
            .send()
            .await
            .expect("unsubscribe request");
        json_response(response).await
    }
}

/// reqwest's TLS is built without a crypto provider of its own (the CLI hands it a rustls
/// configuration on `ring`, src/cli/trust.rs), so a client built the default way needs the
/// process's default provider: `ring`, installed once.
pub fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A default reqwest client (see [`install_ring`]).
pub fn http_client() -> reqwest::Client {
    install_ring();
    reqwest::Client::new()
}

pub fn mint(subject: &str, claims: &[&str], roles: &[&str], ttl_secs: u64) -> String {
    let spec = TokenSpec {
        subject: subject.into(),
        claims: claims.iter().map(|c| c.to_string()).collect(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ttl_secs,
        ..TokenSpec::default()
    };
    auth::mint_token(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        &spec,
    )
    .expect("token")
}

pub async fn tcp_from(source: IpAddr, target: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind source address");
    socket.connect(target).await.expect("connect")
}

/// A response header as text, when present.
pub fn header_text(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub async fn json_response(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The HTTP status a refused handshake got (panics if it was accepted).
pub fn refused_status(result: &Result<Ws, Box<tungstenite::Error>>) -> (u16, Value) {
    match result.as_ref().map_err(|e| e.as_ref()) {
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (response.status().as_u16(), body)
        }
        Err(other) => panic!("handshake failed without an HTTP answer: {other}"),
        Ok(_) => panic!("handshake was accepted (101) but should have been refused"),
    }
}

/// The next text frame as JSON, skipping pings; panics on close or after [`WAIT`].
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match next_message(ws).await {
            Message::Text(text) => {
                return serde_json::from_str(text.as_str()).expect("frames are JSON");
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

pub async fn next_message(ws: &mut Ws) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a frame arrives in time")
        .expect("socket still open")
        .expect("no socket error")
}

/// Reads until the server's close frame; returns its code and reason.
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close arrives in time")
        {
            Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                return (u16::from(code), reason.to_string());
            }
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error before the close frame: {e}"),
            None => panic!("socket ended without a close frame"),
        }
    }
}

/// Sends a JSON text frame.
pub async fn send_json(ws: &mut Ws, value: &Value) {
    ws.send(Message::Text(value.to_string().into()))
        .await
        .expect("send");
}

/// Closes from the client side and waits for the server's answer.
pub async fn close(mut ws: Ws) {
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
}

/// The `message` of every event in a `GET /v1/events` page, in order.
pub fn page_messages(page: &Value) -> Vec<&str> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect()
}

/// Polls `condition` until it holds or [`WAIT`] passes. For state the hub changes after the
/// socket is gone (e.g. a registry entry after an abrupt disconnect), where no frame can tell.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`eventually`] for a check that needs I/O (a request, a Redis command): polled every
/// `every` until it says done or [`WAIT`] passes; what it saw last is shown on failure, and
/// returned on success.
pub async fn eventually_async<T: std::fmt::Debug, F: Future<Output = (bool, T)>>(
    what: &str,
    every: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (done, seen) = check().await;
        if done {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last seen {seen:?}"
        );
        tokio::time::sleep(every).await;
    }
}

/// `POST /v1/events` with `token` and an `Idempotency-Key`: status, `Idempotent-Replayed`, body.
pub async fn publish_keyed(
    hub: &TestHub,
    token: &str,
    key: &str,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let response = hub
        .http()
        .post(hub.url("/v1/events"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("publish request");
    let replayed = header_text(&response, "idempotent-replayed");
    let (status, body) = json_response(response).await;
    (status, replayed, body)
}

/// Concurrent answers to one `Idempotency-Key`: all `202` with one receipt, exactly one of
/// them not replayed (the one publish).
pub fn assert_published_once(answers: &[(u16, Option<String>, Value)]) {
    let receipts: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, _, body)| {
            assert_eq!(*status, 202, "{body}");
            body["ids"].to_string()
        })
        .collect();
    assert_eq!(
        receipts.len(),
        1,
        "every answer carries the one receipt: {answers:?}"
    );
    let fresh = answers
        .iter()
        .filter(|(_, r, _)| r.as_deref() == Some("false"));
    assert_eq!(fresh.count(), 1, "{answers:?}");
}

/// A `401` carries `WWW-Authenticate: Bearer`.
pub fn assert_bearer_challenge(response: &reqwest::Response) {
    assert_eq!(response.status(), 401);
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
}
