//! Each channel's recent past: what a reconnecting client missed, and what `GET /v1/events`
//! serves to polling clients.
//!
//! Broadcast events are numbered per channel (`seq`, from 1, without holes) as they are
//! published, and the log keeps the newest of them within the channel's limits. Targeted events
//! are private to one connection, so they are neither numbered nor kept.

use std::collections::VecDeque;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::config::HistoryLimits;
use crate::protocol::Frame;

/// One channel's numbering and retained events.
#[derive(Debug)]
pub struct Log {
    limits: HistoryLimits,
    /// The seq of the newest event published on the channel; 0 before the first.
    last_seq: u64,
    /// Consecutive seqs, oldest first, ending at `last_seq` when not empty.
    entries: VecDeque<Entry>,
    bytes: usize,
    /// The seq and publish time of the newest event dropped, for `since_time`'s honesty.
    dropped: Option<(u64, DateTime<Utc>)>,
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    /// When it was published, as its frame's `timestamp` says.
    published: DateTime<Utc>,
    frame: Frame,
}

/// Why the history cannot continue a stream right after a given seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gap {
    /// Events after the cursor were dropped; the oldest still kept is `oldest` (`None`: none is).
    Gone { oldest: Option<u64>, last_seq: u64 },
    /// The cursor is beyond the newest event: it comes from another epoch.
    Ahead { last_seq: u64 },
}

impl Gap {
    /// A sentence for the client, naming the channel.
    pub fn describe(&self, channel: &str, after: u64) -> String {
        match self {
            Gap::Gone {
                oldest: Some(oldest),
                ..
            } => format!(
                "{channel}: history starts at seq {oldest}, events after {after} are no longer kept"
            ),
            Gap::Gone { oldest: None, .. } => {
                format!(
                    "{channel}: events after seq {after} are no longer kept (history is off or expired)"
                )
            }
            Gap::Ahead { last_seq } => format!(
                "{channel}: seq {after} is ahead of the newest event ({last_seq}); it comes from before a restart"
            ),
        }
    }
}

impl Log {
    pub fn new(limits: HistoryLimits) -> Self {
        Self {
            limits,
            last_seq: 0,
            entries: VecDeque::new(),
            bytes: 0,
            dropped: None,
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// How many events are kept, and their bytes (expired ones count until a read drops them).
    pub fn size(&self) -> (usize, usize) {
        (self.entries.len(), self.bytes)
    }

    /// The seq of the oldest event still kept.
    pub fn oldest_seq(&self) -> Option<u64> {
        (!self.entries.is_empty()).then(|| self.last_seq + 1 - self.entries.len() as u64)
    }

    /// Numbers the next event: call [`Log::record`] with its frame before anyone else numbers one.
    pub fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }

    /// Records the event numbered `next_seq()`.
    pub fn record(&mut self, frame: Frame, now: Instant, published: DateTime<Utc>) {
        self.last_seq += 1;
        if self.limits.max_events == 0 {
            self.dropped = Some((self.last_seq, published));
            return;
        }
        self.bytes += frame.len();
        self.entries.push_back(Entry {
            at: now,
            published,
            frame,
        });
        while self.entries.len() > self.limits.max_events
            || (self.bytes > self.limits.max_bytes && self.entries.len() > 1)
        {
            self.pop_oldest();
        }
        self.expire(now);
    }

    fn pop_oldest(&mut self) {
        let seq = self.oldest_seq();
        if let (Some(entry), Some(seq)) = (self.entries.pop_front(), seq) {
            self.bytes -= entry.frame.len();
            self.dropped = Some((seq, entry.published));
        }
    }

    /// The cursor that stands for "every event published at or after `since`": replaying after
    /// it gives exactly those events when they are all still kept. When some of them were
    /// dropped, the cursor lies before the oldest kept one, so [`Log::covers`] reports the gap.
    pub fn seq_at(&mut self, since: DateTime<Utc>, now: Instant) -> u64 {
        self.expire(now);
        let lost = self.dropped.filter(|&(_, at)| at >= since);
        if let Some((seq, _)) = lost {
            return seq.saturating_sub(1);
        }
        // Entries are in seq order, and their times with them: the broker stamps each under
        // the channel's lock. (A wall clock stepped back makes this approximate, not unsafe.)
        let before = self.entries.partition_point(|e| e.published < since);
        match self.oldest_seq() {
            Some(oldest) => oldest + before as u64 - 1,
            None => self.last_seq,
        }
    }

    /// Drops events older than the age limit.
    fn expire(&mut self, now: Instant) {
        let Some(max_age) = self.limits.max_age else {
            return;
        };
        while self
            .entries
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > max_age)
        {
            self.pop_oldest();
        }
    }

    /// Whether every event after `after` is still kept (true when there are none).
    pub fn covers(&mut self, after: u64, now: Instant) -> Result<(), Gap> {
        self.expire(now);
        if after > self.last_seq {
            return Err(Gap::Ahead {
                last_seq: self.last_seq,
            });
        }
        if after == self.last_seq {
            return Ok(());
        }
        match self.oldest_seq() {
            Some(oldest) if oldest <= after + 1 => Ok(()),
            oldest => Err(Gap::Gone {
                oldest,
                last_seq: self.last_seq,
            }),
        }
    }

    /// Up to `limit` kept events with seq in `from..=until`, from `from` or the oldest kept,
    /// whichever is later.
    pub fn read(&mut self, from: u64, until: u64, limit: usize, now: Instant) -> Vec<Frame> {
        self.expire(now);
        let Some(oldest) = self.oldest_seq() else {
            return Vec::new();
        };
        self.slice(from.max(oldest), until, limit)
    }

    /// Like [`Log::read`], but `None` unless the log still holds `from` itself: a replay must
    /// not skip anything.
    pub fn read_exact(
        &mut self,
        from: u64,
        until: u64,
        limit: usize,
        now: Instant,
    ) -> Option<Vec<Frame>> {
        self.expire(now);
        let oldest = self.oldest_seq()?;
        (oldest <= from && from <= self.last_seq).then(|| self.slice(from, until, limit))
    }

    fn slice(&self, from: u64, until: u64, limit: usize) -> Vec<Frame> {
        let Some(oldest) = self.oldest_seq() else {
            return Vec::new();
        };
        let until = until.min(self.last_seq);
        if from > until {
            return Vec::new();
        }
        let count = ((until - from + 1) as usize).min(limit);
        let start = (from - oldest) as usize;
        self.entries
            .range(start..start + count)
            .map(|e| e.frame.clone())
            .collect()
    }

    /// The seq of the kept event whose id is `id`, newest first.
    pub fn find(&self, id: &str) -> Option<u64> {
        let newest = self.last_seq;
        self.entries
            .iter()
            .rev()
            .position(|e| crate::protocol::frame_id(&e.frame) == Some(id))
            .map(|back| newest - back as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(max_events: usize) -> HistoryLimits {
        HistoryLimits {
            max_events,
            max_bytes: usize::MAX,
            max_age: None,
        }
    }

    fn frame(seq: u64) -> Frame {
        format!("{{\"id\":\"{seq:064x}\",\"seq\":{seq}}}").into()
    }

    fn filled(max_events: usize, count: u64) -> Log {
        let mut log = Log::new(limits(max_events));
        let now = Instant::now();
        for seq in 1..=count {
            assert_eq!(log.next_seq(), seq);
            log.record(frame(seq), now, Utc::now());
        }
        log
    }

    #[test]
    fn keeps_the_newest_within_the_event_limit() {
        let mut log = filled(3, 5);
        assert_eq!(log.last_seq(), 5);
        assert_eq!(log.oldest_seq(), Some(3));
        let now = Instant::now();
        assert_eq!(
            log.read(0, u64::MAX, 10, now),
            [frame(3), frame(4), frame(5)]
        );
        assert_eq!(log.read(4, 4, 10, now), [frame(4)]);
        assert_eq!(log.read(3, 5, 2, now), [frame(3), frame(4)]);
        assert!(log.read(6, u64::MAX, 10, now).is_empty());
        assert_eq!(
            log.read_exact(4, 5, 10, now),
            Some(vec![frame(4), frame(5)])
        );
        assert_eq!(log.read_exact(2, 5, 10, now), None);
        assert_eq!(log.read_exact(6, 6, 10, now), None);
    }

    #[test]
    fn coverage_is_exact_at_the_edge() {
        let mut log = filled(3, 5);
        let now = Instant::now();
        assert_eq!(log.covers(2, now), Ok(()));
        assert_eq!(log.covers(5, now), Ok(()));
        assert_eq!(
            log.covers(1, now),
            Err(Gap::Gone {
                oldest: Some(3),
                last_seq: 5
            })
        );
        assert_eq!(log.covers(6, now), Err(Gap::Ahead { last_seq: 5 }));
    }

    #[test]
    fn off_still_numbers_and_resumes_when_nothing_was_missed() {
        let mut log = filled(0, 4);
        let now = Instant::now();
        assert_eq!(log.last_seq(), 4);
        assert_eq!(log.oldest_seq(), None);
        assert_eq!(log.covers(4, now), Ok(()));
        assert!(matches!(
            log.covers(3, now),
            Err(Gap::Gone { oldest: None, .. })
        ));
    }

    #[test]
    fn byte_limit_drops_the_oldest_but_keeps_the_newest() {
        let mut log = Log::new(HistoryLimits {
            max_events: 100,
            max_bytes: frame(1).len() * 2,
            max_age: None,
        });
        let now = Instant::now();
        for _ in 0..5 {
            let seq = log.next_seq();
            log.record(frame(seq), now, Utc::now());
        }
        assert_eq!(log.oldest_seq(), Some(4));
        let mut tiny = Log::new(HistoryLimits {
            max_events: 100,
            max_bytes: 1,
            max_age: None,
        });
        tiny.record(frame(1), now, Utc::now());
        assert_eq!(tiny.oldest_seq(), Some(1));
    }

    #[test]
    fn age_limit_expires_on_read() {
        let mut log = Log::new(HistoryLimits {
            max_events: 100,
            max_bytes: usize::MAX,
            max_age: Some(Duration::from_secs(60)),
        });
        let start = Instant::now();
        log.record(frame(1), start, Utc::now());
        log.record(frame(2), start + Duration::from_secs(30), Utc::now());
        let later = start + Duration::from_secs(61);
        assert_eq!(log.read(0, u64::MAX, 10, later), [frame(2)]);
        assert!(log.covers(0, later).is_err());
        assert_eq!(log.covers(1, later), Ok(()));
    }

    #[test]
    fn finds_an_event_by_id() {
        let log = filled(10, 20);
        assert_eq!(log.find(&format!("{:064x}", 15)), Some(15));
        assert_eq!(log.find(&format!("{:064x}", 5)), None);
        assert_eq!(log.find("nope"), None);
    }

    #[test]
    fn since_time_is_the_cursor_before_the_first_event_at_or_after_it() {
        let mut log = Log::new(HistoryLimits {
            max_events: 3,
            max_bytes: usize::MAX,
            max_age: None,
        });
        let now = Instant::now();
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).expect("a time");
        for seq in 1..=3 {
            log.record(frame(seq), now, t(seq as i64 * 10));
        }
        assert_eq!(log.seq_at(t(0), now), 0, "before everything: replay all");
        assert_eq!(log.seq_at(t(20), now), 1, "at an event: it is included");
        assert_eq!(log.seq_at(t(25), now), 2);
        assert_eq!(log.seq_at(t(99), now), 3, "after everything: live");
        // seq 4 pushes seq 1 (t=10) out: a cursor from before t=10 can no longer be honoured.
        log.record(frame(4), now, t(40));
        assert_eq!(
            log.seq_at(t(15), now),
            1,
            "seq 1 is gone but was before t=15"
        );
        let cursor = log.seq_at(t(15), now);
        assert!(log.covers(cursor, now).is_ok());
        let cursor = log.seq_at(t(5), now);
        assert!(
            log.covers(cursor, now).is_err(),
            "seq 1 (t=10) was dropped: a gap"
        );
    }
}
