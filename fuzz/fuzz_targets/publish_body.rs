//! `POST /v1/events` bodies: any bytes give events or an error message, never a panic; every
//! accepted event has a non-empty message and, if any, an object body; and a frame built from
//! an accepted event is valid JSON.
#![no_main]

use events_hub::protocol::{Envelope, parse_publish_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(events) = parse_publish_body(data) else {
        return;
    };
    for event in &events {
        assert!(!event.message.trim().is_empty());
        if let Some(body) = &event.body {
            assert!(body.get().trim_start().starts_with('{'));
        }
        let frame = Envelope {
            id: "0",
            ref_id: None,
            event_type: &event.event_type,
            timestamp: "t",
            message: &event.message,
            body: event.body.as_deref(),
            client_id: event.client_id.as_ref(),
            origin: None,
            seq: Some(u64::MAX),
            epoch: Some(1),
        }
        .to_frame();
        assert!(serde_json::from_str::<serde_json::Value>(frame.as_str()).is_ok());
    }
});
