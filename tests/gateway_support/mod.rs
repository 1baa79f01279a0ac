//! Helpers for the gateway tests: start aigw's gateway in-process on 127.0.0.1:0, a fixed
//! `Routing` for executor tests that should not depend on the engine's planning, and the one
//! stand-in upstream (`standin`, from `tests/support/standin`).
#![allow(dead_code)]

pub mod jwt_keys;
pub mod python;
#[path = "../support/standin/mod.rs"]
pub mod standin;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use aigw::gateway::{Gateway, GatewayOptions, ProviderView, Routing};
use aigw::policy::secrets::SecretStore;
use aigw::policy::{AiGateway, ApiFormat};
use aigw::routing::plan::{Attempt, KeyChoice, Plan, Request, Route};
use aigw::routing::upstream::{UrlOrigin, join};

pub struct Started {
    pub addr: SocketAddr,
    pub gw: Arc<Gateway>,
}

impl Started {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs `body` as JSON to `path` with [`client`]; panics only when nothing answers.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        client()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// GETs `path` with [`client`]; panics only when nothing answers.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        client().get(self.url(path)).send().await.unwrap()
    }

    /// The `/metrics` page.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }
}

/// A response header as text ("" when absent).
pub fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// An OpenAI stand-in labelled `label` that knows exactly `models`.
pub async fn openai_standin(label: &str, models: &[&str]) -> standin::StandIn {
    standin::StandIn::start(standin::Kind::OpenAi)
        .await
        .with_label(label)
        .with_models(models)
}

pub async fn start(routing: Arc<dyn Routing>, opts: GatewayOptions) -> Started {
    start_with(routing, opts, SecretStore::default()).await
}

pub async fn start_with(
    routing: Arc<dyn Routing>,
    opts: GatewayOptions,
    secrets: SecretStore,
) -> Started {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gw = Gateway::new(routing, secrets, opts);
    tokio::spawn(aigw::gateway::serve(
        listener,
        gw.clone(),
        std::future::pending(),
    ));
    Started { addr, gw }
}

/// A loopback port free a moment ago (for a server a test starts as a separate process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client for tests: no proxy, generous timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

/// One provider of a fixed plan.
#[derive(Clone)]
pub struct FixedProvider {
    pub id: String,
    pub base_url: String,
    pub ollama: bool,
    pub keys: Vec<String>,
}

/// A `Routing` whose plan is fixed: every (provider, model) in order, key by key.
pub struct FixedRouting {
    pub gateway: AiGateway,
    pub providers: Vec<FixedProvider>,
    /// (provider id, upstream model id)
    pub candidates: Vec<(String, String)>,
}

impl FixedRouting {
    pub fn new(providers: Vec<FixedProvider>, candidates: &[(&str, &str)]) -> Self {
        FixedRouting {
            gateway: AiGateway::default(),
            providers,
            candidates: candidates
                .iter()
                .map(|(p, m)| (p.to_string(), m.to_string()))
                .collect(),
        }
    }
}

impl Routing for FixedRouting {
    fn plan(&self, req: &Request, _seed: u64) -> Arc<Plan> {
        let mut attempts = Vec::new();
        for (i, (pid, model)) in self.candidates.iter().enumerate() {
            let p = self.providers.iter().find(|p| &p.id == pid).unwrap();
            let url = Some(join(&p.base_url, &req.path));
            if p.keys.is_empty() {
                attempts.push(Attempt {
                    provider: pid.clone(),
                    model: model.clone(),
                    url,
                    key: KeyChoice::Passthrough,
                    model_index: i,
                });
            } else {
                for (k, _) in p.keys.iter().enumerate() {
                    attempts.push(Attempt {
                        provider: pid.clone(),
                        model: model.clone(),
                        url: url.clone(),
                        key: KeyChoice::Configured {
                            index: k,
                            label: format!("k{k}"),
                        },
                        model_index: i,
                    });
                }
            }
        }
        Arc::new(Plan {
            route: Some(Route {
                format: ApiFormat::OpenAi,
                surface: "chat-completions",
            }),
            requested: Vec::new(),
            strategies: Vec::new(),
            attempts,
            truncated: 0,
            left_out: Vec::new(),
            error: None,
        })
    }

    fn gateway(&self) -> &AiGateway {
        &self.gateway
    }

    fn key_value(&self, provider_id: &str, index: usize) -> Option<String> {
        self.providers
            .iter()
            .find(|p| p.id == provider_id)?
            .keys
            .get(index)
            .cloned()
    }

    fn providers(&self) -> Vec<ProviderView> {
        self.providers
            .iter()
            .map(|p| ProviderView {
                id: p.id.clone(),
                base_url: Some(p.base_url.clone()),
                origin: UrlOrigin::AsConfigured,
                ollama: p.ollama,
                builtin: false,
                configured: true,
                formats: vec![ApiFormat::OpenAi],
                keys: p.keys.len(),
                models: 0,
            })
            .collect()
    }
}

pub fn keys_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The scripted upstream of the first executor tests, kept as a thin layer over the one
/// stand-in ([`standin::StandIn`], OpenAI kind) so that tests written against it still build.
/// New tests use `StandIn` directly.
pub mod mini {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::http::HeaderMap;

    use super::standin::{Fault, Kind, StandIn};

    #[derive(Clone, Debug)]
    pub enum Mode {
        Ok,
        /// This status, in OpenAI's error shape.
        Status(u16),
        /// The answer after this delay.
        Sleep(Duration),
        /// 401 when `Authorization: Bearer KEY` carries this key, else Ok.
        RejectKey(String),
        /// An SSE stream (the stand-in's chunks: role, one per word, finish, `[DONE]`); with
        /// `die`, the connection drops after `n` chunks.
        Stream {
            n: usize,
            die: bool,
        },
    }

    #[derive(Clone, Debug)]
    pub struct Seen {
        /// The path with its query, as the upstream received it.
        pub path: String,
        pub headers: HeaderMap,
        /// The JSON body (`Null` when it is not JSON).
        pub body: serde_json::Value,
    }

    #[derive(Clone)]
    pub struct Mini {
        pub name: String,
        pub standin: Arc<StandIn>,
    }

    impl Mini {
        pub fn seen(&self) -> Vec<Seen> {
            self.standin
                .requests()
                .into_iter()
                .map(|r| Seen {
                    path: match &r.query {
                        Some(q) => format!("{}?{q}", r.path),
                        None => r.path.clone(),
                    },
                    body: r.json.clone().unwrap_or(serde_json::Value::Null),
                    headers: r.headers,
                })
                .collect()
        }

        pub fn set(&self, mode: Mode) {
            let revoked = match &mode {
                Mode::RejectKey(key) => vec![key.as_str()],
                _ => Vec::new(),
            };
            self.standin.set_revoked_keys(&revoked);
            let fault = match mode {
                Mode::Ok | Mode::RejectKey(_) | Mode::Stream { die: false, .. } => None,
                Mode::Status(code) => Some(Fault::status(code)),
                Mode::Sleep(d) => Some(Fault::DelayHeaders(d)),
                Mode::Stream { n, die: true } => Some(Fault::StreamCutAfter(n)),
            };
            self.standin.set_fault(fault);
        }
    }

    /// Starts an OpenAI stand-in labelled `name` that answers any model, in `mode`.
    pub async fn start(name: &str, mode: Mode) -> (String, Mini) {
        let standin = StandIn::start(Kind::OpenAi)
            .await
            .with_label(name)
            .with_any_model();
        let mini = Mini {
            name: name.into(),
            standin: Arc::new(standin),
        };
        mini.set(mode);
        // The old scripted upstream lived until the test process ended, also when its handle
        // was dropped at once (`let (url, _) = ...`); keep that.
        std::mem::forget(mini.standin.clone());
        (mini.standin.url(), mini)
    }
}

/// Two OpenAI stand-ins, labelled with and mapped to the policy's providers `ids` (each
/// knowing its `models`), and the gateway on `policy` in front of them.
pub async fn start_pair(
    policy: &str,
    ids: [&str; 2],
    models: [&[&str]; 2],
    secrets: &[(&str, &str)],
    opts: GatewayOptions,
) -> (standin::StandIn, standin::StandIn, Started) {
    let a = openai_standin(ids[0], models[0]).await;
    let b = openai_standin(ids[1], models[1]).await;
    let urls = [(ids[0], a.url()), (ids[1], b.url())];
    let gw = start_policy(policy, &urls, secrets, opts).await;
    (a, b, gw)
}

/// The smallest policy that routes, for tests about the gateway rather than routing: one
/// configured provider `local` (map it to a stand-in) with one model, `made-up-chat`.
pub const LOCAL_CHAT_POLICY: &str = r#"
on_http_request:
  - type: ai-gateway
    config:
      only_allow_configured_providers: true
      providers:
        - id: local
          base_url: "https://local.internal"
          models:
            - id: made-up-chat
"#;

/// Builds engines the way `aigw serve` does (`--base-url` pairs, `AIGW_SECRET_*` pairs).
pub fn factory(
    base_urls: &[(&str, String)],
    secrets: &[(&str, &str)],
) -> aigw::commands::serve::EngineFactory {
    let flags: Vec<(String, String)> = base_urls
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let overrides = aigw::routing::upstream::BaseUrlOverrides::new(&flags, std::iter::empty());
    aigw::commands::serve::EngineFactory::new(
        overrides,
        secret_store(secrets),
        10,
        aigw::render::diagnostics::Style {
            color: false,
            width: 100,
        },
    )
}

pub fn secret_store(secrets: &[(&str, &str)]) -> SecretStore {
    SecretStore::from_vars(secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

/// Starts the gateway on a policy text through the real engine.
pub async fn start_policy(
    yaml: &str,
    base_urls: &[(&str, String)],
    secrets: &[(&str, &str)],
    opts: GatewayOptions,
) -> Started {
    let loaded = aigw::policy::load_str("policy.yaml", yaml);
    let (routing, _warnings) = factory(base_urls, secrets)
        .build(&loaded, HashMap::new())
        .unwrap_or_else(|d| panic!("the test policy does not build:\n{d}"));
    start_with(routing, opts, secret_store(secrets)).await
}

/// Like [`start_policy`], but the server stops when `stop` resolves; returns the serve task.
pub async fn start_policy_until(
    yaml: &str,
    base_urls: &[(&str, String)],
    opts: GatewayOptions,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> (Started, tokio::task::JoinHandle<std::io::Result<()>>) {
    let loaded = aigw::policy::load_str("policy.yaml", yaml);
    let (routing, _warnings) = factory(base_urls, &[])
        .build(&loaded, HashMap::new())
        .unwrap_or_else(|d| panic!("the test policy does not build:\n{d}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = GatewayOptions {
        upstream_loopback_only: true,
        ..opts
    };
    let gw = Gateway::new(routing, SecretStore::default(), opts);
    let task = tokio::spawn(aigw::gateway::serve(listener, gw.clone(), async {
        let _ = stop.await;
    }));
    (Started { addr, gw }, task)
}
