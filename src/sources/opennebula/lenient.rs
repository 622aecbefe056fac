//! Hook messages that are not well-formed XML, read the way OpenNebula's own consumers read
//! them (`onehem-server.rb`, `wait_ext.rb` and OneFlow parse with Nokogiri, which recovers).
//!
//! oned writes API parameters as they were given, unescaped (`HookAPI::format_message` in
//! `src/hm/HookAPI.cc`, `Request::make_parameter` in `include/Request.h`), so a template with
//! `&&` in a start script, or an error text quoting a bad value, makes the document ill-formed.
//! User names may hold `&` too, and they are in every VM document.
//!
//! Only documents that begin exactly as oned writes them are read here, by their fixed
//! layout, and nothing is expanded: a document with a DTD or an XML declaration never is.

use super::message::{self, ApiHook, Malformed, StateHook};

const STATE_HEAD: &str = "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE>";
const API_HEAD: &str = "<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE><CALL>";

/// A STATE message by its header (`HOOK_OBJECT` … `REMOTE_HOST`, all written before the
/// object's own document) and the first `NAME` of that document. `None`: not oned's layout.
pub fn state(xml: &str) -> Option<Result<StateHook, Malformed>> {
    let rest = xml.strip_prefix(STATE_HEAD)?;
    let object = element_text(rest, "HOOK_OBJECT")?;
    let tag = format!("<{}>", message::document_tag(object));
    let (header, document) = rest.split_at(rest.find(&tag).unwrap_or(rest.len()));
    let owned = |s: &str| s.to_owned();
    let hook = message::resource_id(element_text(header, "RESOURCE_ID")).map(|id| StateHook {
        object: object.to_owned(),
        id,
        state: element_text(header, "STATE").map(owned),
        lcm_state: element_text(header, "LCM_STATE").map(owned),
        service_id: element_text(header, "SERVICE_ID").and_then(|s| s.trim().parse().ok()),
        remote_host: element_text(header, "REMOTE_HOST")
            .filter(|h| !h.is_empty())
            .map(owned),
        name: element_text(document, "NAME").map(owned),
    });
    Some(hook)
}

/// An API message: the call from its header, OUT 2 and OUT 4 read back from the end of
/// `PARAMETERS`, where only numbers follow OUT 2 (the error code, the object's id). When even
/// that layout is not there, the call is still reported, without id or error text.
pub fn api(xml: &str, call: &str, success: bool) -> Option<Result<ApiHook, Malformed>> {
    let rest = xml.strip_prefix(API_HEAD)?;
    let said = rest.split_once("</CALL>").map_or(rest, |(said, _)| said);
    if said != call {
        return Some(Err(message::call_mismatch(said, call)));
    }
    let last = if success { 3 } else { 4 };
    let outs = rest
        .rfind("</PARAMETERS><EXTRA>")
        .and_then(|end| out_values(&rest[..end], last))
        .unwrap_or_default();
    let out = |position: usize| outs.get(position - 2).copied();
    Some(Ok(message::api_hook(success, out(2), out(4))))
}

/// The values of OUT 2 ..= `last`, found from the end of `params`; index 0 is OUT 2.
fn out_values(params: &str, last: usize) -> Option<Vec<&str>> {
    let mut end = params.len();
    let mut values = Vec::new();
    for position in (2..=last).rev() {
        let marker = format!("<PARAMETER><POSITION>{position}</POSITION><TYPE>OUT</TYPE><VALUE>");
        let start = params[..end].rfind(&marker)?;
        let value = params[start + marker.len()..end].strip_suffix("</VALUE></PARAMETER>")?;
        values.push(value);
        end = start;
    }
    values.reverse();
    Some(values)
}

/// The text of the first `<tag>…</tag>` in `s`, or `""` for a first `<tag/>`.
fn element_text<'a>(s: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let at_open = s.find(&open);
    let at_empty = s.find(&format!("<{tag}/>"));
    match (at_open, at_empty) {
        (Some(open_at), empty_at) if empty_at.is_none_or(|e| open_at < e) => {
            let from = open_at + open.len();
            let len = s[from..].find(&format!("</{tag}>"))?;
            Some(&s[from..from + len])
        }
        (_, Some(_)) => Some(""),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_text_takes_the_first_element_or_an_empty_one() {
        assert_eq!(element_text("<A>1</A><A>2</A>", "A"), Some("1"));
        assert_eq!(element_text("<A/><A>2</A>", "A"), Some(""));
        assert_eq!(element_text("<AB>1</AB><A>2</A>", "A"), Some("2"));
        assert_eq!(element_text("<A>unclosed", "A"), None);
        assert_eq!(element_text("nothing", "A"), None);
    }

    #[test]
    fn out_values_are_found_from_the_end() {
        // An IN value that quotes the OUT layout does not confuse the reader.
        let params = "<PARAMETER><POSITION>1</POSITION><TYPE>IN</TYPE><VALUE>x&&\
            <PARAMETER><POSITION>2</POSITION><TYPE>OUT</TYPE><VALUE>fake</VALUE></PARAMETER>\
            </VALUE></PARAMETER>\
            <PARAMETER><POSITION>1</POSITION><TYPE>OUT</TYPE><VALUE>false</VALUE></PARAMETER>\
            <PARAMETER><POSITION>2</POSITION><TYPE>OUT</TYPE><VALUE>bad <name> & co</VALUE></PARAMETER>\
            <PARAMETER><POSITION>3</POSITION><TYPE>OUT</TYPE><VALUE>2048</VALUE></PARAMETER>\
            <PARAMETER><POSITION>4</POSITION><TYPE>OUT</TYPE><VALUE>7</VALUE></PARAMETER>";
        assert_eq!(
            out_values(params, 4),
            Some(vec!["bad <name> & co", "2048", "7"])
        );
        assert_eq!(out_values(params, 5), None);
        assert_eq!(out_values("", 3), None);
    }

    #[test]
    fn only_the_layout_oned_writes_is_read() {
        for xml in [
            "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"b\">]><HOOK_MESSAGE>&a;",
            "<HOOK_MESSAGE> <HOOK_TYPE>STATE</HOOK_TYPE>",
            "just text & more",
            "",
        ] {
            assert_eq!(state(xml), None, "{xml}");
            assert_eq!(api(xml, "one.vm.allocate", true), None, "{xml}");
        }
    }
}
