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

const STATE_HEAD: &str = "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE>";
const API_HEAD: &str = "<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE><CALL>";

/// A STATE message's header (`HOOK_OBJECT` … `REMOTE_HOST`, all written before the object's
/// own document) and the first `NAME` of that document, as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateHeader<'a> {
    pub object: &'a str,
    pub state: Option<&'a str>,
    pub lcm_state: Option<&'a str>,
    pub resource_id: Option<&'a str>,
    pub service_id: Option<&'a str>,
    pub remote_host: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// An API message's call and its OUT 2 and OUT 4, as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLayout<'a> {
    pub call: &'a str,
    pub out2: Option<&'a str>,
    pub out4: Option<&'a str>,
}

/// The element an object's own document is in: `to_xml` of a virtual network writes `<VNET>`.
pub fn document_tag(object: &str) -> &str {
    match object {
        "NET" => "VNET",
        other => other,
    }
}

/// A STATE message by its header. `None`: not oned's layout.
pub fn state(xml: &str) -> Option<StateHeader<'_>> {
    let rest = xml.strip_prefix(STATE_HEAD)?;
    let object = element_text(rest, "HOOK_OBJECT")?;
    let tag = format!("<{}>", document_tag(object));
    let (header, document) = rest.split_at(rest.find(&tag).unwrap_or(rest.len()));
    Some(StateHeader {
        object,
        state: element_text(header, "STATE"),
        lcm_state: element_text(header, "LCM_STATE"),
        resource_id: element_text(header, "RESOURCE_ID"),
        service_id: element_text(header, "SERVICE_ID"),
        remote_host: element_text(header, "REMOTE_HOST"),
        name: element_text(document, "NAME"),
    })
}

/// An API message: the call from its header, OUT 2 and OUT 4 from the layout
/// `Request::make_xml_response` writes ([`out_values`]); when that layout is not there exactly
/// once, the call without values. `None`: not oned's layout.
pub fn api(xml: &str, success: bool) -> Option<ApiLayout<'_>> {
    let rest = xml.strip_prefix(API_HEAD)?;
    let call = rest.split_once("</CALL>").map_or(rest, |(call, _)| call);
    let (out2, out4) = out_values(rest, success).unwrap_or_default();
    Some(ApiLayout { call, out2, out4 })
}

/// OUT 1 and the start of OUT 2, as oned writes them for a success or a failure.
const OUT_HEAD: [&str; 2] = [
    "<PARAMETER><POSITION>1</POSITION><TYPE>OUT</TYPE><VALUE>false</VALUE></PARAMETER>\
     <PARAMETER><POSITION>2</POSITION><TYPE>OUT</TYPE><VALUE>",
    "<PARAMETER><POSITION>1</POSITION><TYPE>OUT</TYPE><VALUE>true</VALUE></PARAMETER>\
     <PARAMETER><POSITION>2</POSITION><TYPE>OUT</TYPE><VALUE>",
];
/// The end of OUT 2 and the start of OUT 3 (the error code).
const OUT3: &str = "</VALUE></PARAMETER><PARAMETER><POSITION>3</POSITION><TYPE>OUT</TYPE><VALUE>";
const OUT4: &str = "<PARAMETER><POSITION>4</POSITION><TYPE>OUT</TYPE><VALUE>";
const VALUE_END: &str = "</VALUE></PARAMETER>";

/// OUT 2 and (failures only) OUT 4. Users write IN parameters, error texts quote them and
/// templates in `EXTRA` hold anything, so a layout found more than once is not trusted: a user
/// can then hide the values, never forge them.
fn out_values(doc: &str, success: bool) -> Option<(Option<&str>, Option<&str>)> {
    let head = OUT_HEAD[usize::from(success)];
    let start = only_one(doc.match_indices(head).map(|(at, _)| at + head.len()))?;
    // After OUT 2 come only numbers, then the end of PARAMETERS.
    let tails = doc.match_indices(OUT3).filter_map(|(at, _)| {
        numeric_tail(&doc[at + OUT3.len()..], success).map(|out4| (at, out4))
    });
    let (end, out4) = only_one(tails)?;
    (start <= end).then(|| (Some(&doc[start..end]), out4))
}

/// `<code></VALUE></PARAMETER>[OUT 4 <id>…]</PARAMETERS><EXTRA>`, returning OUT 4.
fn numeric_tail(rest: &str, success: bool) -> Option<Option<&str>> {
    let rest = after_number(rest)?.strip_prefix(VALUE_END)?;
    let (rest, out4) = if success {
        (rest, None)
    } else {
        let value = rest.strip_prefix(OUT4)?;
        let after = after_number(value)?;
        let out4 = &value[..value.len() - after.len()];
        (after.strip_prefix(VALUE_END)?, Some(out4))
    };
    rest.starts_with("</PARAMETERS><EXTRA>").then_some(out4)
}

/// What follows an integer (`-1` included) at the start of `s`.
fn after_number(s: &str) -> Option<&str> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let rest = digits.trim_start_matches(|c: char| c.is_ascii_digit());
    (rest.len() < digits.len()).then_some(rest)
}

/// The only item, or `None` for none or several.
fn only_one<T>(mut items: impl Iterator<Item = T>) -> Option<T> {
    let first = items.next()?;
    items.next().is_none().then_some(first)
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

    /// PARAMETERS as `HookAPI::format_message` writes them for a failure, `ins` unescaped.
    fn failed(ins: &str, error: &str, extra: &str) -> String {
        format!(
            "<PARAMETER><POSITION>1</POSITION><TYPE>IN</TYPE><VALUE>{ins}</VALUE></PARAMETER>\
             {}{error}{OUT3}2048{VALUE_END}{OUT4}7{VALUE_END}</PARAMETERS><EXTRA>{extra}</EXTRA>",
            OUT_HEAD[0]
        )
    }

    #[test]
    fn out_values_are_read_by_their_layout() {
        let doc = failed("a && b", "bad <name> & co", "");
        assert_eq!(
            out_values(&doc, false),
            Some((Some("bad <name> & co"), Some("7")))
        );
        let ok = format!(
            "{}12{OUT3}0{VALUE_END}</PARAMETERS><EXTRA><VM><ID>12</ID></VM></EXTRA>",
            OUT_HEAD[1]
        );
        assert_eq!(out_values(&ok, true), Some((Some("12"), None)));
        assert_eq!(out_values(&ok, false), None);
        assert_eq!(out_values("", true), None);
    }

    #[test]
    fn a_layout_quoted_by_a_user_is_not_trusted() {
        let forged = format!("{}999{OUT3}0{VALUE_END}</PARAMETERS><EXTRA>", OUT_HEAD[1]);
        // In an IN parameter, or in a template value of EXTRA (helper-2's finding): hidden.
        let ok = |ins: &str, extra: &str| {
            format!(
                "<PARAMETER><POSITION>1</POSITION><TYPE>IN</TYPE><VALUE>{ins}</VALUE></PARAMETER>\
                 {}12{OUT3}0{VALUE_END}</PARAMETERS><EXTRA>{extra}</EXTRA>",
                OUT_HEAD[1]
            )
        };
        assert_eq!(out_values(&ok(&forged, ""), true), None);
        let extra = format!("<VM><TEMPLATE><X><![CDATA[&&{forged}]]></X></TEMPLATE></VM>");
        assert_eq!(out_values(&ok("", &extra), true), None);
        // An error text that quotes the layout of OUT 3 and 4.
        let quoted = format!("{OUT3}1{VALUE_END}{OUT4}9{VALUE_END}</PARAMETERS><EXTRA>");
        assert_eq!(out_values(&failed("", &quoted, ""), false), None);
        // Quoting only part of it changes nothing.
        let doc = failed(
            "<PARAMETER><POSITION>2</POSITION><TYPE>OUT</TYPE>",
            "no",
            "",
        );
        assert_eq!(out_values(&doc, false), Some((Some("no"), Some("7"))));
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
            assert_eq!(api(xml, true), None, "{xml}");
        }
    }
}
