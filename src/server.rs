//! Wiring: settings → shared state → a listening server, and the shutdown sequence. The binary
//! and the test harness both go through [`AppState::build`] and [`run`].
//!
//! The accept loop is ours rather than `axum::serve` so that it can bound how long a client may
//! take to send its request headers, say plainly when the process runs out of file
//! descriptors, and close every connection by lingering ([`LingeringTcp`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::admission::{Admission, ClientIpResolver};
use crate::auth::Authenticator;
use crate::config::{ConfigError, Settings};
use crate::hub::Hub;
use crate::routes;
use crate::sources::Sources;
use crate::ws::{self, SessionSettings};

/// Everything the routes share.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub hub: Arc<Hub>,
    pub auth: Arc<Authenticator>,
    pub client_ips: Arc<ClientIpResolver>,
    pub admission: Arc<Admission>,
    pub session_settings: SessionSettings,
    /// Cancelled when shutdown begins: sockets close with 1001, new handshakes get 503.
    pub shutdown: CancellationToken,
    /// Live socket tasks, so shutdown can wait for them.
    pub sessions: TaskTracker,
    pub ready: Arc<AtomicBool>,
    /// Event sources the hub subscribes to itself (`[sources]`); started by [`run_with`].
    pub sources: Sources,
}

impl axum::extract::FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.auth)
    }
}

impl AppState {
    /// `jwt_secret` is the secret in force (the configured one, or one generated at start-up).
    pub fn build(settings: Settings, jwt_secret: &str) -> Result<Self, ConfigError> {
        let auth = Authenticator::from_settings(&settings, jwt_secret)?;
        let client_ips = ClientIpResolver::new(settings.trusted_proxies()?);
        Ok(Self {
            hub: Hub::new(
                &settings.hub.channels,
                settings.hub.send_queue,
                &settings.history,
            ),
            auth: Arc::new(auth),
            client_ips: Arc::new(client_ips),
            admission: Admission::new(&settings.admission),
            session_settings: SessionSettings::from_settings(&settings),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            ready: Arc::new(AtomicBool::new(false)),
            sources: Sources::new(&settings.sources),
            settings: Arc::new(settings),
        })
    }
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every socket closed within the grace period.
    Drained,
    /// The grace period ran out with sockets still open; they were dropped.
    GraceExpired,
}

/// Serves until `signal` resolves, then shuts down: stop accepting, announce `SERVER_SHUTDOWN`
/// on `global`, close every socket with 1001 and wait at most `shutdown_grace` for them.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Stopped> {
    let router = routes::router(state.clone());
    run_with(listener, state, router, signal).await
}

/// [`run`] with another router (the test-only conformance echo server).
pub async fn run_with(
    listener: TcpListener,
    state: AppState,
    router: Router,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Stopped> {
    let local = listener.local_addr()?;
    let connections = TaskTracker::new();
    let stop_http = CancellationToken::new();
    state.ready.store(true, Ordering::Release);
    tracing::info!(%local, "listening");
    state.sources.start(&state.hub, &state.shutdown);

    tokio::pin!(signal);
    let mut fd_warning = FdWarning::default();
    loop {
        tokio::select! {
            _ = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Events are small and latency matters more than packet count.
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(serve_connection(
                        LingeringTcp::new(tcp),
                        peer,
                        router.clone(),
                        stop_http.clone(),
                        state.settings.header_read_timeout(),
                    ));
                }
                Err(error) if is_fd_exhaustion(&error) => {
                    fd_warning.report(&error, state.hub.client_count());
                    // Let sockets close before trying again; the kernel keeps the backlog.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // The peer gave up between SYN and accept: not the server's problem.
                Err(error) => tracing::debug!(%error, "accept failed"),
            },
        }
    }
    drop(listener);

    let grace = state.settings.shutdown_grace();
    tracing::info!(grace_secs = grace.as_secs(), "shutting down");
    state.ready.store(false, Ordering::Release);
    stop_http.cancel();
    state.hub.close_publishing(grace.as_secs());
    state.shutdown.cancel();
    state.sessions.close();
    connections.close();

    let drained = tokio::time::timeout(grace, async {
        state.sessions.wait().await;
        connections.wait().await;
        state.sources.stopped().await;
    })
    .await;
    match drained {
        Ok(()) => {
            tracing::info!("shutdown complete");
            Ok(Stopped::Drained)
        }
        Err(_) => {
            tracing::warn!(
                open = state.hub.client_count(),
                "grace period over; dropping the remaining sockets"
            );
            Ok(Stopped::GraceExpired)
        }
    }
}

/// One HTTP/1.1 connection: requests until it closes, or its upgrade to a WebSocket. A client
/// that does not finish sending its headers within `header_read_timeout` is cut off, so a
/// slow-loris holds nothing for long.
async fn serve_connection(
    tcp: LingeringTcp,
    peer: SocketAddr,
    router: Router,
    stop: CancellationToken,
    header_read_timeout: Duration,
) {
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().call(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.cancelled() => {
            // Finish the request in flight, then close; idle keep-alive connections close now.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// A connection's TCP stream that closes by lingering. Closing a socket with the client's data
/// still unread makes the kernel send a reset, which a client that is still sending sees instead
/// of our close frame or response. So on drop it ends its write side and discards what still
/// arrives until the client closes too, for at most [`ws::CLOSE_TIMEOUT`]. After a read error
/// this is the only reader left: the WebSocket stream ends at the error.
///
/// The linger is not tracked: shutdown does not wait for it (it has already waited for the close
/// handshakes), and it ends with the process.
struct LingeringTcp {
    /// Taken only by `drop`.
    tcp: Option<TcpStream>,
}

impl LingeringTcp {
    fn new(tcp: TcpStream) -> Self {
        Self { tcp: Some(tcp) }
    }

    fn with<T>(
        self: Pin<&mut Self>,
        poll: impl FnOnce(Pin<&mut TcpStream>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match self.get_mut().tcp.as_mut() {
            Some(tcp) => poll(Pin::new(tcp)),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl Drop for LingeringTcp {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(tcp) = self.tcp.take() {
            runtime.spawn(linger(tcp));
        }
    }
}

/// Half-closes, then discards what the client sends until it closes or the close timeout ends.
async fn linger(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    let mut discard = [0u8; 4096];
    let _ = tokio::time::timeout(ws::CLOSE_TIMEOUT, async {
        while tcp.read(&mut discard).await.is_ok_and(|n| n > 0) {}
    })
    .await;
}

impl AsyncRead for LingeringTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.with(|tcp| tcp.poll_read(cx, buf))
    }
}

impl AsyncWrite for LingeringTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.with(|tcp| tcp.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.with(|tcp| tcp.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|tcp| tcp.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|tcp| tcp.poll_shutdown(cx))
    }
}

fn is_fd_exhaustion(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE)
    )
}

/// Says clearly, at most every few seconds, that the process ran out of file descriptors.
#[derive(Default)]
struct FdWarning {
    last: Option<std::time::Instant>,
}

impl FdWarning {
    fn report(&mut self, error: &std::io::Error, clients: usize) {
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
        if due {
            self.last = Some(std::time::Instant::now());
            tracing::error!(
                %error,
                clients,
                limit = open_files_limit().unwrap_or(0),
                "cannot accept connections: out of file descriptors (one per socket). Raise the \
                 limit (ulimit -n, systemd LimitNOFILE) or lower admission.max_connections"
            );
        }
    }
}

/// The soft limit on open files.
pub fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then_some(limit.rlim_cur)
}

/// Raises the soft open-files limit to the hard one: every socket is a file, and the default
/// soft limit (often 1024) is far below what a hub serves. Returns the limit now in force.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Some(raised.rlim_cur);
            }
        }
    }
    Some(limit.rlim_cur)
}
