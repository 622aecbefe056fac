//! The application: every route on its paths, with the shared state. `server` listens and hands
//! each connection to this router; tests and the binary build it the same way (axum's
//! `testing` example uses the same seam). Every route is served at the root and under `/api`
//! (the seed quick start uses `/api/v1/...`), except the web console, at the root only.

pub mod state;

use axum::Router;
use axum::middleware;
use axum::routing::{delete, get, post};

pub use self::state::AppState;
use crate::routes;

/// The hub's HTTP surface.
pub fn app(state: AppState) -> Router {
    let subscribe = get(routes::subscribe).route_layer(middleware::from_fn_with_state(
        state.clone(),
        routes::count_refused_handshakes,
    ));
    let mut v1 = Router::new()
        .route("/v1/ws/subscribe", subscribe)
        .route("/v1/ws/unsubscribe", post(routes::unsubscribe))
        .route("/v1/events", post(routes::publish).get(routes::history))
        .route("/v1/sources/alertmanager", post(routes::alertmanager))
        .route("/v1/ws/clients", get(routes::ws_clients))
        .route("/v1/ws/stats", get(routes::ws_stats))
        .route("/v1/admin/clients", get(routes::clients))
        .route("/v1/admin/clients/{id}", delete(routes::disconnect))
        .route("/v1/admin/channels", get(routes::channels))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/openapi.json", get(routes::openapi))
        .route("/asyncapi.json", get(routes::asyncapi));
    // On the main listener unless `[metrics] listen` gives it one of its own.
    if state.settings.metrics.listen.is_none() {
        v1 = v1.route("/metrics", get(routes::metrics));
    }
    let mut root = Router::new().merge(v1.clone());
    // The console only at the root: its page refers to `/console/...` and `/v1/...`.
    if state.settings.console.enabled {
        root = root
            .route("/console", get(routes::console_index))
            .route("/console/", get(routes::console_index))
            .route("/console/{file}", get(routes::console_asset));
    }
    root.nest("/api", v1)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(middleware::from_fn(routes::log_request))
        .with_state(state)
}

/// The metrics listener's router (`[metrics] listen`): `/metrics` alone.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .with_state(state)
}
