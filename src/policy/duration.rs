//! Duration strings as ngrok writes them (Go's `time.ParseDuration`): `90s`, `2m`, `1h30m`, `1.5s`.

use std::time::Duration;

/// Why a duration string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("a duration cannot be negative")]
    Negative,
    #[error("expected a number at `{0}`")]
    ExpectedNumber(String),
    #[error("`{0}` is not a number")]
    NotANumber(String),
    #[error("`{0}` has no unit")]
    NoUnit(String),
    #[error("unknown unit `{0}`")]
    UnknownUnit(String),
    #[error("duration is too large")]
    TooLarge,
}

/// Parses a Go-style duration. A bare number is rejected: ngrok requires a unit.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(DurationError::ExpectedNumber(rest.to_string()));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| DurationError::NotANumber(rest[..num_len].to_string()))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(DurationError::NoUnit(text.trim().to_string())),
            other => return Err(DurationError::UnknownUnit(other.trim().to_string())),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e12 {
        return Err(DurationError::TooLarge);
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats a duration the way users write them (`3m`, `90s`, `1m30s`, `250ms`).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if s > 0 {
        out += &format!("{s}s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_durations() {
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse("30").unwrap_err().to_string().contains("no unit"));
        assert!(parse("5 minutes").is_err());
        assert!(parse("-1s").unwrap_err().to_string().contains("negative"));
        assert!(
            parse("1d")
                .unwrap_err()
                .to_string()
                .contains("unknown unit `d`")
        );
        assert!(parse("").is_err());
    }

    #[test]
    fn formatting_round_trips() {
        for s in ["3m", "90s", "1h30m", "250ms", "6m"] {
            let d = parse(s).unwrap();
            assert_eq!(parse(&format(d)).unwrap(), d);
        }
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
    }
}
