//! The `event_types` query: any query string splits into trimmed, lower-case, unique, non-empty
//! names, and resolving them against the channels loses none and invents none.
#![no_main]

use events_hub::auth::form_pairs;
use events_hub::channels::Channels;
use events_hub::protocol::{parse_since, split_event_types};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let channels = Channels::new(&["global", "pdfm", "orchestrator", "health", "system"].map(String::from));
    let requested: Vec<String> = form_pairs(query)
        .filter(|(k, _)| k == "event_types")
        .flat_map(|(_, v)| split_event_types(&v))
        .collect();
    for name in &requested {
        assert!(!name.is_empty());
        assert_eq!(name, &name.trim().to_ascii_lowercase());
    }
    let resolved = channels.resolve(&requested);
    assert_eq!(resolved.known.len() + resolved.unknown.len(), requested.len());
    let list = channels.subscription_list(&resolved.known);
    assert_eq!(list.last(), Some(&channels.global()));
    assert_eq!(list.iter().filter(|&&c| c == channels.global()).count(), 1);
    // `since` cursors: well-formed, normalised and unique, or an error.
    for (_, value) in form_pairs(query).filter(|(k, _)| k == "since") {
        if let Ok(cursors) = parse_since(&value) {
            for (i, (name, _)) in cursors.iter().enumerate() {
                assert!(!name.is_empty());
                assert_eq!(name, &name.trim().to_ascii_lowercase());
                assert!(cursors[..i].iter().all(|(n, _)| n != name));
            }
        }
    }
});
