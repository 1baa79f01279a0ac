//! Scrubbing secrets out of text aigw writes: an attempt's failure reason quotes the upstream's
//! error body, and upstreams echo keys back ("Incorrect API key provided: sk-…"), sometimes a key
//! other than the one just sent, sometimes cut in the middle by aigw's 200-character limit.
//!
//! Every secret aigw knows is replaced by its [`redact`]ed form (`sk-…7890`): the values of
//! `AIGW_SECRET_*` / `--secrets` (API keys and header templates alike), every configured API key,
//! the inbound `--auth-token`, and the client's own keys. A secret's prefix of 8 or more
//! characters right before the truncation mark `…` is removed too.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use memchr::memmem::Finder;

use crate::gateway::Gateway;
use crate::gateway::Routing;
use crate::policy::secrets::redact;

/// Shorter values are not scrubbed (too likely to match ordinary words).
const MIN_LEN: usize = 8;

/// Every secret that could appear in a reason for this request, longest first. (The key an
/// attempt sent is one of the configured keys, or one of the client's.)
pub fn known_secrets(gw: &Gateway, routing: &dyn Routing, client_keys: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = gw.secrets.values().map(String::from).collect();
    for p in routing.providers() {
        for i in 0..p.keys {
            if let Some(k) = routing.key_value(&p.id, i) {
                out.push(k);
            }
        }
    }
    out.extend(gw.opts.auth_token.iter().cloned());
    out.extend(client_keys.iter().map(|k| k.to_string()));
    out.retain(|s| s.chars().count() >= MIN_LEN);
    out.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    out.dedup();
    out
}

/// `text` with every secret (whole, or cut short before `…`) redacted.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for s in secrets {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), &redact(s));
        }
        if text.contains('…') {
            let cuts: Vec<usize> = s
                .char_indices()
                .map(|(i, _)| i)
                .filter(|&i| i >= MIN_LEN)
                .collect();
            for i in cuts.into_iter().rev() {
                let cut = format!("{}…", &s[..i]);
                if text.contains(&cut) {
                    text = text.replace(&cut, "…");
                }
            }
        }
    }
    text
}

/// The secrets a policy holds (secret values, configured keys, the inbound token), ready to be
/// found in bytes an upstream streams: one prebuilt `memmem` searcher per secret, so a stream
/// event costs a few SIMD scans, like the event checks it already gets.
pub struct Redactor {
    secrets: Vec<(Finder<'static>, String)>,
}

/// Shows how many secrets, never their values.
impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Redactor {
    fn new(secrets: Vec<String>) -> Redactor {
        Redactor {
            secrets: secrets
                .into_iter()
                .map(|s| {
                    let shown = redact(&s);
                    (Finder::new(s.as_bytes()).into_owned(), shown)
                })
                .collect(),
        }
    }

    /// `chunk` itself when it holds no secret (the usual case), else a copy with each redacted.
    pub fn bytes(&self, chunk: Bytes) -> Bytes {
        if !self.secrets.iter().any(|(f, _)| f.find(&chunk).is_some()) {
            return chunk;
        }
        let mut out = chunk.to_vec();
        for (finder, shown) in &self.secrets {
            let mut next = Vec::with_capacity(out.len());
            let mut at = 0;
            for hit in finder.find_iter(&out) {
                next.extend_from_slice(&out[at..hit]);
                next.extend_from_slice(shown.as_bytes());
                at = hit + finder.needle().len();
            }
            next.extend_from_slice(&out[at..]);
            out = next;
        }
        Bytes::from(out)
    }

    /// `text` with every secret redacted.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.bytes(Bytes::copy_from_slice(text.as_bytes())) {
            b if b.len() == text.len() && *b == *text.as_bytes() => text.into(),
            b => String::from_utf8_lossy(&b).into_owned().into(),
        }
    }
}

/// The [`Redactor`] of the engine serving now, built once per engine (a reload builds a new
/// one on the first stream after it).
#[derive(Default)]
pub struct RedactorCache(Mutex<Option<Cached>>);

/// The engine a [`Redactor`] was built for (held, so its address cannot be reused) and it.
type Cached = (Arc<dyn Routing>, Arc<Redactor>);

impl RedactorCache {
    pub fn get(&self, gw: &Gateway) -> Arc<Redactor> {
        let routing = gw.current();
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((r, redactor)) = cached.as_ref()
            && Arc::ptr_eq(r, &routing)
        {
            return redactor.clone();
        }
        let redactor = Arc::new(Redactor::new(known_secrets(gw, routing.as_ref(), &[])));
        *cached = Some((routing, redactor.clone()));
        redactor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactor_replaces_every_occurrence_and_keeps_clean_chunks() {
        let r = Redactor::new(vec![
            "sk-abcdefghijklmnop".to_string(),
            "other-secret-1234".to_string(),
        ]);
        let clean = Bytes::from_static(b"data: {\"x\": 1}\n\n");
        let same = r.bytes(clean.clone());
        assert_eq!(same.as_ptr(), clean.as_ptr(), "no copy without a secret");
        assert_eq!(
            r.bytes(Bytes::from_static(
                b"data: not json sk-abcdefghijklmnop and sk-abcdefghijklmnop, other-secret-1234\n\n"
            )),
            Bytes::from_static("data: not json sk-…mnop and sk-…mnop, oth…1234\n\n".as_bytes())
        );
        assert_eq!(r.text("key sk-abcdefghijklmnop"), "key sk-…mnop");
        assert!(matches!(r.text("nothing"), Cow::Borrowed(_)));
    }

    #[test]
    fn whole_and_cut_secrets() {
        let secrets = vec!["sk-abcdefghijklmnop".to_string()];
        assert_eq!(
            scrub("bad key sk-abcdefghijklmnop here", &secrets),
            "bad key sk-…mnop here"
        );
        assert_eq!(scrub("bad key sk-abcdefghij…)", &secrets), "bad key …)");
        assert_eq!(scrub("bad key sk-abc…", &secrets), "bad key sk-abc…");
        assert_eq!(scrub("nothing here", &secrets), "nothing here");
    }
}
