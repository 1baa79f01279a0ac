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

#[derive(Deserialize)]
struct Nested {
    usage: Option<Counts>,
}

/// Only the fields that carry usage are read; serde skips the rest of the body.
#[derive(Deserialize)]
struct Envelope {
    usage: Option<Counts>,
    message: Option<Nested>,
    response: Option<Nested>,
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
}

impl Usage {
    /// The usage in one JSON document (a response body or one stream event), if any.
    pub fn from_json(bytes: &[u8]) -> Option<Usage> {
        let e: Envelope = serde_json::from_slice(bytes).ok()?;
        let counts = e
            .usage
            .or(e.message.and_then(|m| m.usage))
            .or(e.response.and_then(|r| r.usage));
        let u = match counts {
            Some(c) => Usage {
                input: c.prompt_tokens.or(c.input_tokens),
                output: c.completion_tokens.or(c.output_tokens),
            },
            None => Usage {
                input: e.prompt_eval_count,
                output: e.eval_count,
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

/// Whether a document might carry usage (a cheap check before parsing a stream event).
pub fn mentions_usage(bytes: &[u8]) -> bool {
    const NEEDLES: [&[u8]; 2] = [b"\"usage\"", b"\"eval_count\""];
    NEEDLES
        .iter()
        .any(|n| memchr::memmem::find(bytes, n).is_some())
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
        assert!(mentions_usage(br#"{"usage":{}}"#));
        assert!(!mentions_usage(br#"{"choices":[]}"#));
    }
}
