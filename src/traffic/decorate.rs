//! `ai-gateway`'s `headers`, `query_params` and `body`: their `${…}` compiled at load with the
//! same CEL as every rule and action (so `validate` reports them at their line), rendered once
//! per request, and sent with every attempt.

use std::sync::Arc;

use super::cel::{EvalError, Scope, to_json};
use super::program::{Cx, Tree};
use super::template::Template;
use crate::policy::diagnostic::Diagnostic;
use crate::policy::interpolate;
use crate::policy::secrets::SecretStore;
use crate::policy::{AiGateway, Sp};

/// The compiled decorations of one `ai-gateway` action.
#[derive(Debug, Clone, Default)]
pub struct Decorations {
    headers: Vec<(String, Template)>,
    query_params: Vec<(String, Template)>,
    body: Vec<(String, Tree)>,
    /// The rendering, when no `${…}` reads the request (most policies): made once, at load.
    fixed: Option<Arc<Rendered>>,
}

/// What one request sends besides the client's own request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rendered {
    /// Set on every attempt, replacing a header of the same name.
    pub headers: Vec<(String, String)>,
    /// Appended to every attempt's query string.
    pub query_params: Vec<(String, String)>,
    /// Merged into every attempt's body.
    pub body: Vec<(String, serde_json::Value)>,
}

impl Decorations {
    /// Compiles `g`'s decorations; `text` is the policy file, for the diagnostics' positions.
    pub fn compile(
        g: &AiGateway,
        text: &str,
        secrets: &SecretStore,
    ) -> (Decorations, Vec<Diagnostic>) {
        let mut cx = Cx::new(text, secrets);
        let headers = pairs(&mut cx, &g.headers);
        let query_params = pairs(&mut cx, &g.query_params);
        let body = g
            .body
            .iter()
            .filter_map(|(k, node)| Some((k.value.clone(), cx.tree(node)?)))
            .collect();
        let mut d = Decorations {
            headers,
            query_params,
            body,
            fixed: None,
        };
        d.fixed = d.constant().map(Arc::new);
        (d, cx.diags)
    }

    /// The rendering, when it is the same for every request.
    fn constant(&self) -> Option<Rendered> {
        let text = |list: &[(String, Template)]| {
            list.iter()
                .map(|(k, t)| Some((k.clone(), t.literal_text()?)))
                .collect::<Option<Vec<_>>>()
        };
        let body = self
            .body
            .iter()
            .map(|(k, t)| match t {
                Tree::Const(v) => Some((k.clone(), to_json(v))),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Rendered {
            headers: text(&self.headers)?,
            query_params: text(&self.query_params)?,
            body,
        })
    }

    /// The rendering made at load, when no `${…}` reads the request.
    pub fn fixed(&self) -> Option<Arc<Rendered>> {
        self.fixed.clone()
    }

    /// Renders every `${…}` against `scope`. An error fails the request (see
    /// [`super::eval`]): a header or a parameter is never sent half-rendered.
    pub fn render(&self, scope: &Scope) -> Result<Rendered, EvalError> {
        let text = |list: &[(String, Template)]| {
            list.iter()
                .map(|(k, t)| Ok((k.clone(), t.render(scope)?)))
                .collect::<Result<Vec<_>, EvalError>>()
        };
        let mut body = Vec::with_capacity(self.body.len());
        for (k, t) in &self.body {
            body.push((k.clone(), to_json(&t.value(scope)?)));
        }
        Ok(Rendered {
            headers: text(&self.headers)?,
            query_params: text(&self.query_params)?,
            body,
        })
    }
}

/// `name: "text with ${…}"` pairs, as the loader read them.
fn pairs(
    cx: &mut Cx<'_>,
    list: &[(Sp<String>, Sp<interpolate::Template>)],
) -> Vec<(String, Template)> {
    list.iter()
        .filter_map(|(name, t)| Some((name.value.clone(), cx.template_at(&t.value.raw, &t.span)?)))
        .collect()
}
