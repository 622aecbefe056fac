//! Idempotent publish: a publisher that retries a request with the same `Idempotency-Key`
//! within the window gets the first request's `202` receipt again, and nothing is published
//! twice. Keys are scoped by the caller (the same key from two publishers is two keys).
//!
//! Memory is bounded: answers are kept for `window`, and at most `max_weight` of them by
//! weight (a receipt weighs one per event id it holds), the oldest dropped first. A reused key with a different body is refused, not silently answered with the
//! receipt of another request.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

/// The response header that says whether a `202` repeats an earlier answer to the same key.
pub const REPLAYED: &str = "idempotent-replayed";

/// Longest key accepted (Stripe and the IETF draft use similar bounds).
pub const MAX_KEY_LEN: usize = 255;

/// What a keyed request finds.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen<R> {
    /// The first time within the window: this is what the publish answered (now kept).
    New(R),
    /// A repeat of the same request: answer this again.
    Repeat(R),
    /// The key was used for a different request within the window.
    Conflict,
}

/// How much of the memory budget an answer takes.
pub trait Weight {
    fn weight(&self) -> usize;
}

struct Answer<R> {
    fingerprint: [u8; 32],
    reply: R,
    at: Instant,
}

/// The answers to keyed requests still within the window.
pub struct Replies<R> {
    window: Duration,
    max_weight: usize,
    state: Mutex<State<R>>,
}

struct State<R> {
    answers: HashMap<String, Answer<R>>,
    /// Keys oldest first, to expire and to evict without scanning.
    order: VecDeque<(Instant, String)>,
    weight: usize,
}

impl<R: Clone + Weight> Replies<R> {
    pub fn new(window: Duration, max_weight: usize) -> Self {
        Self {
            window,
            max_weight,
            state: Mutex::new(State {
                answers: HashMap::new(),
                order: VecDeque::new(),
                weight: 0,
            }),
        }
    }

    /// How long an answer is kept (`limits.idempotency_window_secs`); a shared broker keeps its
    /// own answers for as long.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Runs `publish` unless `key` was answered within the window; keeps its answer. The lock is
    /// held across `publish` (an async lock: a shared broker's publish awaits I/O), so two
    /// concurrent requests with one key publish once.
    pub async fn once<E, F>(
        &self,
        key: String,
        fingerprint: [u8; 32],
        publish: impl FnOnce() -> F,
    ) -> Result<Seen<R>, E>
    where
        F: Future<Output = Result<R, E>>,
    {
        self.once_at(Instant::now(), key, fingerprint, publish)
            .await
    }

    async fn once_at<E, F>(
        &self,
        now: Instant,
        key: String,
        fingerprint: [u8; 32],
        publish: impl FnOnce() -> F,
    ) -> Result<Seen<R>, E>
    where
        F: Future<Output = Result<R, E>>,
    {
        let mut state = self.state.lock().await;
        state.expire(now, self.window);
        if let Some(answer) = state.answers.get(&key) {
            return Ok(if answer.fingerprint == fingerprint {
                Seen::Repeat(answer.reply.clone())
            } else {
                Seen::Conflict
            });
        }
        let reply = publish().await?;
        state.weight += reply.weight();
        while state.weight > self.max_weight && !state.order.is_empty() {
            state.evict_oldest();
        }
        state.order.push_back((now, key.clone()));
        let answer = Answer {
            fingerprint,
            reply: reply.clone(),
            at: now,
        };
        state.answers.insert(key, answer);
        Ok(Seen::New(reply))
    }
}

impl<R: Weight> State<R> {
    fn expire(&mut self, now: Instant, window: Duration) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > window)
        {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((at, key)) = self.order.pop_front() {
            // Only if it is still that answer (a key is in `order` once per answer).
            let current = self.answers.get(&key).is_some_and(|a| a.at == at);
            if let Some(answer) = current.then(|| self.answers.remove(&key)).flatten() {
                self.weight -= answer.reply.weight();
            }
        }
    }
}

/// The digest that tells one request from another under the same key.
pub fn fingerprint(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// Checks a header value: visible ASCII, 1 to [`MAX_KEY_LEN`] characters.
pub fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::{Ready, ready};

    impl Weight for u32 {
        fn weight(&self) -> usize {
            1
        }
    }

    fn replies(max_weight: usize) -> Replies<u32> {
        Replies::new(Duration::from_secs(60), max_weight)
    }

    fn ok(n: u32) -> impl FnOnce() -> Ready<Result<u32, ()>> {
        move || ready(Ok(n))
    }

    #[tokio::test]
    async fn a_repeat_gets_the_first_answer_and_runs_nothing() {
        let r = replies(10);
        let body = fingerprint(b"{}");
        assert_eq!(r.once("k".into(), body, ok(1)).await, Ok(Seen::New(1)));
        let twice = r
            .once("k".into(), body, || -> Ready<Result<u32, ()>> {
                panic!("a repeat must not publish")
            })
            .await;
        assert_eq!(twice, Ok(Seen::Repeat(1)));
    }

    #[tokio::test]
    async fn the_same_key_for_another_body_is_a_conflict() {
        let r = replies(10);
        r.once("k".into(), fingerprint(b"a"), ok(1))
            .await
            .expect("first");
        let other = fingerprint(b"b");
        assert_eq!(r.once("k".into(), other, ok(2)).await, Ok(Seen::Conflict));
    }

    #[tokio::test]
    async fn a_failed_publish_is_not_remembered() {
        let r = replies(10);
        let body = fingerprint(b"{}");
        assert_eq!(
            r.once("k".into(), body, || ready(Err::<u32, _>("down")))
                .await,
            Err("down")
        );
        assert_eq!(r.once("k".into(), body, ok(3)).await, Ok(Seen::New(3)));
    }

    #[tokio::test]
    async fn memory_is_bounded_by_dropping_the_oldest() {
        let r = replies(2);
        let body = fingerprint(b"{}");
        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            r.once(key.into(), body, ok(i as u32))
                .await
                .expect("publish");
        }
        assert_eq!(
            r.once("a".into(), body, ok(9)).await,
            Ok(Seen::New(9)),
            "a was evicted"
        );
        assert_eq!(r.once("c".into(), body, ok(9)).await, Ok(Seen::Repeat(2)));
    }

    #[tokio::test]
    async fn answers_expire_after_the_window() {
        let r = replies(10);
        let body = fingerprint(b"{}");
        let start = Instant::now();
        r.once_at(start, "k".into(), body, ok(1))
            .await
            .expect("first");
        let within = start + Duration::from_secs(60);
        assert_eq!(
            r.once_at(within, "k".into(), body, ok(2)).await,
            Ok(Seen::Repeat(1))
        );
        let after = start + Duration::from_secs(61);
        assert_eq!(
            r.once_at(after, "k".into(), body, ok(2)).await,
            Ok(Seen::New(2))
        );
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert!(valid_key("retry-7f0c"));
        assert!(!valid_key(""));
        assert!(!valid_key("tab\there"));
        assert!(!valid_key(&"x".repeat(MAX_KEY_LEN + 1)));
    }
}
