//! Bounds on what one request may ask of the gateway, beyond the body size and the read
//! timeouts in [`super::GatewayOptions`]. Each is checked where the value is read anyway, so a
//! bound costs a comparison, not a pass over the body. README's "Limits" table lists them all.

/// Most model names one request may give (`model` plus `models[]`). Planning is linear in the
/// list, but every name is resolved, logged when left out and quoted in a "no matching models"
/// error; no client needs more fallbacks than this.
pub const MAX_REQUESTED_MODELS: usize = 256;

/// Longest model name accepted (bytes). Real ids are far shorter (Ollama caps a name at about
/// 430 characters); a longer one is refused rather than echoed in errors and log lines.
pub const MAX_MODEL_NAME_BYTES: usize = 1024;

/// Longest client- or upstream-supplied value quoted in an error message or log line: longer
/// ones are cut, with the number of bytes left out.
pub const MAX_QUOTED_CHARS: usize = 200;

/// `s`, or its first [`MAX_QUOTED_CHARS`] characters and a note of how much was cut.
pub fn cut(s: &str) -> std::borrow::Cow<'_, str> {
    cut_to(s, MAX_QUOTED_CHARS)
}

/// `s`, or its first `max` characters and a note of how much was cut.
pub fn cut_to(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => s.into(),
        Some((end, _)) => format!("{}… ({} more bytes)", &s[..end], s.len() - end).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_short_values_and_marks_long_ones() {
        assert_eq!(cut("gpt-4o"), "gpt-4o");
        let long = "é".repeat(300);
        let c = cut(&long);
        assert!(c.starts_with(&"é".repeat(200)), "{c}");
        assert!(c.ends_with("… (200 more bytes)"), "{c}");
    }
}
