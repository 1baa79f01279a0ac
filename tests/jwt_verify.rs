//! `aigw::traffic::jwt::verify` on tokens signed with keys generated here: what passes, and
//! each way a token is refused, named.

#[path = "gateway_support/jwt_keys.rs"]
mod jwt_keys;

use aigw::traffic::jwt::{
    Check, JwtError, KeySource, KeyStore, LocalKeys, algorithm, parse_set, verify,
};
use jsonwebtoken::Algorithm;
use jwt_keys::{TestKey, jwks};
use serde_json::{Value, json};

const NOW: u64 = 1_800_000_000;

fn check<'a>(issuers: &'a [String], audiences: &'a [String]) -> Check<'a> {
    Check {
        algorithms: &[Algorithm::ES256, Algorithm::RS256],
        issuers,
        audiences,
        now: NOW,
    }
}

fn claims(extra: Value) -> Value {
    let mut c =
        json!({"iss": "https://idp.example/", "aud": "aigw", "sub": "team-a", "exp": NOW + 60});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c
}

#[test]
fn a_token_signed_by_a_listed_key_passes_with_its_claims() {
    let (k1, k2) = (TestKey::es256("one"), TestKey::rs256("two"));
    let keys = parse_set(&jwks(&[&k1, &k2])).unwrap();
    let iss = vec!["https://idp.example/".to_string()];
    let aud = vec!["aigw".to_string()];
    for k in [&k1, &k2] {
        let v = verify(
            &k.sign(&claims(json!({}))),
            std::slice::from_ref(&keys),
            &check(&iss, &aud),
        )
        .unwrap();
        assert_eq!(v.payload["sub"], "team-a");
        assert_eq!(v.header["kid"], k.kid.as_str());
        assert!(!v.signature.is_empty());
    }
}

#[test]
fn every_way_a_token_fails_is_named() {
    let (k, other) = (TestKey::es256("k"), TestKey::es256("k"));
    let keys = parse_set(&jwks(&[&k])).unwrap();
    let iss = vec!["https://idp.example/".to_string()];
    let aud = vec!["aigw".to_string()];
    let c = check(&iss, &aud);
    let err = |token: &str| verify(token, std::slice::from_ref(&keys), &c).unwrap_err();
    // Same kid, another key: the signature does not verify.
    assert_eq!(err(&other.sign(&claims(json!({})))), JwtError::Signature);
    assert_eq!(
        err(&k.sign(&claims(json!({"iss": "https://idp.example"})))),
        JwtError::Issuer("https://idp.example".into())
    );
    assert!(matches!(
        err(&k.sign(&claims(json!({"aud": ["x", "y"]})))),
        JwtError::Audience(_)
    ));
    assert_eq!(
        err(&k.sign(&claims(json!({"exp": NOW})))),
        JwtError::Expired(NOW)
    );
    assert_eq!(
        err(&k.sign(&claims(json!({"nbf": NOW + 5})))),
        JwtError::NotYetValid(NOW + 5)
    );
    assert!(matches!(err("not-a-token"), JwtError::Malformed(_)));
    let unknown_kid = TestKey::es256("elsewhere").sign(&claims(json!({})));
    assert!(matches!(err(&unknown_kid), JwtError::NoKey { .. }));
    // A forged `alg: none` token never gets near a key.
    let none = format!(
        "eyJhbGciOiJub25lIn0.{}.",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            claims(json!({})).to_string()
        )
    );
    assert!(matches!(err(&none), JwtError::Malformed(_)));
}

#[test]
fn algorithms_outside_the_list_are_refused_before_any_key() {
    let k = TestKey::es256("k");
    let keys = parse_set(&jwks(&[&k])).unwrap();
    let iss = vec!["https://idp.example/".to_string()];
    let c = Check {
        algorithms: &[Algorithm::RS256],
        issuers: &iss,
        audiences: &[],
        now: NOW,
    };
    assert_eq!(
        verify(&k.sign(&claims(json!({}))), &[keys], &c).unwrap_err(),
        JwtError::Algorithm(Algorithm::ES256)
    );
    assert!(algorithm("none").is_err());
    assert!(
        algorithm("RS257")
            .unwrap_err()
            .to_string()
            .contains("RS256")
    );
    assert_eq!(algorithm("ES256"), Ok(Algorithm::ES256));
}

#[test]
fn key_sets_are_read_leniently_but_never_empty() {
    assert!(parse_set("{}").is_err());
    assert!(parse_set(r#"{"keys": [{"kty": "nope"}]}"#).is_err());
    let k = TestKey::es256("k");
    let mixed = format!(r#"{{"keys": [{{"kty": "nope"}}, {}]}}"#, k.jwk());
    assert_eq!(parse_set(&mixed).unwrap().keys.len(), 1);
    assert!(
        LocalKeys
            .keys(&KeySource::Url("https://idp.example/jwks".into()))
            .unwrap_err()
            .contains("file://")
    );
}
