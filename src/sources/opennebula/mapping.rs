//! Hook Manager messages → hub events, with stable names and bodies in the style of the Events
//! Hub guides (`VM_STATE_CHANGED` with `vm_id`, `current_state`, `previous_state`, …).
//!
//! | key | events |
//! | --- | --- |
//! | `EVENT STATE VM/<STATE>/<LCM_STATE>` | `VM_STATE_CHANGED` |
//! | `EVENT STATE HOST/<STATE>/` | `HOST_STATE_CHANGED`, then `HOST_HEALTH_UPDATE` when the health word changed |
//! | `EVENT API <call> <0\|1>` | `API_CALL` |
//!
//! Every body carries `source: "opennebula"`. The mapper remembers each VM's and host's last
//! state (bounded, see [`StateMemory`]) to fill `previous_state`.

use serde::Serialize;
use serde_json::value::RawValue;

use super::memory::StateMemory;
use super::message::{self, Key, Malformed};
use crate::config::OpenNebulaSource;

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
    /// Received and understood, but not forwarded (a kind not configured, `RETRY`, an object
    /// the bridge does not map). The reason is for debug logs.
    Skip(&'static str),
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

pub struct Mapper {
    kinds: Kinds,
    include_xml: bool,
    vms: StateMemory,
    hosts: StateMemory,
}

impl Mapper {
    pub fn new(settings: &OpenNebulaSource) -> Self {
        Self {
            kinds: Kinds::from_names(&settings.kinds),
            include_xml: settings.include_xml,
            vms: StateMemory::new(settings.max_tracked_objects),
            hosts: StateMemory::new(settings.max_tracked_objects),
        }
    }

    /// Maps one ZeroMQ message (its frames). The key is checked first, so messages of kinds
    /// that are not forwarded are never decoded.
    pub fn map(&mut self, frames: &[&[u8]]) -> Result<Outcome, Malformed> {
        let [key, content] = frames else {
            return Err(Malformed::Frames(frames.len()));
        };
        match message::parse_key(key)? {
            Key::VmState { .. } if !self.kinds.vm_state => {
                Ok(Outcome::Skip("vm_state not forwarded"))
            }
            Key::HostState { .. } if !self.kinds.host_state => {
                Ok(Outcome::Skip("host_state not forwarded"))
            }
            Key::Api { .. } if !self.kinds.api => Ok(Outcome::Skip("api not forwarded")),
            Key::OtherState { .. } => Ok(Outcome::Skip("state change of an object not bridged")),
            Key::Retry => Ok(Outcome::Skip("RETRY is for the Hook Execution Manager")),
            Key::VmState { state, lcm_state } => {
                let xml = message::decode_content(content)?;
                let hook = message::parse_state(&xml, "VM")?;
                Ok(Outcome::Publish(self.vm(&hook, &state, &lcm_state, &xml)?))
            }
            Key::HostState { state } => {
                let xml = message::decode_content(content)?;
                let hook = message::parse_state(&xml, "HOST")?;
                Ok(Outcome::Publish(self.host(&hook, &state, &xml)?))
            }
            Key::Api { call, success } => {
                let xml = message::decode_content(content)?;
                let hook = message::parse_api(&xml, &call, success)?;
                let body = ApiCall {
                    source: SOURCE,
                    call: &call,
                    success,
                    resource_id: hook.resource_id,
                    error: hook.error.as_deref(),
                    xml: self.xml(&xml),
                };
                Ok(Outcome::Publish(vec![mapped("API_CALL", &body)?]))
            }
        }
    }

    fn vm(
        &mut self,
        hook: &message::StateHook,
        state: &str,
        lcm_state: &str,
        xml: &str,
    ) -> Result<Vec<Mapped>, Malformed> {
        let current = vm_state_word(state, lcm_state);
        // A VM in DONE is gone for good: forget it rather than let it age out.
        let previous = if state == "DONE" {
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
            state,
            lcm_state,
            host: hook.remote_host.as_deref(),
            xml: self.xml(xml),
        };
        Ok(vec![mapped("VM_STATE_CHANGED", &body)?])
    }

    fn host(
        &mut self,
        hook: &message::StateHook,
        state: &str,
        xml: &str,
    ) -> Result<Vec<Mapped>, Malformed> {
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

/// The one word the guides use for a VM's state (`running`, `poweroff`): the LCM state while
/// the VM is ACTIVE, the VM state otherwise (where the LCM state is always LCM_INIT).
pub fn vm_state_word(state: &str, lcm_state: &str) -> String {
    if state == "ACTIVE" {
        lcm_state.to_ascii_lowercase()
    } else {
        state.to_ascii_lowercase()
    }
}

/// A host state (OpenNebula's `Host::state_to_str`) as a health word.
pub fn host_health(state: &str) -> &'static str {
    match state {
        "MONITORED" | "MONITORING_MONITORED" => "healthy",
        "ERROR" | "MONITORING_ERROR" => "unhealthy",
        "INIT" | "MONITORING_INIT" => "initializing",
        "DISABLED" | "MONITORING_DISABLED" => "disabled",
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
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::{Value, json};

    use super::*;

    fn settings() -> OpenNebulaSource {
        OpenNebulaSource::with_endpoint("tcp://127.0.0.1:2101")
    }

    fn vm_xml(id: u64, name: &str, state: &str, lcm: &str) -> String {
        format!(
            "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>VM</HOOK_OBJECT>\
             <STATE>{state}</STATE><LCM_STATE>{lcm}</LCM_STATE><RESOURCE_ID>{id}</RESOURCE_ID>\
             <REMOTE_HOST>node-1</REMOTE_HOST><VM><ID>{id}</ID><NAME>{name}</NAME></VM>\
             </HOOK_MESSAGE>"
        )
    }

    fn host_xml(id: u64, name: &str, state: &str) -> String {
        format!(
            "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>HOST</HOOK_OBJECT>\
             <STATE>{state}</STATE><REMOTE_HOST>{name}</REMOTE_HOST>\
             <RESOURCE_ID>{id}</RESOURCE_ID><HOST><ID>{id}</ID><NAME>{name}</NAME></HOST>\
             </HOOK_MESSAGE>"
        )
    }

    /// Maps one message given as key + XML (base64-encoded here, as on the wire).
    fn map(m: &mut Mapper, key: &str, xml: &str) -> Result<Outcome, Malformed> {
        let content = STANDARD.encode(xml);
        m.map(&[key.as_bytes(), content.as_bytes()])
    }

    fn events(outcome: Result<Outcome, Malformed>) -> Vec<(&'static str, Value)> {
        match outcome {
            Ok(Outcome::Publish(events)) => events
                .into_iter()
                .map(|e| {
                    let body = serde_json::from_str(e.body.get()).expect("body is JSON");
                    (e.message, body)
                })
                .collect(),
            other => panic!("expected events, got {other:?}"),
        }
    }

    fn vm(m: &mut Mapper, id: u64, state: &str, lcm: &str) -> Value {
        let key = format!("EVENT STATE VM/{state}/{lcm}");
        let mut got = events(map(m, &key, &vm_xml(id, "web-1", state, lcm)));
        assert_eq!(got.len(), 1);
        let (message, body) = got.remove(0);
        assert_eq!(message, "VM_STATE_CHANGED");
        body
    }

    #[test]
    fn vm_state_changes_carry_the_remembered_previous_state() {
        let mut m = Mapper::new(&settings());
        assert_eq!(
            vm(&mut m, 42, "PENDING", "LCM_INIT"),
            json!({"source": "opennebula", "vm_id": 42, "name": "web-1",
                   "current_state": "pending", "state": "PENDING", "lcm_state": "LCM_INIT",
                   "host": "node-1"})
        );
        let running = vm(&mut m, 42, "ACTIVE", "RUNNING");
        assert_eq!(running["current_state"], "running");
        assert_eq!(running["previous_state"], "pending");
        // Another VM has its own memory.
        assert!(
            vm(&mut m, 43, "ACTIVE", "RUNNING")
                .get("previous_state")
                .is_none()
        );
        assert_eq!(
            vm(&mut m, 42, "POWEROFF", "LCM_INIT")["previous_state"],
            "running"
        );
        assert_eq!(m.remembered(), (2, 0));
    }

    #[test]
    fn a_vm_in_done_is_forgotten() {
        let mut m = Mapper::new(&settings());
        vm(&mut m, 5, "ACTIVE", "RUNNING");
        let done = vm(&mut m, 5, "DONE", "LCM_INIT");
        assert_eq!(done["current_state"], "done");
        assert_eq!(done["previous_state"], "running");
        assert_eq!(m.remembered(), (0, 0));
        // The id may be seen again (a restored database): no stale previous_state.
        assert!(
            vm(&mut m, 5, "PENDING", "LCM_INIT")
                .get("previous_state")
                .is_none()
        );
    }

    #[test]
    fn memory_is_bounded_by_max_tracked_objects() {
        let mut s = settings();
        s.max_tracked_objects = 2;
        let mut m = Mapper::new(&s);
        for id in 0..10 {
            vm(&mut m, id, "ACTIVE", "RUNNING");
        }
        assert_eq!(m.remembered(), (2, 0));
        // The most recent two are still known.
        assert_eq!(
            vm(&mut m, 9, "ACTIVE", "EPILOG")["previous_state"],
            "running"
        );
        assert!(
            vm(&mut m, 0, "ACTIVE", "EPILOG")
                .get("previous_state")
                .is_none()
        );
    }

    #[test]
    fn host_state_changes_and_health_updates() {
        let mut m = Mapper::new(&settings());
        let host = |m: &mut Mapper, state: &str| {
            let key = format!("EVENT STATE HOST/{state}/");
            events(map(m, &key, &host_xml(3, "node-1", state)))
        };
        let first = host(&mut m, "INIT");
        assert_eq!(
            first,
            [
                (
                    "HOST_STATE_CHANGED",
                    json!({"source": "opennebula", "host_id": 3, "name": "node-1",
                           "state": "INIT", "health": "initializing"})
                ),
                (
                    "HOST_HEALTH_UPDATE",
                    json!({"source": "opennebula", "host_id": 3, "name": "node-1",
                           "state": "initializing"})
                ),
            ]
        );
        let monitored = host(&mut m, "MONITORED");
        assert_eq!(monitored[0].1["previous_state"], "INIT");
        assert_eq!(monitored[0].1["health"], "healthy");
        assert_eq!(
            monitored[1],
            (
                "HOST_HEALTH_UPDATE",
                json!({"source": "opennebula", "host_id": 3, "name": "node-1",
                       "state": "healthy", "previous_state": "initializing"})
            )
        );
        // Same health word: the state change alone.
        let again = host(&mut m, "MONITORING_MONITORED");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].0, "HOST_STATE_CHANGED");
        let error = host(&mut m, "ERROR");
        assert_eq!(error[1].1["state"], "unhealthy");
        assert_eq!(error[1].1["previous_state"], "healthy");
    }

    #[test]
    fn health_words() {
        for (state, word) in [
            ("MONITORED", "healthy"),
            ("MONITORING_MONITORED", "healthy"),
            ("ERROR", "unhealthy"),
            ("MONITORING_ERROR", "unhealthy"),
            ("INIT", "initializing"),
            ("MONITORING_INIT", "initializing"),
            ("DISABLED", "disabled"),
            ("MONITORING_DISABLED", "disabled"),
            ("OFFLINE", "offline"),
            ("SOMETHING_NEW", "unknown"),
        ] {
            assert_eq!(host_health(state), word, "{state}");
        }
    }

    #[test]
    fn api_calls() {
        let mut m = Mapper::new(&settings());
        let xml = "<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE><CALL>one.vm.allocate</CALL>\
            <CALL_INFO><RESULT>1</RESULT><PARAMETERS>\
            <PARAMETER><POSITION>1</POSITION><TYPE>IN</TYPE><VALUE>****</VALUE></PARAMETER>\
            <PARAMETER><POSITION>1</POSITION><TYPE>OUT</TYPE><VALUE>true</VALUE></PARAMETER>\
            <PARAMETER><POSITION>2</POSITION><TYPE>OUT</TYPE><VALUE>12</VALUE></PARAMETER>\
            </PARAMETERS><EXTRA/></CALL_INFO></HOOK_MESSAGE>";
        assert_eq!(
            events(map(&mut m, "EVENT API one.vm.allocate 1", xml)),
            [(
                "API_CALL",
                json!({"source": "opennebula", "call": "one.vm.allocate", "success": true,
                       "resource_id": 12})
            )]
        );
    }

    #[test]
    fn the_decoded_xml_is_opt_in() {
        let mut s = settings();
        s.include_xml = true;
        let mut m = Mapper::new(&s);
        let xml = vm_xml(1, "a", "ACTIVE", "RUNNING");
        let got = events(map(&mut m, "EVENT STATE VM/ACTIVE/RUNNING", &xml));
        assert_eq!(got[0].1["xml"], xml.as_str());
        let mut plain = Mapper::new(&settings());
        let got = events(map(&mut plain, "EVENT STATE VM/ACTIVE/RUNNING", &xml));
        assert!(got[0].1.get("xml").is_none());
    }

    #[test]
    fn kinds_not_forwarded_are_skipped_without_decoding() {
        let mut s = settings();
        s.kinds = vec!["api".into()];
        let mut m = Mapper::new(&s);
        // Content that would be malformed is not even looked at.
        for key in ["EVENT STATE VM/ACTIVE/RUNNING", "EVENT STATE HOST/ERROR/"] {
            assert!(matches!(
                m.map(&[key.as_bytes(), b"!!not base64!!"]),
                Ok(Outcome::Skip(_))
            ));
        }
        for key in [
            "RETRY",
            "EVENT STATE IMAGE/READY/",
            "EVENT STATE NET/READY/",
        ] {
            assert!(matches!(
                m.map(&[key.as_bytes(), b""]),
                Ok(Outcome::Skip(_))
            ));
        }
    }

    #[test]
    fn malformed_messages_are_errors_of_their_kind_and_change_nothing() {
        let mut m = Mapper::new(&settings());
        let good = STANDARD.encode(vm_xml(1, "a", "ACTIVE", "RUNNING"));
        let cases: [(&[&[u8]], usize); 7] = [
            (&[b"EVENT STATE VM/ACTIVE/RUNNING"], 0),
            (
                &[b"EVENT STATE VM/ACTIVE/RUNNING", good.as_bytes(), b"x"],
                0,
            ),
            (&[b"EVENT NOPE", good.as_bytes()], 1),
            (&[b"EVENT STATE VM/ACTIVE/RUNNING", b"%%%"], 2),
            (
                &[b"EVENT STATE VM/ACTIVE/RUNNING", b"PEhPT0tfTUVTU0FHRT4="],
                3,
            ),
            (&[b"EVENT STATE HOST/ERROR/", good.as_bytes()], 4),
            (&[b"EVENT API one.vm.allocate 1", good.as_bytes()], 4),
        ];
        for (frames, kind) in cases {
            let err = m.map(frames).err();
            assert_eq!(err.as_ref().map(Malformed::kind), Some(kind), "{err:?}");
        }
        assert_eq!(m.remembered(), (0, 0));
        // And the next good message maps as if nothing happened.
        let got = events(m.map(&[b"EVENT STATE VM/ACTIVE/RUNNING", good.as_bytes()]));
        assert!(got[0].1.get("previous_state").is_none());
    }
}
