//! Recognising the copies of a state change. `one_hm.rb` publishes each state document under
//! two or three keys, one after the other; since OpenNebula 7 it runs 15 publishing threads
//! (`:threaded => true`, `@publisher_lock` held per message), so the copies of changes made at
//! the same moment interleave. A content seen within the last few seconds is a copy.
//!
//! Two real state changes never have the same document: it holds the previous state, the
//! monitoring time and the history. Only digests are kept, at most [`MAX_REMEMBERED`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Copies go out within microseconds; this leaves room for a busy front-end and network.
const WINDOW: Duration = Duration::from_secs(5);
/// Far more than the changes 15 threads can have in flight at once.
pub const MAX_REMEMBERED: usize = 256;

#[derive(Debug, Default)]
pub struct Copies {
    recent: VecDeque<([u8; 32], Instant)>,
}

impl Copies {
    /// Whether `content` was seen within the window; if not, it is remembered from `now`.
    pub fn is_copy(&mut self, content: &[u8], now: Instant) -> bool {
        while let Some((_, seen)) = self.recent.front() {
            let expired = now.saturating_duration_since(*seen) > WINDOW;
            if !expired && self.recent.len() < MAX_REMEMBERED {
                break;
            }
            self.recent.pop_front();
        }
        let digest: [u8; 32] = Sha256::digest(content).into();
        if self.recent.iter().any(|(d, _)| *d == digest) {
            return true;
        }
        self.recent.push_back((digest, now));
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_copies_are_recognised() {
        let mut copies = Copies::default();
        let now = Instant::now();
        assert!(!copies.is_copy(b"a", now));
        assert!(!copies.is_copy(b"b", now));
        assert!(copies.is_copy(b"a", now));
        assert!(copies.is_copy(b"b", now));
        assert!(copies.is_copy(b"a", now + Duration::from_secs(1)));
    }

    #[test]
    fn the_window_is_bounded_in_time_and_size() {
        let mut copies = Copies::default();
        let now = Instant::now();
        assert!(!copies.is_copy(b"a", now));
        assert!(!copies.is_copy(b"a", now + WINDOW + Duration::from_millis(1)));
        for i in 0..MAX_REMEMBERED * 2 {
            copies.is_copy(&i.to_le_bytes(), now);
        }
        assert_eq!(copies.recent.len(), MAX_REMEMBERED);
        assert!(!copies.is_copy(&0usize.to_le_bytes(), now));
    }
}
