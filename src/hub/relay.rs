//! Unsubscribe from any node: a client that is not on this node is looked up in the cluster's
//! registry, its owner checked here (`403`), and the removal relayed to its node, whose hub
//! carries it out and answers; the `200` is sent only after that answer, so it still means
//! "in force". No answer in time is `503`; no node holding the client is `404`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Hub, HubError, Unsubscribed};
use crate::broker::{RelayError, Relayed};
use crate::identity::{Identity, Owner};

/// What one node asks another's hub.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Unsubscribe {
        client: Uuid,
        owner: String,
        event_types: Vec<String>,
    },
}

/// Its answer.
#[derive(Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Answer {
    Unsubscribed { result: Unsubscribed },
    UnknownClient,
    NotOwner,
    Invalid { message: String },
}

/// The owner as the registry writes it: method and subject, NUL-separated (NUL occurs in
/// neither).
pub(super) fn owner_key(owner: &Owner) -> String {
    format!("{:?}\u{0}{}", owner.0, owner.1)
}

impl Hub {
    /// Unsubscribe for a client of another node (after the local lookup found none).
    pub(super) async fn unsubscribe_remote(
        &self,
        client: Uuid,
        caller: &Identity,
        requested: &[String],
    ) -> Result<Unsubscribed, HubError> {
        let unavailable = |e: RelayError| match e {
            RelayError::Gone => HubError::UnknownClient(client),
            RelayError::Unavailable(why) => HubError::Unavailable(why),
        };
        let remote = self.broker.find_client(client).await.map_err(unavailable)?;
        let remote = remote.ok_or(HubError::UnknownClient(client))?;
        let owner = owner_key(&caller.owner());
        if remote.owner != owner {
            return Err(HubError::NotOwner(client));
        }
        let request = Request::Unsubscribe {
            client,
            owner,
            event_types: requested.to_vec(),
        };
        let request = serde_json::to_string(&request).unwrap_or_default();
        let answer = self
            .broker
            .relay(&remote.node, &request)
            .await
            .map_err(unavailable)?;
        match serde_json::from_str(&answer) {
            Ok(Answer::Unsubscribed { result }) => Ok(result),
            Ok(Answer::UnknownClient) => Err(HubError::UnknownClient(client)),
            Ok(Answer::NotOwner) => Err(HubError::NotOwner(client)),
            Ok(Answer::Invalid { message }) => Err(HubError::Invalid(message)),
            Err(_) => Err(HubError::Unavailable(format!(
                "node {} answered something this node cannot read",
                remote.node
            ))),
        }
    }

    /// Answers what other nodes relay to this hub, until the broker closes the queue.
    pub async fn serve_relayed(self: Arc<Self>, mut relayed: mpsc::Receiver<Relayed>) {
        while let Some(Relayed { request, reply }) = relayed.recv().await {
            let answer = match serde_json::from_str(&request) {
                Ok(Request::Unsubscribe {
                    client,
                    owner,
                    event_types,
                }) => self.unsubscribe_here(client, &owner, &event_types),
                Err(error) => Answer::Invalid {
                    message: format!("unreadable relayed request: {error}"),
                },
            };
            let _ = reply.send(serde_json::to_string(&answer).unwrap_or_default());
        }
    }

    fn unsubscribe_here(&self, client: Uuid, owner: &str, requested: &[String]) -> Answer {
        let Ok(state) = self.live_client(client) else {
            return Answer::UnknownClient;
        };
        if owner_key(&state.owner) != owner {
            return Answer::NotOwner;
        }
        match self.remove_channels(&state, requested) {
            Ok(result) => {
                state.changed.notify_one();
                Answer::Unsubscribed { result }
            }
            Err(error) => Answer::Invalid {
                message: error.to_string(),
            },
        }
    }
}
