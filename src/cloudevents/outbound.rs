//! A hub frame rendered as a CloudEvent in the JSON format, for a socket that chose the
//! `cloudevents.json` subprotocol (websockets-protocol-binding.md §3: one structured event per
//! text frame). The socket task renders at the moment it writes, so frames stay shared and
//! serialised once for every other socket.
//!
//! | hub frame | CloudEvent |
//! | --- | --- |
//! | `id` | `id` |
//! | `event_type` (the channel) | `source` `/events-hub/<channel>` |
//! | `message` of an event | `type`, verbatim |
//! | `message` of the hub's own frames | `type` `events-hub.<message>` (`events-hub.welcome`, `.pong`, `.error`, …) |
//! | `timestamp` | `time` |
//! | `body` | `data`, with `datacontenttype` `application/json` |
//! | `seq` | `sequence`, 20 digits zero-padded, so the strings sort as the numbers (sequence.md) |
//! | `epoch` | extension `epoch`, a string (a CloudEvents Integer is 32-bit; an epoch is larger) |
//! | `ref_id`, `client_id` | extensions `refid`, `clientid` |
//! | `origin` (an event published as a CloudEvent) | `subject`; extensions `originsource`, `originid` |

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::SPECVERSION;
use crate::protocol::{self, Frame, WELCOME_MESSAGE};

/// The prefix of every `source` the hub writes; the channel follows.
pub const SOURCE_PREFIX: &str = "/events-hub/";
/// The prefix of the `type` of the hub's own frames.
pub const HUB_TYPE_PREFIX: &str = "events-hub.";

/// A hub frame's fields (the `Envelope` of `protocol`), borrowed from its text where it can.
#[derive(Deserialize)]
struct HubFrame<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    ref_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(default, borrow)]
    body: Option<&'a RawValue>,
    #[serde(default, borrow)]
    client_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    origin: Option<Origin<'a>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    epoch: Option<u64>,
}

/// A CloudEvents publisher's own attributes, kept with its event.
#[derive(Deserialize)]
struct Origin<'a> {
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    subject: Option<Cow<'a, str>>,
}

/// The CloudEvent written, attributes first, `data` last.
#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: &'a str,
    source: String,
    #[serde(rename = "type")]
    kind: Cow<'a, str>,
    time: &'a str,
    datacontenttype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clientid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    originsource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    originid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
}

/// `frame` as a CloudEvent. A frame in another envelope (sysadm's `events` namespace) becomes
/// the `data` of an `events-hub.sysadm` event.
pub fn render(frame: &str) -> Frame {
    let event = match serde_json::from_str::<HubFrame<'_>>(frame) {
        Ok(hub) => to_json(&cloud_event(&hub)),
        Err(_) => foreign(frame),
    };
    event.into()
}

fn cloud_event<'a>(hub: &'a HubFrame<'a>) -> CloudEvent<'a> {
    let origin = hub.origin.as_ref();
    CloudEvent {
        specversion: SPECVERSION,
        id: &hub.id,
        source: format!("{SOURCE_PREFIX}{}", hub.event_type),
        kind: event_type(hub),
        time: &hub.timestamp,
        datacontenttype: "application/json",
        subject: origin.and_then(|o| o.subject.as_deref()),
        sequence: hub.seq.map(sequence),
        epoch: hub.epoch.map(|e| e.to_string()),
        refid: hub.ref_id.as_deref(),
        clientid: hub.client_id.as_deref(),
        originsource: origin.map(|o| &*o.source),
        originid: origin.map(|o| &*o.id),
        data: hub.body,
    }
}

/// An event's `type` is its `message` (what a CloudEvents publisher sent as `type`); the hub's
/// own frames, which carry no `epoch`, get `events-hub.` and their message, lower-cased.
fn event_type<'a>(hub: &'a HubFrame<'a>) -> Cow<'a, str> {
    if hub.epoch.is_some() {
        return Cow::Borrowed(&hub.message);
    }
    if hub.message == WELCOME_MESSAGE {
        return Cow::Owned(format!("{HUB_TYPE_PREFIX}welcome"));
    }
    let name: String = hub
        .message
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '_' | '.') => c,
            _ => '_',
        })
        .collect();
    Cow::Owned(format!("{HUB_TYPE_PREFIX}{name}"))
}

/// A `seq` as a `sequence`: every u64 in 20 digits, so string order is number order.
pub fn sequence(seq: u64) -> String {
    format!("{seq:020}")
}

/// A frame that is not a hub envelope, as the data of a hub event.
fn foreign(frame: &str) -> String {
    let id = protocol::new_id();
    let time = protocol::timestamp();
    let event = CloudEvent {
        specversion: SPECVERSION,
        id: &id,
        source: format!("{SOURCE_PREFIX}global"),
        kind: Cow::Owned(format!("{HUB_TYPE_PREFIX}sysadm")),
        time: &time,
        datacontenttype: "application/json",
        subject: None,
        sequence: None,
        epoch: None,
        refid: None,
        clientid: None,
        originsource: None,
        originid: None,
        data: serde_json::from_str(frame).ok(),
    };
    to_json(&event)
}

fn to_json(event: &CloudEvent<'_>) -> String {
    // Borrowed strings and raw JSON always serialise.
    serde_json::to_string(event).unwrap_or_else(|_| String::from("{}"))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use uuid::Uuid;

    use super::*;
    use crate::protocol::Envelope;

    fn render_json(frame: &str) -> Value {
        serde_json::from_str(&render(frame)).unwrap()
    }

    #[test]
    fn an_event_keeps_its_message_as_type_and_its_body_as_data() {
        let body = serde_json::value::to_raw_value(&json!({"vm": 7})).unwrap();
        let frame = Envelope {
            id: &"a".repeat(64),
            ref_id: None,
            event_type: "pdfm",
            timestamp: "2026-12-01T10:00:00.000001Z",
            message: "com.example.vm.started",
            body: Some(&body),
            client_id: None,
            origin: None,
            seq: Some(42),
            epoch: Some(1_764_583_200_000_000),
        }
        .to_frame();
        let event = render_json(&frame);
        assert_eq!(
            event,
            json!({
                "specversion": "1.0",
                "id": "a".repeat(64),
                "source": "/events-hub/pdfm",
                "type": "com.example.vm.started",
                "time": "2026-12-01T10:00:00.000001Z",
                "datacontenttype": "application/json",
                "sequence": "00000000000000000042",
                "epoch": "1764583200000000",
                "data": {"vm": 7},
            })
        );
        // Attributes first, data last, as written.
        assert!(render(&frame).starts_with("{\"specversion\":\"1.0\",\"id\":"));
    }

    #[test]
    fn a_published_cloudevents_origin_comes_back_as_subject_and_extensions() {
        let origin = serde_json::value::to_raw_value(
            &json!({"source": "/vms", "id": "e-1", "subject": "vm/7"}),
        )
        .unwrap();
        let frame = Envelope {
            id: &"b".repeat(64),
            ref_id: None,
            event_type: "pdfm",
            timestamp: "2026-12-01T10:00:00.000001Z",
            message: "vm.started",
            body: None,
            client_id: None,
            origin: Some(&origin),
            seq: Some(1),
            epoch: Some(5),
        }
        .to_frame();
        let event = render_json(&frame);
        assert_eq!(event["subject"], "vm/7");
        assert_eq!(event["originsource"], "/vms");
        assert_eq!(event["originid"], "e-1");
        assert_eq!(event["source"], "/events-hub/pdfm");
        assert!(event.get("data").is_none());
    }

    #[test]
    fn sequences_sort_as_strings_the_way_seqs_sort_as_numbers() {
        let mut seqs = [9_u64, 10, 1, u64::MAX, 100];
        let mut strings: Vec<String> = seqs.iter().map(|&s| sequence(s)).collect();
        seqs.sort_unstable();
        strings.sort();
        assert_eq!(strings, seqs.map(sequence));
        assert_eq!(sequence(u64::MAX).len(), 20);
    }

    #[test]
    fn the_hubs_own_frames_get_an_events_hub_type() {
        let client = Uuid::new_v4();
        let start = protocol::StreamStart::default();
        let welcome = render_json(&protocol::welcome(&client, &["global"], &[], &start));
        assert_eq!(welcome["type"], "events-hub.welcome");
        assert_eq!(welcome["source"], "/events-hub/global");
        assert_eq!(welcome["data"]["client_id"], json!(client));
        assert!(welcome.get("sequence").is_none() && welcome.get("epoch").is_none());

        let error = render_json(&protocol::error_frame(&client, Some("r-1"), "nope"));
        assert_eq!(error["type"], "events-hub.error");
        assert_eq!(error["refid"], "r-1");
        assert_eq!(error["clientid"], json!(client));
        assert_eq!(error["data"], json!({"error": "nope"}));

        let notice = protocol::server_frame("global", "SERVER_SHUTDOWN", None, None, None);
        assert_eq!(render_json(&notice)["type"], "events-hub.server_shutdown");
    }

    #[test]
    fn a_frame_in_another_envelope_becomes_data() {
        let sysadm = protocol::sysadm_frame("response", &json!("s-1"), json!({"ok": true}));
        let event = render_json(&sysadm);
        assert_eq!(event["type"], "events-hub.sysadm");
        assert_eq!(event["data"]["id"], "s-1");
        assert_eq!(event["id"].as_str().map(str::len), Some(64));
    }
}
