//! A bound on the node's pub/sub queue. redis-rs 1.8 hands pub/sub messages from its
//! connection task to the [`PubSubStream`] through an unbounded channel it owns and neither
//! bounds nor measures. So a small task reads that stream at once into a bounded queue of
//! `[cluster] pubsub_backlog` messages; the delivery task reads from there. When the queue is
//! full the delivery task has fallen that far behind: the session ends ([`RedisFailure::FellBehind`]),
//! dropping the connection, and the reconnect catches every channel up from the streams, in
//! order, as after any lost connection. The redis-rs queue stays near empty, as the task only
//! moves messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ::redis::Msg;
use ::redis::aio::PubSubStream;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::RedisFailure;

/// The pub/sub messages of one session, at most `capacity` waiting.
pub(super) struct Backlog {
    queue: mpsc::Receiver<Msg>,
    overflowed: Arc<AtomicBool>,
    mover: tokio::task::JoinHandle<()>,
    capacity: usize,
}

impl Backlog {
    pub fn new(mut stream: PubSubStream, capacity: usize) -> Self {
        let (sender, queue) = mpsc::channel(capacity.max(1));
        let overflowed = Arc::new(AtomicBool::new(false));
        let full = Arc::clone(&overflowed);
        let mover = tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                if let Err(mpsc::error::TrySendError::Full(_)) = sender.try_send(message) {
                    full.store(true, Ordering::Release);
                    return;
                }
            }
        });
        Self {
            queue,
            overflowed,
            mover,
            capacity,
        }
    }

    /// The next message; `FellBehind` as soon as the queue overflowed (what is still queued
    /// is left to the catch-up), `Closed` when the connection ended.
    pub async fn next(&mut self) -> Result<Msg, RedisFailure> {
        let message = self.queue.recv().await;
        if self.overflowed.load(Ordering::Acquire) {
            return Err(RedisFailure::FellBehind(self.capacity));
        }
        message.ok_or(RedisFailure::Closed)
    }
}

impl Drop for Backlog {
    fn drop(&mut self) {
        self.mover.abort();
    }
}
