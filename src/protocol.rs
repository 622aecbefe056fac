//! The wire format: the server's frame envelope, the client's messages and the publish body.
//! Pure functions with no I/O, so they can be unit-tested and fuzzed on their own.

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// The welcome text the seed clients look for.
pub const WELCOME_MESSAGE: &str =
    "WebSocket connection established subscribed to global by default";

/// A serialised server frame. Cloning shares the bytes, so one event is serialised once and
/// handed to every subscriber by reference count.
pub type Frame = Utf8Bytes;

/// A fresh frame id: 64 lowercase hex digits from 32 random bytes.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// RFC 3339 UTC with microseconds and `Z`, as the seed frames show.
pub fn timestamp() -> String {
    timestamp_at(chrono::Utc::now())
}

/// `at` as the frames write it: RFC 3339, UTC, microseconds.
pub fn timestamp_at(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A `since_time` value: RFC 3339 with an offset (`2026-12-01T10:00:00Z`).
pub fn parse_since_time(value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            format!(
                "since_time {value:?} is not an RFC 3339 time with an offset, e.g. 2026-12-01T10:00:00Z (URL-encode `+` as %2B)"
            )
        })
}

/// Now, truncated to the microseconds a frame's `timestamp` shows, so the time kept with an
/// event is exactly the one its frame says.
pub fn now_micros() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// The server envelope, fields in the order the SPEC fixes; `origin` (CloudEvents only), `seq`
/// and `epoch` (events only) come after them, so seed clients see the fields they know where they expect them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Envelope<'a> {
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_id: Option<&'a str>,
    pub event_type: &'a str,
    pub timestamp: &'a str,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a Uuid>,
    /// Where an event published as a CloudEvent came from: `{"source","id","subject"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'a RawValue>,
    /// The event's number on its channel (broadcast events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The hub's numbering the seq belongs to (events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl Envelope<'_> {
    pub fn to_frame(&self) -> Frame {
        // Serialising borrowed strings, a raw value and a UUID cannot fail.
        let mut json = serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"));
        // The frame may live long in the history, which counts its length: give back the
        // serialiser's spare capacity, or a frame could hold up to twice its size.
        json.shrink_to_fit();
        json.into()
    }
}

/// A frame the hub writes on its own behalf (welcome, replies, errors, notices).
pub fn server_frame(
    event_type: &str,
    message: &str,
    ref_id: Option<&str>,
    body: Option<serde_json::Value>,
    client_id: Option<&Uuid>,
) -> Frame {
    let body = body.and_then(|b| serde_json::value::to_raw_value(&b).ok());
    Envelope {
        id: &new_id(),
        ref_id,
        event_type,
        timestamp: &timestamp(),
        message,
        body: body.as_deref(),
        client_id,
        origin: None,
        seq: None,
        epoch: None,
    }
    .to_frame()
}

/// The `id` of a frame the hub serialised: every [`Envelope`] starts with it.
pub fn frame_id(frame: &str) -> Option<&str> {
    frame.strip_prefix("{\"id\":\"")?.get(..64)
}

/// Where a socket's streams start, for the welcome.
#[derive(Debug, Default)]
pub struct StreamStart<'a> {
    pub epoch: u64,
    /// Per channel, the seq its stream continues after.
    pub positions: Vec<(&'a str, u64)>,
    /// `None` unless the client asked to resume.
    pub recovered: Option<bool>,
    pub reasons: Vec<String>,
    pub unrecovered: Vec<&'a str>,
}

/// Always the first frame on a socket.
pub fn welcome(
    client_id: &Uuid,
    subscriptions: &[&str],
    ignored: &[String],
    start: &StreamStart<'_>,
) -> Frame {
    let mut body = subscriptions_body(subscriptions, ignored);
    body.insert("client_id".into(), serde_json::json!(client_id));
    body.insert("epoch".into(), serde_json::json!(start.epoch));
    body.insert("positions".into(), positions(&start.positions));
    if let Some(recovered) = start.recovered {
        body.insert("recovered".into(), serde_json::json!(recovered));
    }
    if !start.reasons.is_empty() {
        body.insert("reason".into(), serde_json::json!(start.reasons.join("; ")));
    }
    if !start.unrecovered.is_empty() {
        body.insert("unrecovered".into(), serde_json::json!(start.unrecovered));
    }
    server_frame(
        "global",
        WELCOME_MESSAGE,
        None,
        Some(serde_json::Value::Object(body)),
        None,
    )
}

/// `{"subscriptions": [...], "ignored_event_types": [...]}`, the second only when not empty:
/// the welcome, the in-band subscribe and unsubscribe answers all carry it.
pub fn subscriptions_body(
    subscriptions: &[&str],
    ignored: &[String],
) -> serde_json::Map<String, serde_json::Value> {
    let mut body = serde_json::Map::new();
    body.insert("subscriptions".into(), serde_json::json!(subscriptions));
    if !ignored.is_empty() {
        body.insert("ignored_event_types".into(), serde_json::json!(ignored));
    }
    body
}

/// `{"pdfm": 41, ...}`: where each channel's stream continues.
pub fn positions(positions: &[(&str, u64)]) -> serde_json::Value {
    positions
        .iter()
        .map(|(name, seq)| ((*name).to_owned(), serde_json::json!(seq)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// An error answer on `global`; `ref_id` when the offending message carried an id.
pub fn error_frame(client_id: &Uuid, ref_id: Option<&str>, error: &str) -> Frame {
    server_frame(
        "global",
        "error",
        ref_id,
        Some(serde_json::json!({ "error": error })),
        Some(client_id),
    )
}

/// A message from a client, as sent by the seed guides' snippets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    /// The channel, lower-cased; from `event_type`, or `type` when `event_type` is absent.
    pub channel: String,
    pub message: String,
    /// The client's correlation id, echoed as `ref_id`.
    pub id: Option<String>,
    /// `body.event_types` (in-band subscribe and unsubscribe), normalised; `None` when absent.
    pub event_types: Option<Result<Vec<String>, String>>,
    /// `body.filter` of an in-band subscribe: per channel (lower-cased), the filter's text.
    pub filter: Option<Result<Vec<(String, String)>, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientMessageError {
    #[error("malformed JSON: {0}")]
    Malformed(String),
    #[error("a message must be a JSON object")]
    NotAnObject,
    #[error("missing `event_type` (or `type`)")]
    MissingChannel,
    #[error("missing `message`")]
    MissingMessage,
}

impl ClientMessageError {
    /// The id the client sent, when the message was an object that had one.
    pub fn ref_id(text: &str) -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        id_string(value.get("id")?)
    }
}

fn id_string(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses a client text frame. Unknown fields are tolerated: seed clients send extra ones.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ClientMessageError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ClientMessageError::Malformed(e.to_string()))?;
    let object = value.as_object().ok_or(ClientMessageError::NotAnObject)?;
    client_message(object)
}

/// The hub's own message, from a parsed object.
fn client_message(
    object: &serde_json::Map<String, serde_json::Value>,
) -> Result<ClientMessage, ClientMessageError> {
    let channel = ["event_type", "type"]
        .iter()
        .find_map(|key| object.get(*key).and_then(|v| v.as_str()))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .ok_or(ClientMessageError::MissingChannel)?;
    let message = object
        .get("message")
        .and_then(|v| v.as_str())
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .ok_or(ClientMessageError::MissingMessage)?;
    Ok(ClientMessage {
        channel,
        message,
        id: object.get("id").and_then(id_string),
        event_types: object
            .get("body")
            .and_then(|b| b.get("event_types"))
            .map(|v| event_type_list("event_types", v)),
        filter: object
            .get("body")
            .and_then(|b| b.get("filter"))
            .map(filter_texts),
    })
}

/// `body.filter`: an object of event type → filter text, e.g. `{"pdfm": "body.vm_id == 7"}`.
fn filter_texts(value: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    let invalid = || {
        "`body.filter` must be an object of event type → filter, e.g. {\"pdfm\": \"body.vm_id == vm-17\"}"
            .to_owned()
    };
    let object = value.as_object().ok_or_else(invalid)?;
    object
        .iter()
        .map(|(channel, text)| {
            let text = text.as_str().ok_or_else(invalid)?;
            Ok((channel.trim().to_ascii_lowercase(), text.to_owned()))
        })
        .collect()
}

/// One event as a publisher sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    #[serde(alias = "type")]
    pub event_type: String,
    pub message: String,
    #[serde(default)]
    pub body: Option<Box<RawValue>>,
    #[serde(default)]
    pub client_id: Option<Uuid>,
}

/// The `POST /v1/events` body: one event or an array of them.
pub fn parse_publish_body(bytes: &[u8]) -> Result<Vec<PublishEvent>, String> {
    let first = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .ok_or_else(|| "empty body: send an event object or an array of events".to_owned())?;
    let events = if *first == b'[' {
        serde_json::from_slice::<Vec<PublishEvent>>(bytes)
            .map_err(|e| format!("invalid JSON: {e}"))?
    } else {
        vec![
            serde_json::from_slice::<PublishEvent>(bytes)
                .map_err(|e| format!("invalid JSON: {e}"))?,
        ]
    };
    for (i, event) in events.iter().enumerate() {
        if let Some(body) = &event.body {
            if !body.get().trim_start().starts_with('{') {
                return Err(format!("event {i}: `body` must be a JSON object"));
            }
            // The body is forwarded verbatim to every subscriber, so it must also be readable by
            // ordinary JSON parsers: a number beyond f64's range (1e400) is valid JSON grammar but
            // breaks many clients. Found by fuzzing.
            serde_json::from_str::<serde_json::Value>(body.get())
                .map_err(|e| format!("event {i}: `body` is not usable JSON: {e}"))?;
        }
        if event.message.trim().is_empty() {
            return Err(format!("event {i}: `message` must not be empty"));
        }
    }
    Ok(events)
}

/// `field` (`event_types`, or sysadm's `args`) as an array of names or a comma-separated string,
/// normalised.
fn event_type_list(field: &str, value: &serde_json::Value) -> Result<Vec<String>, String> {
    let joined = match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("`{field}` must hold channel names (strings)"))?
            .join(","),
        _ => return Err(format!("`{field}` must be an array of channel names")),
    };
    Ok(split_event_types(&joined))
}

/// A request in the envelope of sysadm's `events` namespace:
/// `{"namespace":"events","name":"subscribe","id":"…","args":["pdfm",…]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct SysadmRequest {
    pub namespace: String,
    pub name: String,
    /// Echoed as is in the answer.
    pub id: serde_json::Value,
    /// The channel names in `args`, normalised; an error when `args` is not a list of names.
    pub event_types: Result<Vec<String>, String>,
}

/// A client text frame in either of the two forms the hub understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Hub(ClientMessage),
    Sysadm(SysadmRequest),
}

/// Parses a client text frame: sysadm's envelope when it has a `namespace` key and no channel
/// key, otherwise the hub's own message (so a seed message with an extra `namespace` field
/// keeps its meaning).
pub fn parse_request(text: &str) -> Result<Request, ClientMessageError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ClientMessageError::Malformed(e.to_string()))?;
    let Some(object) = value.as_object() else {
        return Err(ClientMessageError::NotAnObject);
    };
    let has_channel = object.contains_key("event_type") || object.contains_key("type");
    if has_channel || !object.contains_key("namespace") {
        return client_message(object).map(Request::Hub);
    }
    let text_of = |key: &str| {
        object
            .get(key)
            .and_then(|v| v.as_str())
            .map(|s| s.trim().to_ascii_lowercase())
            .unwrap_or_default()
    };
    let args = object.get("args").cloned().unwrap_or_default();
    let event_types = match &args {
        serde_json::Value::Null => {
            Err("`args` must list the event types, e.g. [\"pdfm\"]".to_owned())
        }
        other => event_type_list("args", other),
    };
    Ok(Request::Sysadm(SysadmRequest {
        namespace: text_of("namespace"),
        name: text_of("name"),
        id: object.get("id").cloned().unwrap_or_else(|| "<none>".into()),
        event_types,
    }))
}

/// An answer in sysadm's envelope: `name` is `response` or `error`, `id` the request's.
pub fn sysadm_frame(name: &str, id: &serde_json::Value, args: serde_json::Value) -> Frame {
    #[derive(Serialize)]
    struct Answer<'a> {
        namespace: &'a str,
        name: &'a str,
        id: &'a serde_json::Value,
        args: serde_json::Value,
    }
    let answer = Answer {
        namespace: "events",
        name,
        id,
        args,
    };
    serde_json::to_string(&answer)
        .unwrap_or_else(|_| String::from("{}"))
        .into()
}

/// The names a client asked for in `event_types=a,b`: trimmed, lower-cased, de-duplicated, in
/// order, empty entries dropped.
pub fn split_event_types(list: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in list.split(',') {
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// `since=pdfm:41,global:7`: per channel, the seq of the last event the client has. Names are
/// normalised like `event_types`; a channel named twice is an error.
pub fn parse_since(list: &str) -> Result<Vec<(String, u64)>, String> {
    let mut cursors: Vec<(String, u64)> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, seq) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("since: {item:?} is not <event_type>:<seq>, e.g. pdfm:41"))?;
        let name = name.trim().to_ascii_lowercase();
        let seq = seq.trim().parse::<u64>().map_err(|_| {
            format!(
                "since: {:?} in {item:?} is not a seq (a whole number >= 0)",
                seq.trim()
            )
        })?;
        if name.is_empty() {
            return Err(format!("since: {item:?} names no event type"));
        }
        if cursors.iter().any(|(n, _)| *n == name) {
            return Err(format!("since: {name:?} is given twice"));
        }
        cursors.push((name, seq));
    }
    Ok(cursors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_lower_hex_and_unique() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 64);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        assert_ne!(a, b);
    }

    #[test]
    fn timestamps_are_rfc3339_micros_utc() {
        let t = timestamp();
        assert_eq!(t.len(), "2025-12-11T13:04:37.484843Z".len(), "{t}");
        assert!(t.ends_with('Z'));
        assert!(chrono::DateTime::parse_from_rfc3339(&t).is_ok());
    }

    #[test]
    fn envelope_keys_keep_the_spec_order() {
        let id = Uuid::new_v4();
        let frame = server_frame(
            "health",
            "pong",
            Some("ping-1"),
            Some(serde_json::json!({"a": 1})),
            Some(&id),
        );
        let keys: Vec<&str> = [
            "\"id\"",
            "\"ref_id\"",
            "\"event_type\"",
            "\"timestamp\"",
            "\"message\"",
            "\"body\"",
            "\"client_id\"",
        ]
        .into_iter()
        .collect();
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| frame.as_str().find(k).expect("key present"))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{frame}");
    }

    #[test]
    fn client_messages_accept_event_type_or_type() {
        let m = parse_client_message(r#"{"type":"Health","message":"ping","id":"p-1"}"#);
        assert_eq!(
            m,
            Ok(ClientMessage {
                channel: "health".into(),
                message: "ping".into(),
                id: Some("p-1".into()),
                event_types: None,
                filter: None,
            })
        );
        let m = parse_client_message(
            r#"{"event_type":"system","type":"health","message":"client-id"}"#,
        );
        assert_eq!(m.map(|m| m.channel), Ok("system".into()));
        assert_eq!(
            parse_client_message("{nope"),
            Err(ClientMessageError::Malformed(
                "key must be a string at line 1 column 2".into()
            ))
        );
        assert_eq!(
            parse_client_message("[1]"),
            Err(ClientMessageError::NotAnObject)
        );
        assert_eq!(
            parse_client_message(r#"{"message":"ping"}"#),
            Err(ClientMessageError::MissingChannel)
        );
        assert_eq!(
            ClientMessageError::ref_id(r#"{"id":7,"x":1}"#).as_deref(),
            Some("7")
        );
    }

    #[test]
    fn publish_body_is_one_event_or_an_array() {
        let one = parse_publish_body(br#"{"event_type":"pdfm","message":"X","body":{"a":1}}"#);
        assert_eq!(one.map(|v| v.len()), Ok(1));
        let many = parse_publish_body(
            br#" [{"event_type":"pdfm","message":"X"},{"type":"orchestrator","message":"Y"}]"#,
        );
        assert_eq!(many.map(|v| v.len()), Ok(2));
        assert!(parse_publish_body(br#"{"event_type":"pdfm","message":"X","body":[1]}"#).is_err());
        assert!(parse_publish_body(br#"{"event_type":"pdfm","message":""}"#).is_err());
        assert!(parse_publish_body(br#"{"event_type":"pdfm","message":"X","extra":1}"#).is_err());
        assert!(parse_publish_body(b"   ").is_err());
        // Grammatically valid, but no f64 holds it: refused, not forwarded to subscribers.
        let huge = br#"{"event_type":"pdfm","message":"X","body":{"n":1111111111.0e445}}"#;
        assert!(parse_publish_body(huge).is_err_and(|e| e.contains("number out of range")));
    }

    #[test]
    fn since_lists_channel_cursors() {
        assert_eq!(
            parse_since(" PDFM:41, global:0 ,"),
            Ok(vec![("pdfm".into(), 41), ("global".into(), 0)])
        );
        assert_eq!(parse_since(""), Ok(vec![]));
        for bad in [
            "pdfm",
            "pdfm:",
            "pdfm:-1",
            "pdfm:x",
            ":4",
            "pdfm:1,pdfm:2",
            "pdfm:99999999999999999999",
        ] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_in_sysadm_envelope() {
        let r = parse_request(
            r#"{"namespace":"events","name":"Subscribe","id":"s-1","args":["pdfm","Health"]}"#,
        );
        assert_eq!(
            r,
            Ok(Request::Sysadm(SysadmRequest {
                namespace: "events".into(),
                name: "subscribe".into(),
                id: "s-1".into(),
                event_types: Ok(vec!["pdfm".into(), "health".into()]),
            }))
        );
        let Ok(Request::Sysadm(r)) =
            parse_request(r#"{"namespace":"events","name":"subscribe","args":[1]}"#)
        else {
            panic!("a sysadm request");
        };
        assert!(r.event_types.is_err());
        assert_eq!(r.id, serde_json::json!("<none>"));
        let frame = sysadm_frame(
            "response",
            &serde_json::json!(7),
            serde_json::json!({"a": 1}),
        );
        assert_eq!(
            frame.as_str(),
            r#"{"namespace":"events","name":"response","id":7,"args":{"a":1}}"#
        );
    }

    #[test]
    fn in_band_event_types_from_the_body() {
        let m = parse_client_message(
            r#"{"event_type":"system","message":"subscribe","body":{"event_types":["PDFM","x"]}}"#,
        );
        assert_eq!(
            m.map(|m| m.event_types),
            Ok(Some(Ok(vec!["pdfm".into(), "x".into()])))
        );
        let m = parse_client_message(
            r#"{"event_type":"system","message":"subscribe","body":{"event_types":"pdfm, health"}}"#,
        );
        assert_eq!(
            m.map(|m| m.event_types),
            Ok(Some(Ok(vec!["pdfm".into(), "health".into()])))
        );
        let m = parse_client_message(
            r#"{"event_type":"system","message":"subscribe","body":{"event_types":{"a":1}}}"#,
        );
        assert!(m.is_ok_and(|m| m.event_types.is_some_and(|r| r.is_err())));
    }

    #[test]
    fn frame_ids_are_read_back_from_frames() {
        let frame = server_frame("global", "x", None, None, None);
        let id = frame_id(&frame).expect("an id");
        assert_eq!(id.len(), 64);
        assert!(frame.as_str().contains(id));
        assert_eq!(frame_id("{}"), None);
    }

    #[test]
    fn event_types_are_trimmed_lowered_and_deduplicated() {
        assert_eq!(
            split_event_types(" PDFM, health,,pdfm ,Bogus"),
            ["pdfm", "health", "bogus"]
        );
    }
}
