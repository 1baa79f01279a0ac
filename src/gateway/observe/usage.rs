//! Token usage as providers report it, for `aigw_tokens_total`.
//!
//! OpenAI chat (`usage.prompt_tokens`/`completion_tokens`), the Responses API and Anthropic
//! (`usage.input_tokens`/`output_tokens`, also under `message` or `response` in stream events)
//! and Ollama (`prompt_eval_count`/`eval_count`). Streams report usage piecemeal (Anthropic's
//! `message_start` has the input, `message_delta` the running output count), so a later figure
//! replaces an earlier one.

use serde::Deserialize;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<u64>,
    pub output: Option<u64>,
}

#[derive(Deserialize, Default)]
struct Counts {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

/// The top-level keys that carry usage, in the order [`top_level`] reports them.
const KEYS: [&[u8]; 5] = [
    b"usage",
    b"message",
    b"response",
    b"prompt_eval_count",
    b"eval_count",
];

impl Usage {
    /// The usage in one JSON document (a response body or one stream event), if any.
    ///
    /// Only the few values that carry usage are parsed: the rest of the document is stepped
    /// over by [`top_level`] (a response's text is neither validated nor copied), which is a
    /// fraction of what deserialising past it cost on every response.
    pub fn from_json(bytes: &[u8]) -> Option<Usage> {
        let [usage, message, response, prompt_eval, eval] = top_level(bytes, &KEYS)?;
        let counts = usage
            .or_else(|| nested_usage(message))
            .or_else(|| nested_usage(response))
            .and_then(|v| serde_json::from_slice::<Counts>(v).ok());
        let number = |v: Option<&[u8]>| v.and_then(|v| serde_json::from_slice::<u64>(v).ok());
        let u = match counts {
            Some(c) => Usage {
                input: c.prompt_tokens.or(c.input_tokens),
                output: c.completion_tokens.or(c.output_tokens),
            },
            None => Usage {
                input: number(prompt_eval),
                output: number(eval),
            },
        };
        (u.input.is_some() || u.output.is_some()).then_some(u)
    }

    /// Later figures replace earlier ones; a missing figure keeps the earlier one.
    pub fn update(&mut self, later: Usage) {
        self.input = later.input.or(self.input);
        self.output = later.output.or(self.output);
    }
}

/// `usage` inside a top-level object such as `message` (Anthropic) or `response` (Responses).
fn nested_usage(object: Option<&[u8]>) -> Option<&[u8]> {
    let [usage] = top_level(object?, &[KEYS[0]])?;
    usage
}

/// The raw text of each of `keys`' values in a JSON object, looking at its top level only
/// (`None` when `doc` is not an object). Strings are skipped with memchr, nested values by
/// counting brackets; nothing is allocated. Lenient by design: it serves metrics, and a value
/// it hands out is still parsed strictly. A repeated key keeps its last value.
fn top_level<'a, const N: usize>(
    doc: &'a [u8],
    keys: &[&[u8]; N],
) -> Option<[Option<&'a [u8]>; N]> {
    let mut found = [None; N];
    let mut i = doc.iter().position(|b| !b.is_ascii_whitespace())?;
    if doc[i] != b'{' {
        return None;
    }
    i += 1;
    let mut depth = 1usize;
    // At depth 1, the next string is a key (after `{` or `,`), and which key's value is open.
    let mut expect_key = true;
    let mut open: Option<(usize, usize)> = None;
    while i < doc.len() {
        match doc[i] {
            b'"' => {
                let start = i + 1;
                let end = string_end(doc, start)?;
                if depth == 1 && expect_key {
                    let key = &doc[start..end];
                    expect_key = false;
                    // The value starts after the colon.
                    let colon = end + 1 + doc[end + 1..].iter().position(|&b| b == b':')?;
                    i = colon + 1;
                    open = keys.iter().position(|k| *k == key).map(|slot| (slot, i));
                    continue;
                }
                i = end + 1;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    if let Some((slot, from)) = open.take() {
                        found[slot] = Some(trim(&doc[from..i]));
                    }
                    return Some(found);
                }
            }
            b',' if depth == 1 => {
                if let Some((slot, from)) = open.take() {
                    found[slot] = Some(trim(&doc[from..i]));
                }
                expect_key = true;
            }
            _ => {}
        }
        i += 1;
    }
    // Truncated: what was complete still counts.
    Some(found)
}

/// The index of the quote that ends the string whose text starts at `from`.
fn string_end(doc: &[u8], mut from: usize) -> Option<usize> {
    loop {
        // Keys and most values are short: a plain loop first, memchr for long text.
        let rest = &doc[from..];
        let head = &rest[..rest.len().min(32)];
        let at = from
            + match head.iter().position(|&b| b == b'"' || b == b'\\') {
                Some(i) => i,
                None if head.len() == rest.len() => return None,
                None => head.len() + memchr::memchr2(b'"', b'\\', &rest[head.len()..])?,
            };
        if doc[at] == b'"' {
            return Some(at);
        }
        from = at + 2;
        if from > doc.len() {
            return None;
        }
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_shape() {
        let u = |s: &str| Usage::from_json(s.as_bytes());
        assert_eq!(
            u(r#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#),
            Some(Usage {
                input: Some(3),
                output: Some(5)
            })
        );
        assert_eq!(
            u(
                r#"{"type":"message_start","message":{"usage":{"input_tokens":7,"output_tokens":1}}}"#
            ),
            Some(Usage {
                input: Some(7),
                output: Some(1)
            })
        );
        assert_eq!(
            u(r#"{"type":"response.completed","response":{"usage":{"input_tokens":2,"output_tokens":4}}}"#)
                .unwrap()
                .output,
            Some(4)
        );
        assert_eq!(
            u(r#"{"done":true,"prompt_eval_count":9,"eval_count":11}"#),
            Some(Usage {
                input: Some(9),
                output: Some(11)
            })
        );
        assert_eq!(u(r#"{"choices":[]}"#), None);
        assert_eq!(u("not json"), None);
        let mut total = Usage::default();
        total.update(u(r#"{"message":{"usage":{"input_tokens":7}}}"#).unwrap());
        total.update(u(r#"{"usage":{"output_tokens":12}}"#).unwrap());
        assert_eq!(
            total,
            Usage {
                input: Some(7),
                output: Some(12)
            }
        );
    }

    /// What `from_json` must agree with: the same fields read from a full parse.
    fn reference(doc: &str) -> Option<Usage> {
        let v: serde_json::Value = serde_json::from_str(doc).ok()?;
        let o = v.as_object()?;
        let counts = o
            .get("usage")
            .or_else(|| o.get("message").and_then(|m| m.get("usage")))
            .or_else(|| o.get("response").and_then(|m| m.get("usage")))
            .filter(|c| c.is_object());
        let n = |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_u64);
        let u = match counts {
            Some(c) => Usage {
                input: n(c.get("prompt_tokens")).or(n(c.get("input_tokens"))),
                output: n(c.get("completion_tokens")).or(n(c.get("output_tokens"))),
            },
            None => Usage {
                input: n(o.get("prompt_eval_count")),
                output: n(o.get("eval_count")),
            },
        };
        (u.input.is_some() || u.output.is_some()).then_some(u)
    }

    #[test]
    fn only_the_top_level_counts_and_text_is_never_mistaken_for_keys() {
        let docs = [
            r#"{"choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":99}"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            r#"{"choices":[{"usage":{"prompt_tokens":99}}],"model":"m"}"#,
            r#"{"a":"x\\","usage":{"prompt_tokens":4}}"#,
            r#"{"a":"\\\"usage\":1","eval_count":3}"#,
            r#"  { "usage" : { "input_tokens" : 5 , "output_tokens" : 6 } , "id" : "x" }  "#,
            r#"{"message":{"content":[{"type":"text","text":"usage"}],"usage":{"input_tokens":8}}}"#,
            r#"{"response":{"output":[[1,2],[3]],"usage":{"output_tokens":9}},"type":"response.completed"}"#,
            r#"{"data":[{"embedding":[0.1,-0.2,3e-5]}],"usage":{"prompt_tokens":12,"total_tokens":12}}"#,
            r#"{"usage":null,"prompt_eval_count":1,"eval_count":2}"#,
            r#"{"model":"qwen","prompt_eval_count":10,"eval_count":20,"done":true}"#,
            r#"{"nested":{"prompt_eval_count":5}}"#,
            r#"{"usage":{"prompt_tokens":"12"}}"#,
            r#"[{"usage":{"prompt_tokens":1}}]"#,
            r#"{}"#,
            "",
            "   ",
        ];
        for doc in docs {
            assert_eq!(Usage::from_json(doc.as_bytes()), reference(doc), "{doc}");
        }
    }

    #[test]
    fn truncated_or_broken_documents_never_panic() {
        let doc = r#"{"id":"x\"y","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        for end in 0..=doc.len() {
            let _ = Usage::from_json(&doc.as_bytes()[..end]);
        }
        for doc in [
            r#"{"a"#,
            r#"{"a":"\"#,
            r#"{"usage""#,
            r#"{"usage":"#,
            r#"}}}"#,
            r#"{"a":]]]]}"#,
        ] {
            let _ = Usage::from_json(doc.as_bytes());
        }
    }
}
