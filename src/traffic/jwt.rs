//! `jwt-validation`: a token's signature checked against JSON Web Key Sets, then its claims
//! against the action's issuer and audience lists and the evaluator's clock.
//!
//! Pure: keys come in through the [`KeyStore`] port (serve fetches `additional_jkus` URLs in
//! the background; files and inline sets are read at load), time through [`super::Ports`].
//! Signatures are checked by `jsonwebtoken` (on aws-lc-rs, the crypto rustls already uses);
//! `exp`/`nbf` are checked here against the given time so that `explain` and `aigw test` can
//! pin it.

use std::sync::Arc;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Where a key set comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// `jws.keys.sources.additional_jkus[]`: fetched, cached, refreshed.
    Url(String),
    /// aigw extension: `file:///path/jwks.json` in `additional_jkus`, read at load.
    File(std::path::PathBuf),
    /// aigw extension: `jws.keys.sources.jwks: {keys: [...]}` in the policy.
    Inline(Arc<JwkSet>),
}

impl KeySource {
    /// How a source is named in messages.
    pub fn describe(&self) -> String {
        match self {
            KeySource::Url(u) => u.clone(),
            KeySource::File(p) => format!("file://{}", p.display()),
            KeySource::Inline(_) => "the policy's inline `jwks`".into(),
        }
    }
}

/// The key sets a `jwt-validation` action can use right now.
pub trait KeyStore: Send + Sync {
    /// The set behind `source`, or why there is none yet (a URL not fetched or failing).
    fn keys(&self, source: &KeySource) -> Result<Arc<JwkSet>, String>;
    /// A token named a key no set holds: the store may fetch `source` again (key rotation).
    fn missing_key(&self, _source: &KeySource) {}
}

/// Files and inline sets only: what `explain` and `aigw test` have without a network.
#[derive(Debug, Default)]
pub struct LocalKeys;

impl KeyStore for LocalKeys {
    fn keys(&self, source: &KeySource) -> Result<Arc<JwkSet>, String> {
        match source {
            KeySource::Inline(set) => Ok(set.clone()),
            KeySource::File(path) => read_file(path),
            KeySource::Url(u) => Err(format!(
                "the key set at {u} is fetched only by `aigw serve`; use a `file://` source to check tokens offline"
            )),
        }
    }
}

/// Reads and parses a JWKS file.
pub fn read_file(path: &std::path::Path) -> Result<Arc<JwkSet>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_set(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a JWKS document (`{"keys": [...]}`); keys of kinds this build cannot use are skipped.
pub fn parse_set(text: &str) -> Result<Arc<JwkSet>, String> {
    let raw: Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
    let keys = raw
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JSON Web Key Set: no `keys` list")?;
    let keys: Vec<Jwk> = keys
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter(|k| {
            !matches!(
                k.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::Other(_)
            )
        })
        .collect();
    if keys.is_empty() {
        return Err("the key set holds no usable key".into());
    }
    Ok(Arc::new(JwkSet { keys }))
}

/// A token that passed: its parts, as `actions.ngrok.jwt_validation.tokens[]` shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub header: Value,
    pub payload: Value,
    pub signature: String,
}

/// Why a token was refused; the text is what the 401 and the action's `error` say.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a JWT (three base64url parts): {0}")]
    Malformed(String),
    #[error("the token is signed with {0:?}, which `jws.allowed_algorithms` does not list")]
    Algorithm(Algorithm),
    #[error("no key in {sources} matches the token (kid {kid}, {alg:?})")]
    NoKey {
        sources: String,
        kid: String,
        alg: Algorithm,
    },
    #[error("no key set is available: {0}")]
    NoKeys(String),
    #[error("the signature does not verify")]
    Signature,
    #[error("the issuer {0:?} is not in `issuer.allow_list`")]
    Issuer(String),
    #[error("the audience {0} is not in `audience.allow_list`")]
    Audience(String),
    #[error("the token expired at {0} (Unix seconds)")]
    Expired(u64),
    #[error("the token is not valid before {0} (Unix seconds)")]
    NotYetValid(u64),
}

/// What one action checks a token against.
pub struct Check<'a> {
    pub algorithms: &'a [Algorithm],
    pub issuers: &'a [String],
    pub audiences: &'a [String],
    /// Seconds since the Unix epoch.
    pub now: u64,
}

/// Verifies `token` with the first key of `sets` that fits it (by `kid` when the token names
/// one), then its claims.
pub fn verify(token: &str, sets: &[Arc<JwkSet>], check: &Check<'_>) -> Result<Verified, JwtError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
    if !check.algorithms.contains(&header.alg) {
        return Err(JwtError::Algorithm(header.alg));
    }
    let candidates: Vec<&Jwk> = sets
        .iter()
        .flat_map(|s| s.keys.iter())
        .filter(|k| match (&header.kid, &k.common.key_id) {
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
            (None, _) => true,
        })
        .filter(|k| fits(k, header.alg))
        .collect();
    if candidates.is_empty() {
        return Err(JwtError::NoKey {
            sources: format!("{} key set(s)", sets.len()),
            kid: header.kid.clone().unwrap_or_else(|| "none".into()),
            alg: header.alg,
        });
    }
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let mut last = JwtError::Signature;
    for key in candidates {
        let Ok(decoding) = DecodingKey::from_jwk(key) else {
            continue;
        };
        match jsonwebtoken::decode::<Value>(token, &decoding, &validation) {
            Ok(data) => return claims(token, &data.header, data.claims, check),
            Err(e) => {
                last = match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => JwtError::Signature,
                    _ => JwtError::Malformed(e.to_string()),
                }
            }
        }
    }
    Err(last)
}

/// Whether `key` can verify `alg` (its `alg`, when it names one, must agree).
fn fits(key: &Jwk, alg: Algorithm) -> bool {
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    if let Some(named) = key.common.key_algorithm
        && named.to_string() != format!("{alg:?}")
    {
        return false;
    }
    matches!(
        (&key.algorithm, alg),
        (
            P::RSA(_),
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ) | (P::EllipticCurve(_), Algorithm::ES256 | Algorithm::ES384)
            | (P::OctetKeyPair(_), Algorithm::EdDSA)
            | (
                P::OctetKey(_),
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
            )
    )
}

fn claims(
    token: &str,
    header: &jsonwebtoken::Header,
    payload: Value,
    check: &Check<'_>,
) -> Result<Verified, JwtError> {
    let iss = payload.get("iss").and_then(Value::as_str).unwrap_or("");
    if !check.issuers.iter().any(|i| i == iss) {
        return Err(JwtError::Issuer(iss.to_string()));
    }
    if !check.audiences.is_empty() {
        let aud: Vec<&str> = match payload.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !aud.iter().any(|a| check.audiences.iter().any(|w| w == a)) {
            return Err(JwtError::Audience(format!("{aud:?}")));
        }
    }
    let seconds = |name: &str| payload.get(name).and_then(Value::as_f64);
    if let Some(exp) = seconds("exp")
        && (check.now as f64) >= exp
    {
        return Err(JwtError::Expired(exp as u64));
    }
    if let Some(nbf) = seconds("nbf")
        && (check.now as f64) < nbf
    {
        return Err(JwtError::NotYetValid(nbf as u64));
    }
    let header = serde_json::to_value(header).unwrap_or(Value::Null);
    let signature = token.rsplit('.').next().unwrap_or_default().to_string();
    Ok(Verified {
        header,
        payload,
        signature,
    })
}

/// Why a `jws.allowed_algorithms` entry is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlgorithmError {
    #[error("`none` is never allowed: an unsigned token proves nothing")]
    None,
    #[error(
        "unknown algorithm `{0}`: use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384 or HS512"
    )]
    Unknown(String),
}

/// `jws.allowed_algorithms[]` names; `none` and unknown names are refused.
pub fn algorithm(name: &str) -> Result<Algorithm, AlgorithmError> {
    if name.eq_ignore_ascii_case("none") {
        return Err(AlgorithmError::None);
    }
    name.parse::<Algorithm>()
        .map_err(|_| AlgorithmError::Unknown(name.to_owned()))
}
