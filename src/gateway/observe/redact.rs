//! Scrubbing secrets out of text aigw writes: an attempt's failure reason quotes the upstream's
//! error body, and upstreams echo keys back ("Incorrect API key provided: sk-…"), sometimes a key
//! other than the one just sent, sometimes cut in the middle by aigw's 200-character limit.
//!
//! Every secret aigw knows is replaced by its [`redact`]ed form (`sk-…7890`): the values of
//! `AIGW_SECRET_*` / `--secrets` (API keys and header templates alike), every configured API key,
//! the inbound `--auth-token`, and the client's own keys. A secret's prefix of 8 or more
//! characters right before the truncation mark `…` is removed too.

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

#[cfg(test)]
mod tests {
    use super::*;

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
