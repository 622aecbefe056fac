//! Test messages built the way OpenNebula builds them (OpenNebula/one):
//! - the keys of `src/hm_mad/one_hm.rb` (`key`: `"#{obj} #{resource_id}/#{state}/#{lcm_state} "`,
//!   `"STATE #{obj}/#{state}/#{lcm_state}/#{resource_id} "`, `"SERVICE #{service_id} "`, each
//!   sent as `"EVENT #{key}"` followed by the same content; `action_retry`: `RETRY`, then
//!   `"#{command} #{params}"`);
//! - the documents of `src/hm/HookStateVM.cc`, `HookStateHost.cc`, `HookStateImage.cc`,
//!   `HookAPI.cc` and `Request::make_xml_response` (`include/Request.h`), base64-encoded as
//!   `ssl_util::base64_encode` (OpenSSL's `EVP_EncodeBlock`: one line, padded).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// One ZeroMQ message: key frame, content frame.
pub type Message = (String, String);

pub struct Vm<'a> {
    pub id: u64,
    pub name: &'a str,
    pub state: &'a str,
    pub lcm_state: &'a str,
    /// The state before this change (`PREV_STATE`, `PREV_LCM_STATE` in the document): what
    /// makes two changes to the same state differ, as they do in oned's documents.
    pub previous: (&'a str, &'a str),
    pub host: Option<&'a str>,
    pub service_id: Option<u64>,
}

impl Vm<'_> {
    /// `HookStateVM::format_message`, before base64. The `<VM>` document is abridged.
    pub fn document(&self) -> String {
        let service = self
            .service_id
            .map(|s| format!("<SERVICE_ID>{s}</SERVICE_ID>"))
            .unwrap_or_default();
        let remote = self.host.map_or("<REMOTE_HOST/>".to_owned(), |h| {
            format!("<REMOTE_HOST>{h}</REMOTE_HOST>")
        });
        let user_template = self
            .service_id
            .map(|s| {
                format!("<USER_TEMPLATE><SERVICE_ID><![CDATA[{s}]]></SERVICE_ID></USER_TEMPLATE>")
            })
            .unwrap_or_else(|| "<USER_TEMPLATE/>".into());
        format!(
            "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>VM</HOOK_OBJECT>\
             <STATE>{}</STATE><LCM_STATE>{}</LCM_STATE><RESOURCE_ID>{}</RESOURCE_ID>{service}\
             {remote}<VM><ID>{}</ID><UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME>\
             <GNAME>oneadmin</GNAME><NAME>{}</NAME><STATE>{}</STATE><LCM_STATE>{}</LCM_STATE>\
             <PREV_STATE>{}</PREV_STATE><PREV_LCM_STATE>{}</PREV_LCM_STATE>\
             <TEMPLATE><CPU><![CDATA[1]]></CPU></TEMPLATE>{user_template}</VM></HOOK_MESSAGE>",
            self.state,
            self.lcm_state,
            self.id,
            self.id,
            self.name,
            vm_state_number(self.state),
            lcm_state_number(self.lcm_state),
            vm_state_number(self.previous.0),
            lcm_state_number(self.previous.1),
        )
    }

    /// Every message one_hm.rb publishes for this state change.
    pub fn messages(&self) -> Vec<Message> {
        let mut keys = state_keys("VM", self.id, self.state, self.lcm_state);
        if let Some(service) = self.service_id {
            keys.push(format!("EVENT SERVICE {service} "));
        }
        with_content(keys, &self.document())
    }
}

/// `VirtualMachine::VmState` and `LcmState` numbers (`include/VirtualMachine.h`) of the states
/// the tests use.
fn vm_state_number(name: &str) -> u32 {
    let states = [
        ("INIT", 0),
        ("PENDING", 1),
        ("HOLD", 2),
        ("ACTIVE", 3),
        ("STOPPED", 4),
        ("SUSPENDED", 5),
        ("DONE", 6),
        ("POWEROFF", 8),
        ("UNDEPLOYED", 9),
    ];
    number(&states, name)
}

fn lcm_state_number(name: &str) -> u32 {
    let states = [
        ("LCM_INIT", 0),
        ("PROLOG", 1),
        ("BOOT", 2),
        ("RUNNING", 3),
        ("MIGRATE", 4),
        ("EPILOG", 11),
        ("SHUTDOWN", 12),
        ("HOTPLUG", 17),
        ("SHUTDOWN_POWEROFF", 18),
        ("BOOT_POWEROFF", 20),
    ];
    number(&states, name)
}

/// `Host::HostState` numbers (`include/Host.h`).
fn host_state_number(name: &str) -> u32 {
    let states = [
        ("INIT", 0),
        ("MONITORED", 2),
        ("ERROR", 3),
        ("DISABLED", 4),
        ("OFFLINE", 8),
    ];
    number(&states, name)
}

fn number(states: &[(&str, u32)], name: &str) -> u32 {
    states
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, number)| *number)
        .unwrap_or_else(|| panic!("add {name} to the state numbers"))
}

/// `HookStateHost::format_message`, before base64 (the `<HOST>` document abridged).
pub fn host_document(id: u64, name: &str, state: &str, previous: &str) -> String {
    format!(
        "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>HOST</HOOK_OBJECT>\
         <STATE>{state}</STATE><REMOTE_HOST>{name}</REMOTE_HOST><RESOURCE_ID>{id}</RESOURCE_ID>\
         <HOST><ID>{id}</ID><NAME>{name}</NAME><STATE>{}</STATE><PREV_STATE>{}</PREV_STATE>\
         <IM_MAD><![CDATA[kvm]]></IM_MAD><TEMPLATE/></HOST></HOOK_MESSAGE>",
        host_state_number(state),
        host_state_number(previous)
    )
}

/// Both messages for a host state change (a host has no LCM state: `"HOST 3/MONITORED/ "`).
pub fn host_messages(id: u64, name: &str, state: &str, previous: &str) -> Vec<Message> {
    let document = host_document(id, name, state, previous);
    with_content(state_keys("HOST", id, state, ""), &document)
}

/// `HookStateImage::format_message`: no REMOTE_HOST.
pub fn image_messages(id: u64, state: &str) -> Vec<Message> {
    let document = format!(
        "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>IMAGE</HOOK_OBJECT>\
         <STATE>{state}</STATE><RESOURCE_ID>{id}</RESOURCE_ID><IMAGE><ID>{id}</ID>\
         <NAME>ubuntu</NAME><STATE>1</STATE></IMAGE></HOOK_MESSAGE>"
    );
    with_content(state_keys("IMAGE", id, state, ""), &document)
}

/// `HookAPI::format_message` with `Request::make_xml_response`'s OUT values: IN parameters
/// as given (unescaped), OUT 1 `true`/`false`, OUT 2 the value or the error text, OUT 3 the
/// error code, OUT 4 (failures only) the object concerned.
pub fn api_document(call: &str, ins: &[&str], out2: &str, error_code: u32, resp_id: i64) -> String {
    let success = error_code == 0;
    let parameter = |position: usize, kind: &str, value: &str| {
        format!(
            "<PARAMETER><POSITION>{position}</POSITION><TYPE>{kind}</TYPE><VALUE>{value}</VALUE>\
             </PARAMETER>"
        )
    };
    let mut params: String = ins
        .iter()
        .enumerate()
        .map(|(i, value)| parameter(i + 1, "IN", value))
        .collect();
    params.push_str(&parameter(1, "OUT", if success { "true" } else { "false" }));
    params.push_str(&parameter(2, "OUT", out2));
    params.push_str(&parameter(3, "OUT", &error_code.to_string()));
    if !success {
        params.push_str(&parameter(4, "OUT", &resp_id.to_string()));
    }
    format!(
        "<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE><CALL>{call}</CALL><CALL_INFO>\
         <RESULT>{}</RESULT><PARAMETERS>{params}</PARAMETERS><EXTRA></EXTRA></CALL_INFO>\
         </HOOK_MESSAGE>",
        u8::from(success)
    )
}

/// The one message for an API call: `"API #{call} #{success}"`.
pub fn api_message(call: &str, ins: &[&str], out2: &str, error_code: u32, resp_id: i64) -> Message {
    let document = api_document(call, ins, out2, error_code, resp_id);
    let key = format!("EVENT API {call} {}", u8::from(error_code == 0));
    (key, base64(&document))
}

/// `RETRY` with `HookManager::format_message`'s retry document as the command and no params.
pub fn retry_message(hook_id: u64) -> Message {
    let args = base64("<VM><ID>1</ID></VM>");
    let document = format!(
        "<HOOK_MESSAGE><ARGUMENTS>{args}</ARGUMENTS><HOOK_ID>{hook_id}</HOOK_ID></HOOK_MESSAGE>"
    );
    ("RETRY".into(), format!("{} ", base64(&document)))
}

/// The two keys of a state change, with one_hm.rb's trailing spaces.
fn state_keys(object: &str, id: u64, state: &str, lcm_state: &str) -> Vec<String> {
    vec![
        format!("EVENT {object} {id}/{state}/{lcm_state} "),
        format!("EVENT STATE {object}/{state}/{lcm_state}/{id} "),
    ]
}

fn with_content(keys: Vec<String>, document: &str) -> Vec<Message> {
    let content = base64(document);
    keys.into_iter().map(|k| (k, content.clone())).collect()
}

pub fn base64(document: &str) -> String {
    STANDARD.encode(document)
}
