//! A request body parsed once, shallowly: a JSON object whose top-level values stay as the
//! client's own JSON text.
//!
//! The gateway reads and rewrites only top-level fields (`model`, `models`, `stream`, token
//! limits, the policy's `body` merges, parameter stripping); `messages`, usually most of the
//! bytes, is only validated and copied. Parsing every message into `serde_json::Value`s and
//! serialising them again per attempt cost a few µs for a short prompt and grew with every
//! byte of a long conversation. Fields keep the client's order; replaced ones keep their place,
//! added ones go at the end.

use std::borrow::Cow;

use indexmap::IndexMap;
use serde_json::Value;
use serde_json::value::RawValue;

/// foldhash rather than SipHash: the keys come from clients, so the hasher stays seeded per
/// process, but SipHash was a visible share of parsing a short body.
type Hasher = foldhash::quality::RandomState;

/// A body being rewritten: borrowed keys and values, replaced ones owned.
pub type Fields<'a> = IndexMap<Cow<'a, str>, Field<'a>, Hasher>;

#[derive(Debug, Clone, Default)]
pub struct JsonBody {
    fields: IndexMap<String, Box<RawValue>, Hasher>,
}

/// Why a body is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    Empty,
    NotAnObject,
    Invalid(String),
}

/// One field's value in a body being rewritten.
#[derive(Debug, Clone)]
pub enum Field<'a> {
    Raw(&'a RawValue),
    Value(Value),
}

impl Field<'_> {
    /// The value as a number, when it is one that fits `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Field::Raw(r) => r.get().parse().ok(),
            Field::Value(v) => v.as_u64(),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Field::Raw(r) => parsed(r),
            Field::Value(v) => v.clone(),
        }
    }
}

impl JsonBody {
    pub fn parse(bytes: &[u8]) -> Result<JsonBody, BodyError> {
        let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
            return Err(BodyError::Empty);
        };
        if *first != b'{' {
            // Valid JSON of another kind gets its own message.
            // (Parsed whole: this is the error path, and `Value` enforces the nesting limit.)
            return Err(match serde_json::from_slice::<Value>(bytes) {
                Ok(_) => BodyError::NotAnObject,
                Err(e) => BodyError::Invalid(e.to_string()),
            });
        }
        let fields: IndexMap<String, Box<RawValue>, Hasher> =
            serde_json::from_slice(bytes).map_err(|e| BodyError::Invalid(e.to_string()))?;
        // serde_json checks raw values without a nesting limit; keep the one `Value` has, so
        // a body nested thousands deep is refused here as before, not passed on.
        if fields.values().any(|v| too_deep(v.get(), MAX_DEPTH - 1)) {
            return Err(BodyError::Invalid(format!(
                "recursion limit exceeded: the JSON nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(JsonBody { fields })
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.fields.contains_key(key)
    }

    /// The field parsed, if present.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.fields.get(key).map(|r| parsed(r))
    }

    /// The field's JSON text, if present.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(|r| r.get())
    }

    /// Moves a field to another name (in its place), replacing any field of that name.
    pub fn rename(&mut self, from: &str, to: &str) {
        if let Some(index) = self.fields.get_index_of(from) {
            self.fields.shift_remove(to);
            let index = index.min(self.fields.len().saturating_sub(1));
            if let Some((_, raw)) = self.fields.shift_remove_entry(from) {
                self.fields.shift_insert(index, to.to_string(), raw);
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_ref()))
    }

    /// A copy whose `messages` end with an assistant message holding `text` (an assistant
    /// prefill: the model answers only what follows it). A last assistant message with text
    /// content (the client's own prefill) gets `text` appended instead of a second message.
    /// `None` when the body has no `messages` list.
    pub fn with_assistant_text(&self, text: &str) -> Option<JsonBody> {
        let raw = self.fields.get("messages")?;
        let mut messages: Vec<&RawValue> = serde_json::from_str(raw.get()).ok()?;
        let last: Option<Value> = messages.last().map(|m| parsed(m));
        let merged = last.as_ref().and_then(|m| {
            let role = m.get("role").and_then(Value::as_str)?;
            let content = m.get("content").and_then(Value::as_str)?;
            (role == "assistant").then(|| {
                let mut m = m.clone();
                m["content"] = Value::String(format!("{content}{text}"));
                m
            })
        });
        let message = match merged {
            Some(m) => {
                messages.pop();
                m
            }
            None => serde_json::json!({"role": "assistant", "content": text}),
        };
        let message = serde_json::value::to_raw_value(&message).ok()?;
        messages.push(&message);
        let list = serde_json::value::to_raw_value(&messages).ok()?;
        let mut fields = self.fields.clone();
        fields.insert("messages".to_string(), list);
        Some(JsonBody { fields })
    }

    /// A copy with these fields set to these JSON values (replacing any of the same name).
    pub fn with_fields(&self, fields: &[(&str, &str)]) -> Option<JsonBody> {
        let mut out = self.fields.clone();
        for (key, json) in fields {
            out.insert(
                key.to_string(),
                RawValue::from_string(json.to_string()).ok()?,
            );
        }
        Some(JsonBody { fields: out })
    }

    /// A copy to rewrite: the values borrowed, not copied.
    pub fn edit(&self) -> Fields<'_> {
        self.fields
            .iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_str()), Field::Raw(v)))
            .collect()
    }
}

/// serde_json's own limit when it parses into `Value`.
const MAX_DEPTH: usize = 128;

/// Whether valid JSON `text` nests arrays and objects deeper than `max`.
fn too_deep(text: &str, max: usize) -> bool {
    let bytes = text.as_bytes();
    if !matches!(bytes.first(), Some(b'[' | b'{')) {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A raw value parsed (`null` past the nesting limit, which [`JsonBody::parse`] already refused).
pub fn parsed(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

/// Writes an edited body as compact JSON.
pub fn write(fields: &Fields<'_>) -> Vec<u8> {
    let mut len = 2;
    for (k, v) in fields {
        len += k.len() + 4;
        if let Field::Raw(r) = v {
            len += r.get().len();
        }
    }
    let mut out = Vec::with_capacity(len + 16);
    out.push(b'{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // A string and a Value always serialise.
        let _ = serde_json::to_writer(&mut out, k.as_ref());
        out.push(b':');
        match v {
            Field::Raw(r) => out.extend_from_slice(r.get().as_bytes()),
            Field::Value(v) => {
                let _ = serde_json::to_writer(&mut out, v);
            }
        }
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_values_as_sent_and_fields_in_order() {
        let text =
            r#" {"model":"m", "messages":[{"role":"user","content":"hi \u00e9"}], "n": 1.50}"#;
        let body = JsonBody::parse(text.as_bytes()).unwrap();
        assert_eq!(
            body.raw("messages"),
            Some(r#"[{"role":"user","content":"hi \u00e9"}]"#)
        );
        assert_eq!(body.get("model"), Some(Value::String("m".into())));
        let mut edit = body.edit();
        edit.insert(Cow::Borrowed("model"), Field::Value("x".into()));
        edit.insert(Cow::Borrowed("z\"q"), Field::Value(Value::Bool(true)));
        assert_eq!(
            String::from_utf8(write(&edit)).unwrap(),
            r#"{"model":"x","messages":[{"role":"user","content":"hi \u00e9"}],"n":1.50,"z\"q":true}"#
        );
        // What is written parses back to what the client sent, with the edits.
        let back: Value = serde_json::from_slice(&write(&body.edit())).unwrap();
        let sent: Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, sent);
    }

    #[test]
    fn an_assistant_prefill_ends_the_messages() {
        let body = JsonBody::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        )
        .unwrap();
        let p = body.with_assistant_text("Hel\"lo").unwrap();
        assert_eq!(
            p.raw("messages"),
            Some(r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"Hel\"lo"}]"#)
        );
        assert_eq!(p.raw("stream"), Some("true"));
        // The client's own prefill is extended, not followed by a second assistant message.
        let body = JsonBody::parse(
            br#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"A: "}]}"#,
        )
        .unwrap();
        let p = body.with_assistant_text("yes").unwrap();
        let m = p.get("messages").unwrap();
        assert_eq!(m.as_array().unwrap().len(), 2);
        assert_eq!(m[1]["content"], "A: yes");
        assert!(
            JsonBody::parse(br#"{"prompt":"x"}"#)
                .unwrap()
                .with_assistant_text("y")
                .is_none()
        );
    }

    #[test]
    fn errors_name_what_is_wrong() {
        assert_eq!(JsonBody::parse(b"  \n").unwrap_err(), BodyError::Empty);
        assert_eq!(
            JsonBody::parse(b"[1,2]").unwrap_err(),
            BodyError::NotAnObject
        );
        assert_eq!(
            JsonBody::parse(b"\"x\"").unwrap_err(),
            BodyError::NotAnObject
        );
        assert!(matches!(
            JsonBody::parse(b"{\"a\":}"),
            Err(BodyError::Invalid(_))
        ));
        assert!(matches!(
            JsonBody::parse(b"nope"),
            Err(BodyError::Invalid(_))
        ));
        assert!(matches!(
            JsonBody::parse(b"{} {}"),
            Err(BodyError::Invalid(_))
        ));
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
        match JsonBody::parse(deep.as_bytes()) {
            Err(BodyError::Invalid(e)) => assert!(e.contains("recursion limit"), "{e}"),
            other => panic!("{other:?}"),
        }
        // 128 levels in all is fine, as for serde_json's `Value`; brackets in strings don't count.
        let ok = format!(
            "{{\"a\":{}\"[[[\\\"[[\"{}}}",
            "[".repeat(126),
            "]".repeat(126)
        );
        assert!(JsonBody::parse(ok.as_bytes()).is_ok(), "{ok}");
        let over = format!("{{\"a\":{}{}}}", "[".repeat(128), "]".repeat(128));
        assert!(JsonBody::parse(over.as_bytes()).is_err());
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        match JsonBody::parse(deep.as_bytes()) {
            Err(BodyError::Invalid(e)) => assert!(e.contains("recursion limit"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn duplicate_keys_keep_the_first_place_and_the_last_value() {
        let body = JsonBody::parse(br#"{"a":1,"b":2,"a":3}"#).unwrap();
        assert_eq!(
            String::from_utf8(write(&body.edit())).unwrap(),
            r#"{"a":3,"b":2}"#
        );
    }

    #[test]
    fn rename_keeps_the_place() {
        let mut body = JsonBody::parse(br#"{"name":"llama3.2","stream":false}"#).unwrap();
        body.rename("name", "model");
        assert_eq!(
            String::from_utf8(write(&body.edit())).unwrap(),
            r#"{"model":"llama3.2","stream":false}"#
        );
    }

    #[test]
    fn numbers_read_as_u64() {
        let body = JsonBody::parse(br#"{"a":4096,"b":-1,"c":"7","d":1e3}"#).unwrap();
        let edit = body.edit();
        assert_eq!(edit["a"].as_u64(), Some(4096));
        assert_eq!(edit["b"].as_u64(), None);
        assert_eq!(edit["c"].as_u64(), None);
        assert_eq!(edit["d"].as_u64(), None);
    }
}
