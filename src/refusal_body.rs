//! hyper answers a request it cannot parse by itself, before any route runs: `414` for a URI
//! over its 65,534-byte limit, `431` for more than 100 headers or a head larger than its read
//! buffer, `400` for anything that is not HTTP/1.1. Those answers have an empty body, and
//! hyper offers no hook to change them.
//!
//! [`RefusalBody`] wraps a connection's socket. When hyper writes one of its own refusals (a
//! 400, 414 or 431 head with `content-length: 0` and nothing but a `date` beside it, which no
//! route of the hub ever sends), the wrapper writes the same status with the SPEC's JSON error
//! body in its place. The head is read with `httparse`, hyper's own parser; everything else
//! passes through untouched. Writes are not vectored (the trait default), so hyper hands each
//! head over whole.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ApiError;

/// A socket whose writes are passed on, except hyper's bodiless refusals.
pub struct RefusalBody<T> {
    inner: T,
    /// A replacement being written, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> RefusalBody<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> RefusalBody<T> {
    /// Writes what is left of a replacement.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for RefusalBody<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for RefusalBody<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(replacement) = replacement(buf) {
            // Taken whole: hyper's refusal is gone, ours is written before the next flush.
            this.pending = Some((replacement, 0));
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The answer to write instead of `buf`, when `buf` is one of hyper's own refusals.
fn replacement(buf: &[u8]) -> Option<Vec<u8>> {
    // Cheap first: frames and bodies the hub writes never start so.
    if !buf.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; 4];
    let mut head = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = head.parse(buf) else {
        return None;
    };
    let hypers_own = len == buf.len()
        && head.headers.iter().all(|h| {
            let is = |name: &str, value: &[u8]| {
                h.name.eq_ignore_ascii_case(name) && h.value.eq_ignore_ascii_case(value)
            };
            is("content-length", b"0")
                || is("connection", b"close")
                || h.name.eq_ignore_ascii_case("date")
        });
    if !hypers_own {
        return None;
    }
    let error = match head.code? {
        400 => ApiError::BadRequest(
            "the request is not valid HTTP/1.1 (request line or a header); send e.g. \
             GET /v1/ws/subscribe?event_types=pdfm HTTP/1.1"
                .into(),
        ),
        414 => ApiError::UriTooLong(
            "the request URI is longer than 65,534 bytes; name fewer channels or resume \
             positions, or send long lists in a JSON body"
                .into(),
        ),
        431 => ApiError::HeadersTooLarge(
            "the request has more than 100 headers, or its head is larger than about 400 KiB; send \
             fewer or shorter headers"
                .into(),
        ),
        _ => return None,
    };
    Some(http1_response(&error))
}

/// A complete HTTP/1.1 response for `error`; the connection closes after it, as hyper's did.
fn http1_response(error: &ApiError) -> Vec<u8> {
    let status = error.status();
    let body = error.body();
    let mut response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_refusals_are_replaced() {
        let hypers = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\
            date: Tue, 01 Dec 2026 20:00:00 GMT\r\n\r\n";
        let replaced = replacement(hypers).expect("replaced");
        let text = String::from_utf8(replaced).expect("UTF-8");
        assert!(
            text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{text}"
        );
        assert!(
            text.ends_with("}") && text.contains("\"error\":\"headers_too_large\""),
            "{text}"
        );
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"[..],
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\nextra",
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n",
            b"\x81\x05hello",
        ] {
            assert_eq!(replacement(other), None, "{}", String::from_utf8_lossy(other));
        }
    }
}
