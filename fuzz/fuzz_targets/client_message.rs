//! Client text frames: any input parses to a message or a typed error, never a panic, and what
//! parses is normalised (lower-case, trimmed, non-empty channel and message).
#![no_main]

use events_hub::protocol::{ClientMessageError, Request, parse_client_message, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_client_message(text) {
        Ok(message) => {
            assert!(!message.channel.is_empty() && !message.message.is_empty());
            assert_eq!(message.channel, message.channel.trim().to_ascii_lowercase());
            assert_eq!(message.message, message.message.trim().to_ascii_lowercase());
        }
        Err(_) => {
            // The error's ref_id lookup must cope with the same input.
            let _ = ClientMessageError::ref_id(text);
        }
    }
    // Either envelope: requested names come out normalised, whatever the input.
    let names = match parse_request(text) {
        Ok(Request::Hub(message)) => message.event_types.and_then(Result::ok),
        Ok(Request::Sysadm(request)) => request.event_types.ok(),
        Err(_) => None,
    };
    for name in names.unwrap_or_default() {
        assert!(!name.is_empty());
        assert_eq!(name, name.trim().to_ascii_lowercase());
    }
});
