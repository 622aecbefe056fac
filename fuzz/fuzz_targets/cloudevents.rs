//! CloudEvents publish bodies (structured and batch): any bytes give events or a refusal,
//! never a panic; every accepted event has the required attributes and, if any, an object
//! body; and a frame built from it renders as a CloudEvent that is valid JSON.
#![no_main]

use events_hub::cloudevents::{inbound, outbound};
use events_hub::protocol::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut events = Vec::new();
    if let Ok(event) = inbound::parse_structured(data) {
        events.push(event);
    }
    if let Ok(batch) = inbound::parse_batch(data) {
        events.extend(batch);
    }
    for event in &events {
        assert!(!event.id.is_empty() && !event.source.is_empty() && !event.kind.is_empty());
        if let Some(body) = &event.data {
            assert!(body.get().starts_with('{'));
        }
        let origin = event.origin();
        let frame = Envelope {
            id: "0",
            ref_id: None,
            event_type: "pdfm",
            timestamp: "t",
            message: &event.kind,
            body: event.data.as_deref(),
            client_id: None,
            origin: origin.as_deref(),
            seq: Some(u64::MAX),
            epoch: Some(1),
        }
        .to_frame();
        let rendered = outbound::render(frame.as_str());
        let value: serde_json::Value =
            serde_json::from_str(rendered.as_str()).expect("a CloudEvent is JSON");
        assert_eq!(value["specversion"], "1.0");
        assert_eq!(value["type"].as_str(), Some(event.kind.as_str()));
    }
});
