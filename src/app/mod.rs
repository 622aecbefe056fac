//! The application: every route on its paths, with the shared state. `server` listens and hands
//! each connection to this router; tests and the binary build it the same way (axum's
//! `testing` example uses the same seam). Every route is served at the root and under `/api`
//! (the seed quick start uses `/api/v1/...`).

pub mod state;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

pub use self::state::AppState;
use crate::routes;

/// The hub's HTTP surface.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/ws/subscribe", get(routes::subscribe))
        .route("/v1/ws/unsubscribe", post(routes::unsubscribe))
        .route("/v1/events", post(routes::publish).get(routes::history))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz));
    Router::new()
        .merge(v1.clone())
        .nest("/api", v1)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(middleware::from_fn(routes::log_request))
        .with_state(state)
}
