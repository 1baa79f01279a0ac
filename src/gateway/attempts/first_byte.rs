//! How long an attempt may wait for its first byte before aigw moves on.
//!
//! A silent upstream should be left well within a minute, but a slow local model must not be
//! cut off: a stream's first byte is its first token, a non-streaming answer's first byte is the
//! whole answer, and an Ollama model that is not in memory loads before anything is sent.
//!
//! | attempt                                          | limit on its first byte                         |
//! |--------------------------------------------------|-------------------------------------------------|
//! | `--first-byte-timeout` given                     | that, streaming or not                          |
//! | streaming, another model is left to try          | 30 s: a silent route is left for the next one   |
//! | streaming, the last model left                   | none: waiting is the only way to an answer      |
//! | not streaming                                    | none: a long answer takes long                  |
//! | an Ollama model not loaded at the last check     | raised to `--cold-start-timeout` (3 m)          |
//!
//! `per_request_timeout` and `total_timeout` bound every attempt whatever this says.

use std::time::Duration;

/// The default limit for a stream that has somewhere else to go.
pub const STREAM_DEFAULT: Duration = Duration::from_secs(30);
/// The default budget for loading a model into memory (ngrok's `per_request_timeout` default).
pub const COLD_START_DEFAULT: Duration = Duration::from_secs(180);

/// What decides an attempt's first-byte limit.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// The client asked for a stream.
    pub streams: bool,
    /// Another model is left to try after this one.
    pub alternative: bool,
    /// An Ollama box that did not have the model loaded at its last check.
    pub cold: bool,
}

/// Which limit bounds a first byte, for the reason a timeout gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `--first-byte-timeout`, or the stream default.
    FirstByte,
    /// `--cold-start-timeout`: the model was loading.
    ColdStart,
}

/// The first-byte limit for one attempt (`None`: only the policy's timeouts bound it).
pub fn limit(
    set: Option<Duration>,
    stream_default: Duration,
    cold_start: Duration,
    shape: Shape,
) -> Option<(Duration, Limit)> {
    let base = match set {
        Some(d) => d,
        None if shape.streams && shape.alternative => stream_default,
        None => return None,
    };
    Some(if shape.cold && cold_start > base {
        (cold_start, Limit::ColdStart)
    } else {
        (base, Limit::FirstByte)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn shape(streams: bool, alternative: bool, cold: bool) -> Shape {
        Shape {
            streams,
            alternative,
            cold,
        }
    }

    fn l(set: Option<u64>, s: Shape) -> Option<(Duration, Limit)> {
        limit(
            set.map(Duration::from_secs),
            STREAM_DEFAULT,
            COLD_START_DEFAULT,
            s,
        )
    }

    #[test]
    fn streams_with_somewhere_to_go_get_the_default() {
        assert_eq!(
            l(None, shape(true, true, false)),
            Some((STREAM_DEFAULT, Limit::FirstByte))
        );
    }

    #[test]
    fn the_last_model_and_non_streaming_answers_are_waited_for() {
        assert_eq!(l(None, shape(true, false, false)), None);
        assert_eq!(l(None, shape(false, true, false)), None);
        assert_eq!(l(None, shape(false, true, true)), None);
    }

    #[test]
    fn a_given_limit_bounds_every_attempt() {
        for (streams, alternative) in [(true, true), (true, false), (false, true), (false, false)] {
            assert_eq!(
                l(Some(5), shape(streams, alternative, false)),
                Some((5 * S, Limit::FirstByte))
            );
        }
    }

    #[test]
    fn a_cold_model_gets_the_cold_start_budget_but_never_less_than_given() {
        assert_eq!(
            l(None, shape(true, true, true)),
            Some((COLD_START_DEFAULT, Limit::ColdStart))
        );
        assert_eq!(
            l(Some(5), shape(false, false, true)),
            Some((COLD_START_DEFAULT, Limit::ColdStart))
        );
        assert_eq!(
            l(Some(600), shape(true, true, true)),
            Some((600 * S, Limit::FirstByte))
        );
    }
}
