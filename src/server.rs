//! Wiring: settings → shared state → a listening server, and the shutdown sequence. The binary
//! and the test harness both go through [`AppState::build`] and [`run`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{ClientIpResolver, IpSlots};
use crate::auth::Authenticator;
use crate::config::{ConfigError, Settings};
use crate::hub::Hub;
use crate::routes;
use crate::ws::SessionSettings;

/// Everything the routes share.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub hub: Arc<Hub>,
    pub auth: Arc<Authenticator>,
    pub client_ips: Arc<ClientIpResolver>,
    pub ip_slots: Arc<IpSlots>,
    pub session_settings: SessionSettings,
    /// Cancelled when shutdown begins: sockets close with 1001, new handshakes get 503.
    pub shutdown: CancellationToken,
    /// Live socket tasks, so shutdown can wait for them.
    pub sessions: TaskTracker,
    pub ready: Arc<AtomicBool>,
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
            hub: Hub::new(&settings.hub.channels, settings.hub.send_queue),
            auth: Arc::new(auth),
            client_ips: Arc::new(client_ips),
            ip_slots: IpSlots::new(settings.admission.max_connections_per_ip),
            session_settings: SessionSettings::from_settings(&settings),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            ready: Arc::new(AtomicBool::new(false)),
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
    let local = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        // Events are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
    });
    let stop_accepting = CancellationToken::new();
    let app = routes::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let server =
        axum::serve(listener, app).with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
    let mut server = tokio::spawn(async move { server.await });
    state.ready.store(true, Ordering::Release);
    tracing::info!(%local, "listening");

    tokio::select! {
        _ = signal => {}
        result = &mut server => {
            // The server only returns by itself on an I/O error.
            return result.map_err(std::io::Error::other)?.map(|_| Stopped::Drained);
        }
    }

    let grace = state.settings.shutdown_grace();
    tracing::info!(grace_secs = grace.as_secs(), "shutting down");
    state.ready.store(false, Ordering::Release);
    stop_accepting.cancel();
    state.hub.announce_shutdown(grace.as_secs());
    state.shutdown.cancel();
    state.sessions.close();

    let drained = tokio::time::timeout(grace, async {
        state.sessions.wait().await;
        let _ = server.await;
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
