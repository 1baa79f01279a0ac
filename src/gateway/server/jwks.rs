//! Key sets for `jwt-validation` from `additional_jkus` URLs: fetched before the policy serves
//! (at start-up and on each reload), refreshed every [`REFRESH`], and fetched again in the
//! background when a token names a key the cached set lacks (an identity provider rotated its
//! keys), at most once per [`REFETCH_GAP`] per URL. Requests never wait on a fetch: until a set
//! is there, tokens are refused (fail closed) with a message naming the URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;

use crate::traffic::jwt::{KeySource, KeyStore, LocalKeys, parse_set};

/// How long a fetched set is used before it is fetched again (ngrok caches about 15 minutes).
pub const REFRESH: Duration = Duration::from_secs(15 * 60);
/// Least time between two fetches of one URL outside the refresh cycle.
const REFETCH_GAP: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest key set document read.
const MAX_BYTES: usize = 1024 * 1024;

#[derive(Default)]
struct Entry {
    set: Option<Arc<JwkSet>>,
    error: Option<String>,
    fetched: Option<Instant>,
    asked: Option<Instant>,
}

pub struct Jwks {
    client: reqwest::Client,
    loopback_only: bool,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Jwks {
    pub fn new(loopback_only: bool) -> Arc<Jwks> {
        Arc::new(Jwks {
            client: crate::providers::http_client(FETCH_TIMEOUT),
            loopback_only,
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fetches each URL of `urls` that has no fresh set, all at once; returns when all ended.
    pub async fn prefetch(self: &Arc<Self>, urls: &[String]) {
        let due: Vec<String> = {
            let entries = self.entries();
            urls.iter()
                .filter(|u| {
                    entries
                        .get(*u)
                        .and_then(|e| e.fetched)
                        .is_none_or(|t| t.elapsed() >= REFRESH)
                })
                .cloned()
                .collect()
        };
        futures_util::future::join_all(due.iter().map(|u| self.fetch(u))).await;
    }

    async fn fetch(&self, url: &str) {
        let result = self.get(url).await;
        let mut entries = self.entries();
        let e = entries.entry(url.to_string()).or_default();
        e.fetched = Some(Instant::now());
        match result {
            Ok(set) => {
                e.set = Some(set);
                e.error = None;
            }
            Err(why) => {
                // A set fetched before stays in use: a flaky identity provider must not lock
                // everyone out while the keys it published are still valid.
                tracing::warn!(target: "aigw::policy", url, "jwt-validation: cannot fetch the key set: {why}");
                e.error = Some(why);
            }
        }
    }

    async fn get(&self, url: &str) -> Result<Arc<JwkSet>, String> {
        if self.loopback_only && !crate::gateway::attempts::forward::is_loopback_url(url) {
            return Err("only loopback addresses may be fetched here".into());
        }
        let r = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| crate::gateway::upstream::failed::describe(&e))?;
        if !r.status().is_success() {
            return Err(format!("it answered {}", r.status()));
        }
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_BYTES {
            return Err(format!("the document is larger than {MAX_BYTES} bytes"));
        }
        parse_set(&String::from_utf8_lossy(&body))
    }

    /// Fetches `url` again in the background unless that was asked for lately.
    fn refetch_soon(self: &Arc<Self>, url: &str) {
        {
            let mut entries = self.entries();
            let e = entries.entry(url.to_string()).or_default();
            if e.asked.is_some_and(|t| t.elapsed() < REFETCH_GAP) {
                return;
            }
            e.asked = Some(Instant::now());
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (me, url) = (self.clone(), url.to_string());
            rt.spawn(async move { me.fetch(&url).await });
        }
    }
}

/// The port the evaluator reads; a clone of the cache's handle.
pub struct Keys(pub Arc<Jwks>);

impl KeyStore for Keys {
    fn keys(&self, source: &KeySource) -> Result<Arc<JwkSet>, String> {
        let KeySource::Url(url) = source else {
            return LocalKeys.keys(source);
        };
        let entries = self.0.entries();
        match entries.get(url) {
            Some(Entry { set: Some(s), .. }) => Ok(s.clone()),
            Some(Entry {
                error: Some(why), ..
            }) => Err(format!("the key set at {url} could not be fetched: {why}")),
            _ => {
                drop(entries);
                self.0.refetch_soon(url);
                Err(format!("the key set at {url} is still being fetched"))
            }
        }
    }

    fn missing_key(&self, source: &KeySource) {
        if let KeySource::Url(url) = source {
            self.0.refetch_soon(url);
        }
    }
}

/// Keeps the current policy's key sets fresh until the gateway shuts down.
pub fn spawn_refresh(gw: Arc<crate::gateway::Gateway>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = gw.shutdown.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => gw.fetch_keys(gw.current().as_ref()).await,
            }
        }
    });
}
