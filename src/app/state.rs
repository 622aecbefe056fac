//! What every route shares, built once from the settings: the hub, authentication, admission,
//! the sources, and the shutdown signals.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Admission, ClientIpResolver};
use crate::auth::Authenticator;
use crate::broker::{Broker, MemoryBroker, Receipt};
use crate::channels::Channels;
use crate::config::{ConfigError, Settings};
use crate::fanout::Fanout;
use crate::hub::Hub;
use crate::idempotency::Replies;
use crate::metrics::Metrics;
use crate::publisher::Publisher;
use crate::sources::Sources;
use crate::tls::Tls;
use crate::ws::SessionSettings;

/// Everything the routes share.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub hub: Arc<Hub>,
    /// The one way events are published (routes and sources alike).
    pub publisher: Publisher,
    pub auth: Arc<Authenticator>,
    pub client_ips: Arc<ClientIpResolver>,
    pub admission: Arc<Admission>,
    pub session_settings: SessionSettings,
    /// Cancelled when shutdown begins: sockets close with 1001, new handshakes get 503.
    pub shutdown: CancellationToken,
    /// Live socket tasks, so shutdown can wait for them.
    pub sessions: TaskTracker,
    pub ready: Arc<AtomicBool>,
    /// Event sources the hub subscribes to itself (`[sources]`); started by `server::run_with`.
    pub sources: Sources,
    /// `None` when `[metrics] enabled = false`.
    pub metrics: Option<Arc<Metrics>>,
    /// Native TLS (`[server.tls]`), read by the accept loop per connection; `None` for plain
    /// HTTP. `reload()` is what SIGHUP calls.
    pub tls: Option<Arc<Tls>>,
    /// When this hub started, for `/v1/ws/stats`.
    pub started: std::time::SystemTime,
    /// Where `[metrics] listen` is bound, once `server::run` bound it.
    pub metrics_addr: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
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
        let client_ips = ClientIpResolver::new(settings.admission.trusted_proxies.clone());
        let tls = Tls::load(&settings.server.tls)
            .map_err(|error| ConfigError::new(error.setting(), error.to_string()))?;
        let channels = Arc::new(Channels::new(&settings.hub.channels));
        let fanout = Fanout::new(&channels, settings.hub.send_queue.get());
        let metrics = settings
            .metrics
            .enabled
            .then(|| Arc::new(Metrics::new(&channels)));
        // The one place that chooses the broker.
        let broker = broker(&settings, &channels, &fanout, metrics.clone())?;
        let hub = Hub::new(Arc::clone(&channels), fanout, Arc::clone(&broker));
        hub.serve_relays();
        Ok(Self {
            publisher: Publisher::new(channels, broker, idempotency(&settings)),
            hub,
            auth: Arc::new(auth),
            client_ips: Arc::new(client_ips),
            admission: Admission::new(&settings.admission),
            session_settings: SessionSettings::from_settings(&settings, metrics.clone()),
            metrics,
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            ready: Arc::new(AtomicBool::new(false)),
            sources: Sources::new(&settings.sources)?,
            tls: tls.map(Arc::new),
            started: std::time::SystemTime::now(),
            metrics_addr: Arc::default(),
            settings: Arc::new(settings),
        })
    }
}

/// The cluster broker when `[cluster] redis_url` is set, else the in-memory one.
fn broker(
    settings: &Settings,
    channels: &Arc<Channels>,
    fanout: &Arc<Fanout>,
    metrics: Option<Arc<Metrics>>,
) -> Result<Arc<dyn Broker>, ConfigError> {
    #[cfg(feature = "cluster")]
    if settings.cluster.enabled() {
        return Ok(Arc::new(crate::broker::redis::RedisBroker::new(
            &settings.cluster,
            Arc::clone(channels),
            Arc::clone(fanout),
            &settings.history,
            metrics,
        )?));
    }
    Ok(Arc::new(MemoryBroker::new(
        Arc::clone(channels),
        Arc::clone(fanout),
        &settings.history,
        metrics,
    )))
}

/// The idempotent-publish memory, unless `limits.idempotency_window_secs` is 0.
fn idempotency(settings: &Settings) -> Option<Replies<Receipt>> {
    let limits = &settings.limits;
    (limits.idempotency_window_secs > 0).then(|| {
        Replies::new(
            std::time::Duration::from_secs(limits.idempotency_window_secs),
            limits.idempotency_max_events.get(),
        )
    })
}
