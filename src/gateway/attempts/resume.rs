//! Continuing a stream that failed midway on the rest of the plan: the attempt loop
//! ([`super::run`]) over the candidates after the one that failed, with the answer's text so
//! far, for the relay ([`crate::gateway::upstream::stream`]) to splice onto the client's stream.
//!
//! Which candidates get the text so far as an assistant prefill (they answer only what follows
//! it) and which get the original request (their answer must repeat the text so far, which is
//! then dropped) is [`accepts_prefill`]'s.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::forward::{Inbound, Label, Success};
use super::run::{Cont, End, Run, State};
use crate::gateway::upstream::continuation::{NoContinuation, Resume, Shape, Taken};
use crate::gateway::{Gateway, ProviderView, Routing};
use crate::policy::ApiFormat;
use crate::routing::plan::Plan;

/// Whether a provider continues an assistant prefill (the request's last message is the
/// assistant's partial answer, and the model answers only what follows it):
///
/// | provider | prefill |
/// |---|---|
/// | an Ollama box (`/api/chat`, or its OpenAI-compatible `/v1`) | yes |
/// | Anthropic's Messages API (`/v1/messages`) | yes |
/// | built-in `openai` (api.openai.com) | no: it answers anew after an assistant message |
/// | other built-in providers (google, groq, deepseek…) | no: not known to continue one |
/// | any other OpenAI-compatible provider (llama.cpp, LM Studio, vLLM…) | yes |
///
/// Without a prefill a candidate is sent the original request, and its answer is used only if
/// it starts with the text so far. A candidate that refuses the prefilled request (400/422)
/// is sent the original request at once. An OpenAI-compatible server is also told
/// [`CONTINUE_FLAGS`] (see [`wants_continue_flags`]).
pub fn accepts_prefill(provider: Option<&ProviderView>, format: ApiFormat, native: bool) -> bool {
    if native || format == ApiFormat::Anthropic {
        return true;
    }
    match provider {
        Some(p) if p.ollama => true,
        Some(p) => !p.builtin,
        None => false,
    }
}

/// What vLLM and SGLang need to continue the last assistant message rather than answer after
/// it (their `continue_final_message`, which excludes the default `add_generation_prompt`).
/// Servers that continue a prefill anyway (llama.cpp, LM Studio) ignore fields they do not
/// know, and one that refuses them gets the original request like any refused prefill.
pub const CONTINUE_FLAGS: &[(&str, &str)] = &[
    ("continue_final_message", "true"),
    ("add_generation_prompt", "false"),
];

/// Whether a prefilled request to this provider carries [`CONTINUE_FLAGS`]: an
/// OpenAI-compatible server of the user's own (not Ollama, not a built-in cloud provider).
pub fn wants_continue_flags(
    provider: Option<&ProviderView>,
    format: ApiFormat,
    native: bool,
) -> bool {
    !native && format == ApiFormat::OpenAi && provider.is_some_and(|p| !p.ollama && !p.builtin)
}

/// The candidates after the one whose stream the relay is relaying, owned for as long as the
/// stream runs. Each call asks from where the last one stopped; a model that took the stream
/// over is not asked again.
pub(super) struct Rest {
    gw: Arc<Gateway>,
    routing: Arc<dyn Routing>,
    inb: Arc<Inbound>,
    plan: Arc<Plan>,
    shape: Shape,
    /// The next candidate to consider.
    next: usize,
    /// Attempts made so far (`--max-attempts` counts continuations too).
    tried: usize,
    /// `provider:model` pairs not to ask: the ones that failed, or whose stream did.
    done: Vec<(String, String)>,
}

impl Rest {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        gw: Arc<Gateway>,
        routing: Arc<dyn Routing>,
        inb: Arc<Inbound>,
        plan: Arc<Plan>,
        shape: Shape,
        next: usize,
        tried: usize,
        done: Vec<(String, String)>,
    ) -> Rest {
        Rest {
            gw,
            routing,
            inb,
            plan,
            shape,
            next,
            tried,
            done,
        }
    }

    async fn take_over(&mut self, prefix: &str) -> Result<Taken, NoContinuation> {
        let (gw, routing, inb, plan) = (
            self.gw.clone(),
            self.routing.clone(),
            self.inb.clone(),
            self.plan.clone(),
        );
        let format = match self.shape {
            Shape::Anthropic => ApiFormat::Anthropic,
            _ => ApiFormat::OpenAi,
        };
        let native = inb.native_path.is_some();
        // Anthropic refuses a prefill that ends in whitespace: it goes without, and the
        // continuation's leading whitespace is dropped as far as it repeats it.
        let prefill = match format {
            ApiFormat::Anthropic => prefix.trim_end(),
            ApiFormat::OpenAi => prefix,
        };
        let prefilled = match self.shape.takes_prefill() && !prefill.is_empty() {
            true => inb.body.with_assistant_text(prefill),
            false => None,
        };
        let flagged = prefilled
            .as_ref()
            .and_then(|b| b.with_fields(CONTINUE_FLAGS));
        let providers = gw.fleet.providers(routing.as_ref());
        let ids = |keep: fn(Option<&ProviderView>, ApiFormat, bool) -> bool| -> Vec<&str> {
            providers
                .iter()
                .filter(|p| keep(Some(p), format, native))
                .map(|p| p.id.as_str())
                .collect()
        };
        let done = self.done.clone();
        let cont = Cont {
            prefilled: prefilled.as_ref().map(|b| (b, prefill.len())),
            prefill_providers: ids(accepts_prefill),
            flagged: flagged.as_ref(),
            flagged_providers: ids(wants_continue_flags),
        };
        let mut run = Run::continuing(&gw, routing.as_ref(), &inb, &plan, &done, cont, self.tried);
        let mut from = self.next;
        loop {
            match run.drive(State::Candidate(from)).await {
                End::Answered(p, success) => {
                    run.answered(&p, true);
                    from = p.index + 1;
                    let Success::Stream {
                        first,
                        rest,
                        framing,
                        ..
                    } = success
                    else {
                        run.unusable(&p, "answered without a stream");
                        continue;
                    };
                    if framing != self.shape.framing() {
                        run.unusable(&p, "answered a stream of another kind");
                        continue;
                    }
                    self.next = from;
                    self.tried = run.tried();
                    self.done
                        .push((p.attempt.provider.clone(), p.attempt.model.clone()));
                    tracing::debug!(request_id = %inb.request_id, "{} takes the stream over", Label(p.attempt));
                    let p = *p;
                    return Ok(Taken {
                        first,
                        upstream: rest,
                        provider: p.attempt.provider.clone(),
                        model: p.attempt.model.clone(),
                        prefilled: p.prefill,
                        hold: Box::new(p.slot),
                        tried: self.tried,
                    });
                }
                End::TotalTimeout | End::GiveUp => {
                    self.next = plan.attempts.len();
                    self.tried = run.tried();
                    return Err(NoContinuation {
                        reasons: run.reason_list(),
                        tried: self.tried,
                    });
                }
            }
        }
    }
}

impl Resume for Rest {
    fn next<'a>(
        &'a mut self,
        prefix: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Taken, NoContinuation>> + Send + 'a>> {
        Box::pin(self.take_over(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::upstream::UrlOrigin;

    fn view(id: &str, builtin: bool, ollama: bool) -> ProviderView {
        ProviderView {
            id: id.into(),
            base_url: None,
            origin: UrlOrigin::AsConfigured,
            ollama,
            builtin,
            configured: true,
            formats: vec![ApiFormat::OpenAi],
            keys: 0,
            models: 0,
        }
    }

    #[test]
    fn who_takes_a_prefill() {
        let openai = view("openai", true, false);
        let groq = view("groq", true, false);
        let vllm = view("vllm", false, false);
        let ollama = view("gpu-a", false, true);
        assert!(!accepts_prefill(Some(&openai), ApiFormat::OpenAi, false));
        assert!(!accepts_prefill(Some(&groq), ApiFormat::OpenAi, false));
        assert!(accepts_prefill(Some(&vllm), ApiFormat::OpenAi, false));
        assert!(accepts_prefill(Some(&ollama), ApiFormat::OpenAi, false));
        assert!(accepts_prefill(Some(&ollama), ApiFormat::OpenAi, true));
        assert!(accepts_prefill(
            Some(&view("anthropic", true, false)),
            ApiFormat::Anthropic,
            false
        ));
        assert!(!accepts_prefill(None, ApiFormat::OpenAi, false));
        assert!(wants_continue_flags(Some(&vllm), ApiFormat::OpenAi, false));
        for (p, format, native) in [
            (&ollama, ApiFormat::OpenAi, false),
            (&openai, ApiFormat::OpenAi, false),
            (&vllm, ApiFormat::OpenAi, true),
            (&vllm, ApiFormat::Anthropic, false),
        ] {
            assert!(!wants_continue_flags(Some(p), format, native), "{}", p.id);
        }
    }
}
