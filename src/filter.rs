//! Server-side filters: a subscription may ask for only the events of its channel whose
//! `message` or body fields match, e.g. `body.vm_id == "vm-17" and message in [VM_CREATED,
//! VM_DELETED]`.
//!
//! A filter is compiled once, when the subscription is made ([`Filter::parse`]), and checked
//! against an event already parsed into a [`Value`] ([`Filter::matches`]): the frame is parsed
//! once per event for every filtered subscriber that sees it (`fanout::EventView`), never
//! once per subscriber. Pure functions, no I/O.
//!
//! Grammar (docs/api.md, "Server-side filters"):
//! ```text
//! filter  = clause *( "and" clause )
//! clause  = path "==" value | path "in" "[" value *( "," value ) "]" | path "starts_with" value
//! path    = ( "message" | "body" ) *( "." key )        key = 1*( ALPHA / DIGIT / "_" / "-" )
//! value   = a JSON string, number, true, false or null | a bare word (a string) of
//!           ALPHA / DIGIT / "_" / "-" / "." / ":" / "/"
//! ```

use serde_json::Value;

/// Longest filter text accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 2048;
/// Most clauses one filter may `and` together.
const MAX_CLAUSES: usize = 16;
/// Most values one `in` list may hold.
const MAX_IN_VALUES: usize = 256;

/// Why a filter text could not be compiled; the text is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(String);

/// A compiled filter: every clause must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    clauses: Vec<Clause>,
    /// The text it was compiled from, for replies and the admin view.
    source: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Clause {
    path: Vec<String>,
    test: Test,
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Equals(Value),
    In(Vec<Value>),
    StartsWith(String),
}

impl Filter {
    /// Compiles `text`; the error says where and what was expected.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(FilterError(format!(
                "a filter may be at most {MAX_FILTER_BYTES} bytes; this one is {}",
                text.len()
            )));
        }
        let mut lexer = Lexer { text, at: 0 };
        let mut clauses = vec![lexer.clause()?];
        while lexer.keyword("and") {
            if clauses.len() == MAX_CLAUSES {
                return Err(FilterError(format!(
                    "a filter may join at most {MAX_CLAUSES} clauses with `and`"
                )));
            }
            clauses.push(lexer.clause()?);
        }
        lexer.skip_space();
        if lexer.at < text.len() {
            return Err(lexer.expected("`and` or the end of the filter"));
        }
        Ok(Self {
            clauses,
            source: text.trim().to_owned(),
        })
    }

    /// Whether `event` (a parsed event frame) passes every clause. A field that is absent
    /// passes no clause.
    pub fn matches(&self, event: &Value) -> bool {
        self.clauses.iter().all(|clause| {
            let mut field = event;
            for key in &clause.path {
                field = match field {
                    Value::Object(map) => match map.get(key) {
                        Some(v) => v,
                        None => return false,
                    },
                    Value::Array(items) => {
                        match key.parse::<usize>().ok().and_then(|i| items.get(i)) {
                            Some(v) => v,
                            None => return false,
                        }
                    }
                    _ => return false,
                };
            }
            clause.test.holds(field)
        })
    }

    /// Whether the raw frame `frame` passes: parses it first. For frames that reach only one
    /// filtered subscriber (replays, the history route).
    pub fn matches_frame(&self, frame: &str) -> bool {
        serde_json::from_str::<Value>(frame).is_ok_and(|event| self.matches(&event))
    }

    /// The filter as it was given (trimmed).
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl Test {
    fn holds(&self, field: &Value) -> bool {
        match self {
            Test::Equals(want) => same(field, want),
            Test::In(wants) => wants.iter().any(|want| same(field, want)),
            Test::StartsWith(prefix) => field.as_str().is_some_and(|s| s.starts_with(prefix)),
        }
    }
}

/// JSON equality, except that numbers compare by value (`17` equals `17.0`).
fn same(field: &Value, want: &Value) -> bool {
    match (field, want) {
        (Value::Number(a), Value::Number(b)) => a == b || a.as_f64() == b.as_f64(),
        _ => field == want,
    }
}

/// `filter=pdfm:body.vm_id == 7`: the channel name (lower-cased) and the filter's text.
pub fn split_channel(value: &str) -> Result<(String, &str), FilterError> {
    let (channel, text) = value.split_once(':').ok_or_else(|| {
        FilterError(format!(
            "filter {value:?} is not <event_type>:<filter>, e.g. pdfm:body.vm_id==vm-17"
        ))
    })?;
    Ok((channel.trim().to_ascii_lowercase(), text))
}

/// A cursor over the filter text.
struct Lexer<'a> {
    text: &'a str,
    at: usize,
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn expected(&self, what: &str) -> FilterError {
        let found = self.rest().chars().take(20).collect::<String>();
        let found = if found.is_empty() {
            "the end".to_owned()
        } else {
            format!("{found:?}")
        };
        FilterError(format!(
            "filter {:?}: expected {what} at byte {}, found {found}",
            self.text, self.at
        ))
    }

    /// Consumes `word` when it comes next as a whole word.
    fn keyword(&mut self, word: &str) -> bool {
        self.skip_space();
        let rest = self.rest();
        let whole = rest.starts_with(word)
            && !rest[word.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        if whole {
            self.at += word.len();
        }
        whole
    }

    fn symbol(&mut self, symbol: &str) -> bool {
        self.skip_space();
        let found = self.rest().starts_with(symbol);
        if found {
            self.at += symbol.len();
        }
        found
    }

    /// A run of characters that may form a key or a bare word.
    fn word(&mut self, also: &[char]) -> &str {
        let rest = self.rest();
        let len = rest
            .find(|c: char| {
                !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || also.contains(&c))
            })
            .unwrap_or(rest.len());
        let start = self.at;
        self.at += len;
        &self.text[start..self.at]
    }

    fn clause(&mut self) -> Result<Clause, FilterError> {
        let path = self.path()?;
        let test = if self.symbol("==") {
            Test::Equals(self.value()?)
        } else if self.keyword("in") {
            Test::In(self.list()?)
        } else if self.keyword("starts_with") {
            match self.value()? {
                Value::String(prefix) => Test::StartsWith(prefix),
                _ => return Err(FilterError("starts_with takes a string".into())),
            }
        } else {
            return Err(self.expected("`==`, `in` or `starts_with`"));
        };
        Ok(Clause { path, test })
    }

    fn path(&mut self) -> Result<Vec<String>, FilterError> {
        self.skip_space();
        let mut path = vec![self.word(&[]).to_owned()];
        if !matches!(path[0].as_str(), "message" | "body") {
            return Err(self.expected_at_path_start());
        }
        while self.rest().starts_with('.') {
            self.at += 1;
            let key = self.word(&[]);
            if key.is_empty() {
                return Err(self.expected("a field name after `.`"));
            }
            path.push(key.to_owned());
        }
        Ok(path)
    }

    fn expected_at_path_start(&self) -> FilterError {
        FilterError(format!(
            "filter {:?}: a field is `message` or `body.<key>[.<key>…]`",
            self.text
        ))
    }

    fn list(&mut self) -> Result<Vec<Value>, FilterError> {
        if !self.symbol("[") {
            return Err(self.expected("`[` to open the `in` list"));
        }
        let mut values = vec![self.value()?];
        while self.symbol(",") {
            values.push(self.value()?);
        }
        if !self.symbol("]") {
            return Err(self.expected("`,` or `]`"));
        }
        if values.len() > MAX_IN_VALUES {
            return Err(FilterError(format!(
                "an `in` list may hold at most {MAX_IN_VALUES} values"
            )));
        }
        Ok(values)
    }

    /// A JSON literal, or a bare word taken as a string.
    fn value(&mut self) -> Result<Value, FilterError> {
        self.skip_space();
        if self.rest().starts_with('"') {
            return self.json_string();
        }
        let start = self.at;
        let word = self.word(&['.', ':', '/', '+']).to_owned();
        if word.is_empty() {
            self.at = start;
            return Err(
                self.expected("a value (a JSON string, number, true, false, null or a bare word)")
            );
        }
        Ok(match word.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            _ => match serde_json::from_str::<serde_json::Number>(&word) {
                Ok(number) => Value::Number(number),
                Err(_) => Value::String(word),
            },
        })
    }

    fn json_string(&mut self) -> Result<Value, FilterError> {
        let rest = self.rest();
        let mut escaped = false;
        let end = rest
            .char_indices()
            .skip(1)
            .find(|&(_, c)| {
                let closes = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                closes
            })
            .map(|(i, _)| i + 1);
        let Some(end) = end else {
            return Err(self.expected("a closing `\"`"));
        };
        let literal = &rest[..end];
        let value = serde_json::from_str::<String>(literal).map_err(|e| {
            FilterError(format!("filter {:?}: bad string {literal}: {e}", self.text))
        })?;
        self.at += end;
        Ok(Value::String(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(message: &str, body: Value) -> Value {
        json!({"id": "x", "event_type": "pdfm", "timestamp": "t", "message": message, "body": body, "seq": 3})
    }

    #[test]
    fn equality_on_a_dotted_body_path() {
        let f = Filter::parse(r#"body.event.current_state == "RUNNING""#).unwrap();
        assert!(f.matches(&event("M", json!({"event": {"current_state": "RUNNING"}}))));
        assert!(!f.matches(&event("M", json!({"event": {"current_state": "STOPPED"}}))));
        assert!(!f.matches(&event("M", json!({"event": {}}))));
        assert!(!f.matches(&event("M", json!("RUNNING"))));
    }

    #[test]
    fn bare_words_are_strings_and_numbers_compare_by_value() {
        let f = Filter::parse("message==VM_STATE_CHANGED and body.count == 17").unwrap();
        assert!(f.matches(&event("VM_STATE_CHANGED", json!({"count": 17.0}))));
        assert!(!f.matches(&event("VM_STATE_CHANGED", json!({"count": "17"}))));
        assert!(!f.matches(&event("VM_CREATED", json!({"count": 17}))));
        let s = Filter::parse("body.vm_id == vm-17").unwrap();
        assert!(s.matches(&event("M", json!({"vm_id": "vm-17"}))));
    }

    #[test]
    fn in_and_starts_with_and_array_indexes() {
        let f = Filter::parse(
            r#"message in [VM_CREATED, "VM_DELETED"] and body.hosts.0 starts_with "esx-""#,
        )
        .unwrap();
        assert!(f.matches(&event("VM_DELETED", json!({"hosts": ["esx-2", "kvm-1"]}))));
        assert!(!f.matches(&event("VM_DELETED", json!({"hosts": ["kvm-1", "esx-2"]}))));
        assert!(!f.matches(&event("VM_STOPPED", json!({"hosts": ["esx-2"]}))));
        let t = Filter::parse("body.ok in [true, null, 3]").unwrap();
        assert!(t.matches(&event("M", json!({"ok": null}))));
        assert!(!t.matches(&event("M", json!({"ok": false}))));
    }

    #[test]
    fn json_strings_keep_escapes_and_spaces() {
        let f = Filter::parse(r#"body.name == "a \"quoted\" and spaced""#).unwrap();
        assert!(f.matches(&event("M", json!({"name": "a \"quoted\" and spaced"}))));
        assert_eq!(f.source(), r#"body.name == "a \"quoted\" and spaced""#);
    }

    #[test]
    fn bad_filters_say_what_was_expected() {
        for (text, says) in [
            ("", "a field is"),
            ("id == x", "a field is"),
            ("body.vm_id", "expected `==`, `in` or `starts_with`"),
            ("body.vm_id = x", "expected `==`"),
            ("body. == x", "a field name after `.`"),
            ("body.x == ", "expected a value"),
            ("body.x in [a, b", "`,` or `]`"),
            ("body.x in a", "`[` to open"),
            (r#"body.x == "open"#, "closing `\"`"),
            ("body.x == a or body.y == b", "`and` or the end"),
            ("body.x starts_with 3", "starts_with takes a string"),
        ] {
            let error = Filter::parse(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }

    #[test]
    fn sizes_are_bounded() {
        let long = format!("body.x == \"{}\"", "a".repeat(MAX_FILTER_BYTES));
        assert!(Filter::parse(&long).is_err());
        let many = vec!["body.x == 1"; MAX_CLAUSES + 1].join(" and ");
        assert!(
            Filter::parse(&many)
                .unwrap_err()
                .to_string()
                .contains("at most")
        );
        let list = (0..=MAX_IN_VALUES)
            .map(|i| i.to_string())
            .collect::<Vec<_>>();
        let wide = format!("body.x in [{}]", list.join(","));
        assert!(Filter::parse(&wide).is_err());
    }

    #[test]
    fn matches_frame_parses_the_frame() {
        let f = Filter::parse("body.vm_id == 7").unwrap();
        assert!(f.matches_frame(r#"{"message":"M","body":{"vm_id":7}}"#));
        assert!(!f.matches_frame("not json"));
    }
}
