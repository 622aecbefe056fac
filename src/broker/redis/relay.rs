//! Reaching a client on another node: the client registry (`<p>:client:<id>` → its node and
//! owner, renewed with the leases) and a command relay over each node's own Redis channel
//! `<p>:node:<node>`, every request answered (or timed out) so the caller's `200` still means
//! "done". Requests for the hub (unsubscribe) go up through [`Relayed`]; a targeted event is
//! delivered here by the broker itself.
//!
//! Messages: `"Q <request id> <from node> <kind> <body>"` and `"A <request id> <body>"`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::AsyncCommands;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::state::Inner;
use crate::broker::{Announced, RelayError, Relayed, RemoteClient};
use crate::protocol::Frame;

/// How long a relayed command may take before the caller answers `503`.
pub(super) const RELAY_TIMEOUT: Duration = Duration::from_secs(2);
const KIND_HUB: &str = "hub";
const KIND_DELIVER: &str = "deliver";

/// A registry entry; dropping it removes it (in the background).
struct Entry {
    inner: Arc<Inner>,
    client: Uuid,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let Some((_, key)) = self.inner.announced.remove(&self.client) else {
            return;
        };
        self.inner
            .call_in_background("registry entry removal", |mut conn| async move {
                conn.del::<_, ()>(key).await
            });
    }
}

impl Inner {
    pub fn client_key(&self, client: Uuid) -> String {
        format!("{}:client:{client}", self.keys.prefix)
    }

    pub fn node_channel(&self, node: &str) -> String {
        format!("{}:node:{node}", self.keys.prefix)
    }

    /// Registers a client of this node, as `"<node>\n<owner>"`, for as long as the guard lives.
    pub async fn announce(self: &Arc<Self>, client: Uuid, owner: String) -> Announced {
        let key = self.client_key(client);
        let value = format!("{}\n{owner}", self.node_id);
        self.announced.insert(client, (key.clone(), value.clone()));
        let ttl = super::lease::KEY_TTL.as_millis() as u64;
        let set = self
            .call(|mut conn| async move {
                ::redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("PX")
                    .arg(ttl)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
        if let Err(error) = set {
            tracing::warn!(%error, "cluster: client not registered yet; the renewal retries");
        }
        Announced::held(Box::new(Entry {
            inner: Arc::clone(self),
            client,
        }))
    }

    pub async fn find_client(&self, client: Uuid) -> Result<Option<RemoteClient>, RelayError> {
        let key = self.client_key(client);
        let found: Option<String> = self
            .call(|mut conn| async move { conn.get(key).await })
            .await
            .map_err(|e| RelayError::Unavailable(format!("the cluster's Redis: {e}")))?;
        let Some((node, owner)) = found.as_deref().and_then(|v| v.split_once('\n')) else {
            return Ok(None);
        };
        // A dead node's entries outlive it (for an hour): its client is live only while the
        // node's alive key is there.
        let alive = format!("{}:alive:{node}", self.keys.prefix);
        let live: bool = self
            .call(|mut conn| async move { conn.exists(alive).await })
            .await
            .map_err(|e| RelayError::Unavailable(format!("the cluster's Redis: {e}")))?;
        Ok(live.then(|| RemoteClient {
            node: node.to_owned(),
            owner: owner.to_owned(),
        }))
    }

    /// Sends `body` to `node` and waits for its answer.
    pub async fn relay(&self, node: &str, kind: &str, body: &str) -> Result<String, RelayError> {
        let id = Uuid::new_v4();
        let (answer, answered) = oneshot::channel();
        self.pending.insert(id, answer);
        let message = format!("Q {id} {} {kind} {body}", self.node_id);
        let started = std::time::Instant::now();
        let channel = self.node_channel(node);
        let sent: Result<u64, _> = self
            .call(|mut conn| async move { conn.publish(channel, message).await })
            .await;
        let outcome = match sent {
            Ok(0) => Err(RelayError::Gone),
            Ok(_) => match tokio::time::timeout(RELAY_TIMEOUT, answered).await {
                Ok(Ok(answer)) => {
                    if let Some(metrics) = &self.metrics {
                        metrics.relayed(started.elapsed());
                    }
                    Ok(answer)
                }
                _ => Err(self.timed_out(node)),
            },
            Err(error) => Err(RelayError::Unavailable(format!(
                "the cluster's Redis: {error}"
            ))),
        };
        self.pending.remove(&id);
        outcome
    }

    fn timed_out(&self, node: &str) -> RelayError {
        self.count(crate::metrics::ClusterEvent::RelayTimeout);
        RelayError::Unavailable(format!(
            "node {node} did not answer within {RELAY_TIMEOUT:?}; try again"
        ))
    }

    /// A message on this node's channel: a request to carry out, or an answer awaited.
    pub fn on_node_message(self: &Arc<Self>, payload: &str) {
        if let Some(rest) = payload.strip_prefix("A ") {
            let answer = rest
                .split_once(' ')
                .and_then(|(id, body)| Some((Uuid::parse_str(id).ok()?, body)));
            if let Some((id, body)) = answer
                && let Some((_, waiting)) = self.pending.remove(&id)
            {
                let _ = waiting.send(body.to_owned());
            }
            return;
        }
        let Some(rest) = payload.strip_prefix("Q ") else {
            return;
        };
        let mut parts = rest.splitn(4, ' ');
        let (Some(id), Some(from), Some(kind), Some(body)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let (id, from, kind, body) = (
            id.to_owned(),
            from.to_owned(),
            kind.to_owned(),
            body.to_owned(),
        );
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let Some(answer) = inner.carry_out(&kind, body).await else {
                return;
            };
            let channel = inner.node_channel(&from);
            let message = format!("A {id} {answer}");
            let _ = inner
                .call(|mut conn| async move { conn.publish::<_, _, ()>(channel, message).await })
                .await;
        });
    }

    async fn carry_out(&self, kind: &str, body: String) -> Option<String> {
        match kind {
            KIND_DELIVER => Some(self.deliver_targeted(&body).to_string()),
            KIND_HUB => {
                let (reply, replied) = oneshot::channel();
                let relayed = Relayed {
                    request: body,
                    reply,
                };
                self.relayed.try_send(relayed).ok()?;
                tokio::time::timeout(RELAY_TIMEOUT, replied)
                    .await
                    .ok()?
                    .ok()
            }
            _ => None,
        }
    }

    /// `"<channel> <client> <frame>"`: delivers a targeted frame to a client of this node.
    fn deliver_targeted(&self, body: &str) -> usize {
        let parsed = body.split_once(' ').and_then(|(channel, rest)| {
            let (target, frame) = rest.split_once(' ')?;
            Some((
                self.channels.id(channel)?,
                Uuid::parse_str(target).ok()?,
                frame,
            ))
        });
        let Some((channel, target, frame)) = parsed else {
            return 0;
        };
        let frame = Frame::from(frame.to_owned());
        self.fanout
            .deliver(channel, frame, Some(target), Instant::now())
    }

    /// A targeted event for a client of another node: to that node, answered with the count.
    pub async fn relay_targeted(&self, target: Uuid, body: &str) -> Result<usize, RelayError> {
        let Some(remote) = self.find_client(target).await? else {
            return Ok(0);
        };
        match self.relay(&remote.node, KIND_DELIVER, body).await {
            Ok(answer) => Ok(answer.trim().parse().unwrap_or(0)),
            Err(RelayError::Gone) => Ok(0),
            Err(error) => Err(error),
        }
    }

    /// A request for the hub of `node`.
    pub async fn relay_hub(&self, node: &str, body: &str) -> Result<String, RelayError> {
        self.relay(node, KIND_HUB, body).await
    }
}
