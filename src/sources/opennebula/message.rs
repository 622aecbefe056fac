//! The Hook Manager's wire format, decoded: a two-frame ZeroMQ message whose first frame is a
//! key (`EVENT STATE VM/ACTIVE/RUNNING`, `EVENT STATE HOST/MONITORED/`,
//! `EVENT API one.vm.allocate 1`, `RETRY`) and whose second is a base64 `HOOK_MESSAGE` XML
//! document (OpenNebula's `hook_message_state.xsd` / `hook_message_api.xsd`).
//!
//! Pure functions only: everything here is reachable from the network, so every failure is a
//! [`Malformed`] value, never a panic.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use roxmltree::{Document, Node};

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

/// A parsed key. State names are OpenNebula's (`ACTIVE`, `RUNNING`, `MONITORED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    VmState {
        state: String,
        lcm_state: String,
    },
    HostState {
        state: String,
    },
    /// A state change of another object (`IMAGE`, `NET`, …): well-formed, not bridged.
    OtherState {
        object: String,
    },
    Api {
        call: String,
        success: bool,
    },
    /// The Hook Execution Manager's own retry requests.
    Retry,
}

/// `EVENT STATE <OBJECT>/<STATE>/<LCM_STATE>`, `EVENT API <call> <0|1>` or `RETRY`.
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
    if let Some(state) = rest.strip_prefix("STATE ") {
        let mut parts = state.split('/');
        let object = parts.next().unwrap_or("");
        let state = parts.next().unwrap_or("");
        let lcm_state = parts.next().unwrap_or("");
        if parts.next().is_some() || !is_name(object) || !is_name(state) {
            return Err(unknown());
        }
        return match object {
            "VM" if is_name(lcm_state) => Ok(Key::VmState {
                state: state.to_owned(),
                lcm_state: lcm_state.to_owned(),
            }),
            "VM" => Err(unknown()),
            "HOST" if lcm_state.is_empty() => Ok(Key::HostState {
                state: state.to_owned(),
            }),
            "HOST" => Err(unknown()),
            _ => Ok(Key::OtherState {
                object: object.to_owned(),
            }),
        };
    }
    if let Some(api) = rest.strip_prefix("API ") {
        let (call, success) = api.split_once(' ').ok_or_else(unknown)?;
        let success = match success {
            "1" => true,
            "0" => false,
            _ => return Err(unknown()),
        };
        let call_ok = call.starts_with("one.")
            && call
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !call_ok {
            return Err(unknown());
        }
        return Ok(Key::Api {
            call: call.to_owned(),
            success,
        });
    }
    Err(unknown())
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

/// What a STATE hook message says about its VM or host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateHook {
    pub id: u64,
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

/// Parses a `HOOK_MESSAGE` of `HOOK_TYPE` STATE for `object` (`VM` or `HOST`).
pub fn parse_state(xml: &str, object: &str) -> Result<StateHook, Malformed> {
    let doc = parse_document(xml)?;
    let root = hook_message(&doc, "STATE")?;
    let hook_object = child_text(root, "HOOK_OBJECT").unwrap_or("");
    if hook_object != object {
        return Err(Malformed::Schema(format!(
            "HOOK_OBJECT is {hook_object:?}, the key says {object:?}"
        )));
    }
    // RESOURCE_ID since OpenNebula 5.10's successors; the object's own ID otherwise.
    let resource = child(root, object);
    let id = child_text(root, "RESOURCE_ID")
        .or_else(|| resource.and_then(|r| child_text(r, "ID")))
        .ok_or_else(|| Malformed::Schema(format!("no RESOURCE_ID or {object}/ID")))?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| Malformed::Schema(format!("RESOURCE_ID {id:?} is not an id")))?;
    Ok(StateHook {
        id,
        name: resource
            .and_then(|r| child_text(r, "NAME"))
            .map(str::to_owned),
        remote_host: child_text(root, "REMOTE_HOST")
            .filter(|h| !h.is_empty())
            .map(str::to_owned),
    })
}

/// Parses a `HOOK_MESSAGE` of `HOOK_TYPE` API for `call`.
///
/// `CALL_INFO/PARAMETERS` lists the call's IN parameters and its OUT values: on success OUT 2
/// is the call's return value (the id of the object for allocate and most actions), on
/// failure OUT 2 is the error text and OUT 4 the id of the object concerned (-1 for none).
pub fn parse_api(xml: &str, call: &str, success: bool) -> Result<ApiHook, Malformed> {
    let doc = parse_document(xml)?;
    let root = hook_message(&doc, "API")?;
    let said = child_text(root, "CALL").unwrap_or("");
    if said != call {
        return Err(Malformed::Schema(format!(
            "CALL is {said:?}, the key says {call:?}"
        )));
    }
    let out = |position: &str| -> Option<&str> {
        let params = child(child(root, "CALL_INFO")?, "PARAMETERS")?;
        params
            .children()
            .filter(|p| p.has_tag_name("PARAMETER"))
            .find(|p| {
                child_text(*p, "TYPE") == Some("OUT")
                    && child_text(*p, "POSITION").map(str::trim) == Some(position)
            })
            .map(|p| child_text(p, "VALUE").unwrap_or(""))
    };
    let id = |value: Option<&str>| value.and_then(|v| v.trim().parse::<u64>().ok());
    Ok(if success {
        ApiHook {
            resource_id: id(out("2")),
            error: None,
        }
    } else {
        ApiHook {
            resource_id: id(out("4")),
            error: out("2").filter(|e| !e.is_empty()).map(str::to_owned),
        }
    })
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

    #[test]
    fn keys_of_every_documented_shape_parse() {
        assert_eq!(
            parse_key(b"EVENT STATE VM/ACTIVE/RUNNING"),
            Ok(Key::VmState {
                state: "ACTIVE".into(),
                lcm_state: "RUNNING".into()
            })
        );
        assert_eq!(
            parse_key(b"EVENT STATE VM/PENDING/LCM_INIT"),
            Ok(Key::VmState {
                state: "PENDING".into(),
                lcm_state: "LCM_INIT".into()
            })
        );
        assert_eq!(
            parse_key(b"EVENT STATE HOST/MONITORED/"),
            Ok(Key::HostState {
                state: "MONITORED".into()
            })
        );
        assert_eq!(
            parse_key(b"EVENT STATE IMAGE/READY/"),
            Ok(Key::OtherState {
                object: "IMAGE".into()
            })
        );
        assert_eq!(
            parse_key(b"EVENT API one.vm.allocate 1"),
            Ok(Key::Api {
                call: "one.vm.allocate".into(),
                success: true
            })
        );
        assert_eq!(
            parse_key(b"EVENT API one.hook.info 0"),
            Ok(Key::Api {
                call: "one.hook.info".into(),
                success: false
            })
        );
        assert_eq!(parse_key(b"RETRY"), Ok(Key::Retry));
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

    const VM: &str = "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>VM</HOOK_OBJECT>\
        <STATE>ACTIVE</STATE><LCM_STATE>RUNNING</LCM_STATE><RESOURCE_ID>42</RESOURCE_ID>\
        <REMOTE_HOST>node-1</REMOTE_HOST><VM><ID>42</ID><NAME>web-1</NAME><STATE>3</STATE>\
        <LCM_STATE>3</LCM_STATE><TEMPLATE><NAME>not this one</NAME></TEMPLATE></VM></HOOK_MESSAGE>";

    #[test]
    fn a_vm_state_message_gives_id_name_and_host() {
        assert_eq!(
            parse_state(VM, "VM"),
            Ok(StateHook {
                id: 42,
                name: Some("web-1".into()),
                remote_host: Some("node-1".into()),
            })
        );
        // Without RESOURCE_ID (older releases) the VM's own ID is used; an empty REMOTE_HOST
        // (a VM never deployed) is no host.
        let old = "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>VM</HOOK_OBJECT>\
            <STATE>PENDING</STATE><LCM_STATE>LCM_INIT</LCM_STATE><REMOTE_HOST/>\
            <VM><ID>7</ID><NAME>db</NAME></VM></HOOK_MESSAGE>";
        assert_eq!(
            parse_state(old, "VM"),
            Ok(StateHook {
                id: 7,
                name: Some("db".into()),
                remote_host: None
            })
        );
    }

    #[test]
    fn state_messages_that_do_not_fit_their_key_are_schema_errors() {
        for (xml, object) in [
            (VM, "HOST"),
            ("<OTHER/>", "VM"),
            (
                "<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE></HOOK_MESSAGE>",
                "VM",
            ),
            (
                "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>VM</HOOK_OBJECT></HOOK_MESSAGE>",
                "VM",
            ),
            (
                "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>VM</HOOK_OBJECT>\
                 <RESOURCE_ID>-1</RESOURCE_ID></HOOK_MESSAGE>",
                "VM",
            ),
        ] {
            let err = parse_state(xml, object);
            assert!(matches!(err, Err(Malformed::Schema(_))), "{xml}: {err:?}");
        }
    }

    #[test]
    fn broken_or_hostile_xml_is_an_xml_error() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">\
            <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>\
            <HOOK_MESSAGE>&lol2;</HOOK_MESSAGE>";
        for xml in ["", "<HOOK_MESSAGE>", "<A></B>", "just text", bomb] {
            let err = parse_state(xml, "VM");
            assert!(matches!(err, Err(Malformed::Xml(_))), "{xml}: {err:?}");
            assert_eq!(err.err().map(|e| e.kind()), Some(3));
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
        // info-like calls return a document, not an id.
        let doc = api("1", &[(1, "true"), (2, "&lt;VM&gt;&lt;/VM&gt;"), (3, "0")]);
        assert_eq!(
            parse_api(&doc, "one.vm.allocate", true).map(|a| a.resource_id),
            Ok(None)
        );
        let failed = api(
            "0",
            &[
                (1, "false"),
                (
                    2,
                    "[one.vm.allocate] Error allocating a new virtual machine.",
                ),
                (3, "8192"),
                (4, "-1"),
            ],
        );
        assert_eq!(
            parse_api(&failed, "one.vm.allocate", false),
            Ok(ApiHook {
                resource_id: None,
                error: Some("[one.vm.allocate] Error allocating a new virtual machine.".into())
            })
        );
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
        assert!(matches!(
            parse_api(&ok, "one.host.delete", true),
            Err(Malformed::Schema(_))
        ));
    }
}
