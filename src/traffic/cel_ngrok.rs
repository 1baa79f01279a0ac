//! ngrok's encoder, hash, URL, query-string and random functions for traffic-policy CEL
//! (`../shared/reference/ngrok-traffic-policy.md` §4.2), beside the `cel` crate's own
//! `base64`, `lists` and `math` extensions. Each function is declared with its argument types,
//! so `validate` type-checks calls to them like any other.

use std::sync::Arc;

use base64::Engine as _;
use cel::common::types::{CelBool, CelDouble, CelInt, CelString, LIST_TYPE, MAP_TYPE, STRING_TYPE};
use cel::common::value::{CowVal, Val};
use cel::objects::{Key, Map, Value};
use cel::{DeclarationError, Env, ExecutionError};

/// Namespaces these functions live in: they parse like variables (`hash.sha256(…)`).
pub const NAMESPACES: &[&str] = &[
    "base64",
    "basic_auth",
    "hash",
    "url",
    "queryString",
    "rand",
    "lists",
    "math",
];

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

type Args<'b, 'v> = Vec<CowVal<'b, 'v>>;
type Ret<'b, 'v> = Result<CowVal<'b, 'v>, ExecutionError>;

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_extension(cel::extensions::encoders)?;
    env.add_extension(cel::extensions::lists)?;
    env.add_extension(cel::extensions::math)?;
    cel::add_member_overload!(env, fn encode_base64: (CelString) -> CelString)?;
    cel::add_member_overload!(env, fn decode_base64: (CelString) -> Result<CelString>)?;
    cel::add_overload!(env, fn basic_auth_encode: (CelString, CelString) -> CelString,
        name = "basic_auth.encode")?;
    cel::add_member_overload!(env, fn is_json: (CelString) -> CelBool)?;
    env.add_member_overload(
        "decodeJson",
        "string.decodeJson()",
        STRING_TYPE,
        vec![],
        decode_json,
    )?;
    for (id, target) in [
        ("list.encodeJson()", LIST_TYPE),
        ("map.encodeJson()", MAP_TYPE),
    ] {
        env.add_member_overload("encodeJson", id, target, vec![], encode_json)?;
    }
    cel::add_overload!(env, fn url_escape: (CelString) -> CelString, name = "url.escape")?;
    cel::add_overload!(env, fn url_unescape: (CelString) -> Result<CelString>, name = "url.unescape")?;
    cel::add_member_overload!(env, fn url_escape: (CelString) -> CelString, name = "escapeUrl")?;
    cel::add_member_overload!(env, fn url_unescape: (CelString) -> Result<CelString>,
        name = "unescapeUrl")?;
    cel::add_member_overload!(env, fn is_url: (CelString) -> CelBool, name = "isURL")?;
    env.add_overload(
        "queryString.encode",
        "queryString.encode(map)",
        vec![MAP_TYPE],
        query_encode,
    )?;
    env.add_member_overload(
        "encodeQueryString",
        "map.encodeQueryString()",
        MAP_TYPE,
        vec![],
        query_encode,
    )?;
    env.add_overload(
        "queryString.decode",
        "queryString.decode(string)",
        vec![STRING_TYPE],
        query_decode,
    )?;
    env.add_member_overload(
        "decodeQueryString",
        "string.decodeQueryString()",
        STRING_TYPE,
        vec![],
        query_decode,
    )?;
    cel::add_member_overload!(env, fn is_query_string: (CelString) -> CelBool)?;
    for name in HASHES {
        let id = |s: &str| format!("{s}_{name}");
        env.add_overload(
            &format!("hash.{name}"),
            &id("hash(string)"),
            vec![STRING_TYPE],
            hash_fn(name),
        )?;
        env.add_overload(
            &format!("hash.{name}"),
            &id("hash(string,string)"),
            vec![STRING_TYPE, STRING_TYPE],
            hash_fn(name),
        )?;
        env.add_member_overload(
            name,
            &id("string.hash()"),
            STRING_TYPE,
            vec![],
            hash_fn(name),
        )?;
        env.add_member_overload(
            name,
            &id("string.hash(string)"),
            STRING_TYPE,
            vec![STRING_TYPE],
            hash_fn(name),
        )?;
    }
    cel::add_overload!(env, fn rand_double: () -> CelDouble, name = "rand.double")?;
    cel::add_overload!(env, fn rand_int: () -> CelInt, name = "rand.int")?;
    cel::add_overload!(env, fn rand_int_range: (CelInt, CelInt) -> Result<CelInt>,
        name = "rand.int")?;
    Ok(())
}

fn fail(function: &str, why: impl std::fmt::Display) -> ExecutionError {
    ExecutionError::function_error(function, why.to_string())
}

fn encode_base64(s: &CelString<'_>) -> CelString<'static> {
    B64.encode(s.inner()).into()
}

fn decode_base64(s: &CelString<'_>) -> Result<CelString<'static>, ExecutionError> {
    let bytes = B64
        .decode(s.inner().trim())
        .map_err(|e| fail("decodeBase64", format!("not base64: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned().into())
}

fn basic_auth_encode(user: &CelString<'_>, pass: &CelString<'_>) -> CelString<'static> {
    format!(
        "Basic {}",
        B64.encode(format!("{}:{}", user.inner(), pass.inner()))
    )
    .into()
}

fn is_json(s: &CelString<'_>) -> CelBool {
    CelBool::from(serde_json::from_str::<serde::de::IgnoredAny>(s.inner()).is_ok())
}

fn value_of(v: &dyn Val) -> Result<Value, ExecutionError> {
    v.try_into()
}

fn owned<'b, 'v>(v: Value) -> Ret<'b, 'v> {
    let boxed: Box<dyn Val> = v.try_into()?;
    Ok(CowVal::Owned(boxed))
}

fn string_arg(function: &str, v: &dyn Val) -> Result<String, ExecutionError> {
    match value_of(v)? {
        Value::String(s) => Ok(s.as_str().to_owned()),
        other => Err(fail(
            function,
            format!("expected a string, got {:?}", other.type_of()),
        )),
    }
}

fn decode_json<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let text = string_arg("decodeJson", &*args[0])?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| fail("decodeJson", format!("invalid JSON: {e}")))?;
    owned(super::cel::from_json(&json))
}

fn encode_json<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let json = super::cel::to_json(&value_of(&*args[0])?);
    Ok(CowVal::owned(CelString::from(json.to_string())))
}

/// Go's `url.QueryEscape`: unreserved characters stay, a space is `+`, the rest `%XX`.
fn url_escape(s: &CelString<'_>) -> CelString<'static> {
    query_escape(s.inner()).into()
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) => out.push(b as char),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `url.QueryUnescape`: `+` is a space; a `%` not followed by two hex digits is an error.
fn url_unescape(s: &CelString<'_>) -> Result<CelString<'static>, ExecutionError> {
    query_unescape(s.inner())
        .map(CelString::from)
        .map_err(|e| fail("url.unescape", e))
}

fn query_unescape(s: &str) -> Result<String, BadEscape> {
    check_escapes(s)?;
    Ok(super::request::unescape(s))
}

/// A `%` not followed by two hex digits, which Go's decoders refuse.
#[derive(Debug, thiserror::Error)]
#[error("invalid escape at byte {at} of {text:?}")]
struct BadEscape {
    at: usize,
    text: String,
}

fn check_escapes(s: &str) -> Result<(), BadEscape> {
    let bytes = s.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'%') {
        let ok = bytes
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if !ok {
            return Err(BadEscape {
                at: i,
                text: s.to_owned(),
            });
        }
    }
    Ok(())
}

/// An absolute URL with a scheme and a host.
fn is_url(s: &CelString<'_>) -> CelBool {
    CelBool::from(
        reqwest::Url::parse(s.inner()).is_ok_and(|u| u.has_host() && !u.cannot_be_a_base()),
    )
}

/// Go's `url.Values.Encode`: keys sorted, each value of a list as its own pair.
fn query_encode<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let Value::Map(m) = value_of(&*args[0])? else {
        return Err(fail("queryString.encode", "expected a map"));
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in m.map.iter() {
        let key = match k {
            Key::String(s) => s.as_str().to_owned(),
            other => format!("{other:?}"),
        };
        let values: Vec<Value> = match v {
            Value::List(l) => l.iter().cloned().collect(),
            other => vec![other.clone()],
        };
        for v in values {
            let text = match v {
                Value::String(s) => s.as_str().to_owned(),
                other => super::cel::to_json(&other).to_string(),
            };
            pairs.push((key.clone(), text));
        }
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let text = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect::<Vec<_>>()
        .join("&");
    Ok(CowVal::owned(CelString::from(text)))
}

fn parse_query(s: &str) -> Result<Vec<(String, String)>, BadEscape> {
    let s = s.trim_start_matches('?');
    check_escapes(s)?;
    Ok(super::request::query_pairs(s))
}

/// `map<string, list<string>>`, in the order keys first appear.
fn query_decode<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let text = string_arg("queryString.decode", &*args[0])?;
    let pairs = parse_query(&text).map_err(|e| fail("queryString.decode", e))?;
    let mut grouped: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in pairs {
        match grouped.iter_mut().find(|(key, _)| *key == k) {
            Some((_, list)) => list.push(Value::from(v)),
            None => grouped.push((k, vec![Value::from(v)])),
        }
    }
    let map: std::collections::HashMap<Key, Value> = grouped
        .into_iter()
        .map(|(k, v)| (Key::from(k), Value::List(Arc::new(v))))
        .collect();
    owned(Value::Map(Map { map: Arc::new(map) }))
}

fn is_query_string(s: &CelString<'_>) -> CelBool {
    CelBool::from(s.inner().contains('=') && parse_query(s.inner()).is_ok())
}

const HASHES: &[&str] = &[
    "crc32", "crc64", "md5", "sha1", "sha256", "sha512", "xxhash64",
];

/// The overload for `hash.<name>(s [, "hex"|"base64"])` and `s.<name>([…])`.
fn hash_fn(name: &'static str) -> cel::common::functions::Function {
    match name {
        "crc32" => |a| hash_with("crc32", a),
        "crc64" => |a| hash_with("crc64", a),
        "md5" => |a| hash_with("md5", a),
        "sha1" => |a| hash_with("sha1", a),
        "sha256" => |a| hash_with("sha256", a),
        "sha512" => |a| hash_with("sha512", a),
        _ => |a| hash_with("xxhash64", a),
    }
}

/// The digest of `s` by `name`: checksums as big-endian bytes, as Go's `hash.Hash.Sum` gives.
pub fn digest(name: &str, s: &[u8]) -> Vec<u8> {
    use aws_lc_rs::digest as d;
    match name {
        "crc32" => crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC)
            .checksum(s)
            .to_be_bytes()
            .to_vec(),
        "crc64" => crc::Crc::<u64>::new(&crc::CRC_64_GO_ISO)
            .checksum(s)
            .to_be_bytes()
            .to_vec(),
        "md5" => {
            use md5::Digest as _;
            md5::Md5::digest(s).to_vec()
        }
        "sha1" => d::digest(&d::SHA1_FOR_LEGACY_USE_ONLY, s).as_ref().to_vec(),
        "sha256" => d::digest(&d::SHA256, s).as_ref().to_vec(),
        "sha512" => d::digest(&d::SHA512, s).as_ref().to_vec(),
        _ => xxhash_rust::xxh64::xxh64(s, 0).to_be_bytes().to_vec(),
    }
}

fn hash_with<'b, 'v>(name: &str, args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let function = format!("hash.{name}");
    let input = string_arg(&function, &*args[0])?;
    let format = match args.get(1) {
        Some(f) => string_arg(&function, &**f)?,
        None => "hex".into(),
    };
    let sum = digest(name, input.as_bytes());
    let text = match format.as_str() {
        "hex" => sum.iter().map(|b| format!("{b:02x}")).collect(),
        "base64" => B64.encode(&sum),
        other => {
            return Err(fail(
                &function,
                format!("unknown format {other:?}: use \"hex\" or \"base64\""),
            ));
        }
    };
    Ok(CowVal::owned(CelString::from(text)))
}

fn rand_double() -> CelDouble {
    CelDouble::from(rand::random::<f64>())
}

fn rand_int() -> CelInt {
    CelInt::from(rand::random_range(0..=1i64))
}

fn rand_int_range(min: &CelInt, max: &CelInt) -> Result<CelInt, ExecutionError> {
    let (lo, hi) = (*min.inner(), *max.inner());
    if lo > hi {
        return Err(fail("rand.int", format!("min {lo} is above max {hi}")));
    }
    Ok(CelInt::from(rand::random_range(lo..=hi)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str) -> Result<Value, ExecutionError> {
        let mut env = Env::stdlib();
        register(&mut env).unwrap();
        let ctx = cel::Context::with_env(Arc::new(env));
        cel::Program::compile(src).unwrap().execute(&ctx)
    }

    fn s(src: &str) -> String {
        match eval(src) {
            Ok(Value::String(s)) => s.as_str().to_owned(),
            other => panic!("{src}: {other:?}"),
        }
    }

    #[test]
    fn hashes_match_known_digests_in_hex_and_base64() {
        assert_eq!(
            s("hash.sha256('abc')"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(s("'abc'.md5()"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            s("hash.sha1('abc')"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(s("hash.crc32('123456789')"), "cbf43926");
        assert_eq!(s("hash.crc64('123456789')"), "b90956c775a41001");
        assert_eq!(s("hash.xxhash64('')"), "ef46db3751d8e999");
        assert_eq!(
            s("hash.sha256('abc', 'base64')"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        assert_eq!(s("'abc'.sha512()").len(), 128);
        assert!(eval("hash.sha256('abc', 'octal')").is_err());
    }

    #[test]
    fn encoders_json_urls_and_query_strings() {
        assert_eq!(s("'hello'.encodeBase64()"), "aGVsbG8=");
        assert_eq!(s("'aGVsbG8='.decodeBase64()"), "hello");
        assert_eq!(s("base64.encode(b'hello')"), "aGVsbG8=");
        assert_eq!(s("basic_auth.encode('user', 'p:ss')"), "Basic dXNlcjpwOnNz");
        assert!(matches!(
            eval("'{\"a\": 1}'.isJson()"),
            Ok(Value::Bool(true))
        ));
        assert!(matches!(eval("'{a'.isJson()"), Ok(Value::Bool(false))));
        assert!(matches!(
            eval("'{\"a\": [1]}'.decodeJson().a[0] == 1"),
            Ok(Value::Bool(true))
        ));
        assert_eq!(s("[1, 'x'].encodeJson()"), "[1,\"x\"]");
        assert_eq!(s("url.escape('a b/c?d=é')"), "a+b%2Fc%3Fd%3D%C3%A9");
        assert_eq!(s("'a+b%2Fc'.unescapeUrl()"), "a b/c");
        assert!(eval("url.unescape('%zz')").is_err());
        assert!(matches!(
            eval("'https://x.example/p'.isURL()"),
            Ok(Value::Bool(true))
        ));
        assert!(matches!(
            eval("'not a url'.isURL()"),
            Ok(Value::Bool(false))
        ));
        assert_eq!(
            s("queryString.encode({'b': ['2', '3'], 'a': 'x y'})"),
            "a=x+y&b=2&b=3"
        );
        assert!(matches!(
            eval("queryString.decode('a=1&b=2&a=3').a == ['1', '3']"),
            Ok(Value::Bool(true))
        ));
        assert!(matches!(
            eval("'a=1'.isQueryString()"),
            Ok(Value::Bool(true))
        ));
    }

    #[test]
    fn random_numbers_stay_in_their_range_and_lists_and_math_are_there() {
        for _ in 0..50 {
            assert!(matches!(
                eval("rand.int(3, 5) >= 3 && rand.int(3, 5) <= 5"),
                Ok(Value::Bool(true))
            ));
            assert!(matches!(eval("rand.double() < 1.0"), Ok(Value::Bool(true))));
        }
        assert!(eval("rand.int(5, 3)").is_err());
        assert!(matches!(
            eval("[3, 1, 2].sort() == [1, 2, 3]"),
            Ok(Value::Bool(true))
        ));
        assert!(matches!(
            eval("math.ceil(1.2) == 2.0"),
            Ok(Value::Bool(true))
        ));
    }
}
