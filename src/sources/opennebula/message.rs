//! The Hook Manager's wire format, decoded: a two-frame ZeroMQ message whose first frame is a
//! key and whose second is a base64 `HOOK_MESSAGE` XML document.
//!
//! The keys are the ones `src/hm_mad/one_hm.rb` (OpenNebula/one, functions `key` and
//! `action_retry`) publishes since 5.10. One state change goes out under two or three keys,
//! each followed by the same content:
//!
//! | key | when |
//! | --- | --- |
//! | `EVENT VM <id>/<STATE>/<LCM_STATE> ` | every VM state change (note the trailing space) |
//! | `EVENT STATE VM/<STATE>/<LCM_STATE>/<id> ` | the same change again |
//! | `EVENT SERVICE <service_id> ` | the same change a third time, for a VM of a OneFlow service |
//! | `EVENT HOST <id>/<STATE>/ `, `EVENT STATE HOST/<STATE>//<id> ` | a host (no LCM state) |
//! | `EVENT IMAGE …`, `EVENT NET …` | images and virtual networks, in the same two forms |
//! | `EVENT API <call> <1\|0>` | an API call and whether it succeeded |
//! | `RETRY` | a hook retry for the Hook Execution Manager; content `<base64> <params>` |
//!
//! The 5.9 beta's `EVENT STATE VM/<STATE>/<LCM_STATE>` (no id), shown on the seed guide, is
//! read too. The documents follow `share/doc/xsd/hook_message_{state,api}.xsd`, written by
//! `src/hm/HookState{VM,Host,Image,VirtualNetwork}.cc` and `src/hm/HookAPI.cc`.
//!
//! Pure functions only: everything here is reachable from the network, so every failure is a
//! [`Malformed`] value, never a panic.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use roxmltree::{Document, Node};

use super::lenient::{self, StateHeader, document_tag};

/// Keys longer than this are not OpenNebula's.
const MAX_KEY_BYTES: usize = 512;

/// Why a message was skipped. Each variant is one counter ([`Malformed::kind`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Malformed {
    #[error("expected 2 frames (key, base64 XML), got {0}")]
    Frames(usize),
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    #[error("content is not base64: {0}")]
    Base64(String),
    #[error("content is not an XML document: {0}")]
    Xml(String),
    #[error("not a hook message of this key: {0}")]
    Schema(String),
}

/// The kinds of malformed input, in the order they are reported.
pub const MALFORMED_KINDS: [&str; 5] = ["frames", "unknown_key", "base64", "xml", "schema"];

impl Malformed {
    /// Index into [`MALFORMED_KINDS`].
    pub fn kind(&self) -> usize {
        match self {
            Malformed::Frames(_) => 0,
            Malformed::UnknownKey(_) => 1,
            Malformed::Base64(_) => 2,
            Malformed::Xml(_) => 3,
            Malformed::Schema(_) => 4,
        }
    }
}

/// A parsed key. Object and state names are OpenNebula's (`VM`, `ACTIVE`, `RUNNING`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// A state change of `object`, under either of its keys (or the 5.9 beta's).
    State(StateKey),
    /// `EVENT SERVICE <id> `: a copy of a state change of a VM in a OneFlow service.
    Service {
        service_id: u64,
    },
    Api {
        call: String,
        success: bool,
    },
    /// The Hook Execution Manager's retry requests.
    Retry,
}

/// What a state key says. `lcm_state` is empty for objects other than VMs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKey {
    pub object: String,
    pub state: String,
    pub lcm_state: String,
    /// The object's id; absent only in the 5.9 beta's key.
    pub id: Option<u64>,
}

/// Parses one key of the shapes in the module's table.
pub fn parse_key(raw: &[u8]) -> Result<Key, Malformed> {
    let unknown = || {
        let shown = &raw[..raw.len().min(100)];
        Malformed::UnknownKey(String::from_utf8_lossy(shown).into_owned())
    };
    if raw.len() > MAX_KEY_BYTES {
        return Err(unknown());
    }
    let key = std::str::from_utf8(raw).map_err(|_| unknown())?;
    if key == "RETRY" {
        return Ok(Key::Retry);
    }
    let rest = key.strip_prefix("EVENT ").ok_or_else(unknown)?;
    // one_hm.rb ends state keys with one space (so `EVENT VM 4/` does not match VM 42).
    let rest = rest.strip_suffix(' ').unwrap_or(rest);
    let (word, args) = rest.split_once(' ').ok_or_else(unknown)?;
    match word {
        "API" => parse_api_key(args),
        "STATE" => parse_state_path(args),
        "SERVICE" => parse_id(args).map(|service_id| Key::Service { service_id }),
        object if is_name(object) => parse_id_first(object, args),
        _ => None,
    }
    .ok_or_else(unknown)
}

/// `<call> <1|0>`.
fn parse_api_key(args: &str) -> Option<Key> {
    let (call, success) = args.split_once(' ')?;
    let success = match success {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    let call_ok = call.starts_with("one.")
        && call
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    call_ok.then(|| Key::Api {
        call: call.to_owned(),
        success,
    })
}

/// `<OBJECT>/<STATE>/<LCM_STATE>/<id>`, or the 5.9 beta's `<OBJECT>/<STATE>/<LCM_STATE>`.
fn parse_state_path(args: &str) -> Option<Key> {
    let mut parts = args.split('/');
    let object = parts.next()?;
    let state = parts.next()?;
    let lcm_state = parts.next()?;
    let id = match parts.next() {
        Some(id) => Some(parse_id(id)?),
        None => None,
    };
    if parts.next().is_some() || !is_name(object) {
        return None;
    }
    state_key(object, state, lcm_state, id)
}

/// `<OBJECT> <id>/<STATE>/<LCM_STATE>`.
fn parse_id_first(object: &str, args: &str) -> Option<Key> {
    let mut parts = args.split('/');
    let id = parse_id(parts.next()?)?;
    let state = parts.next()?;
    let lcm_state = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    state_key(object, state, lcm_state, Some(id))
}

/// A VM has an LCM state in its key; no other object does.
fn state_key(object: &str, state: &str, lcm_state: &str, id: Option<u64>) -> Option<Key> {
    let lcm_ok = if object == "VM" {
        is_name(lcm_state)
    } else {
        lcm_state.is_empty()
    };
    (is_name(state) && lcm_ok).then(|| {
        Key::State(StateKey {
            object: object.to_owned(),
            state: state.to_owned(),
            lcm_state: lcm_state.to_owned(),
            id,
        })
    })
}

/// An object id as oned prints it: decimal digits.
fn parse_id(s: &str) -> Option<u64> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| s.parse().ok()).flatten()
}

/// OpenNebula state and object names: upper-case words with underscores.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Base64 → UTF-8 XML text. Line breaks and other ASCII whitespace are ignored, as Ruby's
/// `Base64.decode64` (the documented subscriber) ignores them.
pub fn decode_content(raw: &[u8]) -> Result<String, Malformed> {
    let compact: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let bytes = STANDARD
        .decode(&compact)
        .map_err(|e| Malformed::Base64(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| Malformed::Xml(format!("not UTF-8: {e}")))
}

/// What a STATE hook message says about its object (the `HOOK_MESSAGE` header, then the
/// object's own `NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateHook {
    /// `HOOK_OBJECT`: `VM`, `HOST`, `IMAGE`, `NET`.
    pub object: String,
    pub state: Option<String>,
    pub lcm_state: Option<String>,
    pub id: u64,
    /// `SERVICE_ID`: the OneFlow service a VM belongs to.
    pub service_id: Option<u64>,
    pub name: Option<String>,
    /// `REMOTE_HOST`: the host a VM runs on, or the host's own name.
    pub remote_host: Option<String>,
}

/// What an API hook message says about its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiHook {
    /// The object the call created or acted on, where OpenNebula reports one.
    pub resource_id: Option<u64>,
    /// The error text of a failed call.
    pub error: Option<String>,
}

/// Parses a `HOOK_MESSAGE` of `HOOK_TYPE` STATE. A document that is not well-formed XML but
/// has oned's header is read leniently ([`lenient::state`]), as OpenNebula's own consumers do.
pub fn parse_state(xml: &str) -> Result<StateHook, Malformed> {
    let doc = match parse_document(xml) {
        Ok(doc) => doc,
        Err(error) => return lenient::state(xml).map_or(Err(error), state_hook),
    };
    let root = hook_message(&doc, "STATE")?;
    let object = child_text(root, "HOOK_OBJECT").unwrap_or("").to_owned();
    let resource = child(root, document_tag(&object));
    let id = child_text(root, "RESOURCE_ID").or_else(|| resource.and_then(|r| child_text(r, "ID")));
    Ok(StateHook {
        id: resource_id(id)?,
        service_id: child_text(root, "SERVICE_ID").and_then(|s| parse_id(s.trim())),
        state: child_text(root, "STATE").map(str::to_owned),
        lcm_state: child_text(root, "LCM_STATE").map(str::to_owned),
        name: resource
            .and_then(|r| child_text(r, "NAME"))
            .map(str::to_owned),
        remote_host: child_text(root, "REMOTE_HOST")
            .filter(|h| !h.is_empty())
            .map(str::to_owned),
        object,
    })
}

/// The hook a leniently read header describes.
fn state_hook(header: StateHeader<'_>) -> Result<StateHook, Malformed> {
    let owned = |s: &str| s.to_owned();
    Ok(StateHook {
        object: header.object.to_owned(),
        id: resource_id(header.resource_id)?,
        state: header.state.map(owned),
        lcm_state: header.lcm_state.map(owned),
        service_id: header.service_id.and_then(|s| parse_id(s.trim())),
        remote_host: header.remote_host.filter(|h| !h.is_empty()).map(owned),
        name: header.name.map(owned),
    })
}

/// `RESOURCE_ID` (or, before 5.10's successors, the object's own `ID`) as an id.
fn resource_id(text: Option<&str>) -> Result<u64, Malformed> {
    let text = text.ok_or_else(|| Malformed::Schema("no RESOURCE_ID".into()))?;
    parse_id(text.trim())
        .ok_or_else(|| Malformed::Schema(format!("RESOURCE_ID {text:?} is not an id")))
}

/// Parses a `HOOK_MESSAGE` of `HOOK_TYPE` API for `call`.
///
/// `CALL_INFO/PARAMETERS` lists the call's IN parameters and its OUT values
/// (`Request::make_xml_response` in `include/Request.h`): on success OUT 2 is the call's return
/// value (the id of the object for allocate and most actions), on failure OUT 2 is the error
/// text and OUT 4 the id of the object concerned (-1 for none). OpenNebula writes parameters
/// unescaped, so a document that is not well-formed is read leniently ([`lenient::api`]), and
/// a parameter can even hold well-formed elements: an OUT value that appears more than once
/// was partly written by a user and is not taken.
pub fn parse_api(xml: &str, call: &str, success: bool) -> Result<ApiHook, Malformed> {
    let doc = match parse_document(xml) {
        Ok(doc) => doc,
        Err(error) => {
            return match lenient::api(xml, success) {
                None => Err(error),
                Some(layout) if layout.call != call => Err(call_mismatch(layout.call, call)),
                Some(layout) => Ok(api_hook(success, layout.out2, layout.out4)),
            };
        }
    };
    let root = hook_message(&doc, "API")?;
    let said = child_text(root, "CALL").unwrap_or("");
    if said != call {
        return Err(call_mismatch(said, call));
    }
    let out = |position: &str| -> Option<&str> {
        let params = child(child(root, "CALL_INFO")?, "PARAMETERS")?;
        let mut outs = params
            .children()
            .filter(|p| p.has_tag_name("PARAMETER"))
            .filter(|p| {
                child_text(*p, "TYPE") == Some("OUT")
                    && child_text(*p, "POSITION").map(str::trim) == Some(position)
            })
            .map(|p| child_text(p, "VALUE").unwrap_or(""));
        let value = outs.next()?;
        outs.next().is_none().then_some(value)
    };
    Ok(api_hook(success, out("2"), out("4")))
}

/// The body's fields from OUT 2 and OUT 4, however they were read.
fn api_hook(success: bool, out2: Option<&str>, out4: Option<&str>) -> ApiHook {
    let id = |value: Option<&str>| value.and_then(|v| parse_id(v.trim()));
    if success {
        ApiHook {
            resource_id: id(out2),
            error: None,
        }
    } else {
        ApiHook {
            resource_id: id(out4),
            error: out2.filter(|e| !e.is_empty()).map(str::to_owned),
        }
    }
}

fn call_mismatch(said: &str, call: &str) -> Malformed {
    Malformed::Schema(format!("CALL is {said:?}, the key says {call:?}"))
}

/// roxmltree refuses DTDs (no entity expansion) and keeps only the parsed tree.
fn parse_document(xml: &str) -> Result<Document<'_>, Malformed> {
    Document::parse(xml).map_err(|e| Malformed::Xml(e.to_string()))
}

/// The `HOOK_MESSAGE` root, checked to be of `hook_type`.
fn hook_message<'a, 'i>(doc: &'a Document<'i>, hook_type: &str) -> Result<Node<'a, 'i>, Malformed> {
    let root = doc.root_element();
    if !root.has_tag_name("HOOK_MESSAGE") {
        return Err(Malformed::Schema(format!(
            "root element is <{}>, not <HOOK_MESSAGE>",
            root.tag_name().name()
        )));
    }
    let said = child_text(root, "HOOK_TYPE").unwrap_or("");
    if said != hook_type {
        return Err(Malformed::Schema(format!(
            "HOOK_TYPE is {said:?}, the key says {hook_type:?}"
        )));
    }
    Ok(root)
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| c.has_tag_name(name))
}

/// The text of a direct child element; `Some("")` when it is empty.
fn child_text<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(node, name).map(|c| c.text().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(object: &str, state: &str, lcm_state: &str, id: Option<u64>) -> Key {
        Key::State(StateKey {
            object: object.into(),
            state: state.into(),
            lcm_state: lcm_state.into(),
            id,
        })
    }

    #[test]
    fn keys_of_every_shape_one_hm_publishes_parse() {
        for (raw, key) in [
            (
                "EVENT VM 42/ACTIVE/RUNNING ",
                state("VM", "ACTIVE", "RUNNING", Some(42)),
            ),
            (
                "EVENT STATE VM/ACTIVE/RUNNING/42 ",
                state("VM", "ACTIVE", "RUNNING", Some(42)),
            ),
            (
                "EVENT VM 0/PENDING/LCM_INIT ",
                state("VM", "PENDING", "LCM_INIT", Some(0)),
            ),
            (
                "EVENT HOST 3/MONITORED/ ",
                state("HOST", "MONITORED", "", Some(3)),
            ),
            (
                "EVENT STATE HOST/ERROR//3 ",
                state("HOST", "ERROR", "", Some(3)),
            ),
            (
                "EVENT IMAGE 5/READY/ ",
                state("IMAGE", "READY", "", Some(5)),
            ),
            (
                "EVENT STATE NET/READY//8 ",
                state("NET", "READY", "", Some(8)),
            ),
            ("EVENT SERVICE 12 ", Key::Service { service_id: 12 }),
            // Without the trailing space, and the 5.9 beta's shape of the seed guide.
            (
                "EVENT VM 42/ACTIVE/RUNNING",
                state("VM", "ACTIVE", "RUNNING", Some(42)),
            ),
            (
                "EVENT STATE VM/ACTIVE/RUNNING",
                state("VM", "ACTIVE", "RUNNING", None),
            ),
            (
                "EVENT STATE HOST/MONITORED/",
                state("HOST", "MONITORED", "", None),
            ),
            (
                "EVENT API one.vm.allocate 1",
                Key::Api {
                    call: "one.vm.allocate".into(),
                    success: true,
                },
            ),
            (
                "EVENT API one.hook.info 0",
                Key::Api {
                    call: "one.hook.info".into(),
                    success: false,
                },
            ),
            ("RETRY", Key::Retry),
        ] {
            assert_eq!(parse_key(raw.as_bytes()), Ok(key), "{raw:?}");
        }
    }

    #[test]
    fn anything_else_is_an_unknown_key() {
        let long = [b'A'; 600];
        for key in [
            &b""[..],
            b"EVENT",
            b"EVENT ",
            b"EVENT STATE",
            b"EVENT STATE VM/ACTIVE",
            b"EVENT STATE VM/ACTIVE/",
            b"EVENT STATE VM/active/running",
            b"EVENT STATE HOST/MONITORED/EXTRA",
            b"EVENT STATE VM/A/B/C",
            b"EVENT STATE VM/A/B/1/2",
            b"EVENT STATE HOST/MONITORED//-3 ",
            b"EVENT VM 42/ACTIVE/ ",
            b"EVENT VM x/ACTIVE/RUNNING ",
            b"EVENT VM 42/ACTIVE/RUNNING/1 ",
            b"EVENT HOST 3/MONITORED/RUNNING ",
            b"EVENT vm 42/ACTIVE/RUNNING ",
            b"EVENT SERVICE ",
            b"EVENT SERVICE 1x ",
            b"EVENT SERVICE 99999999999999999999999 ",
            b"EVENT API one.vm.allocate",
            b"EVENT API one.vm.allocate yes",
            b"EVENT API rm -rf 1",
            b"EVENT APIone.vm.allocate 1",
            b"EVENT FOO bar",
            b"RETRY ",
            b"\xff\xfe",
            &long,
        ] {
            let err = parse_key(key);
            assert!(
                matches!(err, Err(Malformed::UnknownKey(_))),
                "{:?} gave {err:?}",
                String::from_utf8_lossy(key)
            );
            assert_eq!(err.err().map(|e| e.kind()), Some(1));
        }
    }

    #[test]
    fn content_is_base64_of_utf8_with_line_breaks_allowed() {
        assert_eq!(decode_content(b"PEE+PC9BPg==").as_deref(), Ok("<A></A>"));
        assert_eq!(
            decode_content(b"PEE+\nPC9B\r\nPg==\n").as_deref(),
            Ok("<A></A>")
        );
        assert!(matches!(
            decode_content(b"not base64!"),
            Err(Malformed::Base64(_))
        ));
        assert!(matches!(
            decode_content(b"PEE+PC9BPg"),
            Err(Malformed::Base64(_))
        ));
        // Valid base64 of bytes that are not UTF-8 text.
        assert!(matches!(decode_content(b"//79"), Err(Malformed::Xml(_))));
    }

    /// `HookStateVM::format_message` for a VM of service 5.
    const VM: &str = "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>VM</HOOK_OBJECT>\
        <STATE>ACTIVE</STATE><LCM_STATE>RUNNING</LCM_STATE><RESOURCE_ID>42</RESOURCE_ID>\
        <SERVICE_ID>5</SERVICE_ID><REMOTE_HOST>node-1</REMOTE_HOST><VM><ID>42</ID>\
        <NAME>web-1</NAME><STATE>3</STATE><LCM_STATE>3</LCM_STATE>\
        <TEMPLATE><NAME>not this one</NAME></TEMPLATE></VM></HOOK_MESSAGE>";

    fn vm_hook(remote_host: Option<&str>) -> StateHook {
        StateHook {
            object: "VM".into(),
            state: Some("ACTIVE".into()),
            lcm_state: Some("RUNNING".into()),
            id: 42,
            service_id: Some(5),
            name: Some("web-1".into()),
            remote_host: remote_host.map(str::to_owned),
        }
    }

    #[test]
    fn a_vm_state_message_gives_its_header_and_name() {
        assert_eq!(parse_state(VM), Ok(vm_hook(Some("node-1"))));
        // Ill-formed (a user name with `&`): the same, read leniently.
        let ill = VM.replace("<NAME>web-1", "<UNAME>r&d</UNAME><NAME>web-1");
        assert!(Document::parse(&ill).is_err());
        assert_eq!(parse_state(&ill), Ok(vm_hook(Some("node-1"))));
        // Never deployed: an empty REMOTE_HOST is no host.
        let pending = VM.replace("<REMOTE_HOST>node-1</REMOTE_HOST>", "<REMOTE_HOST/>");
        assert_eq!(parse_state(&pending), Ok(vm_hook(None)));
        assert_eq!(
            parse_state(&pending.replace("<VM><ID>", "&<VM><ID>")),
            Ok(vm_hook(None))
        );
    }

    #[test]
    fn without_resource_id_the_objects_own_id_is_used() {
        let old = "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>HOST</HOOK_OBJECT>\
            <STATE>INIT</STATE><HOST><ID>7</ID><NAME>h</NAME></HOST></HOOK_MESSAGE>";
        let hook = parse_state(old).map(|h| (h.object, h.id, h.name));
        assert_eq!(hook, Ok(("HOST".into(), 7, Some("h".into()))));
    }

    #[test]
    fn state_messages_without_a_usable_id_are_schema_errors() {
        for xml in [
            "<OTHER/>".to_owned(),
            "<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE></HOOK_MESSAGE>".to_owned(),
            "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>VM</HOOK_OBJECT>\
             </HOOK_MESSAGE>"
                .to_owned(),
            VM.replace("<RESOURCE_ID>42", "<RESOURCE_ID>-1"),
            VM.replace("<RESOURCE_ID>42", "<RESOURCE_ID>-1")
                .replace("<VM>", "&<VM>"),
        ] {
            let err = parse_state(&xml);
            assert!(matches!(err, Err(Malformed::Schema(_))), "{xml}: {err:?}");
        }
    }

    #[test]
    fn broken_or_hostile_xml_is_an_xml_error() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">\
            <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>\
            <HOOK_MESSAGE>&lol2;</HOOK_MESSAGE>";
        for xml in ["", "<HOOK_MESSAGE>", "<A></B>", "just text", bomb] {
            let err = parse_state(xml);
            assert!(matches!(err, Err(Malformed::Xml(_))), "{xml}: {err:?}");
            assert_eq!(err.err().map(|e| e.kind()), Some(3));
            let err = parse_api(xml, "one.vm.allocate", true);
            assert!(matches!(err, Err(Malformed::Xml(_))), "{xml}: {err:?}");
        }
    }

    fn api(result: &str, outs: &[(u32, &str)]) -> String {
        let mut xml = format!(
            "<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE><CALL>one.vm.allocate</CALL><CALL_INFO>\
             <RESULT>{result}</RESULT><PARAMETERS>\
             <PARAMETER><POSITION>1</POSITION><TYPE>IN</TYPE><VALUE>****</VALUE></PARAMETER>\
             <PARAMETER><POSITION>2</POSITION><TYPE>IN</TYPE><VALUE>NAME=web</VALUE></PARAMETER>"
        );
        for (position, value) in outs {
            xml.push_str(&format!(
                "<PARAMETER><POSITION>{position}</POSITION><TYPE>OUT</TYPE>\
                 <VALUE>{value}</VALUE></PARAMETER>"
            ));
        }
        xml.push_str("</PARAMETERS><EXTRA></EXTRA></CALL_INFO></HOOK_MESSAGE>");
        xml
    }

    #[test]
    fn api_messages_give_the_resource_id_and_the_error() {
        let ok = api("1", &[(1, "true"), (2, "12"), (3, "0")]);
        assert_eq!(
            parse_api(&ok, "one.vm.allocate", true),
            Ok(ApiHook {
                resource_id: Some(12),
                error: None
            })
        );
        // Calls that return a document, not an id.
        let doc = api("1", &[(1, "true"), (2, "&lt;VM&gt;&lt;/VM&gt;"), (3, "0")]);
        assert_eq!(
            parse_api(&doc, "one.vm.allocate", true).map(|a| a.resource_id),
            Ok(None)
        );
        let message = "[one.vm.allocate] Error allocating a new virtual machine.";
        let failed = api("0", &[(1, "false"), (2, message), (3, "8192"), (4, "-1")]);
        let expected = ApiHook {
            resource_id: None,
            error: Some(message.into()),
        };
        assert_eq!(parse_api(&failed, "one.vm.allocate", false), Ok(expected));
        let failed_on_7 = api("0", &[(1, "false"), (2, "locked"), (3, "4096"), (4, "7")]);
        assert_eq!(
            parse_api(&failed_on_7, "one.vm.allocate", false).map(|a| a.resource_id),
            Ok(Some(7))
        );
        // No PARAMETERS at all is still a call, just without an id.
        let bare =
            "<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE><CALL>one.vm.allocate</CALL></HOOK_MESSAGE>";
        assert_eq!(
            parse_api(bare, "one.vm.allocate", true),
            Ok(ApiHook {
                resource_id: None,
                error: None
            })
        );
        for xml in [ok.clone(), ok.replace("NAME=web", "A && B")] {
            assert!(matches!(
                parse_api(&xml, "one.host.delete", true),
                Err(Malformed::Schema(_))
            ));
        }
    }

    #[test]
    fn an_out_value_injected_through_a_parameter_is_not_taken() {
        let injected = "x</VALUE></PARAMETER><PARAMETER><POSITION>2</POSITION><TYPE>OUT</TYPE>\
            <VALUE>999</VALUE></PARAMETER><PARAMETER><POSITION>9</POSITION><TYPE>IN</TYPE><VALUE>y";
        let ok = api("1", &[(1, "true"), (2, "12"), (3, "0")]).replace("NAME=web", injected);
        assert!(Document::parse(&ok).is_ok());
        let hook = parse_api(&ok, "one.vm.allocate", true);
        assert_eq!(hook.map(|h| h.resource_id), Ok(None));
    }

    #[test]
    fn ill_formed_api_messages_are_read_by_their_layout() {
        let message = "[one.vm.allocate] Parse error: syntax error, unexpected & at line 1";
        let failed = api("0", &[(1, "false"), (2, message), (3, "8192"), (4, "15")])
            .replace("NAME=web", "NAME=web\nSCRIPT=\"a && b\"");
        assert!(Document::parse(&failed).is_err());
        let expected = ApiHook {
            resource_id: Some(15),
            error: Some(message.into()),
        };
        assert_eq!(parse_api(&failed, "one.vm.allocate", false), Ok(expected));
    }
}
