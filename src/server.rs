//! The listening server and the shutdown sequence. The binary and the test harness both build
//! an [`AppState`] and go through [`run`].
//!
//! The accept loop is ours rather than `axum::serve` so that it can bound how long a client may
//! take to send its request headers, say plainly when the process runs out of file
//! descriptors, close every connection by lingering (`lingering_tcp`), and run the TLS
//! handshake (`tls`) under the same deadline as the request headers.

use std::future::Future;
use std::net::SocketAddr;

use std::sync::atomic::Ordering;

use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::app::{self, AppState};
use crate::lingering_tcp::LingeringTcp;
use crate::refusal_body::RefusalBody;
use crate::tls;

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
    let router = app::app(state.clone());
    if let Some(addr) = state.settings.metrics.listen {
        serve_metrics(addr, &state).await?;
    }
    run_with(listener, state, router, signal).await
}

/// `[metrics] listen`: `/metrics` on a listener of its own, until shutdown begins. Its bound
/// address is kept in `state.metrics_addr` (port 0 picks a free one).
async fn serve_metrics(addr: SocketAddr, state: &AppState) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let _ = state.metrics_addr.set(local);
    tracing::info!(%local, "metrics listening");
    let router = app::metrics_app(state.clone());
    let stop = state.shutdown.clone().cancelled_owned();
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "the metrics listener stopped");
        }
    });
    Ok(())
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
    let scheme = if state.tls.is_some() { "https" } else { "http" };
    tracing::info!(%local, scheme, "listening");
    state.sources.start(&state.publisher, &state.shutdown);

    tokio::pin!(signal);
    let mut fd_warning = FdWarning::default();
    loop {
        tokio::select! {
            _ = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Events are small and latency matters more than packet count.
                    let _ = tcp.set_nodelay(true);
                    // Read per connection, so a reload applies from the next handshake on.
                    let acceptor = state.tls.as_ref().map(|tls| tls.acceptor());
                    connections.spawn(serve_accepted(
                        LingeringTcp::new(tcp),
                        acceptor,
                        Connection {
                            peer,
                            router: router.clone(),
                            stop: stop_http.clone(),
                            header_read_timeout: state.settings.header_read_timeout(),
                        },
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
    state.hub.close_publishing(grace.as_secs()).await;
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

/// What serving one accepted connection needs besides its stream.
struct Connection {
    peer: SocketAddr,
    router: Router,
    stop: CancellationToken,
    header_read_timeout: Duration,
}

/// The layers of an accepted stream, bottom-up: `LingeringTcp` (a clean close), TLS when
/// configured, then `RefusalBody` on the plaintext HTTP. The TLS handshake gets the header-read
/// deadline, so a client that opens TCP and never sends a ClientHello is cut off like a
/// slow-loris; shutdown abandons handshakes still in progress.
async fn serve_accepted(tcp: LingeringTcp, acceptor: Option<TlsAcceptor>, connection: Connection) {
    let Some(acceptor) = acceptor else {
        return serve_connection(tcp, connection).await;
    };
    let handshake = tls::accept(acceptor, tcp, connection.header_read_timeout);
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(peer = %connection.peer, %error, "connection closed before HTTP");
                return;
            }
        },
        _ = connection.stop.cancelled() => return,
    };
    serve_connection(stream, connection).await
}

/// One HTTP/1.1 connection: requests until it closes, or its upgrade to a WebSocket. A client
/// that does not finish sending its headers within `header_read_timeout` is cut off, so a
/// slow-loris holds nothing for long.
async fn serve_connection<IO>(io: IO, connection: Connection)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Connection {
        peer,
        router,
        stop,
        header_read_timeout,
    } = connection;
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().call(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(RefusalBody::new(io)), service)
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
    rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
}

/// Raises the soft open-files limit to the hard one: every socket is a file, and the default
/// soft limit (often 1024) is far below what a hub serves. Returns the limit now in force.
pub fn raise_open_files_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
        .ok()
        .or_else(open_files_limit)
}
