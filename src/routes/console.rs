//! `GET /console`: the web console, a page of plain HTML, CSS and JavaScript compiled into the
//! binary (`console/` at the repository root), so it works offline, needs no build step and
//! cannot drift from the hub it ships with. Only routed when `[console] enabled`.
//!
//! The page holds no secret and grants nothing: it calls the public routes with the credential
//! the user pastes. The headers make the browser enforce that it loads nothing but itself:
//! a strict `Content-Security-Policy` (scripts, styles and fetches from this origin only, plus
//! WebSockets), `nosniff`, no framing, no referrer.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// One embedded file.
struct Asset {
    /// The name under `/console/`.
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// Every file the console serves; the page is `index.html`.
const ASSETS: [Asset; 3] = [
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../console/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../console/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../console/app.css"),
    },
];

/// Self only; `connect-src` adds `ws:`/`wss:` because CSP Level 2 browsers do not count a
/// WebSocket to the same host as `'self'`. No inline script or style, nothing from elsewhere.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The files are not content-hashed in their names, so the browser must revalidate each use
/// (`no-cache` is "store, but ask first"); the `ETag` makes that a cheap `304`. A new binary
/// has new tags, so an upgrade is seen at once.
const CACHE_CONTROL: &str = "no-cache";

/// `GET /console` and `GET /console/`: the page.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve(&ASSETS[0], &headers)
}

/// `GET /console/{file}`: one of [`ASSETS`], or `404`.
pub(crate) async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(asset) => serve(asset, &headers),
        None => ApiError::NotFound(format!(
            "no console file {file:?}; the console is at /console"
        ))
        .into_response(),
    }
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = etag(asset.bytes);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.bytes,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// A strong validator from the bytes (FNV-1a, 64 bits: not for security, only to tell two
/// builds' files apart).
fn etag(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_by_content_and_are_quoted() {
        assert_ne!(etag(b"a"), etag(b"b"));
        assert!(etag(b"a").starts_with('"') && etag(b"a").ends_with('"'));
    }

    #[test]
    fn the_policy_is_a_valid_header_value() {
        assert!(HeaderValue::from_str(CONTENT_SECURITY_POLICY).is_ok());
    }
}
