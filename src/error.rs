//! One error type for every HTTP route, mapped to the SPEC's error body in one place:
//! `{"code": <status>, "error": "<machine kind>", "message": "<human text>"}`.

use std::net::IpAddr;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No credentials, or credentials that do not verify.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials without the needed claim, or someone else's client.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    /// A `filter` that does not compile (subscribe, `GET /v1/events`).
    #[error(transparent)]
    InvalidFilter(#[from] crate::filter::FilterError),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The per-IP admission limit is reached.
    #[error("IP address {0} already has an active WebSocket connection")]
    IpBusy(IpAddr),
    /// An `Idempotency-Key` reused for a different request within its window.
    #[error("{0}")]
    KeyReused(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A plain HTTP request on the WebSocket route.
    #[error("{0}")]
    UpgradeRequired(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    TooManyConnections(String),
    #[error("{0}")]
    RequestTimeout(String),
    /// A request line hyper refused before routing (see `refusal_body`).
    #[error("{0}")]
    UriTooLong(String),
    #[error("{0}")]
    HeadersTooLarge(String),
}

/// The refusal's message, attached to the response so the request log can say why.
#[derive(Debug, Clone)]
pub struct RefusalReason(pub String);

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u16,
    error: &'a str,
    message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) | Self::InvalidFilter(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::IpBusy(_) | Self::KeyReused(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::UpgradeRequired(_) => StatusCode::UPGRADE_REQUIRED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyConnections(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    /// The stable machine-readable kind; clients branch on this, not on the message.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::BadRequest(_) => "bad_request",
            Self::InvalidFilter(_) => "invalid_filter",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::IpBusy(_) => "connection_limit",
            Self::KeyReused(_) => "idempotency_key_reused",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::UpgradeRequired(_) => "upgrade_required",
            Self::Unavailable(_) => "unavailable",
            Self::TooManyConnections(_) => "too_many_connections",
            Self::RequestTimeout(_) => "request_timeout",
            Self::UriTooLong(_) => "uri_too_long",
            Self::HeadersTooLarge(_) => "headers_too_large",
        }
    }

    /// The SPEC's error body, serialised.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.error_body()).unwrap_or_default()
    }

    fn error_body(&self) -> ErrorBody<'static> {
        ErrorBody {
            code: self.status().as_u16(),
            error: self.kind(),
            message: self.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let mut response = (status, axum::Json(self.error_body())).into_response();
        response.extensions_mut().insert(RefusalReason(message));
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::UPGRADE_REQUIRED {
            response
                .headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        response
    }
}

impl From<crate::identity::MissingClaim> for ApiError {
    fn from(missing: crate::identity::MissingClaim) -> Self {
        Self::Forbidden(missing.to_string())
    }
}

impl From<crate::hub::HubError> for ApiError {
    fn from(error: crate::hub::HubError) -> Self {
        use crate::hub::HubError;
        match error {
            HubError::UnknownClient(_) => Self::NotFound(error.to_string()),
            HubError::NotOwner(_) => Self::Forbidden(error.to_string()),
            HubError::Invalid(message) => Self::BadRequest(message),
            HubError::Unavailable(message) => Self::Unavailable(message),
        }
    }
}

impl From<crate::cloudevents::CloudEventError> for ApiError {
    fn from(error: crate::cloudevents::CloudEventError) -> Self {
        use crate::cloudevents::CloudEventError;
        match error {
            CloudEventError::Invalid(message) => Self::BadRequest(message),
            CloudEventError::Unsupported(message) => Self::UnsupportedMediaType(message),
        }
    }
}

impl From<crate::broker::PublishError> for ApiError {
    fn from(error: crate::broker::PublishError) -> Self {
        use crate::broker::PublishError;
        match error {
            PublishError::Invalid(message) => Self::BadRequest(message),
            PublishError::ShuttingDown => Self::Unavailable(error.to_string()),
            PublishError::KeyReused => Self::KeyReused(error.to_string()),
            PublishError::Unavailable(message) => Self::Unavailable(message),
        }
    }
}

impl From<crate::broker::LeaseError> for ApiError {
    fn from(error: crate::broker::LeaseError) -> Self {
        use crate::broker::LeaseError;
        match error {
            LeaseError::Busy(ip) => Self::IpBusy(ip),
            LeaseError::Unavailable(message) => Self::Unavailable(message),
        }
    }
}

impl From<crate::admission::Refused> for ApiError {
    fn from(refused: crate::admission::Refused) -> Self {
        use crate::admission::Refused;
        match refused {
            Refused::IpBusy(ip) => Self::IpBusy(ip),
            Refused::Full { max } => Self::Unavailable(format!(
                "the hub is at its connection limit ({max}); try again later"
            )),
            Refused::IdentityBusy { subject, max } => Self::TooManyConnections(format!(
                "{subject} already has {max} active WebSocket connection(s), the most allowed"
            )),
        }
    }
}
