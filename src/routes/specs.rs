//! `GET /openapi.json` and `GET /asyncapi.json`: the machine-readable API descriptions, served
//! without credentials. The documents are `docs/openapi.json` and `docs/asyncapi.json`, embedded
//! at build time, so what the hub serves is byte for byte the committed file.

use axum::http::header;
use axum::response::IntoResponse;

/// OpenAPI 3.1: the HTTP routes.
pub(crate) const OPENAPI: &str = include_str!("../../docs/openapi.json");
/// AsyncAPI 3.0: the WebSocket side (frames, client messages, close codes).
pub(crate) const ASYNCAPI: &str = include_str!("../../docs/asyncapi.json");

pub(crate) async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

pub(crate) async fn asyncapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], ASYNCAPI)
}
