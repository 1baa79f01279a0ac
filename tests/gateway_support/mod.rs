//! Helpers for the gateway tests: start aigw's gateway in-process on 127.0.0.1:0, and a fixed
//! `Routing` for executor tests that should not depend on the engine's planning.
#![allow(dead_code)]

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

/// A minimal scripted upstream for executor tests (the full stand-ins live in tests/support).
pub mod mini {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};

    #[derive(Clone, Debug)]
    pub enum Mode {
        Ok,
        Status(u16),
        Sleep(Duration),
        /// 401 when `Authorization: Bearer KEY` carries this key, else Ok.
        RejectKey(String),
        /// SSE: `n` chunks then `[DONE]`; with `die`, the connection drops after the chunks.
        Stream {
            n: usize,
            die: bool,
        },
    }

    #[derive(Clone, Debug)]
    pub struct Seen {
        pub path: String,
        pub headers: HeaderMap,
        pub body: serde_json::Value,
    }

    #[derive(Clone)]
    pub struct Mini {
        pub mode: Arc<Mutex<Mode>>,
        pub seen: Arc<Mutex<Vec<Seen>>>,
        pub name: String,
    }

    impl Mini {
        pub fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
        pub fn set(&self, m: Mode) {
            *self.mode.lock().unwrap() = m;
        }
    }

    pub async fn start(name: &str, mode: Mode) -> (String, Mini) {
        let mini = Mini {
            mode: Arc::new(Mutex::new(mode)),
            seen: Arc::default(),
            name: name.into(),
        };
        let app = Router::new().fallback(handler).with_state(mini.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), mini)
    }

    async fn handler(State(m): State<Mini>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let body: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        m.seen.lock().unwrap().push(Seen {
            path: uri.to_string(),
            headers,
            body: body.clone(),
        });
        let mode = m.mode.lock().unwrap().clone();
        let model = body.get("model").cloned().unwrap_or_default();
        let ok = serde_json::json!({"id": "x", "object": "chat.completion", "model": model, "served_by": m.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("hello from {}", m.name)}, "finish_reason": "stop"}]});
        match mode {
            Mode::Ok => axum::Json(ok).into_response(),
            Mode::Status(s) => (
                StatusCode::from_u16(s).unwrap(),
                axum::Json(
                    serde_json::json!({"error": {"message": format!("{} says {s}", m.name)}}),
                ),
            )
                .into_response(),
            Mode::RejectKey(k) => {
                let auth = m
                    .seen
                    .lock()
                    .unwrap()
                    .last()
                    .and_then(|s| s.headers.get("authorization").cloned());
                if auth.is_some_and(|a| a.to_str().unwrap_or("") == format!("Bearer {k}")) {
                    (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"error": {"message": format!("Incorrect API key provided: {k}")}}))).into_response()
                } else {
                    axum::Json(ok).into_response()
                }
            }
            Mode::Sleep(d) => {
                tokio::time::sleep(d).await;
                axum::Json(ok).into_response()
            }
            Mode::Stream { n, die } => {
                let name = m.name.clone();
                let s = async_stream(n, die, name);
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Body::from_stream(s))
                    .unwrap()
            }
        }
    }

    fn async_stream(
        n: usize,
        die: bool,
        name: String,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::unfold(0usize, move |i| {
            let name = name.clone();
            async move {
                if i < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let chunk = serde_json::json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": format!("{name}-{i} ")}}]});
                    Some((Ok(Bytes::from(format!("data: {chunk}\n\n"))), i + 1))
                } else if i == n && !die {
                    Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), i + 1))
                } else if i == n && die {
                    Some((Err(std::io::Error::other("upstream died")), i + 1))
                } else {
                    None
                }
            }
        })
    }
}

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
