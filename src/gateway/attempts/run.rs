//! The attempt loop, as an explicit state machine over a [`Plan`]'s candidates.
//!
//! ```text
//!            ┌──────────── skip (no URL, no key, circuit open, model done) ───┐
//!            ▼                                                                │
//!   Candidate(i) ──admit──▶ Send ──ok──▶ respond (done)                       │
//!      ▲   │                  │ ▲                                             │
//!      │   │ deadline/cap     │ └── retry the same pair (429 wait) ──┐        │
//!      │   ▼                  ▼                                      │        │
//!      │ TotalTimeout / GiveUp   Failed ──classify──────────────────┘        │
//!      └───────────── next candidate ◀──┘                           ─────────┘
//! ```
//!
//! Each state is one small method of [`Run`]; what a failure means is [`super::failure`]'s, the
//! breaker's bookkeeping is [`super::breaker`]'s, and the final responses are
//! [`super::forward`]'s. The same loop, over the candidates after the one whose stream failed
//! midway, continues that stream ([`super::resume`]).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::Response;
use bytes::Bytes;

use super::breaker::Admit;
use super::failure::{Failure, Next};
use super::first_byte;
use super::forward::{
    DEFAULT_PER_REQUEST_TIMEOUT, DEFAULT_TOTAL_TIMEOUT, Inbound, KeyLabel, Label, Report, Success,
    error_response, is_loopback_url, respond, send, total_timeout, upstream_body, upstream_headers,
    with_query,
};
use crate::gateway::errors::{Dialect, GatewayError, Refusal, codes};
use crate::gateway::names;
use crate::gateway::observe::traffic::{Outcome, Sample};
use crate::gateway::server::body::JsonBody;
use crate::gateway::upstream::continuation::Shape;
use crate::gateway::upstream::stream::Continue;
use crate::gateway::{Gateway, Routing};
use crate::policy::{AiGateway, ApiFormat};
use crate::routing::plan::{Attempt, KeyChoice, Plan};

/// Where the loop stands.
pub(super) enum State<'a> {
    /// Consider the plan's candidate at this index.
    Candidate(usize),
    /// Send (or send again) one prepared attempt.
    Send(Box<Prepared<'a>>),
    /// An attempt failed: decide between the same pair again, the next candidate, or the end.
    Failed(Box<Prepared<'a>>, Failure),
    TotalTimeout,
    /// Nothing is left to try: answer with the first failure.
    GiveUp,
}

/// How the loop ended. (Returned once per loop and taken apart at once: boxing the answer
/// would cost every request an allocation.)
#[allow(clippy::large_enum_variant)]
pub(super) enum End<'a> {
    /// A candidate answered.
    Answered(Box<Prepared<'a>>, Success),
    TotalTimeout,
    GiveUp,
}

/// One candidate, ready to send.
pub(super) struct Prepared<'a> {
    pub(super) index: usize,
    pub(super) attempt: &'a Attempt,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    /// Times this pair was sent again after a 429.
    retries: u32,
    /// Times this pair was sent again after a transient failure.
    same_pair_retries: u32,
    /// When the last send started and how long it waited (for the traffic sample).
    t0: Instant,
    waited: Duration,
    /// Its place under `--max-in-flight`, held until the answer ends.
    pub(super) slot: crate::gateway::fleet::limit::Slot,
    /// Continuing a stream: how many bytes of the text so far it was sent as an assistant
    /// prefill (`None`: the original request).
    pub(super) prefill: Option<usize>,
}

/// A loop that continues a stream that failed midway: the answer's text so far goes along.
pub(super) struct Cont<'a> {
    /// The request with the text so far as an assistant prefill (and that text's length),
    /// when the surface takes one.
    pub(super) prefilled: Option<(&'a JsonBody, usize)>,
    /// Providers that continue a prefill rather than answer anew ([`super::resume::accepts_prefill`]).
    pub(super) prefill_providers: Vec<&'a str>,
    /// The prefilled request with [`super::resume::CONTINUE_FLAGS`], for `flagged_providers`.
    pub(super) flagged: Option<&'a JsonBody>,
    pub(super) flagged_providers: Vec<&'a str>,
}

/// What a continuation of the stream needs to own: the request, its plan and engine.
type Owned<'a> = (&'a Arc<dyn Routing>, &'a Arc<Inbound>, &'a Arc<Plan>);

/// The loop's bookkeeping across candidates.
pub(super) struct Run<'a> {
    gw: &'a Arc<Gateway>,
    routing: &'a dyn Routing,
    inb: &'a Inbound,
    plan: &'a Plan,
    g: &'a AiGateway,
    format: ApiFormat,
    surface: &'a str,
    per_request: Duration,
    total: Duration,
    deadline: Instant,
    /// The client asked for a stream (its first byte is the first token).
    streams: bool,
    cap: usize,
    report: Report,
    reasons: Vec<String>,
    upstream_wait: Duration,
    /// Time spent waiting for `--max-in-flight` slots, and the soonest a full queue frees up.
    queue_wait: Duration,
    busy_retry: Option<Duration>,
    tried: usize,
    last_tried: Option<&'a Attempt>,
    /// The first failure is the real one: later candidates may refuse what only the first
    /// could serve, and must not mask it. (Its attempt, the failure, the provider's message
    /// redacted, and its index in `reasons`.)
    first_failure: Option<(&'a Attempt, Failure, String, usize)>,
    /// Models that refused the request or stayed silent: their other keys are not tried.
    done_models: Vec<(&'a str, &'a str)>,
    /// Every secret aigw knows, gathered on the first failure (the success path stays cheap).
    secrets: OnceLock<Vec<String>>,
    /// The shared request, plan and engine, to continue a stream on the rest of the plan.
    owned: Option<Owned<'a>>,
    /// Continuing a stream (see [`Cont`]).
    cont: Option<Cont<'a>>,
}

/// Runs the plan's attempts until one answers or nothing is left.
pub(super) async fn run(
    gw: &Arc<Gateway>,
    routing: &Arc<dyn Routing>,
    inb: &Arc<Inbound>,
    plan: &Arc<Plan>,
    report: Report,
) -> (Response, Report) {
    let mut run = Run::new(gw, routing.as_ref(), inb, plan, report);
    run.owned = Some((routing, inb, plan));
    match run.drive(State::Candidate(0)).await {
        End::Answered(p, success) => run.succeed(*p, success),
        End::TotalTimeout => run.total_timeout(),
        End::GiveUp => run.give_up(),
    }
}

impl<'a> Run<'a> {
    /// Runs the states from `state` until a candidate answers or nothing is left.
    pub(super) async fn drive(&mut self, mut state: State<'a>) -> End<'a> {
        loop {
            state = match state {
                State::Candidate(index) => self.admit(index).await,
                State::Send(mut p) => match self.send(&mut p).await {
                    Ok(success) => return End::Answered(p, success),
                    Err(failure) => State::Failed(p, failure),
                },
                State::Failed(p, failure) => self.classify(p, failure).await,
                State::TotalTimeout => return End::TotalTimeout,
                State::GiveUp => return End::GiveUp,
            };
        }
    }

    /// A loop over the rest of the plan for a stream that failed midway: its own deadline
    /// (`total_timeout` from now), `tried` attempts already made (`--max-attempts` counts
    /// them), the models in `done` not asked again.
    pub(super) fn continuing(
        gw: &'a Arc<Gateway>,
        routing: &'a dyn Routing,
        inb: &'a Inbound,
        plan: &'a Plan,
        done: &'a [(String, String)],
        cont: Cont<'a>,
        tried: usize,
    ) -> Self {
        let mut run = Run::new(gw, routing, inb, plan, Report::default());
        run.deadline = Instant::now() + run.total;
        run.tried = tried;
        run.done_models = done.iter().map(|(p, m)| (p.as_str(), m.as_str())).collect();
        run.cont = Some(cont);
        run
    }

    /// Attempts made so far.
    pub(super) fn tried(&self) -> usize {
        self.tried
    }

    /// Every attempt's reason so far.
    pub(super) fn reason_list(&self) -> Vec<String> {
        self.reasons.clone()
    }

    /// A candidate that answered but cannot be used (a continuation wants a stream): its
    /// reason, and its model is not asked again.
    pub(super) fn unusable(&mut self, p: &Prepared<'a>, why: &str) {
        self.reasons.push(format!("{}: {why}", Label(p.attempt)));
        self.done_models
            .push((&p.attempt.provider, &p.attempt.model));
    }

    fn new(
        gw: &'a Arc<Gateway>,
        routing: &'a dyn Routing,
        inb: &'a Inbound,
        plan: &'a Plan,
        report: Report,
    ) -> Self {
        let g = routing.gateway();
        let per_request = g
            .per_request_timeout
            .as_ref()
            .map_or(DEFAULT_PER_REQUEST_TIMEOUT, |d| d.value);
        let total = g
            .total_timeout
            .as_ref()
            .map_or(DEFAULT_TOTAL_TIMEOUT, |d| d.value);
        let format = if inb.dialect == Dialect::Anthropic {
            ApiFormat::Anthropic
        } else {
            ApiFormat::OpenAi
        };
        Run {
            gw,
            routing,
            inb,
            plan,
            g,
            format,
            surface: plan.route.map(|r| r.surface).unwrap_or(""),
            per_request,
            total,
            deadline: inb.started + total,
            streams: inb.streams(),
            cap: gw.opts.max_attempts.max(1),
            report,
            reasons: Vec::new(),
            upstream_wait: Duration::ZERO,
            queue_wait: Duration::ZERO,
            busy_retry: None,
            tried: 0,
            last_tried: None,
            first_failure: None,
            done_models: Vec::new(),
            secrets: OnceLock::new(),
            owned: None,
            cont: None,
        }
    }

    /// No secret aigw knows (configured keys, secret values, the client's keys) may show up in
    /// what it says about a failure.
    fn redact(&self, text: String) -> String {
        let known = self.secrets.get_or_init(|| {
            let client_keys: Vec<&str> = [header::AUTHORIZATION, names::X_API_KEY]
                .iter()
                .filter_map(|h| self.inb.headers.get(h).and_then(|v| v.to_str().ok()))
                .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
                .collect();
            crate::gateway::observe::redact::known_secrets(self.gw, self.routing, &client_keys)
        });
        crate::gateway::observe::redact::scrub(&text, known)
    }

    /// A candidate that cannot be sent: its reason, and the attempt metric says so.
    fn skip(&mut self, index: usize, outcome: &'static str, reason: Option<String>) -> State<'a> {
        self.gw
            .metrics
            .attempt(&self.plan.attempts[index].provider, outcome);
        self.reasons.extend(reason);
        State::Candidate(index + 1)
    }

    /// `Candidate(i)`: send it, skip it, or stop.
    async fn admit(&mut self, index: usize) -> State<'a> {
        let plan = self.plan;
        let Some(attempt) = plan.attempts.get(index) else {
            return State::GiveUp;
        };
        if self.tried >= self.cap {
            return State::GiveUp;
        }
        let now = Instant::now();
        if now >= self.deadline {
            return State::TotalTimeout;
        }
        let label = Label(attempt);
        if self
            .done_models
            .contains(&(attempt.provider.as_str(), attempt.model.as_str()))
        {
            return self.skip(index, "skipped", None);
        }
        let Some(url) = attempt.url.as_deref() else {
            let reason = format!("{label}: the provider has no base URL");
            return self.skip(index, "skipped", Some(reason));
        };
        if self.gw.opts.upstream_loopback_only && !is_loopback_url(url) {
            let reason =
                format!("{label}: {url} is not a loopback address (upstream_loopback_only)");
            return self.skip(index, "skipped", Some(reason));
        }
        let key = match &attempt.key {
            KeyChoice::Passthrough => None,
            KeyChoice::Configured { index: k, .. } => {
                match self.routing.key_value(&attempt.provider, *k) {
                    Some(k) if !k.is_empty() => Some(k),
                    _ => {
                        let reason = format!(
                            "{label}{}: the API key did not resolve (is its secret set?)",
                            KeyLabel(&attempt.key)
                        );
                        return self.skip(index, "skipped", Some(reason));
                    }
                }
            }
        };
        if let Admit::Open { failures, retry_in } =
            self.gw
                .breakers
                .admit(&attempt.provider, &attempt.model, now)
        {
            // An open circuit diverts traffic; it never refuses the last candidate untried.
            if self.has_alternative(index) {
                let reason = format!(
                    "{label}: skipped, its circuit is open after {failures} consecutive failures (next probe in {}; --breaker-cooldown sets the wait, --breaker-failures 0 turns circuit breaking off)",
                    crate::policy::duration::format(retry_in.max(Duration::from_secs(1)))
                );
                self.done_models.push((&attempt.provider, &attempt.model));
                return self.skip(index, "circuit_open", Some(reason));
            }
            tracing::debug!(request_id = %self.inb.request_id, "{label}: circuit open, but no other candidate is left: trying it");
        }
        // A slot under `--max-in-flight` (after waiting in its queue); every provider's
        // in-flight count goes up (least-busy order, keep-warm).
        let remaining = self.deadline.saturating_duration_since(now);
        let slot = match self
            .gw
            .fleet
            .limits
            .acquire(&attempt.provider, &attempt.model, remaining)
            .await
        {
            Ok((slot, waited)) => {
                self.queue_wait += waited;
                self.upstream_wait += waited;
                slot
            }
            Err(busy) => {
                let after = busy.retry_after();
                self.busy_retry = Some(self.busy_retry.map_or(after, |r| r.min(after)));
                let reason = format!("{label}: skipped, {}", busy.describe());
                return self.skip(index, "queue_full", Some(reason));
            }
        };
        self.prepare(index, attempt, url, key.as_deref(), slot)
    }

    /// Whether a candidate after `index` is another model that may still be tried.
    fn has_alternative(&self, index: usize) -> bool {
        let this = &self.plan.attempts[index];
        self.tried < self.cap
            && self.plan.attempts[index + 1..].iter().any(|a| {
                (a.provider != this.provider || a.model != this.model)
                    && !self
                        .done_models
                        .contains(&(a.provider.as_str(), a.model.as_str()))
            })
    }

    /// Builds the attempt's body, headers and URL.
    fn prepare(
        &mut self,
        index: usize,
        attempt: &'a Attempt,
        url: &str,
        key: Option<&str>,
        slot: crate::gateway::fleet::limit::Slot,
    ) -> State<'a> {
        let (gw, inb, g) = (self.gw, self.inb, self.g);
        self.tried += 1;
        self.last_tried = Some(attempt);
        if self.tried > 1 {
            gw.metrics.failover();
        }
        // Continuing a stream on a provider that takes a prefill: the request with the text so far.
        let named = |ids: &[&str]| {
            ids.iter()
                .any(|p| p.eq_ignore_ascii_case(&attempt.provider))
        };
        let (source, prefill) = match &self.cont {
            Some(Cont {
                prefilled: Some((body, n)),
                prefill_providers,
                flagged,
                flagged_providers,
            }) if named(prefill_providers) => match flagged {
                Some(f) if named(flagged_providers) => (*f, Some(*n)),
                _ => (*body, Some(*n)),
            },
            _ => (&inb.body, None),
        };
        let body = upstream_body(
            source,
            attempt,
            g,
            self.format,
            self.surface,
            inb.native_path.is_some(),
            &inb.decorations,
        );
        let mut headers = upstream_headers(&inb.headers, key, self.format, &inb.decorations, gw);
        crate::gateway::server::hops::stamp(
            &mut headers,
            &inb.headers,
            &gw.instance_id,
            &attempt.provider,
        );
        let url = with_query(url, &inb.query, &inb.decorations);
        let uri: Uri = match url.parse() {
            Ok(u) => u,
            Err(e) => {
                let reason = format!(
                    "{}: its upstream URL is not a valid URL ({e}); check the provider's base_url",
                    Label(attempt)
                );
                return self.skip(index, "skipped", Some(reason));
            }
        };
        State::Send(Box::new(Prepared {
            index,
            attempt,
            uri,
            headers,
            body,
            retries: 0,
            same_pair_retries: 0,
            t0: Instant::now(),
            waited: Duration::ZERO,
            slot,
            prefill,
        }))
    }

    /// The time this send may take: the attempt's budget, its first-byte limit
    /// ([`super::first_byte`]), the rest of the total; and which of them bounds it.
    fn budget(&self, p: &Prepared<'a>) -> (Duration, bool, Option<first_byte::Limit>) {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let mut budget = self.per_request.min(remaining);
        let opts = &self.gw.opts;
        let shape = first_byte::Shape {
            streams: self.streams,
            alternative: self.has_alternative(p.index),
            cold: self.cold(p.attempt),
        };
        let mut bound = None;
        if let Some((limit, which)) = first_byte::limit(
            opts.first_byte_timeout,
            opts.stream_first_byte_timeout,
            opts.cold_start_timeout,
            shape,
        ) && limit < budget
        {
            budget = limit;
            bound = Some(which);
        }
        (budget, budget >= remaining, bound)
    }

    /// Whether the attempt goes to an Ollama box that did not have its model loaded at the
    /// last check (loading it comes before the first byte).
    fn cold(&self, attempt: &Attempt) -> bool {
        self.gw.fleet.live().is_some_and(|snap| {
            snap.get(&attempt.provider)
                .and_then(|b| b.has_loaded(&attempt.model))
                == Some(false)
        })
    }

    /// `Send`: one request upstream, up to its first byte (its whole body if not streaming).
    async fn send(&mut self, p: &mut Prepared<'a>) -> Result<Success, Failure> {
        let (budget, total_bound, first_byte) = self.budget(p);
        p.t0 = Instant::now();
        let sent = send(
            self.gw,
            self.inb.method.clone(),
            p.uri.clone(),
            p.headers.clone(),
            p.body.clone(),
        );
        let result = tokio::time::timeout(budget, sent).await;
        p.waited = p.t0.elapsed();
        self.upstream_wait += p.waited;
        match result {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout {
                after: budget,
                total: total_bound,
                first_byte,
            }),
        }
    }

    fn sample(&self, p: &Prepared<'_>, outcome: Outcome, streaming: bool) {
        let gateway =
            p.t0.duration_since(self.inb.started)
                .saturating_sub(self.upstream_wait.saturating_sub(p.waited));
        self.gw.traffic.record(
            &p.attempt.provider,
            &p.attempt.model,
            Sample {
                at: p.t0,
                outcome,
                upstream: p.waited,
                gateway,
                streaming,
            },
        );
    }

    /// An attempt answered: the breaker, the fleet and the metrics hear of it.
    pub(super) fn answered(&self, p: &Prepared<'a>, streaming: bool) {
        let (gw, attempt) = (self.gw, p.attempt);
        self.sample(p, Outcome::Ok, streaming);
        gw.breakers.success(&attempt.provider, &attempt.model);
        gw.fleet
            .traffic(&attempt.provider, crate::gateway::fleet::Passive::Answered);
        gw.metrics.attempt(&attempt.provider, "ok");
        gw.metrics.upstream_latency.observe(p.waited);
    }

    /// The rest of the plan, for the relay to continue this stream on if it fails midway:
    /// only for chat streams with another model left to ask.
    fn rest(&self, p: &Prepared<'a>, success: &Success) -> Option<Continue> {
        let Success::Stream { framing, .. } = success else {
            return None;
        };
        let (routing, inb, plan) = self.owned?;
        let shape = Shape::of_path(&inb.path)?;
        if !self.gw.opts.stream_continuation
            || shape.framing() != *framing
            || !self.has_alternative(p.index)
        {
            return None;
        }
        let mut done: Vec<(String, String)> = self
            .done_models
            .iter()
            .map(|(p, m)| (p.to_string(), m.to_string()))
            .collect();
        done.push((p.attempt.provider.clone(), p.attempt.model.clone()));
        Some(Continue {
            shape,
            rest: Box::new(super::resume::Rest::new(
                self.gw.clone(),
                routing.clone(),
                inb.clone(),
                plan.clone(),
                shape,
                p.index + 1,
                self.tried,
                done,
            )),
        })
    }

    /// An attempt answered: relay it.
    fn succeed(mut self, p: Prepared<'a>, success: Success) -> (Response, Report) {
        let (gw, attempt) = (self.gw, p.attempt);
        self.answered(&p, matches!(success, Success::Stream { .. }));
        let resume = self.rest(&p, &success);
        gw.metrics.overhead.observe(
            self.inb
                .started
                .elapsed()
                .saturating_sub(self.upstream_wait),
        );
        self.report.attempts = self.tried;
        self.report.chosen = Some(Label(attempt).to_string());
        self.report.upstream = self.upstream_wait;
        let mut resp = respond(
            gw,
            success,
            self.inb,
            attempt,
            &mut self.report,
            resume,
            p.slot,
        );
        if gw.fleet.limits.limited(&attempt.provider) {
            resp.headers_mut()
                .insert(names::X_AIGW_QUEUE_MS, queue_ms(self.queue_wait));
        }
        (resp, self.report)
    }

    /// `Failed`: record it, then send the same pair again or settle it and move on.
    async fn classify(&mut self, p: Box<Prepared<'a>>, failure: Failure) -> State<'a> {
        let attempt = p.attempt;
        self.gw
            .metrics
            .attempt(&attempt.provider, failure.outcome());
        let outcome = match &failure {
            Failure::Http { status, .. } => Outcome::from_status(*status),
            Failure::Timeout { .. } => Outcome::Timeout,
            Failure::Connect(_) | Failure::Other(_) => Outcome::Connect,
        };
        self.sample(&p, outcome, false);
        self.gw.fleet.traffic(
            &attempt.provider,
            match &failure {
                Failure::Http { .. } => crate::gateway::fleet::Passive::Answered,
                _ => crate::gateway::fleet::Passive::Unreachable,
            },
        );
        let mut p = match self.unprefilled(p, &failure) {
            Ok(again) => return again,
            Err(p) => p,
        };
        let no_retry = match self.rate_limit_wait(&p, &failure) {
            Some(Ok(wait)) => {
                let reason = format!(
                    "{}{}: {}, retried after {}",
                    Label(attempt),
                    KeyLabel(&attempt.key),
                    failure.describe(),
                    crate::policy::duration::format(wait)
                );
                let reason = self.redact(reason);
                self.reasons.push(reason);
                p.retries += 1;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => return State::Send(p),
                    _ = self.gw.shutdown.cancelled() => String::new(),
                }
            }
            Some(Err(why)) => format!("; {why}"),
            None => match self.same_pair_wait(&p, &failure) {
                Some(wait) => return self.retry_same_pair(p, failure, wait).await,
                None => String::new(),
            },
        };
        self.settle(&p, failure, &no_retry)
    }

    /// Continuing a stream: a provider that refused the request with the text so far as a
    /// prefill (400/422) gets the original request instead, at once; its answer must then
    /// repeat the text so far.
    fn unprefilled(
        &mut self,
        mut p: Box<Prepared<'a>>,
        failure: &Failure,
    ) -> Result<State<'a>, Box<Prepared<'a>>> {
        if p.prefill.is_none()
            || !matches!(
                failure,
                Failure::Http {
                    status: 400 | 422,
                    ..
                }
            )
        {
            return Err(p);
        }
        let reason = format!(
            "{}{}: {}, sent again without the prefill",
            Label(p.attempt),
            KeyLabel(&p.attempt.key),
            failure.describe()
        );
        let reason = self.redact(reason);
        tracing::debug!(request_id = %self.inb.request_id, "continuation: {reason}");
        self.reasons.push(reason);
        p.prefill = None;
        p.body = upstream_body(
            &self.inb.body,
            p.attempt,
            self.g,
            self.format,
            self.surface,
            self.inb.native_path.is_some(),
            &self.inb.decorations,
        );
        Ok(State::Send(p))
    }

    /// For a transient failure: the wait before sending the same pair again, if it gets one.
    fn same_pair_wait(&self, p: &Prepared<'_>, failure: &Failure) -> Option<Duration> {
        if !failure.is_transient() {
            return None;
        }
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        self.gw
            .opts
            .retry
            .same_pair_wait(p.same_pair_retries, remaining, &mut rand::rng())
    }

    /// `Failed` → `Send` on the same pair after a transient failure. It still counts for the
    /// breaker: a provider that fails every retry opens its circuit as fast as before.
    async fn retry_same_pair(
        &mut self,
        mut p: Box<Prepared<'a>>,
        failure: Failure,
        wait: Duration,
    ) -> State<'a> {
        let attempt = p.attempt;
        self.gw
            .breakers
            .failure(&attempt.provider, &attempt.model, Instant::now());
        let reason = format!(
            "{}{}: {}, sent again (transient)",
            Label(attempt),
            KeyLabel(&attempt.key),
            failure.describe()
        );
        let reason = self.redact(reason);
        tracing::debug!(request_id = %self.inb.request_id, "attempt failed: {reason}");
        self.reasons.push(reason);
        p.same_pair_retries += 1;
        tokio::select! {
            _ = tokio::time::sleep(wait) => State::Send(p),
            _ = self.gw.shutdown.cancelled() => self.settle(&p, failure, ""),
        }
    }

    /// For a 429 on the model's last key: the wait before sending it again, or why not.
    fn rate_limit_wait(
        &self,
        p: &Prepared<'_>,
        failure: &Failure,
    ) -> Option<Result<Duration, super::failure::NoRetry>> {
        let Next::RateLimited(retry_after) = failure.next() else {
            return None;
        };
        let a = p.attempt;
        // Limits are per key: another key of this model goes first, without a wait.
        let other_key = self.plan.attempts[p.index + 1..]
            .iter()
            .any(|b| b.provider == a.provider && b.model == a.model);
        if other_key {
            return None;
        }
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        Some(
            self.gw
                .opts
                .retry
                .wait(p.retries, retry_after, remaining, &mut rand::rng()),
        )
    }

    /// The attempt is over: the breaker, the reason, and the next state.
    fn settle(&mut self, p: &Prepared<'a>, failure: Failure, no_retry: &str) -> State<'a> {
        let attempt = p.attempt;
        let clients_key = matches!(attempt.key, KeyChoice::Passthrough);
        let next = match failure.next_for(clients_key) {
            // Continuing a stream, a refusal is this model's: another may still continue it.
            Next::Final(r) if self.cont.is_some() => Next::NextModel(r),
            next => next,
        };
        let breakers = &self.gw.breakers;
        if failure.counts_against_provider() {
            breakers.failure(&attempt.provider, &attempt.model, Instant::now());
        } else if !matches!(next, Next::RateLimited(_)) {
            // It answered (refusing the key or the request): the provider itself is up.
            breakers.success(&attempt.provider, &attempt.model);
        }
        let reason = format!(
            "{}{}: {}{no_retry}",
            Label(attempt),
            KeyLabel(&attempt.key),
            failure.describe()
        );
        let reason = self.redact(reason);
        tracing::debug!(request_id = %self.inb.request_id, "attempt failed: {reason}");
        self.reasons.push(reason);
        if let Next::NextModel(_) = next {
            self.done_models.push((&attempt.provider, &attempt.model));
        }
        let total_bound = matches!(failure, Failure::Timeout { total: true, .. });
        if self.first_failure.is_none() {
            let detail = match &failure {
                Failure::Http { detail, .. } => self.redact(detail.clone()),
                _ => String::new(),
            };
            self.first_failure = Some((attempt, failure, detail, self.reasons.len() - 1));
        }
        if total_bound {
            return State::TotalTimeout;
        }
        if let Next::Final(_) = next {
            tracing::debug!(request_id = %self.inb.request_id, "the failure is final: no other candidate is tried");
            return State::GiveUp;
        }
        State::Candidate(p.index + 1)
    }

    fn total_timeout(mut self) -> (Response, Report) {
        self.report.upstream = self.upstream_wait;
        total_timeout(
            self.total,
            &self.reasons,
            self.inb.dialect,
            self.tried,
            self.report,
        )
    }

    /// `GiveUp`: the provider's own refusal when it refused the request, else 503 (or 502 when
    /// the attempt cap cut the plan short) with every attempt's reason.
    fn give_up(mut self) -> (Response, Report) {
        self.report.attempts = self.tried;
        self.report.upstream = self.upstream_wait;
        // Every candidate was skipped for a full queue: 429 with when to come back.
        if self.tried == 0
            && let Some(after) = self.busy_retry
        {
            return crate::gateway::fleet::limit::busy_response(
                after,
                &self.reasons,
                self.inb.dialect,
                self.report,
            );
        }
        let mut resp = match self.first_failure.take() {
            Some((first, f, message, at)) if refused(first, &f) => {
                self.refusal(first, f, message, at)
            }
            _ => {
                let err = self.all_failed();
                error_response(err, self.inb.dialect, &mut self.report).0
            }
        };
        let h = resp.headers_mut();
        h.insert(names::X_AIGW_ATTEMPTS, names::attempts_value(self.tried));
        // The last candidate tried, so a client can see where the request ended.
        if let Some(last) = self.last_tried {
            if let Ok(v) = HeaderValue::from_str(&last.provider) {
                h.insert(names::X_AIGW_PROVIDER, v);
            }
            if let Ok(v) = HeaderValue::from_str(&last.model) {
                h.insert(names::X_AIGW_MODEL, v);
            }
        }
        (resp, self.report)
    }

    /// The provider refused the request itself: its status and reason reach the client.
    fn refusal(&mut self, first: &Attempt, f: Failure, mut message: String, at: usize) -> Response {
        let Failure::Http { status, code, .. } = f else {
            unreachable!("only HTTP failures are rejections")
        };
        // Skipped candidates may come before the refusal in `reasons`.
        let others: Vec<&str> = self
            .reasons
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != at)
            .map(|(_, r)| r.as_str())
            .collect();
        if !others.is_empty() {
            message.push_str(&format!(
                " (aigw: {}:{} refused the request; every other candidate failed too: {})",
                first.provider,
                first.model,
                others.join("; ")
            ));
        }
        self.report.status = status;
        self.report.error_code = Some("upstream_refused");
        Refusal {
            status,
            message,
            code,
        }
        .response(self.inb.dialect)
    }

    fn all_failed(&self) -> GatewayError {
        let (tried, cap, reasons) = (self.tried, self.cap, self.reasons.join("; "));
        if self.plan.attempts.len() > cap || self.plan.truncated > 0 {
            GatewayError::new(
                codes::TOO_MANY_ATTEMPTS,
                format!(
                    "Too many failed attempts to upstream providers ({tried} tried, cap {cap}). Errors: {reasons}"
                ),
            )
        } else {
            GatewayError::new(
                codes::ALL_FAILED,
                format!(
                    "All providers failed: all {} candidates failed: {reasons}",
                    self.reasons.len()
                ),
            )
        }
    }
}

/// Whether a failure is the provider refusing the request itself, or the client's own key: the
/// client then gets the provider's status and words, not a gateway 503.
fn refused(attempt: &Attempt, f: &Failure) -> bool {
    f.rejection().is_some()
        || matches!(
            f.next_for(matches!(attempt.key, KeyChoice::Passthrough)),
            Next::Final(_)
        )
}

/// `x-aigw-queue-ms`: milliseconds waited for `--max-in-flight` slots.
fn queue_ms(d: Duration) -> HeaderValue {
    HeaderValue::from(d.as_millis().min(u64::MAX as u128) as u64)
}
