//! Hook Manager messages → hub events, with stable names and bodies in the style of the Events
//! Hub guides (`VM_STATE_CHANGED` with `vm_id`, `current_state`, `previous_state`, …).
//!
//! | key (see `message`) | events |
//! | --- | --- |
//! | `EVENT VM …`, `EVENT STATE VM/…`, `EVENT SERVICE …` | `VM_STATE_CHANGED`, once per change |
//! | `EVENT HOST …`, `EVENT STATE HOST/…` | `HOST_STATE_CHANGED`, then `HOST_HEALTH_UPDATE` when the health word changed |
//! | `EVENT API <call> <0\|1>` | `API_CALL` |
//! | `EVENT IMAGE …`, `EVENT NET …`, `RETRY` | none, counted as skipped by name |
//!
//! OpenNebula publishes each state change two or three times with the same content: a state
//! message whose content was seen a moment ago is a copy ([`Copies`]) and is skipped, so each
//! change is published once whichever keys are subscribed to.
//!
//! Every body carries `source: "opennebula"`. The mapper remembers each VM's and host's last
//! state (bounded, see [`StateMemory`]) to fill `previous_state`.

use std::time::Instant;

use serde::Serialize;
use serde_json::value::RawValue;

use super::config::OpenNebulaSettings;
use super::copies::Copies;
use super::memory::StateMemory;
use super::message::{self, Key, Malformed, StateHook, StateKey};

const SOURCE: &str = "opennebula";

/// One hub event, before it is given a channel.
#[derive(Debug)]
pub struct Mapped {
    pub message: &'static str,
    pub body: Box<RawValue>,
}

/// What became of a well-formed message.
#[derive(Debug)]
pub enum Outcome {
    Publish(Vec<Mapped>),
    /// Received and understood, but not forwarded.
    Skip(Skipped),
}

/// Why a well-formed message was not forwarded. Each variant is one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Another copy of the state change just handled.
    Copy,
    /// A kind not in `kinds`.
    NotForwarded,
    /// `RETRY`: a hook retry, for the Hook Execution Manager.
    Retry,
    /// State changes of images and virtual networks, which the bridge does not map.
    Image,
    Net,
    /// A state change of an object OpenNebula did not publish when this was written.
    OtherObject,
}

/// The counters' names in `/readyz`, in [`Skipped`] order.
pub const SKIPPED_KINDS: [&str; 6] = [
    "copies",
    "not_forwarded",
    "retry",
    "image",
    "net",
    "other_objects",
];

impl Skipped {
    /// Index into [`SKIPPED_KINDS`].
    pub fn kind(self) -> usize {
        self as usize
    }
}

/// The kinds a source forwards (`kinds` in its settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub vm_state: bool,
    pub host_state: bool,
    pub api: bool,
}

impl Kinds {
    pub fn from_names(names: &[String]) -> Self {
        let has = |k: &str| names.iter().any(|n| n == k);
        Self {
            vm_state: has("vm_state"),
            host_state: has("host_state"),
            api: has("api"),
        }
    }
}

/// What a key says about a state change, checked against the document it came with.
#[derive(Debug, Clone, Copy)]
enum Claim<'a> {
    State(&'a StateKey),
    Service(u64),
}

/// The state a key and its document agree on.
struct Change {
    state: String,
    lcm_state: String,
}

pub struct Mapper {
    kinds: Kinds,
    include_xml: bool,
    vms: StateMemory,
    hosts: StateMemory,
    copies: Copies,
}

impl Mapper {
    pub fn new(settings: &OpenNebulaSettings) -> Self {
        Self {
            kinds: Kinds::from_names(&settings.kinds),
            include_xml: settings.include_xml,
            vms: StateMemory::new(settings.max_tracked_objects),
            hosts: StateMemory::new(settings.max_tracked_objects),
            copies: Copies::default(),
        }
    }

    /// Maps one ZeroMQ message (its frames). The key is checked first, so messages of kinds
    /// that are not forwarded, and copies, are never decoded.
    pub fn map(&mut self, frames: &[&[u8]]) -> Result<Outcome, Malformed> {
        self.map_at(frames, Instant::now())
    }

    /// [`Mapper::map`] for a message received at `now`.
    pub fn map_at(&mut self, frames: &[&[u8]], now: Instant) -> Result<Outcome, Malformed> {
        let [key, content] = frames else {
            return Err(Malformed::Frames(frames.len()));
        };
        match message::parse_key(key)? {
            Key::Retry => Ok(Outcome::Skip(Skipped::Retry)),
            Key::Api { .. } if !self.kinds.api => Ok(Outcome::Skip(Skipped::NotForwarded)),
            Key::Api { call, success } => self.api(&call, success, content),
            Key::State(key) => self.state_change(Claim::State(&key), content, now),
            Key::Service { service_id } => {
                self.state_change(Claim::Service(service_id), content, now)
            }
        }
    }

    fn state_change(
        &mut self,
        claim: Claim<'_>,
        content: &[u8],
        now: Instant,
    ) -> Result<Outcome, Malformed> {
        if self.copies.is_copy(content, now) {
            return Ok(Outcome::Skip(Skipped::Copy));
        }
        if let Claim::State(key) = claim
            && let Some(skip) = self.skip_object(&key.object)
        {
            return Ok(Outcome::Skip(skip));
        }
        let xml = message::decode_content(content)?;
        let hook = message::parse_state(&xml)?;
        let change = agree(claim, &hook)?;
        if let Some(skip) = self.skip_object(&hook.object) {
            return Ok(Outcome::Skip(skip));
        }
        let events = if hook.object == "VM" {
            self.vm(&hook, &change, &xml)?
        } else {
            self.host(&hook, &change, &xml)?
        };
        Ok(Outcome::Publish(events))
    }

    /// Why a state change of `object` is not forwarded, if it is not.
    fn skip_object(&self, object: &str) -> Option<Skipped> {
        match object {
            "VM" => (!self.kinds.vm_state).then_some(Skipped::NotForwarded),
            "HOST" => (!self.kinds.host_state).then_some(Skipped::NotForwarded),
            "IMAGE" => Some(Skipped::Image),
            "NET" => Some(Skipped::Net),
            _ => Some(Skipped::OtherObject),
        }
    }

    fn api(&mut self, call: &str, success: bool, content: &[u8]) -> Result<Outcome, Malformed> {
        let xml = message::decode_content(content)?;
        let hook = message::parse_api(&xml, call, success)?;
        let body = ApiCall {
            source: SOURCE,
            call,
            success,
            resource_id: hook.resource_id,
            error: hook.error.as_deref(),
            xml: self.xml(&xml),
        };
        Ok(Outcome::Publish(vec![mapped("API_CALL", &body)?]))
    }

    fn vm(
        &mut self,
        hook: &StateHook,
        change: &Change,
        xml: &str,
    ) -> Result<Vec<Mapped>, Malformed> {
        let current = vm_state_word(&change.state, &change.lcm_state);
        // A VM in DONE is gone for good: forget it rather than let it age out.
        let previous = if change.state == "DONE" {
            self.vms.forget(hook.id)
        } else {
            self.vms.replace(hook.id, &current)
        };
        let body = VmStateChanged {
            source: SOURCE,
            vm_id: hook.id,
            name: hook.name.as_deref(),
            current_state: &current,
            previous_state: previous.as_deref(),
            state: &change.state,
            lcm_state: &change.lcm_state,
            host: hook.remote_host.as_deref(),
            service_id: hook.service_id,
            xml: self.xml(xml),
        };
        Ok(vec![mapped("VM_STATE_CHANGED", &body)?])
    }

    fn host(
        &mut self,
        hook: &StateHook,
        change: &Change,
        xml: &str,
    ) -> Result<Vec<Mapped>, Malformed> {
        let state = change.state.as_str();
        let previous = self.hosts.replace(hook.id, state);
        let health = host_health(state);
        let previous_health = previous.as_deref().map(host_health);
        let name = hook.name.as_deref().or(hook.remote_host.as_deref());
        let mut events = vec![mapped(
            "HOST_STATE_CHANGED",
            &HostStateChanged {
                source: SOURCE,
                host_id: hook.id,
                name,
                state,
                previous_state: previous.as_deref(),
                health,
                xml: self.xml(xml),
            },
        )?];
        if previous_health != Some(health) {
            events.push(mapped(
                "HOST_HEALTH_UPDATE",
                &HostHealthUpdate {
                    source: SOURCE,
                    host_id: hook.id,
                    name,
                    state: health,
                    previous_state: previous_health,
                },
            )?);
        }
        Ok(events)
    }

    fn xml<'a>(&self, xml: &'a str) -> Option<&'a str> {
        self.include_xml.then_some(xml)
    }

    /// Objects whose last state is remembered (VMs, hosts).
    pub fn remembered(&self) -> (usize, usize) {
        (self.vms.len(), self.hosts.len())
    }
}

/// Checks the key against the document (same object, id, states, service) and returns the
/// state they agree on. one_hm.rb builds the key from the document, so a mismatch is not
/// OpenNebula's.
fn agree(claim: Claim<'_>, hook: &StateHook) -> Result<Change, Malformed> {
    let schema = |what: String| Err(Malformed::Schema(what));
    let said = |field: &Option<String>, key: &str| field.as_deref().is_none_or(|f| f == key);
    match claim {
        Claim::State(key) => {
            if hook.object != key.object {
                return schema(format!(
                    "HOOK_OBJECT is {:?}, the key says {:?}",
                    hook.object, key.object
                ));
            }
            if key.id.is_some_and(|id| id != hook.id) || !said(&hook.state, &key.state) {
                return schema(format!(
                    "the document is not the key's {} change",
                    key.object
                ));
            }
            if key.object == "VM" && !said(&hook.lcm_state, &key.lcm_state) {
                return schema("LCM_STATE is not the key's".into());
            }
            Ok(Change {
                state: key.state.clone(),
                lcm_state: key.lcm_state.clone(),
            })
        }
        Claim::Service(service_id) => {
            if hook.service_id != Some(service_id) {
                return schema(format!("SERVICE_ID is not the key's {service_id}"));
            }
            let Some(state) = hook.state.clone() else {
                return schema("no STATE".into());
            };
            let lcm_state = hook.lcm_state.clone().unwrap_or_default();
            if hook.object == "VM" && lcm_state.is_empty() {
                return schema("a VM without LCM_STATE".into());
            }
            Ok(Change { state, lcm_state })
        }
    }
}

/// The one word the guides use for a VM's state (`running`, `poweroff`): the LCM state while
/// the VM is ACTIVE, the VM state otherwise (where the LCM state is always LCM_INIT).
pub fn vm_state_word(state: &str, lcm_state: &str) -> String {
    if state == "ACTIVE" {
        lcm_state.to_ascii_lowercase()
    } else {
        state.to_ascii_lowercase()
    }
}

/// A host state (`Host::state_to_str` in OpenNebula's `include/Host.h`; the `MONITORING_*`
/// states are gone since 5.12) as a health word.
pub fn host_health(state: &str) -> &'static str {
    match state {
        "MONITORED" => "healthy",
        "ERROR" => "unhealthy",
        "INIT" => "initializing",
        "DISABLED" => "disabled",
        "OFFLINE" => "offline",
        _ => "unknown",
    }
}

fn mapped(message: &'static str, body: &impl Serialize) -> Result<Mapped, Malformed> {
    let body = serde_json::value::to_raw_value(body)
        .map_err(|e| Malformed::Schema(format!("cannot serialise the event: {e}")))?;
    Ok(Mapped { message, body })
}

#[derive(Serialize)]
struct VmStateChanged<'a> {
    source: &'static str,
    vm_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    current_state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_state: Option<&'a str>,
    state: &'a str,
    lcm_state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xml: Option<&'a str>,
}

#[derive(Serialize)]
struct HostStateChanged<'a> {
    source: &'static str,
    host_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_state: Option<&'a str>,
    health: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    xml: Option<&'a str>,
}

/// The guides' `HOST_HEALTH_UPDATE`: `state` is the health word.
#[derive(Serialize)]
struct HostHealthUpdate<'a> {
    source: &'static str,
    host_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_state: Option<&'static str>,
}

#[derive(Serialize)]
struct ApiCall<'a> {
    source: &'static str,
    call: &'a str,
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xml: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::oned::{self, Vm};
    use super::*;

    fn settings() -> OpenNebulaSettings {
        OpenNebulaSettings::with_endpoint("tcp://127.0.0.1:2101")
    }

    fn vm(id: u64, state: &'static str, lcm_state: &'static str) -> Vm<'static> {
        Vm {
            id,
            name: "web-1",
            state,
            lcm_state,
            previous: ("PENDING", "LCM_INIT"),
            host: (state == "ACTIVE").then_some("node-1"),
            service_id: None,
        }
    }

    fn map_one(m: &mut Mapper, (key, content): &oned::Message) -> Result<Outcome, Malformed> {
        m.map(&[key.as_bytes(), content.as_bytes()])
    }

    /// Maps every message; returns the events published and what was skipped.
    fn feed(
        m: &mut Mapper,
        messages: &[oned::Message],
    ) -> (Vec<(&'static str, Value)>, Vec<Skipped>) {
        let (mut events, mut skipped) = (Vec::new(), Vec::new());
        for message in messages {
            match map_one(m, message) {
                Ok(Outcome::Publish(mapped)) => events.extend(mapped.into_iter().map(|e| {
                    let body = serde_json::from_str(e.body.get()).expect("body is JSON");
                    (e.message, body)
                })),
                Ok(Outcome::Skip(why)) => skipped.push(why),
                Err(error) => panic!("{} gave {error}", message.0),
            }
        }
        (events, skipped)
    }

    const LIFECYCLE: [(&str, &str); 10] = [
        ("PENDING", "LCM_INIT"),
        ("ACTIVE", "PROLOG"),
        ("ACTIVE", "BOOT"),
        ("ACTIVE", "RUNNING"),
        ("ACTIVE", "SHUTDOWN_POWEROFF"),
        ("POWEROFF", "LCM_INIT"),
        ("ACTIVE", "BOOT_POWEROFF"),
        ("ACTIVE", "RUNNING"),
        ("ACTIVE", "EPILOG"),
        ("DONE", "LCM_INIT"),
    ];

    #[test]
    fn a_vm_lifecycle_gives_one_event_per_change_under_both_keys() {
        let mut m = Mapper::new(&settings());
        let mut previous = ("INIT", "LCM_INIT");
        let mut messages = Vec::new();
        for (state, lcm) in LIFECYCLE {
            messages.extend(
                Vm {
                    previous,
                    ..vm(42, state, lcm)
                }
                .messages(),
            );
            previous = (state, lcm);
        }
        assert_eq!(messages[0].0, "EVENT VM 42/PENDING/LCM_INIT ");
        assert_eq!(messages[1].0, "EVENT STATE VM/PENDING/LCM_INIT/42 ");
        let (events, skipped) = feed(&mut m, &messages);
        assert_eq!(skipped, [Skipped::Copy; 10]);
        let words: Vec<_> = events
            .iter()
            .map(|(_, b)| b["current_state"].clone())
            .collect();
        assert_eq!(
            words,
            [
                "pending",
                "prolog",
                "boot",
                "running",
                "shutdown_poweroff",
                "poweroff",
                "boot_poweroff",
                "running",
                "epilog",
                "done"
            ]
        );
        assert_eq!(
            events[0],
            (
                "VM_STATE_CHANGED",
                json!({"source": "opennebula", "vm_id": 42, "name": "web-1",
                "current_state": "pending", "state": "PENDING", "lcm_state": "LCM_INIT"})
            )
        );
        assert_eq!(
            events[3].1,
            json!({"source": "opennebula", "vm_id": 42, "name": "web-1",
                   "current_state": "running", "previous_state": "boot", "state": "ACTIVE",
                   "lcm_state": "RUNNING", "host": "node-1"})
        );
        assert_eq!(events[9].1["previous_state"], "epilog");
        // DONE forgets the VM.
        assert_eq!(m.remembered(), (0, 0));
    }

    #[test]
    fn any_one_key_alone_gives_the_same_event() {
        let change = Vm {
            service_id: Some(7),
            ..vm(5, "ACTIVE", "RUNNING")
        };
        let messages = change.messages();
        assert_eq!(messages[2].0, "EVENT SERVICE 7 ");
        let mut all = Mapper::new(&settings());
        let (expected, skipped) = feed(&mut all, &messages);
        assert_eq!(expected.len(), 1);
        assert_eq!(skipped, [Skipped::Copy, Skipped::Copy]);
        assert_eq!(expected[0].1["service_id"], 7);
        for message in &messages {
            let mut alone = Mapper::new(&settings());
            assert_eq!(
                feed(&mut alone, std::slice::from_ref(message)).0,
                expected,
                "{}",
                message.0
            );
        }
    }

    #[test]
    fn the_seed_guides_three_part_key_still_maps() {
        let mut m = Mapper::new(&settings());
        let content = oned::base64(&vm(9, "ACTIVE", "RUNNING").document());
        let (events, _) = feed(&mut m, &[("EVENT STATE VM/ACTIVE/RUNNING".into(), content)]);
        assert_eq!(events[0].1["vm_id"], 9);
        let host = oned::base64(&oned::host_document(3, "node-1", "MONITORED", "INIT"));
        let (events, _) = feed(&mut m, &[("EVENT STATE HOST/MONITORED/".into(), host)]);
        assert_eq!(events[0].1["host_id"], 3);
    }

    #[test]
    fn interleaved_copies_of_changes_made_at_once_give_one_event_each() {
        // OpenNebula 7 publishes from 15 threads: the keys of two changes can interleave.
        let mut m = Mapper::new(&settings());
        let a = vm(1, "ACTIVE", "RUNNING").messages();
        let b = vm(2, "ACTIVE", "BOOT").messages();
        let interleaved = [a[0].clone(), b[0].clone(), a[1].clone(), b[1].clone()];
        let (events, skipped) = feed(&mut m, &interleaved);
        let ids: Vec<_> = events.iter().map(|(_, b)| b["vm_id"].clone()).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(skipped, [Skipped::Copy, Skipped::Copy]);
    }

    #[test]
    fn the_same_document_seconds_later_is_a_new_event() {
        let mut m = Mapper::new(&settings());
        let (key, content) = &vm(1, "ACTIVE", "RUNNING").messages()[0];
        let frames = [key.as_bytes(), content.as_bytes()];
        let now = Instant::now();
        assert!(matches!(m.map_at(&frames, now), Ok(Outcome::Publish(_))));
        let later = now + std::time::Duration::from_secs(6);
        assert!(matches!(m.map_at(&frames, later), Ok(Outcome::Publish(_))));
    }

    #[test]
    fn a_host_goes_into_error_and_back() {
        let mut m = Mapper::new(&settings());
        let changes = [
            ("MONITORED", "INIT"),
            ("ERROR", "MONITORED"),
            ("MONITORED", "ERROR"),
        ];
        let messages: Vec<_> = changes
            .iter()
            .flat_map(|(state, previous)| oned::host_messages(3, "node-1", state, previous))
            .collect();
        assert_eq!(messages[0].0, "EVENT HOST 3/MONITORED/ ");
        assert_eq!(messages[1].0, "EVENT STATE HOST/MONITORED//3 ");
        let (events, skipped) = feed(&mut m, &messages);
        assert_eq!(skipped, [Skipped::Copy; 3]);
        let names: Vec<_> = events
            .iter()
            .map(|(n, b)| (*n, b["state"].clone()))
            .collect();
        assert_eq!(
            names,
            [
                ("HOST_STATE_CHANGED", json!("MONITORED")),
                ("HOST_HEALTH_UPDATE", json!("healthy")),
                ("HOST_STATE_CHANGED", json!("ERROR")),
                ("HOST_HEALTH_UPDATE", json!("unhealthy")),
                ("HOST_STATE_CHANGED", json!("MONITORED")),
                ("HOST_HEALTH_UPDATE", json!("healthy")),
            ]
        );
        assert_eq!(
            events[2].1,
            json!({"source": "opennebula", "host_id": 3, "name": "node-1", "state": "ERROR",
                   "previous_state": "MONITORED", "health": "unhealthy"})
        );
        assert_eq!(events[5].1["previous_state"], "unhealthy");
    }

    #[test]
    fn health_words_are_those_of_todays_host_states() {
        for (state, word) in [
            ("MONITORED", "healthy"),
            ("ERROR", "unhealthy"),
            ("INIT", "initializing"),
            ("DISABLED", "disabled"),
            ("OFFLINE", "offline"),
            ("MONITORING_MONITORED", "unknown"),
            ("SOMETHING_NEW", "unknown"),
        ] {
            assert_eq!(host_health(state), word, "{state}");
        }
    }

    #[test]
    fn api_calls_map_from_their_out_values() {
        let mut m = Mapper::new(&settings());
        let ok = oned::api_message(
            "one.vm.allocate",
            &["****", "NAME=web", "false"],
            "12",
            0,
            -1,
        );
        let failed = oned::api_message(
            "one.vm.action",
            &["****", "resume", "42"],
            "[one.vm.action] Wrong state to perform action",
            2048,
            42,
        );
        let (events, _) = feed(&mut m, &[ok, failed]);
        assert_eq!(
            events,
            [
                (
                    "API_CALL",
                    json!({"source": "opennebula", "call": "one.vm.allocate",
                    "success": true, "resource_id": 12})
                ),
                (
                    "API_CALL",
                    json!({"source": "opennebula", "call": "one.vm.action",
                    "success": false, "resource_id": 42,
                    "error": "[one.vm.action] Wrong state to perform action"})
                ),
            ]
        );
    }

    #[test]
    fn api_calls_with_unescaped_parameters_are_still_mapped() {
        let mut m = Mapper::new(&settings());
        let template = "NAME=web\nCONTEXT=[START_SCRIPT=\"apt update && apt -y install nginx\"]";
        let created =
            oned::api_message("one.vm.allocate", &["****", template, "false"], "13", 0, -1);
        let refused = oned::api_message(
            "one.template.instantiate",
            &["****", "4", "db&cache", "false", template],
            "[one.template.instantiate] Error: name \"db&cache\" is <invalid>",
            8192,
            4,
        );
        let (events, _) = feed(&mut m, &[created, refused]);
        assert_eq!(events[0].1["resource_id"], 13);
        assert_eq!(
            events[1].1,
            json!({"source": "opennebula", "call": "one.template.instantiate", "success": false,
                   "resource_id": 4,
                   "error": "[one.template.instantiate] Error: name \"db&cache\" is <invalid>"})
        );
        // Without even the OUT layout, the call is still reported.
        let bare = "<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE><CALL>one.vm.update</CALL>&&";
        let message = ("EVENT API one.vm.update 1".into(), oned::base64(bare));
        let (events, _) = feed(&mut m, &[message]);
        assert_eq!(
            events[0].1,
            json!({"source": "opennebula", "call": "one.vm.update", "success": true})
        );
    }

    #[test]
    fn a_vm_document_with_an_ampersand_is_read_leniently() {
        let mut m = Mapper::new(&settings());
        let xml = vm(8, "ACTIVE", "RUNNING")
            .document()
            .replace("<UNAME>oneadmin</UNAME>", "<UNAME>r&d</UNAME>");
        let key = "EVENT VM 8/ACTIVE/RUNNING ".to_owned();
        let (events, _) = feed(&mut m, &[(key, oned::base64(&xml))]);
        assert_eq!(events[0].1["name"], "web-1");
        assert_eq!(events[0].1["host"], "node-1");
    }

    #[test]
    fn objects_not_mapped_and_retries_are_skipped_by_name() {
        let mut m = Mapper::new(&settings());
        let mut messages = oned::image_messages(5, "READY");
        messages.push((
            "EVENT NET 2/READY/ ".into(),
            oned::base64("<HOOK_MESSAGE/>"),
        ));
        messages.push((
            "EVENT STATE NET/READY//2 ".into(),
            oned::base64("<HOOK_MESSAGE/>"),
        ));
        messages.push(("EVENT ZONE 1/ON/ ".into(), oned::base64("zone")));
        messages.push(oned::retry_message(3));
        let (events, skipped) = feed(&mut m, &messages);
        assert!(events.is_empty());
        assert_eq!(
            skipped,
            [
                Skipped::Image,
                Skipped::Copy,
                Skipped::Net,
                Skipped::Copy,
                Skipped::OtherObject,
                Skipped::Retry
            ]
        );
    }

    #[test]
    fn kinds_not_forwarded_are_skipped_without_decoding() {
        let mut s = settings();
        s.kinds = vec!["api".into()];
        let mut m = Mapper::new(&s);
        for key in ["EVENT VM 1/ACTIVE/RUNNING ", "EVENT STATE HOST/ERROR//2 "] {
            let got = m.map(&[key.as_bytes(), key.as_bytes()]);
            assert!(
                matches!(got, Ok(Outcome::Skip(Skipped::NotForwarded))),
                "{key}: {got:?}"
            );
        }
        // A service copy names no object: its document says it is a VM.
        let service = Vm {
            service_id: Some(1),
            ..vm(1, "ACTIVE", "RUNNING")
        }
        .messages();
        let (_, skipped) = feed(&mut m, &service[2..]);
        assert_eq!(skipped, [Skipped::NotForwarded]);
    }

    #[test]
    fn memory_is_bounded_by_max_tracked_objects() {
        let mut s = settings();
        s.max_tracked_objects = 2;
        let mut m = Mapper::new(&s);
        for id in 0..10 {
            feed(&mut m, &vm(id, "ACTIVE", "RUNNING").messages());
        }
        assert_eq!(m.remembered(), (2, 0));
        let (events, _) = feed(&mut m, &vm(9, "ACTIVE", "EPILOG").messages());
        assert_eq!(events[0].1["previous_state"], "running");
        let (events, _) = feed(&mut m, &vm(0, "ACTIVE", "EPILOG").messages());
        assert!(events[0].1.get("previous_state").is_none());
    }

    #[test]
    fn the_decoded_xml_is_opt_in() {
        let mut s = settings();
        s.include_xml = true;
        let change = vm(1, "ACTIVE", "RUNNING");
        let (events, _) = feed(&mut Mapper::new(&s), &change.messages());
        assert_eq!(events[0].1["xml"], change.document());
        let (events, _) = feed(&mut Mapper::new(&settings()), &change.messages());
        assert!(events[0].1.get("xml").is_none());
    }

    #[test]
    fn malformed_messages_are_errors_of_their_kind_and_change_nothing() {
        let good = oned::base64(&vm(1, "ACTIVE", "RUNNING").document());
        let bomb = oned::base64(
            "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">\
             <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>\
             <HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE><CALL>one.vm.allocate</CALL>&lol2;\
             </HOOK_MESSAGE>",
        );
        let cases: [(&[&[u8]], usize); 10] = [
            (&[b"EVENT VM 1/ACTIVE/RUNNING "], 0),
            (&[b"EVENT VM 1/ACTIVE/RUNNING ", good.as_bytes(), b"x"], 0),
            (&[b"EVENT NOPE", good.as_bytes()], 1),
            (&[b"EVENT VM 1/ACTIVE/ ", good.as_bytes()], 1),
            (&[b"EVENT VM 1/ACTIVE/RUNNING ", b"%%%"], 2),
            (&[b"EVENT VM 2/ACTIVE/RUNNING ", b"PEhPT0tfTUVTU0FHRT4="], 3),
            (&[b"EVENT API one.vm.allocate 1", bomb.as_bytes()], 3),
            (&[b"EVENT HOST 1/ERROR/ ", good.as_bytes()], 4),
            (&[b"EVENT STATE VM/ACTIVE/RUNNING/2 ", good.as_bytes()], 4),
            (&[b"EVENT API one.vm.allocate 1", good.as_bytes()], 4),
        ];
        let mut m = Mapper::new(&settings());
        for (frames, kind) in cases {
            let err = m.map(frames).err();
            assert_eq!(err.as_ref().map(Malformed::kind), Some(kind), "{err:?}");
            // Nothing is remembered of a malformed message but its content, for its copies.
            m.copies = Copies::default();
        }
        assert_eq!(m.remembered(), (0, 0));
        let (events, _) = feed(&mut m, &vm(1, "ACTIVE", "RUNNING").messages());
        assert!(events[0].1.get("previous_state").is_none());
    }

    #[test]
    fn a_malformed_state_message_is_counted_once_not_per_copy() {
        let mut m = Mapper::new(&settings());
        let content = b"%%%".as_slice();
        let first = m.map(&[b"EVENT VM 1/ACTIVE/RUNNING ", content]);
        assert!(matches!(first, Err(Malformed::Base64(_))));
        let copy = m.map(&[b"EVENT STATE VM/ACTIVE/RUNNING/1 ", content]);
        assert!(matches!(copy, Ok(Outcome::Skip(Skipped::Copy))));
    }
}
