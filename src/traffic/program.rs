//! A policy's rules compiled for the evaluator: every expression, `${…}` and action config
//! read once, at load, with a located diagnostic for each problem.

use super::jwt::KeySource;
use std::time::Duration;

use cel::objects::Value;

use super::cel::{CompileError, Expr, parse_cidr};
use super::template::Template;
use crate::policy::diagnostic::{Code, Diagnostic, did_you_mean};
use crate::policy::node::{Node, Span, Value as Yaml};
use crate::policy::secrets::SecretStore;
use crate::policy::{OnError, PhaseKind, TrafficPolicy, inner_span};

/// The compiled `on_http_request` and `on_http_response` rules.
#[derive(Debug, Clone, Default)]
pub struct Program {
    pub request: Vec<Rule>,
    pub response: Vec<Rule>,
}

impl Program {
    /// Whether evaluating would do anything besides reaching `ai-gateway`: serve skips the
    /// evaluator altogether when it would not.
    pub fn is_trivial(&self) -> bool {
        self.response.is_empty()
            && self.request.iter().all(|r| {
                r.expressions.is_empty()
                    && r.actions.iter().all(|a| {
                        matches!(
                            a.step,
                            Step::AiGateway {
                                continue_on_error: false
                            }
                        )
                    })
            })
    }
}

impl Program {
    /// The `additional_jkus` URLs of every `jwt-validation`, for serve to fetch.
    pub fn key_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = Vec::new();
        for a in self.request.iter().flat_map(|r| &r.actions) {
            if let Step::JwtValidation(j) = &a.step {
                for s in &j.sources {
                    if let KeySource::Url(u) = s
                        && !urls.contains(u)
                    {
                        urls.push(u.clone());
                    }
                }
            }
        }
        urls
    }

    /// Whether a request's rules may count it against a `rate-limit` (only the request phase
    /// has them).
    pub fn limits_rate(&self) -> bool {
        self.request.iter().any(|r| {
            r.actions
                .iter()
                .any(|a| matches!(a.step, Step::RateLimit { .. }))
        })
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// Shared with every trace of the rule.
    pub name: Option<std::sync::Arc<str>>,
    pub expressions: Vec<Expr>,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone)]
pub struct Action {
    /// The action type, e.g. `rate-limit`.
    pub kind: &'static str,
    /// Its result's name under `actions.ngrok`, e.g. `rate_limit`.
    pub result: &'static str,
    pub step: Step,
}

/// The action types aigw runs, with the name of their `actions.ngrok.<name>` result.
const RUN: &[(&str, &str)] = &[
    ("ai-gateway", "ai_gateway"),
    ("set-vars", "set_vars"),
    ("add-headers", "add_headers"),
    ("remove-headers", "remove_headers"),
    ("custom-response", "custom_response"),
    ("deny", "deny"),
    ("close-connection", "close_connection"),
    ("restrict-ips", "restrict_ips"),
    ("basic-auth", "basic_auth"),
    ("rate-limit", "rate_limit"),
    ("jwt-validation", "jwt_validation"),
    ("log", "log"),
    ("redirect", "redirect"),
    ("url-rewrite", "url_rewrite"),
];

/// A value of `set-vars`: strings are templates, the rest is kept as written.
#[derive(Debug, Clone)]
pub enum Tree {
    Str(Template),
    Const(Value),
    List(Vec<Tree>),
    Map(Vec<(String, Tree)>),
}

#[derive(Debug, Clone)]
pub enum Step {
    SetVars(Vec<(String, Tree)>),
    AddHeaders(Vec<(String, Template)>),
    RemoveHeaders(Vec<String>),
    CustomResponse {
        status: u16,
        body: Template,
        headers: Vec<(String, Template)>,
    },
    Deny {
        status: u16,
    },
    CloseConnection,
    /// `redirect` and `url-rewrite`.
    Rewrite(Box<Rewrite>),
    RestrictIps {
        allow: Vec<Template>,
        deny: Vec<Template>,
        enforce: bool,
    },
    BasicAuth {
        credentials: Vec<Template>,
        realm: String,
        enforce: bool,
    },
    RateLimit {
        name: String,
        capacity: u64,
        window: Duration,
        bucket_key: Vec<Expr>,
        enforce: bool,
    },
    Log {
        metadata: Vec<(String, Tree)>,
    },
    AiGateway {
        continue_on_error: bool,
    },
    JwtValidation(Box<JwtValidation>),
}

/// `redirect` / `url-rewrite` compiled: every match of `from` in the request's whole URL
/// (all of it when there is no `from`) is replaced by `to`, which may name groups (`$1`).
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub from: Option<Template>,
    /// `from` compiled at load, when it has no `${…}` (else it is compiled per request, after
    /// interpolation).
    pub regex: Option<regex::Regex>,
    pub to: Template,
    /// `redirect`'s status and extra headers; `None` for `url-rewrite`.
    pub redirect: Option<(u16, Vec<(String, Template)>)>,
}

/// `jwt-validation` compiled: every listed token must be present and verify.
#[derive(Debug, Clone)]
pub struct JwtValidation {
    pub issuers: Vec<Template>,
    pub audiences: Vec<Template>,
    pub tokens: Vec<JwtToken>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub sources: Vec<KeySource>,
}

/// Where a token is read: a request header, without its `prefix`.
#[derive(Debug, Clone)]
pub struct JwtToken {
    pub name: Template,
    pub prefix: Option<Template>,
}

/// Actions aigw knows but does not run locally, with the reason given by `validate`.
fn not_run(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "oauth" | "openid-connect" | "oidc" | "saml" => {
            "it signs users in through ngrok's cloud identity service, which has no local equivalent"
        }
        "forward-internal" => {
            "it forwards to ngrok `.internal` endpoints, which exist only in ngrok's cloud"
        }
        "owasp-crs-request" | "owasp-crs-response" => "it needs ngrok's hosted Coraza WAF",
        "terminate-tls" => "aigw serves plain HTTP on 127.0.0.1; put a TLS proxy in front of it",
        "verify-webhook" | "http-request" | "circuit-breaker" => {
            "aigw does not run this action yet, and a policy must not look guarded when it is not"
        }
        _ => return None,
    })
}

/// Actions that change traffic without guarding it, which aigw skips with a warning.
fn skipped(kind: &str) -> bool {
    matches!(
        kind,
        "compress-response"
            | "request-body-find-replace"
            | "response-body-find-replace"
            | "sse-find-replace"
    )
}

/// Compiles `policy`; the diagnostics come back whatever happens.
pub fn compile(
    policy: &TrafficPolicy,
    text: &str,
    secrets: &SecretStore,
) -> (Program, Vec<Diagnostic>) {
    let mut cx = Cx::new(text, secrets);
    let mut program = Program::default();
    for phase in &policy.phases {
        let rules = match phase.kind {
            PhaseKind::OnHttpRequest => &mut program.request,
            PhaseKind::OnHttpResponse => &mut program.response,
            other => {
                if phase.rules.iter().any(|r| !r.actions.is_empty()) {
                    cx.diags.push(
                        Diagnostic::new(
                            Code::ActionSkipped,
                            phase.key_span.clone(),
                            format!("aigw does not run `{}` rules yet: they are skipped", other.name()),
                        )
                        .help(match other {
                            PhaseKind::OnTcpConnect => "move guards under `on_http_request` (restrict-ips, deny and log work there too)",
                            _ => "do not rely on them to redact streamed output locally",
                        }),
                    );
                }
                continue;
            }
        };
        for rule in &phase.rules {
            let expressions = rule
                .expressions
                .iter()
                .filter_map(|e| cx.expr(&e.value, &e.span))
                .collect();
            let actions = rule.actions.iter().filter_map(|a| cx.action(a)).collect();
            rules.push(Rule {
                name: rule.name.as_ref().map(|n| n.value.as_str().into()),
                expressions,
                actions,
            });
        }
    }
    (program, cx.diags)
}

pub(super) struct Cx<'a> {
    text: &'a str,
    secrets: &'a SecretStore,
    pub(super) diags: Vec<Diagnostic>,
}

/// An action's `config` as written, and where to report what is wrong with it.
struct Config<'n> {
    kind: &'n str,
    node: Option<&'n Node>,
    /// The whole action, for a config that is missing altogether.
    at: &'n Span,
}

impl<'a> Cx<'a> {
    pub(super) fn new(text: &'a str, secrets: &'a SecretStore) -> Cx<'a> {
        Cx {
            text,
            secrets,
            diags: Vec::new(),
        }
    }

    /// A `${…}` string the loader already read, at `span`.
    pub(super) fn template_at(&mut self, raw: &str, span: &Span) -> Option<Template> {
        match Template::compile(raw, self.secrets) {
            Ok(t) => Some(t),
            Err(errs) => {
                self.compile_errors(errs, raw, span, "invalid `${…}`");
                None
            }
        }
    }

    fn compile_errors(&mut self, errs: Vec<CompileError>, value: &str, span: &Span, what: &str) {
        for e in errs {
            let at = inner_span(self.text, span, value, e.range.clone());
            let mut d =
                Diagnostic::new(Code::PolicyExpression, at, format!("{what}: {}", e.message));
            if let Some(h) = e.help {
                d = d.help(h);
            }
            self.diags.push(d);
        }
    }

    fn expr(&mut self, source: &str, span: &Span) -> Option<Expr> {
        match Expr::compile(source, self.secrets) {
            Ok(e) => Some(e),
            Err(errs) => {
                self.compile_errors(errs, source, span, "invalid CEL expression");
                None
            }
        }
    }

    fn template(&mut self, node: &Node) -> Option<Template> {
        let s = self.string(node)?;
        self.template_at(s, &node.span)
    }

    fn string<'n>(&mut self, node: &'n Node) -> Option<&'n str> {
        match &node.value {
            Yaml::Str(s) => Some(s),
            other => {
                self.wrong(node, &format!("expected a string, found {}", other.kind()));
                None
            }
        }
    }

    fn wrong(&mut self, node: &Node, msg: &str) {
        self.diags.push(
            Diagnostic::new(Code::WrongType, node.span.clone(), msg.to_owned())
                .help("see the action's page in ngrok's Traffic Policy docs"),
        );
    }

    fn bad(&mut self, code: Code, span: &Span, msg: String, help: &str) {
        self.diags
            .push(Diagnostic::new(code, span.clone(), msg).help(help.to_owned()));
    }

    /// The config's fields, each unknown one reported once with a suggestion.
    fn fields<'n>(
        &mut self,
        c: &Config<'n>,
        allowed: &[&str],
        required: &[&str],
    ) -> Option<Vec<(&'n str, &'n Node)>> {
        let (kind, config) = (c.kind, c.node);
        let entries: &[(crate::policy::node::Key, Node)] = match config.map(|n| &n.value) {
            None | Some(Yaml::Null) => &[],
            Some(Yaml::Map(entries)) => entries,
            Some(other) => {
                let node = config.expect("matched Some");
                self.wrong(
                    node,
                    &format!("`{kind}` config must be a mapping, found {}", other.kind()),
                );
                return None;
            }
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            if allowed.contains(&k.text.as_str()) {
                out.push((k.text.as_str(), v));
                continue;
            }
            let mut d = Diagnostic::new(
                Code::UnknownField,
                k.span.clone(),
                format!("unknown field `{}` in the `{kind}` config", k.text),
            );
            d = match did_you_mean(&k.text, allowed.iter().copied()) {
                Some(s) => d.label(format!("did you mean `{s}`?")),
                None => d.label("unknown field"),
            };
            self.diags
                .push(d.help(format!("`{kind}` takes {}", allowed.join(", "))));
        }
        for r in required {
            if !entries.iter().any(|(k, _)| k.text == *r) {
                self.diags.push(
                    Diagnostic::new(
                        Code::MissingField,
                        config.map_or(c.at.clone(), |n| n.span.clone()),
                        format!("`{kind}` needs `{r}`"),
                    )
                    .help(format!("`{kind}` takes {}", allowed.join(", "))),
                );
            }
        }
        Some(out)
    }

    fn bool_field(&mut self, node: &Node) -> Option<bool> {
        match node.value {
            Yaml::Bool(b) => Some(b),
            _ => {
                self.wrong(
                    node,
                    &format!("expected true or false, found {}", node.value.kind()),
                );
                None
            }
        }
    }

    fn int_field(&mut self, node: &Node, min: i64, max: i64, what: &str) -> Option<i64> {
        match node.value {
            Yaml::Int(n) if (min..=max).contains(&n) => Some(n),
            Yaml::Int(n) => {
                self.bad(
                    Code::ActionConfig,
                    &node.span,
                    format!("{what} {n} is outside {min}..={max} (ERR_NGROK_2215)"),
                    &format!("use a value from {min} to {max}"),
                );
                None
            }
            _ => {
                self.wrong(
                    node,
                    &format!("{what} must be an integer, found {}", node.value.kind()),
                );
                None
            }
        }
    }

    fn list<'n>(&mut self, node: &'n Node, what: &str) -> &'n [Node] {
        match &node.value {
            Yaml::Seq(items) => items,
            other => {
                self.wrong(
                    node,
                    &format!("{what} must be a list, found {}", other.kind()),
                );
                &[]
            }
        }
    }

    fn header_map(&mut self, node: &Node, what: &str) -> Vec<(String, Template)> {
        let Yaml::Map(entries) = &node.value else {
            self.wrong(
                node,
                &format!("{what} must be a mapping of header names to values"),
            );
            return Vec::new();
        };
        if entries.len() > 10 {
            self.bad(
                Code::ActionConfig,
                &node.span,
                format!(
                    "{what} has {} entries; ngrok allows at most 10 (ERR_NGROK_2218)",
                    entries.len()
                ),
                "split them over two actions",
            );
        }
        entries
            .iter()
            .filter_map(|(k, v)| {
                if k.text.is_empty() || !k.text.bytes().all(is_token_byte) {
                    self.bad(
                        Code::ActionConfig,
                        &k.span,
                        format!("`{}` is not a valid header name (ERR_NGROK_2209)", k.text),
                        "header names are letters, digits and `-`",
                    );
                    return None;
                }
                Some((k.text.to_ascii_lowercase(), self.template(v)?))
            })
            .collect()
    }

    /// A config value; parts with no `${…}` are folded into constants, so a request only
    /// copies them.
    pub(super) fn tree(&mut self, node: &Node) -> Option<Tree> {
        let konst = |t: &Tree| match t {
            Tree::Const(v) => Some(v.clone()),
            _ => None,
        };
        Some(match &node.value {
            Yaml::Str(_) => {
                let t = self.template(node)?;
                match t.literal_text() {
                    Some(text) => Tree::Const(Value::from(text)),
                    None => Tree::Str(t),
                }
            }
            Yaml::Seq(items) => {
                let items: Vec<Tree> = items.iter().filter_map(|i| self.tree(i)).collect();
                match items.iter().map(konst).collect::<Option<Vec<_>>>() {
                    Some(values) => Tree::Const(Value::from(values)),
                    None => Tree::List(items),
                }
            }
            Yaml::Map(entries) => {
                let entries: Vec<(String, Tree)> = entries
                    .iter()
                    .filter_map(|(k, v)| Some((k.text.clone(), self.tree(v)?)))
                    .collect();
                let values = entries
                    .iter()
                    .map(|(k, t)| Some((k.as_str(), konst(t)?)))
                    .collect::<Option<Vec<_>>>();
                match values {
                    Some(values) => Tree::Const(super::cel::map(values)),
                    None => Tree::Map(entries),
                }
            }
            _ => Tree::Const(super::cel::from_json(&node.to_json())),
        })
    }

    fn status(&mut self, node: &Node, min: i64, max: i64) -> Option<u16> {
        self.int_field(node, min, max, "status_code")
            .map(|n| n as u16)
    }

    /// One action, its config read by the function for its kind.
    fn action(&mut self, a: &crate::policy::Action) -> Option<Action> {
        let kind = a.kind.value.as_str();
        if !self.runs_locally(kind, &a.kind.span) {
            return None;
        }
        let c = Config {
            kind,
            node: a.config.as_ref(),
            at: &a.span,
        };
        let Some(&(kind, result)) = RUN.iter().find(|(k, _)| *k == kind) else {
            // Unknown types were reported by the loader.
            return None;
        };
        let step = match kind {
            "ai-gateway" => Step::AiGateway {
                continue_on_error: a
                    .ai_gateway
                    .as_ref()
                    .and_then(|g| g.on_error.as_ref())
                    .is_some_and(|o| o.value == OnError::Continue),
            },
            "set-vars" => self.set_vars(&c)?,
            "add-headers" => self.add_headers(&c)?,
            "remove-headers" => self.remove_headers(&c)?,
            "custom-response" => self.custom_response(&c)?,
            "deny" => self.deny(&c)?,
            "close-connection" => {
                self.fields(&c, &[], &[])?;
                Step::CloseConnection
            }
            "restrict-ips" => self.restrict_ips(&c)?,
            "basic-auth" => self.basic_auth(&c)?,
            "rate-limit" => self.rate_limit(&c)?,
            "jwt-validation" => self.jwt_validation(&c)?,
            "log" => self.log(&c)?,
            "redirect" => self.rewrite(&c, true)?,
            "url-rewrite" => self.rewrite(&c, false)?,
            // Unknown types were reported by the loader.
            _ => return None,
        };
        Some(Action { kind, result, step })
    }

    /// Reports an action aigw knows but does not run (an error) or skips (a warning).
    fn runs_locally(&mut self, kind: &str, at: &Span) -> bool {
        if let Some(why) = not_run(kind) {
            self.diags.push(
                Diagnostic::new(
                    Code::NotRunLocally,
                    at.clone(),
                    format!("aigw cannot run `{kind}`: {why}"),
                )
                .label("not run locally")
                .help("remove the action, or serve this policy on ngrok"),
            );
            return false;
        }
        if skipped(kind) {
            self.diags.push(
                Diagnostic::new(
                    Code::ActionSkipped,
                    at.clone(),
                    format!("aigw does not run `{kind}` yet: requests and responses pass through it unchanged"),
                )
                .label("skipped")
                .help("fine for trying the rest of the policy locally; do not rely on it to redact or rewrite"),
            );
            return false;
        }
        true
    }

    fn set_vars(&mut self, c: &Config) -> Option<Step> {
        let f = self.fields(c, &["vars"], &["vars"])?;
        let mut vars = Vec::new();
        for (_, v) in f {
            for item in self.list(v, "`vars`") {
                match &item.value {
                    Yaml::Map(e) if e.len() == 1 => {
                        if let Some(t) = self.tree(&e[0].1) {
                            vars.push((e[0].0.text.clone(), t));
                        }
                    }
                    _ => self.bad(
                        Code::ActionConfig,
                        &item.span,
                        "each entry of `vars` must be a mapping with one key (ERR_NGROK_2252)"
                            .into(),
                        "write `- name: value`",
                    ),
                }
            }
        }
        Some(Step::SetVars(vars))
    }

    fn add_headers(&mut self, c: &Config) -> Option<Step> {
        let f = self.fields(c, &["headers"], &["headers"])?;
        let headers = f
            .iter()
            .flat_map(|(_, v)| self.header_map(v, "`headers`"))
            .collect();
        Some(Step::AddHeaders(headers))
    }

    fn remove_headers(&mut self, c: &Config) -> Option<Step> {
        let f = self.fields(c, &["headers"], &["headers"])?;
        let mut names = Vec::new();
        for (_, v) in f {
            for item in self.list(v, "`headers`") {
                if let Some(s) = self.string(item) {
                    names.push(s.to_ascii_lowercase());
                }
            }
        }
        Some(Step::RemoveHeaders(names))
    }

    fn custom_response(&mut self, c: &Config) -> Option<Step> {
        let f = self.fields(c, &["status_code", "body", "content", "headers"], &[])?;
        let (mut status, mut body, mut headers) = (200, Template::default_empty(), Vec::new());
        for (k, v) in f {
            match k {
                "status_code" => status = self.status(v, 100, 599)?,
                "body" | "content" => body = self.template(v)?,
                _ => headers = self.header_map(v, "`headers`"),
            }
        }
        Some(Step::CustomResponse {
            status,
            body,
            headers,
        })
    }

    /// `redirect` (`redirect: true`) or `url-rewrite`.
    fn rewrite(&mut self, c: &Config, redirect: bool) -> Option<Step> {
        let allowed: &[&str] = if redirect {
            &["from", "to", "status_code", "headers"]
        } else {
            &["from", "to"]
        };
        let f = self.fields(c, allowed, &["to"])?;
        let (mut from, mut to, mut status, mut headers) = (None, None, 302, Vec::new());
        let mut regex = None;
        for (k, v) in f {
            match k {
                "from" => {
                    let t = self.template(v)?;
                    if t.is_literal() {
                        match regex::Regex::new(&t.raw) {
                            Ok(r) => regex = Some(r),
                            Err(e) => {
                                self.bad(
                                    Code::ActionConfig,
                                    &v.span,
                                    format!(
                                        "`from` is not a regular expression (ERR_NGROK_2261): {}",
                                        regex_error(&e)
                                    ),
                                    "write an RE2 regular expression (Go's syntax), e.g. `^https?://[^/]+/old/(.*)$`",
                                );
                                return None;
                            }
                        }
                    }
                    from = Some(t);
                }
                "to" => to = Some(self.template(v)?),
                "status_code" => status = self.status(v, 300, 399)?,
                _ => headers = self.header_map(v, "`headers`"),
            }
        }
        Some(Step::Rewrite(Box::new(Rewrite {
            from,
            regex,
            to: to?,
            redirect: redirect.then_some((status, headers)),
        })))
    }

    fn deny(&mut self, c: &Config) -> Option<Step> {
        let f = self.fields(c, &["status_code"], &[])?;
        let mut status = 403;
        for (_, v) in f {
            status = self.status(v, 100, 599)?;
        }
        Some(Step::Deny { status })
    }

    fn restrict_ips(&mut self, c: &Config) -> Option<Step> {
        let f = self.fields(c, &["enforce", "allow", "deny", "ip_policies"], &[])?;
        let (mut allow, mut deny, mut enforce) = (Vec::new(), Vec::new(), true);
        for (k, v) in f {
            match k {
                "enforce" => enforce = self.bool_field(v)?,
                "ip_policies" => self.bad(
                    Code::NotRunLocally,
                    &v.span,
                    "`ip_policies` name IP policies kept in ngrok's cloud (ERR_NGROK_2216)".into(),
                    "list the CIDRs under `allow` or `deny` instead",
                ),
                "allow" => allow.extend(self.cidrs(v, k)),
                _ => deny.extend(self.cidrs(v, k)),
            }
        }
        if allow.is_empty() && deny.is_empty() {
            self.bad(
                Code::MissingField,
                c.at,
                "`restrict-ips` needs `allow` or `deny` CIDRs".into(),
                "add `allow: [127.0.0.0/8]` or `deny: [...]`",
            );
            return None;
        }
        Some(Step::RestrictIps {
            allow,
            deny,
            enforce,
        })
    }

    /// `allow` or `deny`: the CIDRs, each literal one checked now.
    fn cidrs(&mut self, node: &Node, what: &str) -> Vec<Template> {
        let mut out = Vec::new();
        for item in self.list(node, what) {
            let Some(t) = self.template(item) else {
                continue;
            };
            if t.is_literal() && parse_cidr(&t.raw).is_none() {
                self.bad(
                    Code::InvalidCidr,
                    &item.span,
                    format!("`{}` is not a CIDR", t.raw),
                    "write an address with a prefix length, e.g. `10.0.0.0/8` or `2001:db8::/32`",
                );
                continue;
            }
            out.push(t);
        }
        out
    }

    fn basic_auth(&mut self, c: &Config) -> Option<Step> {
        let f = self.fields(c, &["credentials", "realm", "enforce"], &["credentials"])?;
        let (mut credentials, mut realm, mut enforce) = (Vec::new(), "ngrok".to_owned(), true);
        for (k, v) in f {
            match k {
                "credentials" => credentials.extend(self.credentials(v)),
                "realm" => realm = self.string(v)?.to_owned(),
                _ => enforce = self.bool_field(v)?,
            }
        }
        Some(Step::BasicAuth {
            credentials,
            realm,
            enforce,
        })
    }

    /// `credentials`: at most 10, each literal one a `user:password` checked now.
    fn credentials(&mut self, node: &Node) -> Vec<Template> {
        let items = self.list(node, "`credentials`");
        if items.len() > 10 {
            self.bad(
                Code::ActionConfig,
                &node.span,
                format!(
                    "{} credentials; ngrok allows at most 10 (ERR_NGROK_15009)",
                    items.len()
                ),
                "keep at most 10",
            );
        }
        let mut out = Vec::new();
        for item in items {
            let Some(t) = self.template(item) else {
                continue;
            };
            if t.is_literal() {
                match t.raw.split_once(':') {
                    Some((u, p)) if !u.is_empty() && (8..=128).contains(&p.chars().count()) => {}
                    _ => {
                        self.bad(Code::ActionConfig, &item.span, "a credential must be `user:password` with a password of 8 to 128 characters (ERR_NGROK_15008)".into(), "write `- \"alice:a-long-password\"`");
                        continue;
                    }
                }
            }
            out.push(t);
        }
        out
    }

    fn jwt_validation(&mut self, c: &Config) -> Option<Step> {
        let f = self.fields(
            c,
            &["issuer", "audience", "http", "jws"],
            &["issuer", "http", "jws"],
        )?;
        let mut j = JwtValidation {
            issuers: Vec::new(),
            audiences: Vec::new(),
            tokens: Vec::new(),
            algorithms: Vec::new(),
            sources: Vec::new(),
        };
        let mut ok = true;
        for (k, v) in f {
            match k {
                "issuer" => j.issuers = self.allow_list(c.kind, v, "issuer", true)?,
                "audience" => j.audiences = self.allow_list(c.kind, v, "audience", false)?,
                "http" => j.tokens = self.jwt_tokens(c.kind, v)?,
                _ => ok &= self.jws(c.kind, v, &mut j),
            }
        }
        (ok && !j.tokens.is_empty() && !j.algorithms.is_empty() && !j.sources.is_empty())
            .then(|| Step::JwtValidation(Box::new(j)))
    }

    /// `issuer` / `audience`: `{allow_list: [{value: …}, …]}`.
    fn allow_list(
        &mut self,
        kind: &str,
        node: &Node,
        what: &str,
        required: bool,
    ) -> Option<Vec<Template>> {
        let sub = Config {
            kind,
            node: Some(node),
            at: &node.span,
        };
        let need: &[&str] = if required { &["allow_list"] } else { &[] };
        let mut out = Vec::new();
        for (_, list) in self.fields(&sub, &["allow_list"], need)? {
            for item in self.list(list, &format!("`{what}.allow_list`")) {
                let entry = Config {
                    kind,
                    node: Some(item),
                    at: &item.span,
                };
                for (_, value) in self.fields(&entry, &["value"], &["value"])? {
                    out.extend(self.template(value));
                }
            }
        }
        if required && out.is_empty() {
            self.bad(
                Code::ActionConfig,
                &node.span,
                format!("`{what}.allow_list` lists no {what}"),
                "list at least one: `allow_list: [{value: \"https://idp.example/\"}]`",
            );
            return None;
        }
        Some(out)
    }

    /// `http.tokens[]`: `{type, method: header, name, prefix}`.
    fn jwt_tokens(&mut self, kind: &str, node: &Node) -> Option<Vec<JwtToken>> {
        let http = Config {
            kind,
            node: Some(node),
            at: &node.span,
        };
        let mut out = Vec::new();
        for (_, list) in self.fields(&http, &["tokens"], &["tokens"])? {
            for item in self.list(list, "`http.tokens`") {
                let token = Config {
                    kind,
                    node: Some(item),
                    at: &item.span,
                };
                let (mut name, mut prefix) = (None, None);
                for (k, v) in
                    self.fields(&token, &["type", "method", "name", "prefix"], &["name"])?
                {
                    match k {
                        "type" => {
                            let t = self.string(v)?;
                            const TYPES: &[&str] =
                                &["jwt", "at+jwt", "it+jwt", "access_token", "id_token", "plain"];
                            if !TYPES.contains(&t) {
                                self.bad(Code::ActionConfig, &v.span, format!("unknown token type `{t}` (ERR_NGROK_7169)"), "use jwt, at+jwt, it+jwt, access_token or id_token");
                            }
                        }
                        "method" => match self.string(v)? {
                            "header" => {}
                            "body" => self.bad(
                                Code::ActionConfig,
                                &v.span,
                                "aigw reads tokens from request headers only: the policy runs before the body is read".into(),
                                "send the token in a header (`method: header`)",
                            ),
                            other => self.bad(
                                Code::ActionConfig,
                                &v.span,
                                format!("unknown method `{other}`"),
                                "use `method: header`",
                            ),
                        },
                        "name" => name = self.template(v),
                        _ => prefix = self.template(v),
                    }
                }
                out.extend(name.map(|name| JwtToken { name, prefix }));
            }
        }
        if out.is_empty() {
            self.bad(
                Code::ActionConfig,
                &node.span,
                "`http.tokens` lists no token".into(),
                "list where the token is: `tokens: [{type: jwt, method: header, name: Authorization, prefix: \"Bearer \"}]`",
            );
        }
        Some(out)
    }

    /// `jws`: `allowed_algorithms` and `keys`, whose sources are `additional_jkus` URLs
    /// (`file://` read now) or, as an aigw extension, an inline `jwks`.
    fn jws(&mut self, kind: &str, node: &Node, j: &mut JwtValidation) -> bool {
        let jws = Config {
            kind,
            node: Some(node),
            at: &node.span,
        };
        let Some(f) = self.fields(
            &jws,
            &["allowed_algorithms", "keys"],
            &["allowed_algorithms", "keys"],
        ) else {
            return false;
        };
        let mut ok = true;
        for (k, v) in f {
            if k == "allowed_algorithms" {
                for item in self.list(v, "`jws.allowed_algorithms`") {
                    let Some(name) = self.string(item) else {
                        ok = false;
                        continue;
                    };
                    match super::jwt::algorithm(name) {
                        Ok(a) => j.algorithms.push(a),
                        Err(why) => {
                            self.bad(
                                Code::ActionConfig,
                                &item.span,
                                why.to_string(),
                                "list the algorithms your identity provider signs with, e.g. RS256",
                            );
                            ok = false;
                        }
                    }
                }
                continue;
            }
            // `keys: {sources: {…}}` in every example; `keys: [{sources: [{…}]}]` in the reference.
            let groups: Vec<&Node> = match &v.value {
                Yaml::Seq(items) => items.iter().collect(),
                _ => vec![v],
            };
            for g in groups {
                let keys = Config {
                    kind,
                    node: Some(g),
                    at: &g.span,
                };
                let Some(kf) = self.fields(&keys, &["sources", "identification"], &["sources"])
                else {
                    ok = false;
                    continue;
                };
                for (kk, sv) in kf {
                    if kk == "sources" {
                        ok &= self.key_sources(kind, sv, &mut j.sources);
                    }
                }
            }
        }
        if j.sources.is_empty() && ok {
            self.bad(
                Code::ActionConfig,
                &node.span,
                "`jws.keys` names no key source".into(),
                "add `sources: {additional_jkus: [\"https://idp.example/.well-known/jwks.json\"]}`",
            );
            ok = false;
        }
        ok
    }

    fn key_sources(&mut self, kind: &str, node: &Node, out: &mut Vec<KeySource>) -> bool {
        let groups: Vec<&Node> = match &node.value {
            Yaml::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut ok = true;
        for g in groups {
            let sources = Config {
                kind,
                node: Some(g),
                at: &g.span,
            };
            let Some(f) = self.fields(&sources, &["additional_jkus", "jwks"], &[]) else {
                return false;
            };
            for (k, v) in f {
                if k == "jwks" {
                    let json = v.to_json();
                    match super::jwt::parse_set(&json.to_string()) {
                        Ok(set) => out.push(KeySource::Inline(set)),
                        Err(why) => {
                            self.bad(Code::ActionConfig, &v.span, why, "write the JWKS document itself: `jwks: {keys: [{kty: RSA, kid: …, n: …, e: AQAB}]}`");
                            ok = false;
                        }
                    }
                    continue;
                }
                for item in self.list(v, "`additional_jkus`") {
                    let Some(url) = self.string(item) else {
                        ok = false;
                        continue;
                    };
                    if let Some(path) = url.strip_prefix("file://") {
                        match super::jwt::read_file(std::path::Path::new(path)) {
                            Ok(set) => out.push(KeySource::Inline(set)),
                            Err(why) => {
                                self.bad(Code::ActionConfig, &item.span, why, "point at a readable JWKS file (an absolute path: `file:///etc/aigw/jwks.json`)");
                                ok = false;
                            }
                        }
                    } else if url.starts_with("https://") || url.starts_with("http://") {
                        out.push(KeySource::Url(url.to_owned()));
                    } else {
                        self.bad(Code::ActionConfig, &item.span, format!("`{url}` is not an http(s):// or file:// URL"), "use the identity provider's JWKS URL, e.g. https://idp.example/.well-known/jwks.json");
                        ok = false;
                    }
                }
            }
        }
        ok
    }

    fn rate_limit(&mut self, c: &Config) -> Option<Step> {
        let f = self.fields(
            c,
            &[
                "name",
                "algorithm",
                "capacity",
                "rate",
                "bucket_key",
                "enforce",
            ],
            &["name", "algorithm", "capacity", "rate", "bucket_key"],
        )?;
        let (mut name, mut capacity, mut window, mut keys, mut enforce) =
            (String::new(), 0, Duration::ZERO, Vec::new(), true);
        // Every field is read (and reported) before giving up on the action.
        let mut ok = true;
        for (k, v) in f {
            match k {
                "name" => name = self.string(v).unwrap_or_default().to_owned(),
                "algorithm" => ok &= self.algorithm(v),
                "capacity" => match self.int_field(v, 1, 2_000_000_000, "capacity") {
                    Some(n) => capacity = n as u64,
                    None => ok = false,
                },
                "rate" => match self.rate(v) {
                    Some(d) => window = d,
                    None => ok = false,
                },
                "bucket_key" => ok &= self.bucket_keys(v, &mut keys),
                _ => enforce = self.bool_field(v)?,
            }
        }
        if !ok || capacity == 0 || window.is_zero() {
            return None;
        }
        Some(Step::RateLimit {
            name,
            capacity,
            window,
            bucket_key: keys,
            enforce,
        })
    }

    /// Whether `algorithm` is the one ngrok has.
    fn algorithm(&mut self, node: &Node) -> bool {
        if self.string(node) == Some("sliding_window") {
            return true;
        }
        self.bad(
            Code::ActionConfig,
            &node.span,
            "`algorithm` must be `sliding_window` (ERR_NGROK_2222)".into(),
            "write `algorithm: sliding_window`",
        );
        false
    }

    /// `bucket_key`'s expressions, added to `keys`; false when one does not compile.
    fn bucket_keys(&mut self, node: &Node, keys: &mut Vec<Expr>) -> bool {
        let items = self.list(node, "`bucket_key`");
        if items.len() > 10 {
            self.bad(
                Code::ActionConfig,
                &node.span,
                "at most 10 bucket keys (ERR_NGROK_2255)".into(),
                "combine keys into one expression",
            );
        }
        let mut ok = true;
        for item in items {
            if let Some(s) = self.string(item) {
                match self.expr(s, &item.span) {
                    Some(e) => keys.push(e),
                    None => ok = false,
                }
            }
        }
        ok
    }

    fn log(&mut self, c: &Config) -> Option<Step> {
        let f = self.fields(c, &["metadata"], &["metadata"])?;
        let mut metadata = Vec::new();
        for (_, v) in f {
            match &v.value {
                Yaml::Map(entries) => {
                    for (k, val) in entries {
                        if let Some(t) = self.tree(val) {
                            metadata.push((k.text.clone(), t));
                        }
                    }
                }
                _ => self.wrong(v, "`metadata` must be a mapping"),
            }
        }
        Some(Step::Log { metadata })
    }

    /// A rate-limit window: 60s to 24h, a multiple of 10s.
    fn rate(&mut self, node: &Node) -> Option<Duration> {
        let s = self.string(node)?;
        let d = match crate::policy::duration::parse(s) {
            Ok(d) => d,
            Err(e) => {
                self.bad(
                    Code::BadDuration,
                    &node.span,
                    format!("`{s}` is not a duration: {e}"),
                    "write e.g. `60s` or `1h`",
                );
                return None;
            }
        };
        let secs = d.as_secs_f64();
        if !(60.0..=86_400.0).contains(&secs) || d.as_millis() % 10_000 != 0 {
            self.bad(
                Code::ActionConfig,
                &node.span,
                format!("`rate` is {s}; ngrok takes 60s to 24h in steps of 10s (ERR_NGROK_2215)"),
                "write e.g. `rate: 60s`",
            );
            return None;
        }
        Some(d)
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Template {
    fn default_empty() -> Template {
        Template::compile("", &SecretStore::default()).expect("the empty template compiles")
    }
}

/// A regex error on one line: the parser's own message, without its drawing of the pattern.
pub(super) fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .last()
        .map(|l| l.trim_start_matches("error: ").to_owned())
        .unwrap_or(text)
}
