//! Closing a connection without a reset.
//!
//! When a socket is closed with the client's data still unread, the kernel answers with a TCP
//! reset, and a client that is still sending (a fragmented message over the limit, a request
//! hyper refused) sees the reset instead of our close frame or error response. [`LingeringTcp`]
//! wraps every accepted stream so that closing it half-closes and reads on for a moment.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::ws;

/// A connection's TCP stream that closes by lingering. Closing a socket with the client's data
/// still unread makes the kernel send a reset, which a client that is still sending sees instead
/// of our close frame or response. So on drop it ends its write side and discards what still
/// arrives until the client closes too, for at most [`ws::CLOSE_TIMEOUT`]. After a read error
/// this is the only reader left: the WebSocket stream ends at the error.
///
/// The linger is not tracked: shutdown does not wait for it (it has already waited for the close
/// handshakes), and it ends with the process.
pub struct LingeringTcp {
    /// Taken only by `drop`.
    tcp: Option<TcpStream>,
}

impl LingeringTcp {
    pub fn new(tcp: TcpStream) -> Self {
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|tcp| tcp.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|tcp| tcp.poll_shutdown(cx))
    }
}
