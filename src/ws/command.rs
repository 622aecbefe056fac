//! Client messages as commands, as in mini-redis's `cmd/`: a text frame in either envelope (the
//! hub's `event_type` + `message`, or sysadm's `namespace` + `name`) parses into one
//! [`Command`]; [`Command::apply`] carries it out; the envelope the client spoke is kept in a
//! [`ReplyTo`] and chosen only when the answer is written.

use serde_json::{Map, Value, json};

use super::feeds::{Streams, drop_unsubscribed};
use crate::channels::ChannelId;
use crate::filter::Filter;
use crate::hub::{Client, Filters, HubError};
use crate::protocol::{self, ClientMessage, ClientMessageError, Frame, Request, SysadmRequest};

const SUPPORTED: &str =
    "supported: health/ping, system/client-id, system/subscribe, system/unsubscribe";

/// What a client can ask of its socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Ping,
    ClientId,
    /// Channel names, and per channel the text of a filter (hub envelope only).
    Subscribe(Vec<String>, Vec<(String, String)>),
    Unsubscribe(Vec<String>),
}

/// The envelope an answer is written in.
#[derive(Debug)]
pub enum ReplyTo {
    /// The hub's: a frame on `channel` answering the client's `id` (or a new one).
    Hub {
        channel: ChannelId,
        ref_id: Option<String>,
    },
    /// sysadm's `events` namespace, with the request's `id` (any JSON value, echoed).
    Sysadm { id: Value },
}

/// What a command did, for the answer.
enum Done {
    Pong,
    ClientId,
    Subscriptions {
        verb: &'static str,
        body: Map<String, Value>,
    },
}

/// The answer to one client text frame: a reply, or an error frame. Never closes the socket.
pub async fn answer(client: &Client, streams: &mut Streams, text: &str) -> Frame {
    let request = match protocol::parse_request(text) {
        Ok(request) => request,
        Err(error) => {
            let ref_id = ClientMessageError::ref_id(text);
            return protocol::error_frame(&client.id(), ref_id.as_deref(), &error.to_string());
        }
    };
    let (reply_to, command) = match request {
        Request::Hub(message) => from_hub(client, message),
        Request::Sysadm(request) => from_sysadm(client, request),
    };
    let done = match command {
        Ok(command) => command.apply(client, streams).await,
        Err(text) => Err(text),
    };
    match done {
        Ok(done) => reply_to.answer(client, done),
        Err(text) => reply_to.error(client, &text),
    }
}

impl Command {
    /// Carries the command out on this socket. Feeds are opened (or dropped) before the answer
    /// is queued, so a subscription change is in force for the very next event.
    async fn apply(self, client: &Client, streams: &mut Streams) -> Result<Done, String> {
        match self {
            Command::Ping => Ok(Done::Pong),
            Command::ClientId => Ok(Done::ClientId),
            Command::Subscribe(names, filters) => Ok(Done::Subscriptions {
                verb: "subscribe",
                body: subscribe(client, streams, &names, compile(client, &names, &filters)?).await,
            }),
            Command::Unsubscribe(names) => Ok(Done::Subscriptions {
                verb: "unsubscribe",
                body: unsubscribe(client, streams, &names)?,
            }),
        }
    }
}

/// A message in the hub's own envelope: it names a channel the socket must be subscribed to.
fn from_hub(client: &Client, message: ClientMessage) -> (ReplyTo, Result<Command, String>) {
    let channels = client.hub().channels();
    let Some(channel) = channels.id(&message.channel) else {
        // No channel to answer on: errors go out as error frames, which name none.
        let reply_to = ReplyTo::Hub {
            channel: channels.global(),
            ref_id: message.id,
        };
        let error = format!(
            "unknown event type {:?}; valid event types: {}",
            message.channel,
            channels.describe()
        );
        return (reply_to, Err(error));
    };
    let reply_to = ReplyTo::Hub {
        channel,
        ref_id: message.id.clone(),
    };
    if !client.state().mask().contains(channel) {
        let error = format!(
            "not subscribed to {:?}; subscribe first with {{\"namespace\":\"events\",\"name\":\"subscribe\",\"args\":[\"{}\"]}}",
            message.channel, message.channel
        );
        return (reply_to, Err(error));
    }
    let command = match (message.channel.as_str(), message.message.as_str()) {
        ("health", "ping") => Ok(Command::Ping),
        ("system", "client-id") => Ok(Command::ClientId),
        ("system", "subscribe") => hub_event_types(client, "subscribe", message.event_types)
            .and_then(|names| Ok(Command::Subscribe(names, message.filter.unwrap_or(Ok(vec![]))?))),
        ("system", "unsubscribe") if message.filter.is_some() => {
            Err("`body.filter` belongs to a subscribe; an unsubscribe removes the channel and its filter".into())
        }
        ("system", "unsubscribe") => hub_event_types(client, "unsubscribe", message.event_types)
            .map(Command::Unsubscribe),
        (channel, other) => Err(format!(
            "unsupported message {other:?} on {channel:?}; {SUPPORTED}"
        )),
    };
    (reply_to, command)
}

/// `body.event_types` of an in-band subscribe or unsubscribe, which must name something.
fn hub_event_types(
    client: &Client,
    verb: &str,
    event_types: Option<Result<Vec<String>, String>>,
) -> Result<Vec<String>, String> {
    match event_types {
        Some(Ok(names)) if !names.is_empty() => Ok(names),
        Some(Err(e)) => Err(e),
        _ => Err(format!(
            "{verb} needs body.event_types, e.g. {{\"event_types\":[\"pdfm\"]}}; valid event types: {}",
            client.hub().channels().describe()
        )),
    }
}

/// A request in sysadm's `events` envelope: `subscribe` or `unsubscribe` with `args`.
fn from_sysadm(client: &Client, request: SysadmRequest) -> (ReplyTo, Result<Command, String>) {
    let command = sysadm_command(client, &request);
    (ReplyTo::Sysadm { id: request.id }, command)
}

fn sysadm_command(client: &Client, request: &SysadmRequest) -> Result<Command, String> {
    if request.namespace != "events" {
        return Err(format!(
            "unsupported namespace {:?}; this hub serves the \"events\" namespace",
            request.namespace
        ));
    }
    let verb = request.name.as_str();
    if !matches!(verb, "subscribe" | "unsubscribe") {
        return Err(format!(
            "unsupported name {verb:?}; supported: subscribe, unsubscribe"
        ));
    }
    match &request.event_types {
        Ok(names) if !names.is_empty() => Ok(verb_command(verb, names.clone())),
        Ok(_) => Err(format!(
            "`args` is empty; valid event types: {}",
            client.hub().channels().describe()
        )),
        Err(e) => Err(e.clone()),
    }
}

fn verb_command(verb: &str, names: Vec<String>) -> Command {
    if verb == "subscribe" {
        Command::Subscribe(names, Vec::new())
    } else {
        Command::Unsubscribe(names)
    }
}

impl ReplyTo {
    fn answer(&self, client: &Client, done: Done) -> Frame {
        let id = client.id();
        match self {
            ReplyTo::Hub { channel, ref_id } => {
                let reply_id = ref_id.clone().unwrap_or_else(protocol::new_id);
                let name = client.hub().channels().name(*channel);
                let (verb, body) = match done {
                    Done::Pong => ("pong", None),
                    Done::ClientId => ("client-id", Some(json!({ "client-id": id }))),
                    Done::Subscriptions { verb, body } => (verb, Some(Value::Object(body))),
                };
                protocol::server_frame(name, verb, Some(&reply_id), body, Some(&id))
            }
            ReplyTo::Sysadm { id: request_id } => {
                let body = match done {
                    Done::Subscriptions { body, .. } => Value::Object(body),
                    // Ping and client-id exist only in the hub's envelope.
                    Done::Pong | Done::ClientId => Value::Null,
                };
                protocol::sysadm_frame("response", request_id, body)
            }
        }
    }

    fn error(&self, client: &Client, text: &str) -> Frame {
        match self {
            ReplyTo::Hub { ref_id, .. } => {
                protocol::error_frame(&client.id(), ref_id.as_deref(), text)
            }
            ReplyTo::Sysadm { id } => protocol::sysadm_frame("error", id, json!({ "error": text })),
        }
    }
}

/// Compiles an in-band subscribe's filters, all before any takes effect: each must be for a
/// channel the same request names.
fn compile(
    client: &Client,
    names: &[String],
    texts: &[(String, String)],
) -> Result<Filters, String> {
    let channels = client.hub().channels();
    let mut filters = Filters::new();
    for (name, text) in texts {
        let channel = channels.id(name).filter(|_| names.contains(name)).ok_or_else(|| {
            format!("`body.filter` names {name:?}, which this subscribe does not; name it in `body.event_types` too")
        })?;
        filters.push((channel, Filter::parse(text).map_err(|e| e.to_string())?));
    }
    Ok(filters)
}

/// Adds channels; their feeds start at once. A filter for a channel the client already has
/// replaces that feed's filter, from the next event on.
async fn subscribe(
    client: &Client,
    streams: &mut Streams,
    requested: &[String],
    filters: Filters,
) -> Map<String, Value> {
    let hub = client.hub();
    let channels = hub.channels();
    let texts: Vec<(ChannelId, String)> = filters
        .iter()
        .map(|(c, f)| (*c, f.source().to_owned()))
        .collect();
    let added = hub.add_channels(client.state(), requested, filters).await;
    for (channel, feed) in added.feeds {
        streams.live.insert(channel, feed);
    }
    for (channel, filter) in added.refiltered {
        streams.set_filter(channel, filter);
    }
    let mut body = protocol::subscriptions_body(&client.subscription_names(), &added.ignored);
    if !texts.is_empty() {
        let filters: Map<String, Value> = texts
            .into_iter()
            .map(|(c, text)| (channels.name(c).to_owned(), Value::String(text)))
            .collect();
        body.insert("filters".into(), Value::Object(filters));
    }
    let positions: Vec<(&str, u64)> = added
        .positions
        .iter()
        .map(|&(c, seq)| (channels.name(c), seq))
        .collect();
    body.insert("positions".into(), protocol::positions(&positions));
    body
}

/// Removes channels; their feeds are dropped before the answer.
fn unsubscribe(
    client: &Client,
    streams: &mut Streams,
    requested: &[String],
) -> Result<Map<String, Value>, String> {
    let outcome = client
        .hub()
        .remove_channels(client.state(), requested)
        .map_err(|e| match e {
            HubError::Invalid(text) => text,
            other => other.to_string(),
        })?;
    drop_unsubscribed(streams, client);
    let not_removed = &outcome.not_removed;
    let mut body = protocol::subscriptions_body(
        &client.subscription_names(),
        &not_removed.invalid_event_types,
    );
    body.insert("unsubscribed".into(), json!(outcome.unsubscribed));
    for (key, names) in [
        ("not_subscribed", &not_removed.not_subscribed),
        ("rejected", &not_removed.rejected),
    ] {
        if !names.is_empty() {
            body.insert(key.into(), json!(names));
        }
    }
    Ok(body)
}
