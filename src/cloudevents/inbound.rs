//! A publish request in CloudEvents form, read into the hub's events.
//!
//! Three forms reach `POST /v1/events` (http-protocol-binding.md §3): structured
//! (`application/cloudevents+json`, one event in the JSON format), batch
//! (`application/cloudevents-batch+json`, a JSON array of them, json-format.md §4) and binary
//! (attributes in `ce-` headers, the data as the body). Each is checked against spec.md's
//! rules before anything is published; the mapping onto the hub's event is in docs/api.md.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, header};
use serde_json::value::RawValue;

use super::{CloudEventError, SPECVERSION, is_json_media, media_type};

/// `application/cloudevents+json` (json-format.md §3).
pub const STRUCTURED: &str = "application/cloudevents+json";
/// `application/cloudevents-batch+json` (json-format.md §4.2).
pub const BATCH: &str = "application/cloudevents-batch+json";

/// How a request carries its CloudEvents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Structured,
    Batch,
    Binary,
}

/// One CloudEvent, reduced to what the hub keeps.
#[derive(Debug)]
pub struct Inbound {
    pub id: String,
    pub source: String,
    /// `type`: becomes the hub event's `message`.
    pub kind: String,
    pub subject: Option<String>,
    /// `data`, a JSON object: becomes the hub event's `body`.
    pub data: Option<Box<RawValue>>,
}

impl Inbound {
    /// The event's idempotency key: spec.md lets a consumer take two events with the same
    /// `source` and `id` for duplicates. NUL cannot occur in an `Idempotency-Key` header, so
    /// these keys never meet one.
    pub fn idempotency_key(&self) -> String {
        format!("cloudevents\u{0}{}\u{0}{}", self.source, self.id)
    }

    /// `{"source","id","subject"}`: kept with the hub's event as its frame's `origin`, so a
    /// subscriber still sees who sent it, under which id, about what.
    pub fn origin(&self) -> Option<Box<RawValue>> {
        #[derive(serde::Serialize)]
        struct Origin<'a> {
            source: &'a str,
            id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            subject: Option<&'a str>,
        }
        let origin = Origin {
            source: &self.source,
            id: &self.id,
            subject: self.subject.as_deref(),
        };
        serde_json::value::to_raw_value(&origin).ok()
    }
}

use CloudEventError::{Invalid, Unsupported};

/// The request's mode from its `Content-Type` and whether it has a `ce-specversion` header;
/// `None` for the hub's own JSON. Another CloudEvents format (`+avro`, `+protobuf`) is `415`.
pub fn mode(headers: &HeaderMap) -> Result<Option<Mode>, CloudEventError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media_type);
    match media.as_deref() {
        Some(STRUCTURED) => Ok(Some(Mode::Structured)),
        Some(BATCH) => Ok(Some(Mode::Batch)),
        Some(other) if other.starts_with("application/cloudevents") => Err(Unsupported(format!(
            "{other}: the hub reads the CloudEvents JSON format only ({STRUCTURED}, {BATCH}, or binary mode with ce- headers)"
        ))),
        _ if headers.contains_key("ce-specversion") => Ok(Some(Mode::Binary)),
        _ => Ok(None),
    }
}

/// The events of a request in `mode`; an empty batch (valid, json-format.md §4.3) is none.
pub fn parse(
    mode: Mode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<Inbound>, CloudEventError> {
    match mode {
        Mode::Structured => parse_structured(body).map(|e| vec![e]),
        Mode::Batch => parse_batch(body),
        Mode::Binary => parse_binary(headers, body).map(|e| vec![e]),
    }
}

/// The attributes of one event in the JSON format, each value still raw.
type Attributes = BTreeMap<String, Box<RawValue>>;

/// One event in the JSON format (`application/cloudevents+json`).
pub fn parse_structured(body: &[u8]) -> Result<Inbound, CloudEventError> {
    let attributes: Attributes = serde_json::from_slice(body).map_err(|e| {
        Invalid(format!(
            "not a CloudEvent in the JSON format (a JSON object of attributes): {e}"
        ))
    })?;
    from_attributes(attributes)
}

/// A JSON array of events in the JSON format (`application/cloudevents-batch+json`).
pub fn parse_batch(body: &[u8]) -> Result<Vec<Inbound>, CloudEventError> {
    let events: Vec<Attributes> = serde_json::from_slice(body).map_err(|e| {
        Invalid(format!(
            "not a CloudEvents batch (a JSON array of CloudEvent objects): {e}"
        ))
    })?;
    events
        .into_iter()
        .enumerate()
        .map(|(i, attributes)| from_attributes(attributes).map_err(|e| e.at(i)))
        .collect()
}

/// One event in binary mode: every `ce-` header is an attribute (its value percent-encoded,
/// http-protocol-binding.md §3.1.3), `Content-Type` is `datacontenttype` and the body is the
/// data. The hub's body is JSON, so the data must be too: another content type is `415`.
pub fn parse_binary(headers: &HeaderMap, body: &[u8]) -> Result<Inbound, CloudEventError> {
    let mut attributes = header_attributes(headers)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .map_err(|_| Invalid("Content-Type is not ASCII".into()))
        })
        .transpose()?;
    let has_data = body.iter().any(|b| !b.is_ascii_whitespace());
    match content_type {
        Some(ct) if !is_json_media(&media_type(ct)) => return Err(not_json(ct)),
        None if has_data => {
            return Err(Unsupported(
                "binary mode: send the data with Content-Type: application/json".into(),
            ));
        }
        Some(ct) => {
            attributes.insert("datacontenttype".into(), raw_string(ct));
        }
        None => {}
    }
    if has_data {
        let data: Box<RawValue> = serde_json::from_slice(body)
            .map_err(|e| Invalid(format!("binary mode: the body is not JSON: {e}")))?;
        attributes.insert("data".into(), data);
    }
    from_attributes(attributes)
}

/// Every `ce-` header as a JSON string attribute, percent-decoded.
fn header_attributes(headers: &HeaderMap) -> Result<Attributes, CloudEventError> {
    let mut attributes = Attributes::new();
    for name in headers.keys() {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let mut values = headers.get_all(name).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(Invalid(format!("header {name} is sent more than once")));
        };
        let value = percent_decode(value.as_bytes())
            .ok_or_else(|| Invalid(format!("header {name} is not percent-encoded UTF-8")))?;
        attributes.insert(attribute.to_owned(), raw_string(&value));
    }
    Ok(attributes)
}

/// Percent-decoding (http-protocol-binding.md §3.1.3.2): `%XX` is a byte, the result UTF-8.
fn percent_decode(value: &[u8]) -> Option<String> {
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

fn raw_string(value: &str) -> Box<RawValue> {
    // A string always serialises.
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

fn not_json(content_type: &str) -> CloudEventError {
    Unsupported(format!(
        "datacontenttype {content_type:?} is not JSON: the hub's event body is a JSON object, so send application/json data"
    ))
}

/// The checks of spec.md and json-format.md on one event's attributes, and the mapping.
fn from_attributes(mut attributes: Attributes) -> Result<Inbound, CloudEventError> {
    // json-format.md §2.2: a `null` attribute is an omitted one.
    attributes.retain(|name, value| name == "data" || value.get() != "null");
    let specversion = required(&mut attributes, "specversion")?;
    if specversion != SPECVERSION {
        return Err(Invalid(format!(
            "specversion {specversion:?} is not supported; send \"{SPECVERSION}\""
        )));
    }
    let id = required(&mut attributes, "id")?;
    let source = required(&mut attributes, "source")?;
    let kind = required(&mut attributes, "type")?;
    let subject = optional(&mut attributes, "subject")?;
    if let Some(time) = optional(&mut attributes, "time")? {
        chrono::DateTime::parse_from_rfc3339(&time)
            .map_err(|_| Invalid(format!("time {time:?} is not an RFC 3339 timestamp")))?;
    }
    optional(&mut attributes, "dataschema")?;
    let content_type = optional(&mut attributes, "datacontenttype")?;
    let data = attributes.remove("data");
    if attributes.remove("data_base64").is_some() {
        return Err(if data.is_some() {
            Invalid("`data` and `data_base64` are mutually exclusive (json-format.md §3.1)".into())
        } else {
            Unsupported(
                "data_base64 (binary data) is not supported: the hub's event body is a JSON object"
                    .into(),
            )
        });
    }
    if let Some(ct) = content_type
        .as_deref()
        .filter(|ct| !is_json_media(&media_type(ct)))
    {
        return Err(not_json(ct));
    }
    check_extensions(&attributes)?;
    Ok(Inbound {
        id,
        source,
        kind,
        subject,
        data: data.map(body).transpose()?.flatten(),
    })
}

/// A required String attribute: present, a string, not empty (spec.md §3.1).
fn required(attributes: &mut Attributes, name: &str) -> Result<String, CloudEventError> {
    optional(attributes, name)?
        .ok_or_else(|| Invalid(format!("the required attribute `{name}` is missing")))
}

/// An optional String attribute: when present, a non-empty string.
fn optional(attributes: &mut Attributes, name: &str) -> Result<Option<String>, CloudEventError> {
    let Some(raw) = attributes.remove(name) else {
        return Ok(None);
    };
    match serde_json::from_str::<String>(raw.get()) {
        Ok(value) if !value.is_empty() => Ok(Some(value)),
        Ok(_) => Err(Invalid(format!("`{name}` must not be empty"))),
        Err(_) => Err(Invalid(format!("`{name}` must be a string"))),
    }
}

/// Extension attributes: names of `a`–`z` and `0`–`9` (spec.md, "Attribute Naming
/// Convention"), values of a CloudEvents type, so a string, number or boolean in JSON
/// (json-format.md §2.2). The hub keeps none of them; it only refuses bad ones.
fn check_extensions(attributes: &Attributes) -> Result<(), CloudEventError> {
    for (name, value) in attributes {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(Invalid(format!(
                "attribute name {name:?}: names are lower-case letters a-z and digits 0-9"
            )));
        }
        if value.get().starts_with(['{', '[']) {
            return Err(Invalid(format!(
                "extension `{name}` must be a string, number or boolean"
            )));
        }
    }
    Ok(())
}

/// `data` as the hub's body: a JSON object, or none for `null` (an explicit empty payload).
fn body(data: Box<RawValue>) -> Result<Option<Box<RawValue>>, CloudEventError> {
    let text = data.get();
    if text == "null" {
        return Ok(None);
    }
    if !text.starts_with('{') {
        return Err(Invalid(
            "`data` must be a JSON object: it becomes the hub event's body".into(),
        ));
    }
    // As `parse_publish_body`: forwarded verbatim, so it must be readable by ordinary parsers.
    serde_json::from_str::<serde_json::Value>(text)
        .map_err(|e| Invalid(format!("`data` is not usable JSON: {e}")))?;
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    /// json-format.md §3.2's third example (JSON object data), as a publisher sends it.
    const EXAMPLE: &str = r#"{
        "specversion" : "1.0",
        "type" : "com.example.someevent",
        "source" : "/mycontext",
        "subject": null,
        "id" : "C234-1234-1234",
        "time" : "2018-04-05T17:31:00Z",
        "comexampleextension1" : "value",
        "comexampleothervalue" : 5,
        "datacontenttype" : "application/json",
        "data" : {"appinfoA" : "abc", "appinfoB" : 123, "appinfoC" : true}
    }"#;

    fn invalid(body: &str) -> String {
        match parse_structured(body.as_bytes()) {
            Err(Invalid(message)) => message,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn the_spec_example_maps_type_to_message_and_data_to_body_verbatim() {
        let event = parse_structured(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(event.kind, "com.example.someevent");
        assert_eq!(event.source, "/mycontext");
        assert_eq!(event.id, "C234-1234-1234");
        assert_eq!(event.subject, None, "null is omitted");
        assert_eq!(
            event.data.unwrap().get(),
            r#"{"appinfoA" : "abc", "appinfoB" : 123, "appinfoC" : true}"#
        );
    }

    #[test]
    fn required_attributes_and_the_specversion_are_checked() {
        let without = |name: &str| {
            let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
            v.as_object_mut().unwrap().remove(name);
            v.to_string()
        };
        for name in ["specversion", "id", "source", "type"] {
            assert!(invalid(&without(name)).contains(&format!("`{name}` is missing")));
        }
        let v03 = EXAMPLE.replace(r#""1.0""#, r#""0.3""#);
        assert!(invalid(&v03).contains("specversion \"0.3\" is not supported"));
        assert!(
            invalid(&EXAMPLE.replace(r#""/mycontext""#, "7")).contains("`source` must be a string")
        );
        assert!(
            invalid(&EXAMPLE.replace(r#""C234-1234-1234""#, r#""""#)).contains("must not be empty")
        );
        assert!(invalid("{not json").contains("not a CloudEvent"));
        assert!(invalid("[]").contains("not a CloudEvent"));
    }

    #[test]
    fn data_must_be_a_json_object_and_json_typed() {
        let string_data = EXAMPLE.replace(
            r#"{"appinfoA" : "abc", "appinfoB" : 123, "appinfoC" : true}"#,
            r#""just a string""#,
        );
        assert!(invalid(&string_data).contains("must be a JSON object"));
        let xml = EXAMPLE.replace(r#""application/json""#, r#""application/xml""#);
        assert!(matches!(
            parse_structured(xml.as_bytes()),
            Err(Unsupported(_))
        ));
        let base64 = EXAMPLE.replace(r#""data" :"#, r#""data_base64" : "AAAA", "x":"#);
        assert!(matches!(
            parse_structured(base64.as_bytes()),
            Err(Unsupported(_))
        ));
        let both = EXAMPLE.replace(r#""data" :"#, r#""data_base64" : "AAAA", "data" :"#);
        assert!(invalid(&both).contains("mutually exclusive"));
        let vendor = EXAMPLE.replace(r#""application/json""#, r#""application/vnd.x+json""#);
        assert!(parse_structured(vendor.as_bytes()).is_ok());
        let no_data = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":null}"#;
        assert!(parse_structured(no_data.as_bytes()).unwrap().data.is_none());
    }

    #[test]
    fn extension_names_and_values_follow_the_spec() {
        assert!(invalid(&EXAMPLE.replace("comexampleextension1", "Bad-Name")).contains("a-z"));
        let object = EXAMPLE.replace(r#""value""#, r#"{"a":1}"#);
        assert!(invalid(&object).contains("string, number or boolean"));
        assert!(
            invalid(&EXAMPLE.replace("2018-04-05T17:31:00Z", "yesterday")).contains("RFC 3339")
        );
    }

    #[test]
    fn a_batch_names_the_event_that_fails() {
        let batch = format!("[{EXAMPLE}, {}]", EXAMPLE.replace(r#""1.0""#, r#""2""#));
        match parse_batch(batch.as_bytes()) {
            Err(Invalid(message)) => assert!(message.starts_with("event 1: specversion")),
            other => panic!("{other:?}"),
        }
        assert!(
            parse_batch(b"[]").unwrap().is_empty(),
            "an empty batch is valid"
        );
        assert!(matches!(parse_batch(EXAMPLE.as_bytes()), Err(Invalid(_))));
    }

    #[test]
    fn binary_mode_reads_percent_encoded_headers_and_a_json_body() {
        let map = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "A%20B"),
            ("ce-source", "/ctx"),
            ("ce-type", "vm.started"),
            ("ce-subject", "%C3%A9t%C3%A9"),
            ("content-type", "application/json; charset=utf-8"),
        ]);
        let event = parse_binary(&map, br#"{"vm": 7}"#).unwrap();
        assert_eq!(
            (event.id.as_str(), event.kind.as_str()),
            ("A B", "vm.started")
        );
        assert_eq!(event.subject.as_deref(), Some("été"));
        assert_eq!(event.data.unwrap().get(), r#"{"vm": 7}"#);
        assert_eq!(mode(&map), Ok(Some(Mode::Binary)));
    }

    #[test]
    fn binary_mode_refuses_non_json_data_and_bad_headers() {
        let mut map = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/ctx"),
            ("ce-type", "t"),
            ("content-type", "text/plain"),
        ]);
        assert!(matches!(parse_binary(&map, b"hello"), Err(Unsupported(_))));
        map.remove("content-type");
        assert!(matches!(parse_binary(&map, b"{}"), Err(Unsupported(_))));
        assert!(
            parse_binary(&map, b"").is_ok(),
            "no data needs no content type"
        );
        map.insert("content-type", HeaderValue::from_static("application/json"));
        assert!(matches!(parse_binary(&map, b"{oops"), Err(Invalid(_))));
        map.insert("ce-id", HeaderValue::from_static("%zz"));
        assert!(matches!(parse_binary(&map, b"{}"), Err(Invalid(_))));
        map.remove("ce-id");
        assert!(
            matches!(parse_binary(&map, b"{}"), Err(Invalid(m)) if m.contains("`id` is missing"))
        );
    }

    #[test]
    fn the_mode_comes_from_the_content_type_then_the_ce_headers() {
        let ct = |v: &'static str| headers(&[("content-type", v)]);
        assert_eq!(
            mode(&ct("application/cloudevents+json; charset=UTF-8")),
            Ok(Some(Mode::Structured))
        );
        assert_eq!(
            mode(&ct("Application/CloudEvents-Batch+JSON")),
            Ok(Some(Mode::Batch))
        );
        assert!(matches!(
            mode(&ct("application/cloudevents+avro")),
            Err(Unsupported(_))
        ));
        assert_eq!(mode(&ct("application/json")), Ok(None));
    }

    #[test]
    fn source_and_id_make_the_key() {
        let event = parse_structured(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(
            event.idempotency_key(),
            "cloudevents\u{0}/mycontext\u{0}C234-1234-1234"
        );
    }
}
