//! `Idempotency-Key` across the cluster: a retry sent to any node gets the first receipt.
//!
//! The answer lives in Redis (`<p>:idem:<caller>:<key>`, `once.lua`), not in the node's memory.
//! A request first claims its key in one atomic step, so of two nodes racing with one key
//! exactly one publishes; the other waits for that publish's receipt. The receipt is kept for
//! the local window (`limits.idempotency_window_secs`) and then expires, so Redis holds at most
//! the keys of one window. A claim whose publish failed is dropped (a retry publishes, as on
//! one node); one whose node died expires after [`CLAIM_TTL`].

use std::time::Duration;

use ::redis::Value;

use super::RedisFailure;
use super::publish::unavailable;
use super::scripts::{ONCE, text};
use super::state::Inner;
use crate::broker::{Event, PublishError, Receipt};
use crate::idempotency::Seen;

/// How long a claim holds while its publish runs: longer than any publish takes (each of its
/// script calls gives up after a few seconds), short enough that a node dying mid-publish
/// does not block its key for the whole window.
const CLAIM_TTL: Duration = Duration::from_secs(10);
/// How long a request waits for another node's publish under the same key before `503`.
const WAIT_FOR_CLAIM: Duration = Duration::from_secs(5);
/// How often a waiting request looks again (the wait is rare: a retry racing its original).
const POLL: Duration = Duration::from_millis(20);

/// What claiming a key found.
enum Claim {
    /// Claimed: this request publishes.
    Mine,
    /// Another request with this key and body is publishing now.
    Pending,
    /// Answered within the window.
    Answered(Receipt),
    /// The key was used for another body.
    Conflict,
}

impl Inner {
    /// Publishes `events` unless the cluster answered `scoped` within `window` (see the module).
    pub async fn publish_once(
        &self,
        window: Duration,
        scoped: String,
        fingerprint: [u8; 32],
        events: Vec<Event>,
    ) -> Result<Seen<Receipt>, PublishError> {
        let key = self.keys.idempotency(&scoped);
        let fingerprint = hex::encode(fingerprint);
        let deadline = tokio::time::Instant::now() + WAIT_FOR_CLAIM;
        loop {
            match self.claim(&key, &fingerprint, window).await? {
                Claim::Mine => break,
                Claim::Answered(receipt) => return Ok(Seen::Repeat(receipt)),
                Claim::Conflict => return Ok(Seen::Conflict),
                Claim::Pending if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Claim::Pending => return Err(still_pending()),
            }
        }
        match self.publish(events).await {
            Ok(receipt) => {
                self.settle(&key, &fingerprint, window, &receipt).await;
                Ok(Seen::New(receipt))
            }
            Err(error) => {
                self.drop_claim(&key, &fingerprint).await;
                Err(error)
            }
        }
    }

    async fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        window: Duration,
    ) -> Result<Claim, PublishError> {
        let ttl = window.min(CLAIM_TTL);
        let answer = self
            .once(key, "claim", fingerprint, ttl, "")
            .await
            .map_err(unavailable)?;
        parse_claim(&answer).map_err(unavailable)
    }

    /// Keeps the receipt for the window. Failing here (Redis gone right after the publish)
    /// leaves the claim to expire: a retry after that publishes again, logged.
    async fn settle(&self, key: &str, fingerprint: &str, window: Duration, receipt: &Receipt) {
        let kept = match serde_json::to_string(receipt) {
            Ok(json) => self.once(key, "done", fingerprint, window, &json).await,
            Err(_) => Err(RedisFailure::Unexpected("a receipt that is not JSON")),
        };
        if let Err(error) = kept {
            tracing::warn!(%error, "cluster: the Idempotency-Key's receipt was not kept");
        }
    }

    /// Frees the key for a retry; if Redis is gone, the claim expires after [`CLAIM_TTL`].
    async fn drop_claim(&self, key: &str, fingerprint: &str) {
        if let Err(error) = self.once(key, "drop", fingerprint, CLAIM_TTL, "").await {
            tracing::debug!(%error, "cluster: a failed publish's claim was not dropped");
        }
    }

    async fn once(
        &self,
        key: &str,
        op: &str,
        fingerprint: &str,
        ttl: Duration,
        receipt: &str,
    ) -> Result<Vec<Value>, RedisFailure> {
        let mut call = ONCE.prepare_invoke();
        call.key(key).arg(op).arg(fingerprint);
        call.arg(ttl.as_millis().max(1) as u64).arg(receipt);
        self.call(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await
    }
}

fn parse_claim(answer: &[Value]) -> Result<Claim, RedisFailure> {
    let bad = || RedisFailure::Unexpected("once.lua answer");
    let kind = answer.first().and_then(text).ok_or_else(bad)?;
    Ok(match kind.as_str() {
        "new" => Claim::Mine,
        "pending" => Claim::Pending,
        "conflict" => Claim::Conflict,
        "repeat" => {
            let json = answer.get(1).and_then(text).ok_or_else(bad)?;
            Claim::Answered(serde_json::from_str(&json).map_err(|_| bad())?)
        }
        _ => return Err(bad()),
    })
}

fn still_pending() -> PublishError {
    PublishError::Unavailable(format!(
        "a request with this Idempotency-Key is still being published (on another node) after \
         {WAIT_FOR_CLAIM:?}; retry with the same key"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_repeat_carries_the_kept_receipt() {
        let answer = [bulk("repeat"), bulk(r#"{"ids":["a","b"],"recipients":3}"#)];
        let Ok(Claim::Answered(receipt)) = parse_claim(&answer) else {
            panic!("a repeat");
        };
        assert_eq!(receipt.ids, ["a", "b"]);
        assert_eq!(receipt.recipients, 3);
    }

    #[test]
    fn an_answer_it_cannot_read_is_an_error_not_a_publish() {
        assert!(parse_claim(&[]).is_err());
        assert!(parse_claim(&[bulk("repeat")]).is_err());
        assert!(parse_claim(&[bulk("repeat"), bulk("not json")]).is_err());
        assert!(parse_claim(&[bulk("maybe")]).is_err());
    }
}
