//! CloudEvents 1.0 (issue 15): publishers may send events in the CloudEvents form, and
//! subscribers that choose the `cloudevents.json` WebSocket subprotocol read every frame as a
//! CloudEvent. Read at the source, `cloudevents/spec`:
//!
//! | file | what it fixes here |
//! | --- | --- |
//! | `cloudevents/spec.md` | the attributes: `id`, `source`, `specversion` `1.0`, `type` required; extension names of `a-z0-9` |
//! | `cloudevents/formats/json-format.md` | `application/cloudevents+json`, the batch `application/cloudevents-batch+json`, `data` vs `data_base64` |
//! | `cloudevents/bindings/http-protocol-binding.md` | binary mode: `ce-` headers (percent-encoded), `Content-Type` is `datacontenttype` |
//! | `cloudevents/bindings/websockets-protocol-binding.md` | the `cloudevents.json` subprotocol: one structured event per text frame |
//! | `cloudevents/extensions/sequence.md` | `sequence`: a lexicographically-orderable string |
//!
//! Pure functions, no I/O: [`inbound`] reads a publish request into the hub's events,
//! [`outbound`] renders a hub frame as a CloudEvent. The plain path never calls either: a
//! socket pays for the rendering only when it chose the subprotocol.

pub mod inbound;
pub mod outbound;

/// The WebSocket subprotocol of the JSON event format (websockets-protocol-binding.md §1.5).
pub const SUBPROTOCOL: &str = "cloudevents.json";

/// The one CloudEvents version the hub reads and writes.
pub const SPECVERSION: &str = "1.0";

/// Why a CloudEvents publish was refused; mapped to the SPEC's error body in `error.rs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudEventError {
    /// Not a valid CloudEvent, or not one the hub can map (`400`).
    #[error("{0}")]
    Invalid(String),
    /// A valid CloudEvent whose data is not JSON (`415`): the hub's body is a JSON object.
    #[error("{0}")]
    Unsupported(String),
}

impl CloudEventError {
    /// The same refusal, naming event `i` of a batch.
    pub fn at(self, i: usize) -> Self {
        match self {
            Self::Invalid(m) => Self::Invalid(format!("event {i}: {m}")),
            Self::Unsupported(m) => Self::Unsupported(format!("event {i}: {m}")),
        }
    }
}

/// Whether `media` (lower-case, without parameters) declares JSON-formatted data: `*/json` or
/// `*/*+json` (json-format.md §3.1.1).
pub fn is_json_media(media: &str) -> bool {
    media
        .split_once('/')
        .is_some_and(|(_, subtype)| subtype == "json" || subtype.ends_with("+json"))
}

/// A `Content-Type` value's media type, lower-cased, parameters (`; charset=utf-8`) dropped.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}
