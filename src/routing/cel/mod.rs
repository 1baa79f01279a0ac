//! The CEL environment of `model_selection.strategy` and `api_key_selection.strategy`.
//!
//! Pure: no HTTP, terminal or clock; randomness comes in as a seed. The engine converts the
//! policy and catalog into [views](views), builds a [`Universe`] once per policy load (or per
//! request when pass-through models are added with [`Universe::with_extra`]), [`compile`]s each
//! strategy once, and calls [`eval_models`] / [`eval_keys`] per request.
//!
//! # The environment (ngrok's, with aigw's decisions where the docs are silent)
//! - Roots: `ai.models`, `ai.providers`, `ai.authors` (model strategies), `ai.keys` (key
//!   strategies). `ai` alone is not a value.
//! - Collection functions: `only(ids)`, `ignore(ids)` on models, providers, authors (id or any
//!   alias, ASCII case-insensitive; `ids` is a list or one string); `onlyProviders`,
//!   `ignoreProviders`, `onlyAuthors`, `ignoreAuthors`, `inRegion(r)`, `inCountryCode(cc)` on
//!   models (case-insensitive); `underCost(priceType, max)` keeps models whose price of that type
//!   is `<= max` and drops models without that price; `sortBy('price')` orders by `text.input`
//!   price ascending, unpriced last, stable; `sortBy(m, key)` orders by `key` ascending (numbers
//!   by value whatever their type, strings, bools; `null` last), stable; `random()` picks one
//!   element, `randomize()` shuffles, both from the evaluation's seed; `list[i]`;
//!   `ai.models.get(providerId, modelId)`, `ai.providers.get(id)`, `ai.authors.get(id)` and
//!   `provider.getModel(id)` return `null` when nothing matches (and `null.getModel(..)` is
//!   `null`), and a strategy that evaluates to `null` selects nothing, like `[]`;
//!   `m.getMetadata('a.b')` follows a dotted path, `null` when missing. `provider.getModel`
//!   searches every model of the universe, not just the request's `ai.models`.
//! - Free-form maps (`m.metadata`, `m.pricing`, provider metadata): a missing key reads as
//!   `null`, so `ai.models.filter(m, m.metadata.tier == 'budget')` works on models without
//!   metadata, and `has(m.metadata.tier)` / `'tier' in m.metadata` still tell whether the key
//!   is there. `m.metrics.api_keys['id']` fails when the key has no metrics yet, as ngrok
//!   documents: guard with `'id' in m.metrics.api_keys`.
//! - Standard CEL (`in`, `size`, `contains`, `startsWith`, `endsWith`, `matches`, ternary,
//!   arithmetic, macros `filter`, `map`, `all`, `exists`, `exists_one`, `has`) and the strings
//!   extension (`lowerAscii`, `split`, `replace`, …). The lists extension is not loaded: its
//!   `sortBy` macro would shadow ngrok's (nulls last, mixed numbers).
//!
//! # Performance
//! The views are converted to CEL values once ([`Universe::new`]); an evaluation borrows them.
//! `filter` / `map` bodies made of field paths, literals, comparisons, `&&` `||` `!` `?:`, `in`,
//! `size`, `contains`, `startsWith`, `endsWith` and `has` are compiled to a native form that
//! keeps the interpreter's semantics and errors (the `native` module); anything else runs in
//! the `cel` interpreter.

mod check;
mod facts;
mod functions;
mod guard;
mod native;
mod schema;
mod values;
pub mod views;

pub(crate) use facts::visit;
pub use guard::{too_deep, with_stack};

/// Syntax errors of `expr` as issues with byte ranges (for the traffic-policy CEL too).
pub fn syntax_issues(expr: &str, errors: &cel::ParseErrors) -> Vec<CelIssue> {
    check::syntax_issues(expr, errors)
}

pub use views::{
    AuthorView, Datacenter, ErrorRate, KeyMetrics, KeyView, Latency, LiveView, MetricsScope,
    ModelMetrics, ModelView, Pricing, ProviderView, Quota, TokenUsage,
};

use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::common::types::{CelString, Kind};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Value};
use schema::ObjKind;
use std::collections::HashMap;
use std::sync::Arc;
use values::{List, ObjVal, Selection};

/// The environment every strategy compiles and runs in.
pub(crate) static ENV: std::sync::LazyLock<Arc<cel::Env>> = std::sync::LazyLock::new(|| {
    let mut env = functions::build_env().expect("the aigw CEL environment declares cleanly");
    native::register(&mut env).expect("the compiled-comprehension overload declares cleanly");
    Arc::new(env)
});

/// Which `strategy` list an expression belongs to, and so which roots it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StrategyKind {
    /// `model_selection.strategy`: `ai.models`, `ai.providers`, `ai.authors`; returns models.
    Models,
    /// `api_key_selection.strategy`: `ai.keys`; returns keys.
    Keys,
}

/// How serious a [`CelIssue`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The expression is rejected.
    Error,
    /// The expression compiles but probably does not do what was meant.
    Warning,
}

/// A problem found while compiling a strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CelIssue {
    /// Stable code. Errors: `cel-syntax`, `cel-unknown-variable`, `cel-wrong-root`,
    /// `cel-unknown-field`, `cel-unknown-function`, `cel-arity`, `cel-price-type`,
    /// `cel-result-type`, `cel-comparison-type`. Warnings: `cel-unguarded-key`.
    pub code: &'static str,
    /// Error or warning.
    pub severity: Severity,
    /// One-line message, e.g. "unknown field `prvider_id` on a model; did you mean `provider_id`?".
    pub message: String,
    /// Optional hint on how to fix it.
    pub help: Option<String>,
    /// Byte range inside the expression text (may be empty, at the end, for "missing" errors).
    pub range: std::ops::Range<usize>,
}

/// A compiled strategy expression: compile once per policy load, evaluate per request.
#[derive(Debug)]
pub struct Strategy {
    source: String,
    kind: StrategyKind,
    expr: IdedExpr,
    /// The comprehensions compiled to native code, see [`native`].
    natives: Arc<[native::Collect]>,
    facts: facts::Facts,
}

impl Strategy {
    /// The expression text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Which strategy list it was compiled for.
    pub fn kind(&self) -> StrategyKind {
        self.kind
    }

    /// Calls `random()` or `randomize()`, so the same request may plan differently.
    pub fn draws_random(&self) -> bool {
        self.facts.draws_random
    }

    /// Reads `m.metrics`, so live traffic figures change its answer.
    pub fn reads_metrics(&self) -> bool {
        self.facts.reads_metrics
    }

    /// Reads `m.aigw`, so the boxes' health and load change its answer.
    pub fn reads_live(&self) -> bool {
        self.facts.reads_live
    }

    /// Returns every model (possibly reordered): later strategies never run.
    pub fn is_catch_all(&self) -> bool {
        self.facts.catch_all
    }
}

/// Why an evaluation produced no selection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// CEL failed at runtime (ERR_NGROK_3803 for models, 3808 for keys).
    #[error("{message}")]
    Failed {
        /// CEL's error message.
        message: String,
    },
    /// The result is not a model / key or a list of them (ERR_NGROK_3806 for models).
    #[error("must return {expected}, got {got}")]
    WrongType {
        /// What the strategy kind requires: `an AIModel or []AIModel` or `a key or a list of keys`.
        expected: &'static str,
        /// The CEL type it returned, e.g. `string`, `int`, `list(string)`, `provider`.
        got: String,
    },
}

/// Compiles a strategy, checking it statically against the environment of `kind`.
///
/// Returns the strategy and its warnings, or every error found (syntax errors alone when the
/// text does not parse). Ranges are byte ranges in `expr`.
pub fn compile(expr: &str, kind: StrategyKind) -> Result<(Strategy, Vec<CelIssue>), Vec<CelIssue>> {
    if let Some(issue) = guard::too_deep(expr) {
        return Err(vec![issue]);
    }
    // Read on the caller's thread: `NATIVE` is thread-local.
    let native = NATIVE.with(std::cell::Cell::get);
    guard::with_stack(|| compile_checked(expr, kind, native))
}

fn compile_checked(
    expr: &str,
    kind: StrategyKind,
    native: bool,
) -> Result<(Strategy, Vec<CelIssue>), Vec<CelIssue>> {
    let program = match ENV.compile(expr) {
        Ok(program) => program,
        Err(errors) => return Err(check::syntax_issues(expr, &errors)),
    };
    if let Some(issue) = guard::tree_too_deep(expr, program.expression()) {
        return Err(vec![issue]);
    }
    let (errors, warnings): (Vec<_>, Vec<_>) = check::check(expr, kind)
        .into_iter()
        .partition(|issue| issue.severity == Severity::Error);
    if !errors.is_empty() {
        return Err(errors);
    }
    let facts = facts::Facts::of(program.expression());
    let mut ast = program.expression().clone();
    rewrite(&mut ast);
    let mut natives = Vec::new();
    if native {
        native::compile_comprehensions(&mut ast, &mut natives);
    }
    let strategy = Strategy {
        source: expr.to_owned(),
        kind,
        expr: ast,
        natives: natives.into(),
        facts,
    };
    Ok((strategy, warnings))
}

thread_local! {
    /// Whether `compile` uses the native fast path; tests turn it off to compare.
    static NATIVE: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Rewrites the compiled expression for the free-form maps, whose missing keys read as `null`:
/// - `has(x.f)` becomes `@aigw_has(x, 'f')`, which tells a missing key from a `null` value;
/// - `x.metadata.a.b` (and `x.pricing.a.b`: two or more fields past `metadata` / `pricing`)
///   becomes `@aigw_path(x.metadata, ['a', 'b'])`, `null` as soon as a key is missing, like
///   `getMetadata('a.b')`, where plain CEL would fail selecting `b` on `null`.
fn rewrite(e: &mut IdedExpr) {
    if rewrite_path(e) {
        return;
    }
    if let Expr::Select(select) = &mut e.expr
        && select.test
    {
        let mut operand = std::mem::take(&mut *select.operand);
        rewrite(&mut operand);
        let field = CelString::from(std::mem::take(&mut select.field));
        e.expr = Expr::Call(CallExpr {
            func_name: functions::HAS.to_owned(),
            target: None,
            args: vec![
                operand,
                IdedExpr {
                    id: e.id,
                    expr: Expr::Literal(LiteralValue::String(field)),
                },
            ],
        });
        return;
    }
    match &mut e.expr {
        Expr::Call(call) => {
            if let Some(target) = &mut call.target {
                rewrite(target);
            }
            call.args.iter_mut().for_each(rewrite);
        }
        Expr::Comprehension(c) => {
            for part in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                rewrite(part);
            }
        }
        Expr::List(list) => list.elements.iter_mut().for_each(rewrite),
        Expr::Map(map) => {
            for entry in &mut map.entries {
                if let EntryExpr::MapEntry(m) = &mut entry.expr {
                    rewrite(&mut m.key);
                    rewrite(&mut m.value);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &mut s.entries {
                if let EntryExpr::StructField(f) = &mut entry.expr {
                    rewrite(&mut f.value);
                }
            }
        }
        Expr::Select(select) => rewrite(&mut select.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Rewrites `e`, a select chain two or more fields past a free-form map, into `@aigw_path`.
fn rewrite_path(e: &mut IdedExpr) -> bool {
    let mut depth = 0;
    let mut node: &IdedExpr = e;
    let found = loop {
        match &node.expr {
            Expr::Select(s) if !s.test => {
                if depth >= 2 && (s.field == "metadata" || s.field == "pricing") {
                    break true;
                }
                depth += 1;
                node = &s.operand;
            }
            _ => break false,
        }
    };
    if !found {
        return false;
    }
    let id = e.id;
    let mut base = std::mem::take(e);
    let mut fields = Vec::with_capacity(depth);
    for _ in 0..depth {
        let Expr::Select(s) = base.expr else {
            unreachable!("counted above")
        };
        fields.push(IdedExpr {
            id,
            expr: Expr::Literal(LiteralValue::String(CelString::from(s.field))),
        });
        base = *s.operand;
    }
    fields.reverse();
    rewrite(&mut base);
    e.id = id;
    e.expr = Expr::Call(CallExpr {
        func_name: functions::PATH.to_owned(),
        target: None,
        args: vec![
            base,
            IdedExpr {
                id,
                expr: Expr::List(cel::common::ast::ListExpr::new(fields)),
            },
        ],
    });
    true
}

/// The models, providers and authors of a policy, converted to CEL values once.
#[derive(Clone, Debug)]
pub struct Universe {
    views: Arc<[ModelView]>,
    extra_views: Vec<ModelView>,
    models: Vec<ObjVal>,
    providers: Arc<[ObjVal]>,
    authors: Arc<[ObjVal]>,
    lookup: Arc<HashMap<(String, String), usize>>,
    extra_lookup: HashMap<(String, String), usize>,
}

fn lookup_keys(m: &ModelView) -> impl Iterator<Item = (String, String)> + '_ {
    let providers = std::iter::once(&m.provider_id).chain(&m.provider_id_aliases);
    providers.flat_map(move |p| {
        std::iter::once(&m.id)
            .chain(&m.id_aliases)
            .map(move |id| (p.to_ascii_lowercase(), id.to_ascii_lowercase()))
    })
}

impl Universe {
    /// Converts the views; model `i` of the result is `models[i]`.
    pub fn new(
        models: Vec<ModelView>,
        providers: Vec<ProviderView>,
        authors: Vec<AuthorView>,
    ) -> Self {
        let model_vals: Vec<ObjVal> = models
            .iter()
            .enumerate()
            .map(|(i, m)| values::model(m, i))
            .collect();
        let providers = providers
            .iter()
            .enumerate()
            .map(|(i, p)| values::provider(p, i, &model_vals))
            .collect();
        let authors = authors
            .iter()
            .enumerate()
            .map(|(i, a)| values::author(a, i))
            .collect();
        let mut lookup = HashMap::new();
        for (i, m) in models.iter().enumerate() {
            for key in lookup_keys(m) {
                lookup.entry(key).or_insert(i);
            }
        }
        Universe {
            views: models.into(),
            extra_views: Vec::new(),
            models: model_vals,
            providers,
            authors,
            lookup: Arc::new(lookup),
            extra_lookup: HashMap::new(),
        }
    }

    /// This universe plus `extra` models (e.g. a request's pass-through models) after the
    /// existing ones; the existing values are shared, not converted again. Providers'
    /// `getModel` does not see the extra models.
    pub fn with_extra(&self, extra: Vec<ModelView>) -> Universe {
        let mut u = self.clone();
        for m in extra {
            let i = u.models.len();
            u.models.push(values::model(&m, i));
            for key in lookup_keys(&m) {
                if !u.lookup.contains_key(&key) {
                    u.extra_lookup.entry(key).or_insert(i);
                }
            }
            u.extra_views.push(m);
        }
        u
    }

    /// Number of models.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether there are no models.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Model `i`, as given to [`Universe::new`] or [`Universe::with_extra`].
    pub fn model(&self, i: usize) -> Option<&ModelView> {
        self.views
            .get(i)
            .or_else(|| self.extra_views.get(i.checked_sub(self.views.len())?))
    }

    /// The models given to [`Universe::new`] (extra models: see [`Universe::model`]).
    pub fn models(&self) -> &[ModelView] {
        &self.views
    }

    /// The index of the model `model_id` of `provider_id` (ids or aliases, ASCII
    /// case-insensitive).
    pub fn find_model(&self, provider_id: &str, model_id: &str) -> Option<usize> {
        let key = (
            provider_id.to_ascii_lowercase(),
            model_id.to_ascii_lowercase(),
        );
        self.lookup
            .get(&key)
            .or_else(|| self.extra_lookup.get(&key))
            .copied()
    }
}

/// The root variables of one evaluation.
struct Roots<'a> {
    models: List<Selection<'a>>,
    providers: List<Selection<'a>>,
    authors: List<Selection<'a>>,
    keys: List<Selection<'a>>,
}

impl VariableResolver for Roots<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let list = match variable {
            "ai.models" => &self.models,
            "ai.providers" => &self.providers,
            "ai.authors" => &self.authors,
            "ai.keys" => &self.keys,
            _ => return None,
        };
        Some(CowVal::Borrowed(list))
    }
}

/// What a strategy kind must return, for [`EvalError::WrongType`].
fn expected(kind: ObjKind) -> &'static str {
    match kind {
        ObjKind::Key => "a key or a list of keys",
        _ => "an AIModel or []AIModel",
    }
}

/// Runs `s` against `roots`; the indices of the selected objects of kind `want`.
fn run(s: &Strategy, roots: &Roots<'_>, want: ObjKind, seed: u64) -> Result<Vec<usize>, EvalError> {
    let mut ctx = Context::with_env(ENV.clone());
    ctx.set_variable_resolver(roots);
    let _rng = functions::SeededRng::new(seed);
    let _natives = native::Installed::new(&s.natives);
    // The interpreter recurses once per level of the tree (at most guard::MAX_DEPTH): run it
    // where that much stack is left, on a fresh segment when the calling thread is short.
    let value = stacker::maybe_grow(guard::EVAL_RED_ZONE, guard::EVAL_STACK, || {
        Value::resolve_val(&s.expr, &ctx)
    })
    .map_err(|e| EvalError::Failed {
        message: e.to_string(),
    })?;
    selection(&*value, want)
}

/// The indices `value` selects: one object, a list of them, or nothing for `null`.
fn selection(value: &dyn Val, want: ObjKind) -> Result<Vec<usize>, EvalError> {
    let wrong = |got: String| EvalError::WrongType {
        expected: expected(want),
        got,
    };
    if let Some(obj) = value.downcast_ref::<ObjVal>() {
        return if obj.kind() == want {
            Ok(vec![obj.index()])
        } else {
            Err(wrong(obj.kind().name().to_owned()))
        };
    }
    match value.get_type().kind() {
        Kind::NullType => Ok(Vec::new()),
        Kind::List => {
            let iterable = value
                .as_iterable()
                .ok_or_else(|| wrong("list".to_owned()))?;
            let mut out = Vec::new();
            let mut items = iterable.iter();
            while let Some(item) = items.next() {
                match item.downcast_ref::<ObjVal>() {
                    Some(obj) if obj.kind() == want => out.push(obj.index()),
                    _ => return Err(wrong(format!("list({})", item.get_type().name()))),
                }
            }
            Ok(out)
        }
        _ => Err(wrong(value.get_type().name().to_owned())),
    }
}

/// Evaluates a model strategy for one request.
///
/// `visible` is `ai.models` for the request, in order, as indices into the universe; the result
/// is indices into the universe in the strategy's order (`random()` gives one). Lookups through
/// `ai.providers` may return models outside `visible`. `seed` drives `random()` / `randomize()`.
pub fn eval_models(
    s: &Strategy,
    u: &Universe,
    visible: &[usize],
    seed: u64,
) -> Result<Vec<usize>, EvalError> {
    if s.kind != StrategyKind::Models {
        return Err(EvalError::Failed {
            message: "an api_key_selection strategy cannot select models".to_owned(),
        });
    }
    if let Some(bad) = visible.iter().find(|&&i| i >= u.models.len()) {
        return Err(EvalError::Failed {
            message: format!("internal error: model index {bad} is outside the universe"),
        });
    }
    let roots = Roots {
        models: List(Selection::Picked(&u.models, visible)),
        providers: List(Selection::All(&u.providers)),
        authors: List(Selection::All(&u.authors)),
        keys: List(Selection::All(&[])),
    };
    run(s, &roots, ObjKind::Model, seed)
}

/// Evaluates a key strategy over `keys`; the result is indices into `keys`, in the strategy's
/// order.
pub fn eval_keys(s: &Strategy, keys: &[KeyView], seed: u64) -> Result<Vec<usize>, EvalError> {
    if s.kind != StrategyKind::Keys {
        return Err(EvalError::Failed {
            message: "a model_selection strategy cannot select API keys".to_owned(),
        });
    }
    let keys: Vec<ObjVal> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| values::key(k, i))
        .collect();
    let roots = Roots {
        models: List(Selection::All(&[])),
        providers: List(Selection::All(&[])),
        authors: List(Selection::All(&[])),
        keys: List(Selection::All(&keys)),
    };
    run(s, &roots, ObjKind::Key, seed)
}

#[cfg(test)]
mod tests;
