//! The evaluator: rules in order, expressions AND-ed, actions in order, until a terminating
//! action, a failing guard, or `ai-gateway`.
//!
//! Pure: it reads a [`RequestView`], the clock and the rate-limit counters it is given, and
//! returns decisions. `serve` applies them, `explain` and `aigw test` print and check them.
//!
//! **Errors fail closed.** A rule expression that cannot be evaluated (a missing header indexed
//! with `[0]`, a type mismatch), or an action whose `${…}` or `bucket_key` fails, stops the
//! phase with a 500 naming the expression (ngrok's ERR_NGROK_2253 / 2254): a request never
//! slips past a guard because the guard's expression failed.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cel::objects::Value;

use super::cel::{EvalError, Expr, Scope, display, map, parse_cidr};
use super::jwt::{Check, JwtError, KeyStore, verify};
use super::program::JwtValidation;
use super::program::{Action, Program, Rewrite, Rule, Step, Tree};
use super::rate::{RateState, Verdict};
use super::request::{RequestView, ResponseView};
use super::template::Template;

/// The inputs an evaluation takes besides the request: the clock and shared state.
#[derive(Clone, Copy)]
pub struct Ports<'a> {
    pub rate: &'a dyn RateState,
    /// Key sets for `jwt-validation`.
    pub keys: &'a dyn KeyStore,
    /// Time since the Unix epoch.
    pub now: Duration,
}

/// A response the policy makes instead of the upstream's.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Respond {
        status: u16,
        /// Names lower-cased.
        headers: Vec<(String, String)>,
        body: String,
    },
    /// `close-connection`: drop the client connection without a response.
    Close,
}

impl Reply {
    fn text(status: u16, body: String) -> Reply {
        Reply::Respond {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body,
        }
    }
}

/// What happened to one action.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ActionTrace {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// One line: `ran`, `denied 429`, `error: …`.
    pub outcome: Cow<'static, str>,
}

/// What happened to one rule.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RuleTrace {
    /// 1-based position in its phase.
    pub index: usize,
    pub name: Option<Arc<str>>,
    /// `true` when every expression held; `false` also when one failed (see `error`).
    pub matched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub actions: Vec<ActionTrace>,
}

/// Where a request phase stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// Every rule ran: the request goes upstream (through aigw's routing).
    End,
    /// At an `ai-gateway` action: the request goes upstream; `resume` runs the actions after
    /// it if the gateway fails and the action says `on_error: continue`.
    AiGateway { resume: Option<Resume> },
    /// The policy answers.
    Reply(Reply),
}

/// Where to pick a request phase up again after `ai-gateway` fails with `on_error: continue`.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    rule: usize,
    action: usize,
}

/// The decisions of a request phase.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub stop: Stop,
    /// Header edits for the upstream request, in order (`add-headers` appends).
    pub edits: Vec<HeaderEdit>,
    /// `log` actions' metadata, for aigw's structured log.
    pub logs: Vec<serde_json::Value>,
    /// `url-rewrite`: the path and query the request goes on with.
    pub rewrite: Option<String>,
    pub trace: Vec<RuleTrace>,
    /// The evaluation state (`vars`, `actions.ngrok.*`), kept for `resume` and the response
    /// phase.
    pub scope: Scope,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HeaderEdit {
    Add(String, String),
    Remove(String),
}

impl Program {
    /// Runs `on_http_request` for `req`.
    pub fn on_request(&self, req: &Arc<RequestView>, ports: Ports<'_>) -> Outcome {
        let mut run = Run::new(Scope::new(req.clone(), ports.now), ports);
        let stop = run.rules(&self.request, 0, 0);
        run.finish(stop)
    }

    /// Continues a request phase after `ai-gateway` failed (`on_error: continue`), with
    /// `actions.ngrok.ai_gateway.error.{code,message}` set.
    pub fn resume(
        &self,
        from: &Resume,
        mut scope: Scope,
        ports: Ports<'_>,
        code: &str,
        message: &str,
    ) -> Outcome {
        scope.actions.insert(
            "ai_gateway",
            map([(
                "error",
                map([
                    ("code", Value::from(code)),
                    ("message", Value::from(message)),
                ]),
            )]),
        );
        let mut run = Run::new(scope, ports);
        let stop = run.rules(&self.request, from.rule, from.action + 1);
        run.finish(stop)
    }

    /// Runs `on_http_response` on `res`, with the request phase's scope. `Stop::Reply`
    /// replaces the response; header edits apply to it.
    pub fn on_response(&self, mut scope: Scope, res: &ResponseView, ports: Ports<'_>) -> Outcome {
        scope.res = res.to_value();
        // set-vars values are scoped to the phase that set them.
        scope.vars.clear();
        let mut run = Run::new(scope, ports);
        let stop = run.rules(&self.response, 0, 0);
        run.finish(stop)
    }
}

struct Run<'a> {
    scope: Scope,
    rewrite: Option<String>,
    ports: Ports<'a>,
    edits: Vec<HeaderEdit>,
    logs: Vec<serde_json::Value>,
    trace: Vec<RuleTrace>,
}

/// An action's result: go on, or stop the phase.
enum Next {
    Go(Cow<'static, str>),
    Stop(Stop, Cow<'static, str>),
}

impl<'a> Run<'a> {
    fn new(scope: Scope, ports: Ports<'a>) -> Run<'a> {
        Run {
            rewrite: None,
            scope,
            ports,
            edits: Vec::new(),
            logs: Vec::new(),
            trace: Vec::new(),
        }
    }

    fn finish(self, stop: Stop) -> Outcome {
        Outcome {
            stop,
            edits: self.edits,
            logs: self.logs,
            rewrite: self.rewrite,
            trace: self.trace,
            scope: self.scope,
        }
    }

    fn rules(&mut self, rules: &[Rule], first: usize, first_action: usize) -> Stop {
        for (i, rule) in rules.iter().enumerate().skip(first) {
            let mut t = RuleTrace {
                index: i + 1,
                name: rule.name.clone(),
                matched: true,
                error: None,
                actions: Vec::new(),
            };
            // A resumed rule already matched.
            if i != first || first_action == 0 {
                for e in &rule.expressions {
                    match e.eval_bool(&self.scope) {
                        Ok(true) => {}
                        Ok(false) => {
                            t.matched = false;
                            break;
                        }
                        Err(error) => {
                            let text = format!(
                                "the expression `{}` could not be evaluated: {error}",
                                e.source
                            );
                            t.matched = false;
                            t.error = Some(text.clone());
                            self.trace.push(t);
                            return Stop::Reply(failed(&text, "ERR_NGROK_2253"));
                        }
                    }
                }
            }
            if !t.matched {
                self.trace.push(t);
                continue;
            }
            let start = if i == first { first_action } else { 0 };
            for (j, action) in rule.actions.iter().enumerate().skip(start) {
                match self.action(action, i, j) {
                    Next::Go(outcome) => t.actions.push(ActionTrace {
                        kind: action.kind,
                        outcome,
                    }),
                    Next::Stop(stop, outcome) => {
                        t.actions.push(ActionTrace {
                            kind: action.kind,
                            outcome,
                        });
                        self.trace.push(t);
                        return stop;
                    }
                }
            }
            self.trace.push(t);
        }
        Stop::End
    }

    fn render(&self, t: &Template) -> Result<String, EvalError> {
        t.render(&self.scope)
    }

    fn set_result(&mut self, result: &'static str, v: Value) {
        self.scope.actions.insert(result, v);
    }

    fn action(&mut self, a: &Action, rule: usize, index: usize) -> Next {
        match self.step(a, rule, index) {
            Ok(next) => next,
            Err(error) => {
                let text = format!("`{}` failed: {error}", a.kind);
                Next::Stop(
                    Stop::Reply(failed(&text, "ERR_NGROK_2254")),
                    format!("error: {error}").into(),
                )
            }
        }
    }

    /// Runs one action with the method for its kind.
    fn step(&mut self, a: &Action, rule: usize, index: usize) -> Result<Next, EvalError> {
        let kind = a.result;
        Ok(match &a.step {
            Step::SetVars(vars) => self.set_vars(vars)?,
            Step::AddHeaders(headers) => self.add_headers(kind, headers)?,
            Step::RemoveHeaders(names) => self.remove_headers(kind, names),
            Step::CustomResponse {
                status,
                body,
                headers,
            } => self.custom_response(*status, body, headers)?,
            Step::Deny { status } => Next::Stop(
                Stop::Reply(Reply::Respond {
                    status: *status,
                    headers: Vec::new(),
                    body: String::new(),
                }),
                format!("denied {status}").into(),
            ),
            Step::Rewrite(r) => self.rewrite(kind, r)?,
            Step::CloseConnection => {
                Next::Stop(Stop::Reply(Reply::Close), "closed the connection".into())
            }
            Step::RestrictIps {
                allow,
                deny,
                enforce,
            } => self.restrict_ips(kind, allow, deny, *enforce)?,
            Step::BasicAuth {
                credentials,
                realm,
                enforce,
            } => self.basic_auth(kind, credentials, realm, *enforce)?,
            Step::RateLimit {
                name,
                capacity,
                window,
                bucket_key,
                enforce,
            } => self.rate_limit(kind, name, *capacity, *window, bucket_key, *enforce)?,
            Step::Log { metadata } => self.log(kind, metadata)?,
            Step::JwtValidation(j) => self.jwt_validation(kind, j)?,
            Step::AiGateway { continue_on_error } => Next::Stop(
                Stop::AiGateway {
                    resume: continue_on_error.then_some(Resume {
                        rule,
                        action: index,
                    }),
                },
                "forwarded upstream".into(),
            ),
        })
    }

    fn set_vars(&mut self, vars: &[(String, Tree)]) -> Result<Next, EvalError> {
        for (name, tree) in vars {
            let v = tree.value(&self.scope)?;
            self.scope.vars.insert(name.clone(), v);
        }
        Ok(Next::Go("ran".into()))
    }

    fn add_headers(
        &mut self,
        kind: &'static str,
        headers: &[(String, Template)],
    ) -> Result<Next, EvalError> {
        let mut added = Vec::new();
        for (name, t) in headers {
            let v = self.render(t)?;
            added.push((name.clone(), Value::from(v.as_str())));
            self.edits.push(HeaderEdit::Add(name.clone(), v));
        }
        self.set_result(
            kind,
            map([(
                "headers_added",
                map(added.iter().map(|(k, v)| (k.as_str(), v.clone()))),
            )]),
        );
        Ok(Next::Go("ran".into()))
    }

    fn remove_headers(&mut self, kind: &'static str, names: &[String]) -> Next {
        for n in names {
            self.edits.push(HeaderEdit::Remove(n.clone()));
        }
        let list: Vec<Value> = names.iter().map(|n| Value::from(n.as_str())).collect();
        self.set_result(kind, map([("headers_removed", Value::from(list))]));
        Next::Go("ran".into())
    }

    fn custom_response(
        &mut self,
        status: u16,
        body: &Template,
        headers: &[(String, Template)],
    ) -> Result<Next, EvalError> {
        let body = self.render(body)?;
        let mut hs = Vec::new();
        for (n, t) in headers {
            hs.push((n.clone(), self.render(t)?));
        }
        if !hs.iter().any(|(n, _)| n == "content-type") && !body.is_empty() {
            let ct = if body.trim_start().starts_with(['{', '[']) {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            hs.push(("content-type".into(), ct.into()));
        }
        Ok(Next::Stop(
            Stop::Reply(Reply::Respond {
                status,
                headers: hs,
                body,
            }),
            format!("responded {status}").into(),
        ))
    }

    /// `redirect` answers with the new URL; `url-rewrite` sends the request on to it (and the
    /// rules after it see it). An unchanged URL does neither.
    fn rewrite(&mut self, kind: &'static str, r: &Rewrite) -> Result<Next, EvalError> {
        let url = self.scope.request.raw_url();
        let to = self.render(&r.to)?;
        let (result, matches) = match &r.from {
            None => (to, vec![Value::from(url.as_str())]),
            Some(t) => {
                let compiled;
                let re = match &r.regex {
                    Some(re) => re,
                    None => {
                        compiled = regex::Regex::new(&self.render(t)?)
                            .map_err(|e| EvalError::Regex(super::program::regex_error(&e)))?;
                        &compiled
                    }
                };
                let matches = re
                    .find_iter(&url)
                    .map(|m| Value::from(m.as_str()))
                    .collect();
                (re.replace_all(&url, to.as_str()).into_owned(), matches)
            }
        };
        self.set_result(
            kind,
            map([
                ("matches", Value::from(matches)),
                ("url", Value::from(result.as_str())),
            ]),
        );
        if result == url {
            return Ok(Next::Go("unchanged".into()));
        }
        let Some((status, headers)) = &r.redirect else {
            let uri = Arc::make_mut(&mut self.scope.request).set_url(&result);
            // The request the interpreter holds is the old one.
            self.scope.fixed = Default::default();
            self.rewrite = Some(uri.clone());
            return Ok(Next::Go(format!("rewrote to {uri}").into()));
        };
        let mut hs = Vec::with_capacity(headers.len() + 1);
        for (n, t) in headers {
            hs.push((n.clone(), self.render(t)?));
        }
        hs.push(("location".into(), result.clone()));
        Ok(Next::Stop(
            Stop::Reply(Reply::Respond {
                status: *status,
                headers: hs,
                body: String::new(),
            }),
            format!("redirected {status} to {result}").into(),
        ))
    }

    fn restrict_ips(
        &mut self,
        kind: &'static str,
        allow: &[Template],
        deny: &[Template],
        enforce: bool,
    ) -> Result<Next, EvalError> {
        let ip = self.scope.request.client.ip();
        let matched = self.first_containing(allow, ip)?;
        let denied = self.first_containing(deny, ip)?;
        // Allowed: in an allowed range (when there are any) and in no denied one.
        let allowed = denied.is_none() && (allow.is_empty() || matched.is_some());
        let verdict = if allowed { "allow" } else { "deny" };
        let cidr = denied.or(matched).unwrap_or_default();
        self.set_result(
            kind,
            map([
                ("action", Value::from(verdict)),
                ("matched_cidr", Value::from(cidr.as_str())),
            ]),
        );
        if !allowed && enforce {
            return Ok(Next::Stop(
                Stop::Reply(Reply::text(
                    403,
                    format!("The client IP {ip} is not allowed by the policy (ERR_NGROK_3205)"),
                )),
                format!("denied 403 ({ip})").into(),
            ));
        }
        Ok(Next::Go(format!("{verdict} {ip}").into()))
    }

    /// The first of `cidrs` that contains `ip`, rendered.
    fn first_containing(
        &self,
        cidrs: &[Template],
        ip: IpAddr,
    ) -> Result<Option<String>, EvalError> {
        for t in cidrs {
            let c = self.render(t)?;
            if parse_cidr(&c).is_some_and(|n| n.contains(&ip)) {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Every listed token must be present, signed by a key of the sets and carry an allowed
    /// issuer and audience; else 401.
    fn jwt_validation(&mut self, kind: &'static str, j: &JwtValidation) -> Result<Next, EvalError> {
        let render_all = |me: &Self, ts: &[Template]| -> Result<Vec<String>, EvalError> {
            ts.iter().map(|t| me.render(t)).collect()
        };
        let (issuers, audiences) = (
            render_all(self, &j.issuers)?,
            render_all(self, &j.audiences)?,
        );
        let check = Check {
            algorithms: &j.algorithms,
            issuers: &issuers,
            audiences: &audiences,
            now: self.ports.now.as_secs(),
        };
        let (mut sets, mut unavailable) = (Vec::new(), Vec::new());
        for source in &j.sources {
            match self.ports.keys.keys(source) {
                Ok(set) => sets.push(set),
                Err(why) => unavailable.push(why),
            }
        }
        let mut tokens = Vec::new();
        let mut refused: Option<String> = None;
        for t in &j.tokens {
            let name = self.render(&t.name)?;
            let prefix = t.prefix.as_ref().map(|p| self.render(p)).transpose()?;
            let Some(value) = self.scope.request.header_values(&name).next() else {
                refused = Some(format!("no `{name}` header carries a token"));
                break;
            };
            let token = match &prefix {
                Some(p) => value
                    .get(..p.len())
                    .filter(|head| head.eq_ignore_ascii_case(p))
                    .map(|_| &value[p.len()..]),
                None => Some(value),
            };
            let Some(token) = token.map(str::trim) else {
                refused = Some(format!(
                    "the `{name}` header does not start with `{}`",
                    prefix.unwrap_or_default()
                ));
                break;
            };
            if sets.is_empty() {
                refused = Some(unavailable.join("; "));
                break;
            }
            match verify(token, &sets, &check) {
                Ok(v) => tokens.push(map([
                    ("header", super::cel::from_json(&v.header)),
                    ("payload", super::cel::from_json(&v.payload)),
                    ("signature", Value::from(v.signature)),
                    ("location", Value::from("header")),
                    ("location_property", Value::from(name)),
                    ("verified", Value::Bool(true)),
                ])),
                Err(e) => {
                    if matches!(e, JwtError::NoKey { .. }) {
                        j.sources
                            .iter()
                            .for_each(|s| self.ports.keys.missing_key(s));
                    }
                    refused = Some(e.to_string());
                    break;
                }
            }
        }
        let mut result = vec![("tokens", Value::List(std::sync::Arc::new(tokens)))];
        if let Some(why) = &refused {
            result.push((
                "error",
                map([
                    ("code", Value::from("AIGW_JWT_INVALID")),
                    ("message", Value::from(why.as_str())),
                ]),
            ));
        }
        self.set_result(kind, map(result));
        let Some(why) = refused else {
            return Ok(Next::Go("token verified".into()));
        };
        Ok(Next::Stop(
            Stop::Reply(Reply::Respond {
                status: 401,
                headers: vec![
                    (
                        "www-authenticate".into(),
                        "Bearer error=\"invalid_token\"".into(),
                    ),
                    ("content-type".into(), "text/plain; charset=utf-8".into()),
                ],
                body: format!("Unauthorized: the JWT was refused: {why}"),
            }),
            format!("denied 401 ({why})").into(),
        ))
    }

    fn basic_auth(
        &mut self,
        kind: &'static str,
        credentials: &[Template],
        realm: &str,
        enforce: bool,
    ) -> Result<Next, EvalError> {
        let presented = self
            .scope
            .request
            .header_values("authorization")
            .find_map(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
            })
            .and_then(decode_basic);
        let mut authorized = false;
        if let Some((user, pass)) = &presented {
            for t in credentials {
                let c = self.render(t)?;
                if let Some((u, p)) = c.split_once(':') {
                    authorized |= ct_eq(u, user) & ct_eq(p, pass);
                }
            }
        }
        let username = presented.as_ref().map_or("", |(u, _)| u.as_str());
        self.set_result(
            kind,
            map([(
                "credentials",
                map([
                    ("presented", Value::Bool(presented.is_some())),
                    ("username", Value::from(username)),
                    ("authorized", Value::Bool(authorized)),
                ]),
            )]),
        );
        if !authorized && enforce {
            return Ok(Next::Stop(
                Stop::Reply(Reply::Respond {
                    status: 401,
                    headers: vec![
                        (
                            "www-authenticate".into(),
                            format!("Basic realm=\"{realm}\""),
                        ),
                        ("content-type".into(), "text/plain; charset=utf-8".into()),
                    ],
                    body:
                        "Unauthorized: valid basic-auth credentials are required (ERR_NGROK_3401)"
                            .into(),
                }),
                "denied 401".into(),
            ));
        }
        Ok(Next::Go(
            if authorized {
                "authorized"
            } else {
                "not authorized"
            }
            .into(),
        ))
    }

    /// `rate-limit`: counts the request in the bucket its keys name.
    fn rate_limit(
        &mut self,
        kind: &'static str,
        name: &str,
        capacity: u64,
        window: Duration,
        bucket_key: &[Expr],
        enforce: bool,
    ) -> Result<Next, EvalError> {
        let mut parts = Vec::with_capacity(bucket_key.len());
        for k in bucket_key {
            let v = k.eval(&self.scope).map_err(|e| EvalError::BucketKey {
                expr: k.source.clone(),
                error: Box::new(e),
            })?;
            parts.push(display(&v));
        }
        let bucket = format!("{name}\u{0}{}", parts.join("\u{0}"));
        let verdict = self
            .ports
            .rate
            .hit(&bucket, capacity, window, self.ports.now);
        let limited = matches!(verdict, Verdict::Limited { .. });
        let keys: Vec<Value> = parts.iter().map(|p| Value::from(p.as_str())).collect();
        self.set_result(
            kind,
            map([
                ("bucket_key", Value::from(keys)),
                ("limited", Value::Bool(limited)),
            ]),
        );
        Ok(match verdict {
            Verdict::Limited { retry_after } if enforce => {
                let secs = retry_after.as_secs().max(1);
                Next::Stop(
                    Stop::Reply(Reply::Respond {
                        status: 429,
                        headers: vec![
                            ("retry-after".into(), secs.to_string()),
                            ("content-type".into(), "text/plain; charset=utf-8".into()),
                        ],
                        body: format!(
                            "Too many requests: the rate limit `{name}` allows {capacity} per {}; retry after {secs}s",
                            crate::policy::duration::format(window)
                        ),
                    }),
                    format!("limited 429 (retry after {secs}s)").into(),
                )
            }
            Verdict::Limited { .. } => Next::Go("over the limit (not enforced)".into()),
            Verdict::Allowed => Next::Go("within the limit".into()),
        })
    }

    fn log(&mut self, kind: &'static str, metadata: &[(String, Tree)]) -> Result<Next, EvalError> {
        let mut entries = Vec::new();
        for (k, t) in metadata {
            entries.push((k.as_str(), t.value(&self.scope)?));
        }
        let m = map(entries);
        self.logs.push(super::cel::to_json(&m));
        self.set_result(kind, map([("metadata", m)]));
        Ok(Next::Go("logged".into()))
    }
}

impl Tree {
    /// The value, every `${…}` evaluated against `scope`.
    pub fn value(&self, scope: &Scope) -> Result<Value, EvalError> {
        Ok(match self {
            Tree::Str(t) => t.value(scope)?,
            Tree::Const(v) => v.clone(),
            Tree::List(items) => Value::from(
                items
                    .iter()
                    .map(|i| i.value(scope))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Tree::Map(entries) => {
                let mut out = Vec::new();
                for (k, v) in entries {
                    out.push((k.as_str(), v.value(scope)?));
                }
                map(out)
            }
        })
    }
}

/// The 500 of a failed evaluation: the request never reaches the upstream.
fn failed(text: &str, code: &str) -> Reply {
    Reply::text(
        500,
        format!("The traffic policy could not be evaluated ({code}): {text}"),
    )
}

/// `user:password` from a Basic credential.
fn decode_basic(b64: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Constant-time comparison (`subtle`), so a credential check leaks no prefix length.
fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
