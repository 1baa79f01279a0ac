//! A YAML document as a tree of nodes that each know their byte span in the source.
//!
//! Parsing goes through `serde-saphyr` (pure Rust, YAML 1.2, with budgets against alias bombs and
//! deep nesting). We deserialize into this generic tree rather than straight into typed structs so
//! that the schema walk in `build.rs` can report *every* problem at once, each at its exact span,
//! instead of stopping at the first serde error.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// Byte range of a node in the source text.
pub type Span = Range<usize>;

/// One YAML node with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

/// A mapping key: always text (YAML scalars are stringified) with its own span.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub text: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// The YAML type name users see in "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// Looks up a key in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.text == key)
            .map(|(_, v)| v)
    }

    /// Converts to plain JSON (for opaque configs: metadata, body, other actions).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => s.clone().into(),
            Value::Seq(items) => items.iter().map(Node::to_json).collect(),
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| (k.text.clone(), v.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
}

/// Why a document could not be read as YAML at all.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub message: String,
    pub span: Option<Span>,
    /// What to do about it.
    pub help: &'static str,
}

/// Parses `text` into a node tree. Duplicate keys, alias bombs and excessive nesting are
/// rejected by the parser's budget rather than exhausting memory or the stack.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            // Deep enough for any real policy, shallow enough that recursion over the tree
            // stays far from the stack limit even in debug builds.
            max_depth: 40,
            max_aliases: 1_000,
            max_anchors: 1_000,
        },
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    match serde_saphyr::from_str_with_options::<Spanned<RawValueBox>>(text, options) {
        // A file of comments only is as empty as a blank one.
        Ok(root) if matches!(*root.value.0, RawValue::Scalar(Value::Null)) => Ok(None),
        Ok(root) => Ok(Some(convert(root, text))),
        Err(err) => Err(syntax_error(&err, text)),
    }
}

fn syntax_error(err: &serde_saphyr::Error, text: &str) -> SyntaxError {
    let raw = err.to_string();
    let first = raw.lines().next().unwrap_or("invalid YAML").trim();
    // The crate prefixes "error: line L column C: "; keep the position as a span instead.
    let mut message = first.trim_start_matches("error:").trim().to_string();
    let mut position = None;
    let mut help = "fix the YAML syntax first (indentation, quotes, a `:` after each key)";
    if let Some(rest) = message.strip_prefix("line ")
        && let Some((line, rest)) = rest.split_once(" column ")
        && let Some((col, rest)) = rest.split_once(':')
        && let (Ok(line), Ok(col)) = (line.trim().parse::<usize>(), col.trim().parse::<usize>())
    {
        position = offset_of(text, line, col);
        message = rest.trim().to_string();
    }
    let lower = message.to_ascii_lowercase();
    if lower.contains("duplicate") {
        // "duplicate mapping key: providers, set DuplicateKeyPolicy …"
        let key = message
            .split_once("key:")
            .map(|(_, rest)| rest.split(',').next().unwrap_or("").trim().to_string())
            .filter(|k| !k.is_empty());
        message = match key {
            Some(key) => format!("the key `{key}` appears twice in the same mapping"),
            None => "a key appears twice in the same mapping".to_string(),
        };
        help = "remove one of the two entries, or merge them into one";
    } else if lower.contains("budget") {
        message = if lower.contains("depth") {
            "the YAML is nested too deeply (more than 40 levels)".to_string()
        } else if lower.contains("alias") || lower.contains("anchor") || lower.contains("replay") {
            "the YAML expands too many aliases (`*name`); is this an alias bomb?".to_string()
        } else if lower.contains("nodes") && text.contains('*') && text.contains('&') {
            "the YAML expands to more than 250,000 values (aliases included); is this an alias bomb?".to_string()
        } else if lower.contains("nodes") {
            // No aliases: a genuinely huge policy (150,000 models), not a bomb.
            "the policy has more than 250,000 YAML values (keys, values and list items), the most aigw reads; split it or list fewer models".to_string()
        } else {
            "the YAML document is too large to be a policy".to_string()
        };
        help = if message.starts_with("the policy has more than") {
            "aigw bounds the size of a policy to protect itself; serve a long model list from a provider's own catalog (`aigw probe`) instead of listing it"
        } else {
            "aigw refuses deep nesting and alias expansion to protect itself; a policy needs neither"
        };
    }
    let span = err
        .location()
        .and_then(|loc| location_span(&loc, text))
        .or(position.map(|p| p..p));
    SyntaxError {
        message,
        span,
        help,
    }
}

/// Byte offset of a 1-based line and column.
fn offset_of(text: &str, line: usize, col: usize) -> Option<usize> {
    let start = if line <= 1 {
        0
    } else {
        text.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)?
    };
    let line_text = text[start..].split('\n').next().unwrap_or("");
    let byte = line_text
        .char_indices()
        .nth(col.saturating_sub(1))
        .map(|(i, _)| i)
        .unwrap_or(line_text.len());
    Some(start + byte)
}

fn location_span(loc: &serde_saphyr::Location, text: &str) -> Option<Span> {
    let span = loc.span();
    let start = span.byte_offset()? as usize;
    let len = span.byte_len().unwrap_or(0) as usize;
    if start > text.len() {
        return None;
    }
    Some(start..(start + len).min(text.len()))
}

/// Spans of block collections can run into trailing blank lines; snippets read better without.
fn trim_span(span: Span, text: &str) -> Span {
    let slice = &text[span.clone()];
    let trimmed = slice.trim_end();
    span.start..span.start + trimmed.len()
}

// --- serde plumbing --------------------------------------------------------------------------

/// The tree as serde-saphyr hands it over: locations that still need the text to become spans.
enum RawValue {
    Scalar(Value),
    Seq(Vec<Spanned<RawValueBox>>),
    Map(Vec<(Spanned<KeyText>, Spanned<RawValueBox>)>),
}

struct RawValueBox(Box<RawValue>);

impl<'de> Deserialize<'de> for RawValueBox {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
            .map(|raw| RawValueBox(Box::new(raw)))
    }
}

fn convert(raw: Spanned<RawValueBox>, text: &str) -> Node {
    let span = trim_span(location_span(&raw.referenced, text).unwrap_or(0..0), text);
    let value = match *raw.value.0 {
        RawValue::Scalar(v) => v,
        RawValue::Seq(items) => Value::Seq(items.into_iter().map(|i| convert(i, text)).collect()),
        RawValue::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = Key {
                        span: location_span(&k.referenced, text).unwrap_or(0..0),
                        text: k.value.0,
                    };
                    (key, convert(v, text))
                })
                .collect(),
        ),
    };
    // Collections are located at their first token; stretch them over their children so an
    // error about a whole list or mapping underlines it.
    let end = match &value {
        Value::Seq(items) => items.iter().map(|n| n.span.end).max(),
        Value::Map(entries) => entries.iter().map(|(_, n)| n.span.end).max(),
        _ => None,
    };
    let span = match end {
        Some(end) if end > span.end => span.start..end,
        _ => span,
    };
    Node { value, span }
}

/// A mapping key: any scalar, as text.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(RawVisitor)? {
            RawValue::Scalar(Value::Str(s)) => Ok(KeyText(s)),
            RawValue::Scalar(Value::Int(i)) => Ok(KeyText(i.to_string())),
            RawValue::Scalar(Value::Float(f)) => Ok(KeyText(f.to_string())),
            RawValue::Scalar(Value::Bool(b)) => Ok(KeyText(b.to_string())),
            RawValue::Scalar(Value::Null) => Ok(KeyText("null".into())),
            _ => Err(de::Error::custom(
                "a mapping key must be plain text, not a list or mapping",
            )),
        }
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Null))
    }
    fn visit_none<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
        d.deserialize_any(RawVisitor)
    }
    fn visit_bool<E>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Int(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(v as f64),
        }))
    }
    fn visit_i128<E>(self, v: i128) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(v as f64),
        }))
    }
    fn visit_u128<E>(self, v: u128) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(v as f64),
        }))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Float(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Str(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Str(v)))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Str(
            String::from_utf8_lossy(v).into_owned(),
        )))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawValueBox>>()? {
            items.push(item);
        }
        Ok(RawValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value::<Spanned<RawValueBox>>()?;
            entries.push((key, value));
        }
        Ok(RawValue::Map(entries))
    }
}
