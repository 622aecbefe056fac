//! Frames waiting for the socket, written in bursts. For a socket that chose the
//! `cloudevents.json` subprotocol each text frame is rendered as a CloudEvent as it is written:
//! every frame passes here (events, replays, welcome, replies, errors, the shutdown notice),
//! and the shared frames stay shared until the last moment.

use std::collections::VecDeque;
use std::task::{Context, Poll, ready};

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use tokio::time::Instant;

use super::{Exit, SLOW, SessionSettings};
use crate::cloudevents;

/// Frames waiting for the socket. Bounded: a client that lets `send_queue` frames pile up, or
/// whose socket accepts nothing for `write_timeout`, is a slow consumer.
pub(super) struct Outbox {
    pub(super) queue: VecDeque<Message>,
    pub(super) limit: usize,
    pub(super) unflushed: bool,
    blocked_since: Option<Instant>,
    /// The socket chose `cloudevents.json`.
    cloudevents: bool,
}

impl Outbox {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            limit,
            unflushed: false,
            blocked_since: None,
            cloudevents: false,
        }
    }

    /// Writes every text frame as a CloudEvent from now on.
    pub(super) fn render_cloudevents(&mut self) {
        self.cloudevents = true;
    }

    pub(super) fn push(
        &mut self,
        message: Message,
        settings: &SessionSettings,
    ) -> Result<(), Exit> {
        let stalled = self
            .blocked_since
            .is_some_and(|since| since.elapsed() >= settings.write_timeout);
        if self.queue.len() >= self.limit || stalled {
            return Err(SLOW);
        }
        self.queue.push_back(message);
        Ok(())
    }

    /// Feeds every queued frame into the socket and flushes once: a burst costs one write.
    pub(super) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut WebSocket,
    ) -> Poll<Result<(), axum::Error>> {
        let result = self.drive(cx, socket);
        match result {
            Poll::Pending => {
                self.blocked_since.get_or_insert_with(Instant::now);
            }
            Poll::Ready(_) => {
                self.blocked_since = None;
                // A burst may have grown the queue; give the memory back once it is drained.
                if self.queue.capacity() > 64 {
                    self.queue.shrink_to(16);
                }
            }
        }
        result
    }

    fn drive(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut WebSocket,
    ) -> Poll<Result<(), axum::Error>> {
        while !self.queue.is_empty() {
            ready!(socket.poll_ready_unpin(cx))?;
            if let Some(message) = self.queue.pop_front() {
                let message = match message {
                    Message::Text(frame) if self.cloudevents => {
                        Message::Text(cloudevents::outbound::render(&frame))
                    }
                    other => other,
                };
                socket.start_send_unpin(message)?;
                self.unflushed = true;
            }
        }
        if self.unflushed {
            ready!(socket.poll_flush_unpin(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::extract::ws::Utf8Bytes;

    use super::*;
    use crate::ws::close;

    fn settings(send_queue: usize) -> SessionSettings {
        SessionSettings {
            metrics: None,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            write_timeout: Duration::from_secs(10),
            send_queue,
            messages_per_sec: 10.0,
            message_burst: 20.0,
        }
    }

    fn text(s: &'static str) -> Message {
        Message::Text(Utf8Bytes::from_static(s))
    }

    #[test]
    fn the_outbox_refuses_the_frame_past_its_limit_as_a_slow_consumer() {
        let settings = settings(2);
        let mut outbox = Outbox::new(settings.send_queue);
        assert!(outbox.push(text("a"), &settings).is_ok());
        assert!(outbox.push(text("b"), &settings).is_ok());
        assert!(matches!(
            outbox.push(text("c"), &settings),
            Err(Exit::Close(close::SLOW_CONSUMER, _))
        ));
        assert_eq!(outbox.queue.len(), 2);
    }

    #[test]
    fn a_socket_blocked_for_the_write_timeout_is_a_slow_consumer_even_with_room() {
        let settings = settings(100);
        let mut outbox = Outbox::new(settings.send_queue);
        let now = Instant::now();
        outbox.blocked_since = now.checked_sub(Duration::from_secs(5));
        assert!(
            outbox.push(text("a"), &settings).is_ok(),
            "blocked, but not for long"
        );
        outbox.blocked_since = now.checked_sub(settings.write_timeout);
        assert!(matches!(
            outbox.push(text("b"), &settings),
            Err(Exit::Close(close::SLOW_CONSUMER, _))
        ));
    }
}
