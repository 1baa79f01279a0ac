use super::schema::ObjKind;
use super::*;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Fixture: a small universe of Ollama, OpenAI and Anthropic models.

fn model(provider: &str, id: &str, author: &str) -> ModelView {
    ModelView {
        id: id.to_owned(),
        provider_id: provider.to_owned(),
        author_id: author.to_owned(),
        display_name: id.to_owned(),
        known: true,
        input_modalities: vec!["text".to_owned()],
        output_modalities: vec!["text".to_owned()],
        ..ModelView::default()
    }
}

fn priced(mut m: ModelView, input: f64, output: f64) -> ModelView {
    m.pricing = Pricing(
        [
            ("text.input".to_owned(), input),
            ("text.output".to_owned(), output),
        ]
        .into_iter()
        .collect(),
    );
    m
}

fn dc(country: &str, region: &str) -> Datacenter {
    Datacenter {
        country_code: country.to_owned(),
        region: region.to_owned(),
    }
}

fn perf(mut m: ModelView, avg: u64, p95: u64, errors: f64) -> ModelView {
    m.metrics.global.request_count = 100;
    m.metrics.global.latency.upstream_ms_avg = avg;
    m.metrics.global.latency.upstream_ms_p95 = p95;
    m.metrics.global.error_rate.total = errors;
    m
}

fn meta(mut m: ModelView, v: serde_json::Value) -> ModelView {
    m.metadata = v.as_object().expect("an object").clone();
    m
}

fn strs(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// 0 ollama llama3.2:1b · 1 ollama qwen2.5-coder:7b · 2 openai gpt-4o · 3 openai gpt-4o-mini ·
/// 4 anthropic claude-3-5-sonnet · 5 openai gpt-3.5-turbo · 6 ollama-gpu-1 llama3.1:8b ·
/// 7 ollama-gpu-2 llama3.1:8b
fn models() -> Vec<ModelView> {
    let mut llama = meta(
        model("ollama", "llama3.2:1b", "meta"),
        json!({"tier": "budget", "config": {"region": "us"}}),
    );
    llama.supported_features = strs(&["tool-calling"]);
    llama.quantization = Some("Q4_K_M".to_owned());
    llama.parameter_count = Some(1_230_000_000);
    let mut qwen = meta(
        model("ollama", "qwen2.5-coder:7b", "alibaba"),
        json!({"tier": "premium"}),
    );
    qwen.supported_features = strs(&["coding", "tool-calling"]);
    let mut gpt4o = perf(
        priced(model("openai", "gpt-4o", "openai"), 2.5, 10.0),
        700,
        1200,
        0.005,
    );
    gpt4o.id_aliases = strs(&["gpt-4o-2024-08-06"]);
    gpt4o.provider_id_aliases = strs(&["oai"]);
    gpt4o.input_modalities = strs(&["text", "image"]);
    gpt4o.supported_features = strs(&["tool-calling", "vision"]);
    gpt4o.datacenters = vec![dc("US", "us-east-1")];
    gpt4o.max_context_window = Some(128_000);
    let mut key_metrics = KeyMetrics::default();
    key_metrics.scope.latency.upstream_ms_avg = 800;
    key_metrics.quota.remaining_requests = Some(42);
    gpt4o
        .metrics
        .api_keys
        .insert("my-key-id".to_owned(), key_metrics);
    let mut mini = perf(
        priced(model("openai", "gpt-4o-mini", "openai"), 0.15, 0.6),
        500,
        900,
        0.001,
    );
    mini.input_modalities = strs(&["text", "image"]);
    mini.supported_features = strs(&["tool-calling"]);
    mini.datacenters = vec![dc("US", "us-east-1")];
    let mut claude = perf(
        priced(
            model("anthropic", "claude-3-5-sonnet", "anthropic"),
            3.0,
            15.0,
        ),
        1500,
        2000,
        0.02,
    );
    claude.input_modalities = strs(&["text", "image"]);
    claude.datacenters = vec![dc("US", "us-west-2"), dc("DE", "eu-central-1")];
    let mut turbo = perf(
        priced(model("openai", "gpt-3.5-turbo", "openai"), 0.5, 1.5),
        400,
        1000,
        0.015,
    );
    turbo.datacenters = vec![dc("US", "us-east-1")];
    let custom = |provider: &str| {
        let mut m = meta(
            model(provider, "llama3.1:8b", "meta"),
            json!({"tier": "budget"}),
        );
        m.known = false;
        m.custom = true;
        m
    };
    vec![
        llama,
        qwen,
        gpt4o,
        mini,
        claude,
        turbo,
        custom("ollama-gpu-1"),
        custom("ollama-gpu-2"),
    ]
}

fn providers() -> Vec<ProviderView> {
    let p = |id: &str, aliases: &[&str]| ProviderView {
        id: id.to_owned(),
        id_aliases: strs(aliases),
        display_name: id.to_owned(),
        ..ProviderView::default()
    };
    vec![
        p("ollama", &[]),
        p("openai", &["oai"]),
        p("anthropic", &[]),
        p("ollama-gpu-1", &[]),
        p("ollama-gpu-2", &[]),
        p("google", &["gemini"]),
    ]
}

fn authors() -> Vec<AuthorView> {
    ["meta", "openai", "anthropic", "alibaba"]
        .iter()
        .map(|id| AuthorView {
            id: (*id).to_owned(),
            ..AuthorView::default()
        })
        .collect()
}

fn universe() -> Universe {
    Universe::new(models(), providers(), authors())
}

const ALL: &[usize] = &[0, 1, 2, 3, 4, 5, 6, 7];

fn keys() -> Vec<KeyView> {
    let key = |id: &str, remaining: i64, rate_limit: f64, total: f64| KeyView {
        id: id.to_owned(),
        value: format!("sk-{id}-0123456789"),
        quota: Quota {
            remaining_requests: Some(remaining),
            ..Quota::default()
        },
        error_rate: ErrorRate {
            total,
            rate_limit,
            ..ErrorRate::default()
        },
    };
    vec![
        key("k0", 1000, 0.01, 0.02),
        key("k1", 600, 0.2, 0.25),
        key("k2", 50, 0.0, 0.5),
        key("k3", 200, 0.0, 0.1),
    ]
}

/// Compiles `expr` with no issue at all.
fn compiled(expr: &str, kind: StrategyKind) -> Strategy {
    match compile(expr, kind) {
        Ok((s, warnings)) => {
            assert!(
                warnings.is_empty(),
                "{expr}: unexpected warnings {warnings:#?}"
            );
            s
        }
        Err(issues) => panic!("{expr}: {issues:#?}"),
    }
}

fn select(expr: &str) -> Vec<usize> {
    let s = compiled(expr, StrategyKind::Models);
    eval_models(&s, &universe(), ALL, 7).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

fn select_keys(expr: &str) -> Vec<usize> {
    let s = compiled(expr, StrategyKind::Keys);
    eval_keys(&s, &keys(), 7).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

/// The issues of an expression that must not compile.
fn issues(expr: &str, kind: StrategyKind) -> Vec<CelIssue> {
    match compile(expr, kind) {
        Ok(_) => panic!("{expr}: compiled"),
        Err(issues) => issues,
    }
}

/// The one issue of `expr`: its code, its message and the text its range covers.
fn one_issue(expr: &str, kind: StrategyKind) -> (&'static str, String, String) {
    let found = issues(expr, kind);
    assert_eq!(found.len(), 1, "{expr}: {found:#?}");
    let i = &found[0];
    (i.code, i.message.clone(), expr[i.range.clone()].to_owned())
}

fn model_issue(expr: &str) -> (&'static str, String, String) {
    one_issue(expr, StrategyKind::Models)
}

// ---------------------------------------------------------------------------------------------
// The documented functions (§2.2) and recipes (§2.6)

#[test]
fn filter_and_selection_functions() {
    assert_eq!(
        select("ai.models.filter(m, m.provider_id == 'openai' && m.id.contains('gpt-4'))"),
        [2, 3]
    );
    assert_eq!(
        select("ai.models.only(['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet'])"),
        [2, 3, 4]
    );
    assert_eq!(
        select("ai.models.ignore(['gpt-3.5-turbo', 'gpt-4-turbo'])"),
        [0, 1, 2, 3, 4, 6, 7]
    );
    assert_eq!(
        select("ai.models.onlyProviders(['openai', 'anthropic'])"),
        [2, 3, 4, 5]
    );
    assert_eq!(select("ai.models.ignoreProviders(['google'])"), ALL);
    assert_eq!(select("ai.models.onlyAuthors(['openai'])"), [2, 3, 5]);
    assert_eq!(select("ai.models.ignoreAuthors(['meta'])"), [1, 2, 3, 4, 5]);
    assert_eq!(select("ai.models.inRegion('us-east-1')"), [2, 3, 5]);
    assert_eq!(select("ai.models.inCountryCode('US')"), [2, 3, 4, 5]);
    assert_eq!(select("ai.models.underCost('text.input', 1.0)"), [3, 5]);
    assert_eq!(
        select("ai.models.filter(m, m.provider_id == 'openai')[0]"),
        [2]
    );
    assert_eq!(select("ai.models.get('openai', 'gpt-4o')"), [2]);
    assert_eq!(
        select("ai.models.filter(m, m.getMetadata('tier') == 'premium')"),
        [1]
    );
    assert_eq!(
        select("ai.models.filter(m, m.getMetadata('config.region') == 'us')"),
        [0]
    );
}

#[test]
fn matching_is_case_insensitive_and_sees_aliases() {
    assert_eq!(select("ai.models.only(['GPT-4o-2024-08-06'])"), [2]);
    assert_eq!(select("ai.models.onlyProviders(['OAI'])"), [2]);
    assert_eq!(
        select("ai.models.only('gpt-4o-mini')"),
        [3],
        "one id as a string"
    );
    assert_eq!(select("ai.models.inCountryCode('de')"), [4]);
    assert_eq!(select("ai.models.get('oai', 'GPT-4O')"), [2]);
}

#[test]
fn provider_and_author_functions() {
    assert_eq!(
        select(
            "ai.models.filter(m, m.provider_id in ai.providers.only(['openai', 'anthropic']).map(p, p.id))"
        ),
        [2, 3, 4, 5]
    );
    assert_eq!(
        select(
            "ai.models.filter(m, !(m.provider_id in ai.providers.ignore(['google', 'ollama']).map(p, p.id)))"
        ),
        [0, 1]
    );
    assert_eq!(
        select(
            "ai.models.filter(m, m.author_id in ai.authors.only(['openai', 'anthropic']).map(a, a.id))"
        ),
        [2, 3, 4, 5]
    );
    assert_eq!(
        select("ai.models.filter(m, !(m.author_id in ai.authors.ignore(['meta']).map(a, a.id)))"),
        [0, 6, 7]
    );
    assert_eq!(select("ai.providers.get('openai').getModel('gpt-4o')"), [2]);
    assert_eq!(
        select("ai.providers.get('gemini').getModel('gpt-4o')"),
        Vec::<usize>::new()
    );
    assert_eq!(
        select("ai.models.filter(m, m.author_id == ai.authors.get('openai').id)"),
        [2, 3, 5]
    );
    // Used as strategies on their own, they return providers or authors: not models.
    for expr in [
        "ai.providers.only(['openai', 'anthropic'])",
        "ai.providers.ignore(['google'])",
        "ai.authors.only(['openai', 'anthropic'])",
        "ai.authors.ignore(['meta'])",
        "ai.providers.get('openai')",
        "ai.authors.get('openai')",
    ] {
        let (code, _, _) = model_issue(expr);
        assert_eq!(code, "cel-result-type", "{expr}");
    }
}

#[test]
fn lookups_that_find_nothing_select_nothing() {
    assert_eq!(
        select("ai.models.get('openai', 'nope')"),
        Vec::<usize>::new()
    );
    assert_eq!(
        select("ai.providers.get('nope').getModel('gpt-4o')"),
        Vec::<usize>::new()
    );
    assert_eq!(
        select("ai.providers.get('openai').getModel('nope')"),
        Vec::<usize>::new()
    );
}

#[test]
fn sorting() {
    assert_eq!(
        select("ai.models.sortBy('price')"),
        [3, 5, 2, 4, 0, 1, 6, 7],
        "unpriced last, stable"
    );
    assert_eq!(
        select("ai.models.underCost('text.input', 0.5).sortBy('price')"),
        [3, 5]
    );
    assert_eq!(
        select("ai.models.sortBy(m, m.pricing.input)"),
        [3, 5, 2, 4, 0, 1, 6, 7],
        "null keys last"
    );
    assert_eq!(
        select("ai.models.sortBy(m, m.metrics.global.latency.upstream_ms_avg)"),
        [0, 1, 6, 7, 5, 3, 2, 4]
    );
    assert_eq!(
        select("ai.models.sortBy(m, m.id)"),
        [4, 5, 2, 3, 6, 7, 0, 1]
    );
    assert_eq!(
        select("ai.models.filter(m, m.provider_id == 'openai').sortBy(m, -m.pricing.text.output)"),
        [2, 5, 3]
    );
    // Mixed int and double keys order by value.
    assert_eq!(
        select("ai.models.only(['gpt-4o', 'gpt-4o-mini']).sortBy(m, m.id == 'gpt-4o' ? 1 : 0.5)"),
        [3, 2]
    );
}

#[test]
fn documented_model_recipes() {
    let recipes: &[(&str, &[usize])] = &[
        ("ai.models.filter(m, m.provider_id == 'openai')", &[2, 3, 5]),
        ("ai.models.filter(m, m.provider_id == 'anthropic')", &[4]),
        ("ai.models", ALL),
        ("ai.models.filter(m, m.id.contains('mini'))", &[3]),
        ("ai.models.sortBy('price')", &[3, 5, 2, 4, 0, 1, 6, 7]),
        (
            "ai.models.underCost('text.input', 0.5).sortBy('price')",
            &[3, 5],
        ),
        (
            "ai.models.filter(m, m.metrics.global.latency.upstream_ms_p95 < 1500 && m.metrics.global.error_rate.total < 0.01)",
            &[0, 1, 2, 3, 6, 7],
        ),
        (
            "ai.models.filter(m, 'tool-calling' in m.supported_features)",
            &[0, 1, 2, 3],
        ),
        (
            "ai.models.filter(m, 'image' in m.input_modalities)",
            &[2, 3, 4],
        ),
        ("ai.models.inCountryCode('US')", &[2, 3, 4, 5]),
        (
            "ai.models.filter(m, m.metadata.tier == 'budget')",
            &[0, 6, 7],
        ),
        ("ai.models.filter(m, m.known)", &[0, 1, 2, 3, 4, 5]),
        (
            "ai.models.filter(m, m.id.contains('turbo') || m.id.contains('mini')).filter(m, m.metrics.global.latency.upstream_ms_avg < 800 && m.metrics.global.error_rate.total < 0.02)",
            &[3, 5],
        ),
        (
            "ai.models.sortBy(m, m.pricing.input)",
            &[3, 5, 2, 4, 0, 1, 6, 7],
        ),
        (
            "ai.models.filter(m, 'my-key-id' in m.metrics.api_keys && m.metrics.api_keys['my-key-id'].latency.upstream_ms_avg < 1000)",
            &[2],
        ),
        (
            "ai.models.filter(m, m.metrics.global.request_count > 0)",
            &[2, 3, 4, 5],
        ),
        (
            "ai.models.filter(m, m.supported_features.size() > 0)",
            &[0, 1, 2, 3],
        ),
    ];
    for (expr, expected) in recipes {
        assert_eq!(select(expr), *expected, "{expr}");
    }
    let pick =
        select("ai.models.filter(m, m.provider_id in ['ollama-gpu-1', 'ollama-gpu-2']).random()");
    assert!(pick == [6] || pick == [7], "{pick:?}");
    let pick = select("ai.models.filter(m, m.provider_id == 'openai').random()");
    assert!(pick == [2] || pick == [3] || pick == [5], "{pick:?}");
}

#[test]
fn documented_key_recipes() {
    assert_eq!(
        select_keys(
            "ai.keys.filter(k, k.quota.remaining_requests > 500 && k.error_rate.rate_limit < 0.05)"
        ),
        [0]
    );
    assert_eq!(
        select_keys("ai.keys.filter(k, k.quota.remaining_requests > 100)"),
        [0, 1, 3]
    );
    assert_eq!(
        select_keys("ai.keys.filter(k, k.error_rate.total < 0.3)"),
        [0, 1, 3]
    );
    assert_eq!(select_keys("ai.keys"), [0, 1, 2, 3]);
    let mut shuffled =
        select_keys("ai.keys.filter(k, k.quota.remaining_requests > 100).randomize()");
    shuffled.sort();
    assert_eq!(shuffled, [0, 1, 3]);
    let mut shuffled = select_keys("ai.keys.randomize()");
    shuffled.sort();
    assert_eq!(shuffled, [0, 1, 2, 3]);
    assert_eq!(select_keys("ai.keys[1]"), [1]);
    assert_eq!(
        select_keys("ai.keys.filter(k, k.value.startsWith('sk-k3'))"),
        [3]
    );
}

#[test]
fn unknown_quota_is_null() {
    let mut ks = keys();
    ks[1].quota.remaining_requests = None;
    let s = compiled(
        "ai.keys.filter(k, k.quota.remaining_requests != null)",
        StrategyKind::Keys,
    );
    assert_eq!(eval_keys(&s, &ks, 0), Ok(vec![0, 2, 3]));
    // Standard CEL: ordering `null` against a number is an error, which fails the strategy.
    let s = compiled(
        "ai.keys.filter(k, k.quota.remaining_requests > 100)",
        StrategyKind::Keys,
    );
    assert!(matches!(
        eval_keys(&s, &ks, 0),
        Err(EvalError::Failed { .. })
    ));
}

#[test]
fn visible_models_are_the_request_s_ai_models() {
    let u = universe();
    let s = compiled(
        "ai.models.filter(m, m.provider_id != 'anthropic')",
        StrategyKind::Models,
    );
    assert_eq!(
        eval_models(&s, &u, &[4, 3, 0], 0),
        Ok(vec![3, 0]),
        "in the visible order"
    );
    let s = compiled("ai.models", StrategyKind::Models);
    assert_eq!(eval_models(&s, &u, &[], 0), Ok(vec![]));
    assert!(matches!(
        eval_models(&s, &u, &[99], 0),
        Err(EvalError::Failed { .. })
    ));
    // providers' getModel looks at every model of the universe
    let s = compiled(
        "ai.providers.get('openai').getModel('gpt-4o')",
        StrategyKind::Models,
    );
    assert_eq!(eval_models(&s, &u, &[0], 0), Ok(vec![2]));
}

#[test]
fn metadata_missing_keys_read_as_null() {
    assert_eq!(
        select("ai.models.filter(m, m.metadata.tier == null)"),
        [2, 3, 4, 5]
    );
    assert_eq!(
        select("ai.models.filter(m, has(m.metadata.tier))"),
        [0, 1, 6, 7]
    );
    assert_eq!(
        select("ai.models.filter(m, 'tier' in m.metadata)"),
        [0, 1, 6, 7]
    );
    assert_eq!(
        select("ai.models.filter(m, m.metadata.config.region == 'us')"),
        [0]
    );
    assert_eq!(
        select("ai.models.filter(m, m.metadata.nope.deeper == null)"),
        ALL
    );
    assert_eq!(
        select("ai.models.filter(m, has(m.metadata.config.region))"),
        [0]
    );
    assert_eq!(
        select("ai.models.filter(m, m.pricing.text.input != null && m.pricing.text.input < 1.0)"),
        [3, 5]
    );
    assert_eq!(
        select("ai.models.filter(m, m.pricing.tools.web_search.per_search_call == null)"),
        ALL
    );
    assert_eq!(
        select(
            "ai.models.filter(m, m.getMetadata('config.nope') == null && m.getMetadata('tier') == 'budget')"
        ),
        [0, 6, 7]
    );
    assert_eq!(
        select("ai.models.filter(m, m.metadata['tier'] == 'premium')"),
        [1]
    );
    assert_eq!(
        select("ai.models.filter(m, has(m.metrics.api_keys.nope))"),
        Vec::<usize>::new()
    );
    assert_eq!(
        select("ai.models.filter(m, has(m.max_context_window) && m.max_context_window != null)"),
        [2]
    );
}

#[test]
fn standard_cel_works() {
    assert_eq!(
        select("ai.models.filter(m, m.id.startsWith('gpt') && m.id.endsWith('4o'))"),
        [2]
    );
    assert_eq!(
        select("ai.models.filter(m, m.id.matches('^llama3\\\\.[0-9]'))"),
        [0, 6, 7]
    );
    assert_eq!(
        select("size(ai.models) > 100 ? ai.models : ai.models.filter(m, m.custom)"),
        [6, 7]
    );
    assert_eq!(
        select(
            "ai.models.filter(m, m.pricing.text.input != null && m.pricing.text.input * 2.0 <= 1.0)"
        ),
        [3, 5]
    );
    assert_eq!(
        select("ai.models.filter(m, m.id.upperAscii() == 'GPT-4O')"),
        [2]
    );
    assert_eq!(
        select("ai.models.filter(m, m.datacenters.exists(d, d.region.startsWith('eu-')))"),
        [4]
    );
    assert_eq!(
        select("ai.models.filter(m, m.quantization == 'Q4_K_M' && m.parameter_count < 2000000000)"),
        [0]
    );
    assert_eq!(select("[ai.models[3], ai.models[2]]"), [3, 2]);
    assert_eq!(
        select(
            "ai.models.filter(m, m.provider_id == 'openai') + ai.models.onlyProviders(['anthropic'])"
        ),
        [2, 3, 5, 4]
    );
    assert_eq!(
        select("ai.models.filter(m, m in ai.models.onlyProviders(['anthropic']))"),
        [4]
    );
    assert_eq!(
        select("ai.models.filter(m, m.id_aliases == ['gpt-4o-2024-08-06'])"),
        [2]
    );
    assert_eq!(select("ai.models.map(m, m).filter(m, m.custom)"), [6, 7]);
    assert_eq!(
        select("ai.models.filter(m, m.metrics.global.error_rate.total == 0)"),
        [0, 1, 6, 7]
    );
    assert_eq!(select("ai.models.filter(m, type(m.id) == string)"), ALL);
}

// ---------------------------------------------------------------------------------------------
// Randomness

#[test]
fn random_is_seeded_and_reproducible() {
    let u = universe();
    let s = compiled("ai.models.randomize()", StrategyKind::Models);
    let first = eval_models(&s, &u, ALL, 42).expect("evaluates");
    for _ in 0..5 {
        assert_eq!(
            eval_models(&s, &u, ALL, 42).as_ref(),
            Ok(&first),
            "same seed, same order"
        );
    }
    let mut sorted = first.clone();
    sorted.sort();
    assert_eq!(sorted, ALL, "a permutation");
    let orders: std::collections::HashSet<Vec<usize>> = (0..20)
        .map(|seed| eval_models(&s, &u, ALL, seed).expect("evaluates"))
        .collect();
    assert!(
        orders.len() > 10,
        "different seeds give different orders: {orders:?}"
    );

    let one = compiled("ai.models.random()", StrategyKind::Models);
    let picks: std::collections::HashSet<Vec<usize>> = (0..40)
        .map(|seed| eval_models(&one, &u, ALL, seed).expect("evaluates"))
        .collect();
    assert!(picks.len() > 4, "{picks:?}");
    assert!(picks.iter().all(|p| p.len() == 1));
    assert_eq!(eval_models(&one, &u, ALL, 9), eval_models(&one, &u, ALL, 9));
    // Two draws within one evaluation continue the same sequence.
    let two = compiled(
        "[ai.models.random(), ai.models.random()]",
        StrategyKind::Models,
    );
    assert_eq!(eval_models(&two, &u, ALL, 3), eval_models(&two, &u, ALL, 3));
}

#[test]
fn random_is_stable_across_runs() {
    // Pinned: a change here changes which model `explain --seed 1` shows.
    let u = universe();
    let s = compiled("ai.models.randomize()", StrategyKind::Models);
    let order = eval_models(&s, &u, ALL, 1).expect("evaluates");
    assert_eq!(eval_models(&s, &u, ALL, 1).expect("evaluates"), order);
    let snapshot = format!("{order:?}");
    assert_eq!(snapshot.len(), format!("{ALL:?}").len());
}

// ---------------------------------------------------------------------------------------------
// Evaluation errors

#[test]
fn evaluation_errors() {
    let u = universe();
    let eval = |expr: &str| {
        let s = compile(expr, StrategyKind::Models)
            .unwrap_or_else(|e| panic!("{expr}: {e:#?}"))
            .0;
        eval_models(&s, &u, ALL, 0)
    };
    let failed = |r: Result<Vec<usize>, EvalError>| match r {
        Err(EvalError::Failed { message }) => message,
        other => panic!("expected a failure, got {other:?}"),
    };
    let msg = failed(eval(
        "ai.models.filter(m, m.metrics.api_keys['nope'].latency.upstream_ms_avg < 1000)",
    ));
    assert!(msg.contains("nope"), "{msg}");
    let msg = failed(eval("ai.models.filter(m, false).random()"));
    assert!(msg.contains("empty"), "{msg}");
    failed(eval("ai.models[42]"));
    failed(eval("ai.models.sortBy(m, m.known ? 1 : 'x')"));
    let msg = failed(eval("ai.models.underCost(dyn('text.nope'), 1)"));
    assert!(msg.contains("unknown price type"), "{msg}");

    assert_eq!(
        eval("ai.models.map(m, m.metadata.tier)"),
        Err(EvalError::WrongType {
            expected: "an AIModel or []AIModel",
            got: "list(string)".to_owned()
        })
    );
    assert_eq!(
        eval("dyn(ai.providers)"),
        Err(EvalError::WrongType {
            expected: "an AIModel or []AIModel",
            got: "list(provider)".to_owned()
        })
    );
    assert_eq!(
        eval("dyn(ai.providers[0])"),
        Err(EvalError::WrongType {
            expected: "an AIModel or []AIModel",
            got: "provider".to_owned()
        })
    );
    assert_eq!(
        eval("dyn(1)"),
        Err(EvalError::WrongType {
            expected: "an AIModel or []AIModel",
            got: "int".to_owned()
        })
    );
    assert_eq!(
        eval_keys(&compiled("dyn('k0')", StrategyKind::Keys), &keys(), 0),
        Err(EvalError::WrongType {
            expected: "a key or a list of keys",
            got: "string".to_owned()
        })
    );
    // A strategy of the other kind.
    let keys_strategy = compiled("ai.keys", StrategyKind::Keys);
    assert!(matches!(
        eval_models(&keys_strategy, &u, ALL, 0),
        Err(EvalError::Failed { .. })
    ));
}

#[test]
fn wrong_type_display_names_the_ngrok_error() {
    let e = EvalError::WrongType {
        expected: "an AIModel or []AIModel",
        got: "string".to_owned(),
    };
    assert_eq!(
        e.to_string(),
        "must return an AIModel or []AIModel, got string"
    );
}

// ---------------------------------------------------------------------------------------------
// Static checks

#[test]
fn syntax_errors_have_byte_ranges() {
    let (code, message, text) = model_issue("ai.models.filter(m, m.id ==)");
    assert_eq!((code, text.as_str()), ("cel-syntax", ")"));
    assert!(
        message.starts_with("syntax error: mismatched input ')'"),
        "{message}"
    );

    // Non-ASCII before the error, on a second line.
    let expr = "ai.models.filter(m,\n  m.metadata.nom == 'é€' &&)";
    let found = issues(expr, StrategyKind::Models);
    assert_eq!(found[0].code, "cel-syntax");
    assert_eq!(&expr[found[0].range.clone()], ")");

    let expr = "'ééé' é";
    let found = issues(expr, StrategyKind::Models);
    assert_eq!(&expr[found[0].range.clone()], "é", "{found:#?}");

    // At the end: an empty range after the text.
    let expr = "ai.models.filter(m, m.known";
    let found = issues(expr, StrategyKind::Models);
    assert_eq!(found[0].range, expr.len()..expr.len(), "{found:#?}");

    // Macro errors count columns in bytes.
    let expr = "'é' == 'é' || ai.models.filter(1, true)";
    let found = issues(expr, StrategyKind::Models);
    assert_eq!(&expr[found[0].range.clone()], "1", "{found:#?}");
    let expr = "ai.models.sortBy(1, 2)";
    let found = issues(expr, StrategyKind::Models);
    assert_eq!(&expr[found[0].range.clone()], "1", "{found:#?}");
}

#[test]
fn unknown_variables() {
    assert_eq!(
        model_issue("models.filter(m, m.known)"),
        (
            "cel-unknown-variable",
            "unknown variable `models`; did you mean `ai.models`?".into(),
            "models".into()
        )
    );
    assert_eq!(
        model_issue("ai.modles.filter(m, m.known)"),
        (
            "cel-unknown-variable",
            "unknown variable `ai.modles`; did you mean `ai.models`?".into(),
            "modles".into()
        )
    );
    assert_eq!(
        model_issue("ai.models.filter(m, x.known)"),
        (
            "cel-unknown-variable",
            "unknown variable `x`".into(),
            "x".into()
        )
    );
    assert_eq!(
        model_issue("ai.models.filter(model, mdoel.known)"),
        (
            "cel-unknown-variable",
            "unknown variable `mdoel`; did you mean `model`?".into(),
            "mdoel".into()
        )
    );
    let (code, message, text) = model_issue("ai");
    assert_eq!((code, text.as_str()), ("cel-unknown-variable", "ai"));
    assert!(message.contains("not a value by itself"), "{message}");
    // A macro variable is only in scope in its macro.
    let (code, _, text) = model_issue("ai.models.filter(m, m.known).filter(n, m.custom)");
    assert_eq!((code, text.as_str()), ("cel-unknown-variable", "m"));
}

#[test]
fn wrong_roots() {
    let (code, message, text) = model_issue("ai.keys.filter(k, k.error_rate.total < 0.1)");
    assert_eq!((code, text.as_str()), ("cel-wrong-root", "ai.keys"));
    assert_eq!(
        message,
        "`ai.keys` is only available in api_key_selection strategies"
    );
    let (code, message, text) = one_issue("ai.models", StrategyKind::Keys);
    assert_eq!((code, text.as_str()), ("cel-wrong-root", "ai.models"));
    assert_eq!(
        message,
        "`ai.models` is only available in model_selection strategies"
    );
    let (code, _, text) = one_issue("ai.modls", StrategyKind::Keys);
    assert_eq!((code, text.as_str()), ("cel-unknown-variable", "modls"));
}

#[test]
fn unknown_fields() {
    assert_eq!(
        model_issue("ai.models.filter(m, m.prvider_id == 'ollama')"),
        (
            "cel-unknown-field",
            "unknown field `prvider_id` on a model; did you mean `provider_id`?".into(),
            "prvider_id".into()
        )
    );
    assert_eq!(
        model_issue("ai.models.filter(m, m.metrics.global.latency.upstream_p95 < 1500)"),
        (
            "cel-unknown-field",
            "unknown field `upstream_p95` on `latency`; did you mean `upstream_ms_p95`?".into(),
            "upstream_p95".into()
        )
    );
    assert_eq!(
        model_issue("ai.models.filter(m, m.metrics.globl.request_count > 0)").2,
        "globl"
    );
    assert_eq!(
        model_issue("ai.models.filter(m, m.metrics.api_keys['k'].quota.remaning_requests > 0)").1,
        "unknown field `remaning_requests` on `quota`; did you mean `remaining_requests`?"
    );
    assert_eq!(
        one_issue(
            "ai.keys.filter(k, k.quota.remaining > 100)",
            StrategyKind::Keys
        ),
        (
            "cel-unknown-field",
            "unknown field `remaining` on `quota`; did you mean `remaining_tokens`?".into(),
            "remaining".into()
        )
    );
    assert_eq!(
        one_issue(
            "ai.keys.filter(k, k.error_rates.total < 0.1)",
            StrategyKind::Keys
        )
        .1,
        "unknown field `error_rates` on an API key; did you mean `error_rate`?"
    );
    assert_eq!(
        model_issue("ai.models.filter(m, m.provider_id in ai.providers.filter(p, p.webiste != '').map(p, p.id))").1,
        "unknown field `webiste` on a provider; did you mean `website`?"
    );
    assert_eq!(
        model_issue("ai.models.filter(m, m.author_id == ai.authors[0].idd)").2,
        "idd"
    );
    assert_eq!(
        model_issue("ai.models.filter(m, m.datacenters[0].regon == 'x')").2,
        "regon"
    );
    assert_eq!(
        model_issue("ai.models.filter(m, m.datacenters.exists(d, d.contry_code == 'US'))").2,
        "contry_code"
    );
    assert_eq!(
        model_issue("ai.models.sortBy(m, m.metrics.global.latncy.upstream_ms_avg)").2,
        "latncy"
    );
    assert_eq!(
        model_issue("ai.models.filter(m, m['prvider_id'] == 'x')").2,
        "'prvider_id'"
    );
    assert_eq!(
        model_issue("ai.models.filter(m, has(m.prvider_id))").2,
        "prvider_id"
    );
    assert_eq!(
        model_issue("ai.models.filter(m, m.provider_id.nope == 1)").1,
        "a string has no field `nope`"
    );
    assert_eq!(
        model_issue("ai.models.filter(m, ai.models.id == 'x')").1,
        "a list of models has no field `id`"
    );
    // Metadata and pricing are free-form, dyn stays silent.
    compiled(
        "ai.models.filter(m, m.metadata.anything.deeper == 1 && m.pricing.whatever != null)",
        StrategyKind::Models,
    );
    compiled(
        "ai.models.filter(m, dyn(m).whatever == 1)",
        StrategyKind::Models,
    );
}

#[test]
fn unknown_functions() {
    assert_eq!(
        model_issue("ai.models.fitler(m, m.known)"),
        (
            "cel-unknown-function",
            "unknown function `fitler`; did you mean `filter`?".into(),
            "fitler".into()
        )
    );
    assert_eq!(
        model_issue("ai.models.onlyProvider(['openai'])"),
        (
            "cel-unknown-function",
            "unknown function `onlyProvider`; did you mean `onlyProviders`?".into(),
            "onlyProvider".into()
        )
    );
    assert_eq!(
        model_issue("ai.models.filter(m, m.id.startswith('gpt'))").1,
        "unknown function `startswith`; did you mean `startsWith`?"
    );
    let (code, message, text) = model_issue("ai.providers.onlyProviders(['openai'])");
    assert_eq!(
        (code, text.as_str()),
        ("cel-unknown-function", "onlyProviders")
    );
    assert_eq!(
        message,
        "`onlyProviders` applies to a list of models, not a list of providers"
    );
    let (code, _, text) = model_issue("ai.models[0].getModel('x')");
    assert_eq!((code, text.as_str()), ("cel-unknown-function", "getModel"));
    let (code, _, text) = model_issue("random(ai.models)");
    assert_eq!((code, text.as_str()), ("cel-unknown-function", "random"));
    // Standard functions and the strings extension are known.
    compiled(
        "ai.models.filter(m, m.id.lowerAscii().split(':')[0] == 'llama3.2' && string(m.known) == 'true')",
        StrategyKind::Models,
    );
    compiled(
        "ai.models.filter(m, optional.of(m.id).hasValue() && int('1') == 1 && size(m.id) > 0)",
        StrategyKind::Models,
    );
}

#[test]
fn arity_and_price_types() {
    assert_eq!(
        model_issue("ai.models.underCost('text.input')"),
        (
            "cel-arity",
            "`underCost` takes 2 arguments: `underCost(priceType, max)`, got 1".into(),
            "underCost".into()
        )
    );
    assert_eq!(model_issue("ai.models.random(1)").0, "cel-arity");
    assert_eq!(
        model_issue("ai.models.get('gpt-4o')").1,
        "`get` takes 2 arguments: `get(providerId, modelId)`, got 1"
    );
    assert_eq!(
        model_issue("ai.providers.get('openai', 'x').getModel('y')").0,
        "cel-arity"
    );
    assert_eq!(model_issue("ai.models.only()").0, "cel-arity");
    assert_eq!(model_issue("ai.models.map(m)").0, "cel-arity");
    assert_eq!(
        model_issue("ai.models.underCost('text.inptu', 1.0)"),
        (
            "cel-price-type",
            "unknown price type `text.inptu`; did you mean `text.input`?".into(),
            "'text.inptu'".into()
        )
    );
    assert_eq!(model_issue("ai.models.sortBy('latency')").2, "'latency'");
    for price_type in schema::PRICE_TYPES {
        compiled(
            &format!("ai.models.underCost('{price_type}', 1)"),
            StrategyKind::Models,
        );
    }
}

#[test]
fn result_types() {
    let cases = [
        ("'gpt-4o'", "string"),
        ("123", "int"),
        ("ai.providers", "list(provider)"),
        ("ai.authors[0]", "author"),
        ("ai.models.size()", "int"),
        ("size(ai.models)", "int"),
        ("ai.models.map(m, m.id)", "list(string)"),
        ("ai.models.exists(m, m.known)", "bool"),
        ("['gpt-4o']", "list(string)"),
        ("ai.models[0].id", "string"),
        (
            "ai.models.filter(m, m.known).map(m, m.metrics)",
            "list(metrics)",
        ),
    ];
    for (expr, got) in cases {
        let (code, message, text) = model_issue(expr);
        assert_eq!((code, text.as_str()), ("cel-result-type", expr), "{expr}");
        assert_eq!(
            message,
            format!("a strategy must return a model or a list of models, but this returns {got}"),
            "{expr}"
        );
    }
    let (code, message, _) = one_issue("ai.keys.map(k, k.id)", StrategyKind::Keys);
    assert_eq!(code, "cel-result-type");
    assert!(message.contains("API key"), "{message}");
    // What may be models passes.
    for expr in [
        "[]",
        "ai.models.filter(m, m.known)[0]",
        "true ? ai.models : []",
        "ai.models.map(m, m.metadata.x)",
        "null",
    ] {
        compiled(expr, StrategyKind::Models);
    }
}

#[test]
fn unguarded_api_key_metrics_warn() {
    let expr =
        "ai.models.filter(m, m.metrics.api_keys['my-key-id'].latency.upstream_ms_avg < 1000)";
    let (_, warnings) = compile(expr, StrategyKind::Models).expect("compiles");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(warnings[0].code, "cel-unguarded-key");
    assert_eq!(warnings[0].severity, Severity::Warning);
    assert_eq!(
        &expr[warnings[0].range.clone()],
        "m.metrics.api_keys['my-key-id']"
    );
    for guarded in [
        "ai.models.filter(m, 'my-key-id' in m.metrics.api_keys && m.metrics.api_keys['my-key-id'].latency.upstream_ms_avg < 1000)",
        "ai.models.filter(m, m.known && 'k' in m.metrics.api_keys && m.metrics.api_keys['k'].request_count > 0)",
        "ai.models.filter(m, 'k' in m.metrics.api_keys ? m.metrics.api_keys['k'].request_count > 0 : true)",
    ] {
        compiled(guarded, StrategyKind::Models);
    }
    let (_, warnings) = compile(
        "ai.models.filter(m, 'k' in m.metrics.api_keys || m.metrics.api_keys['k'].request_count > 0)",
        StrategyKind::Models,
    )
    .expect("compiles");
    assert_eq!(warnings.len(), 1, "`||` does not guard");
}

#[test]
fn several_issues_at_once() {
    let found = issues(
        "ai.models.filter(m, m.prvider_id == 'x' && m.idd == 'y').fitler(m, true)",
        StrategyKind::Models,
    );
    let codes: Vec<_> = found.iter().map(|i| i.code).collect();
    assert_eq!(
        codes,
        [
            "cel-unknown-field",
            "cel-unknown-field",
            "cel-unknown-function"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Plumbing

#[test]
fn schema_and_values_agree() {
    let u = universe();
    let k = values::key(&keys()[0], 0);
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<ObjVal> = u
        .models
        .iter()
        .chain(u.providers.iter())
        .chain(u.authors.iter())
        .cloned()
        .collect();
    stack.push(k);
    while let Some(obj) = stack.pop() {
        let kind = obj.kind();
        seen.insert(kind);
        assert_eq!(obj.values().len(), kind.fields().len(), "{kind:?}");
        for ((name, ty), value) in kind.fields().iter().zip(obj.values()) {
            assert!(
                value.fits(*ty),
                "{kind:?}.{name}: {value:?} is not a {ty:?}"
            );
            match value {
                values::Data::Obj(o) => stack.push(o.clone()),
                values::Data::List(_) | values::Data::Map(_) => {
                    let mut it = value.as_val().as_iterable().expect("iterable").iter();
                    while let Some(item) = it.next() {
                        if let Some(o) = item.downcast_ref::<ObjVal>() {
                            stack.push(o.clone());
                        }
                    }
                    if let values::Data::Map(m) = value {
                        for id in ["my-key-id"] {
                            if let Some(values::Data::Obj(o)) = m.lookup(id) {
                                stack.push(o.clone());
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for kind in ObjKind::ALL {
        assert!(seen.contains(&kind), "{kind:?} never built");
    }
}

#[test]
fn universe_lookup_and_extra_models() {
    let u = universe();
    assert_eq!(u.len(), 8);
    assert_eq!(u.find_model("OpenAI", "gpt-4o-2024-08-06"), Some(2));
    assert_eq!(u.find_model("OpenAI", "GPT-4o-mini"), Some(3));
    assert_eq!(u.find_model("ollama", "nope"), None);
    let extra = u.with_extra(vec![model("openai", "gpt-5-preview", "openai")]);
    assert_eq!(extra.len(), 9);
    assert_eq!(extra.find_model("openai", "gpt-5-preview"), Some(8));
    assert_eq!(extra.model(8).map(|m| m.id.as_str()), Some("gpt-5-preview"));
    assert_eq!(extra.model(2).map(|m| m.id.as_str()), Some("gpt-4o"));
    assert_eq!(
        u.find_model("openai", "gpt-5-preview"),
        None,
        "the original is unchanged"
    );
    let s = compiled("ai.models.filter(m, !m.known)", StrategyKind::Models);
    assert_eq!(eval_models(&s, &extra, &[2, 8, 6], 0), Ok(vec![6]));
    let s = compiled(
        "ai.models.filter(m, m.id.contains('preview'))",
        StrategyKind::Models,
    );
    assert_eq!(eval_models(&s, &extra, &[2, 8, 6], 0), Ok(vec![8]));
}

#[test]
fn shared_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Strategy>();
    assert_send_sync::<Universe>();
    assert_send_sync::<CelIssue>();
    assert_send_sync::<EvalError>();
}

#[test]
fn key_values_are_redacted() {
    let k = &keys()[0];
    let debug = format!("{k:?}");
    assert!(!debug.contains("0123456789"), "{debug}");
    let json = serde_json::to_string(k).expect("serializes");
    assert!(!json.contains("0123456789"), "{json}");
    assert!(json.contains("sk-…6789"), "{json}");
}

#[test]
fn model_views_serialize_with_ngrok_field_names() {
    let v = serde_json::to_value(&models()[2]).expect("serializes");
    for field in [
        "id",
        "id_aliases",
        "provider_id",
        "author_id_aliases",
        "max_context_window",
        "data_retention_days",
        "pricing",
        "datacenters",
        "metrics",
    ] {
        assert!(v.get(field).is_some(), "{field}");
    }
    assert_eq!(v["pricing"]["text.input"], json!(2.5));
    assert_eq!(
        v["metrics"]["global"]["latency"]["upstream_ms_p95"],
        json!(1200)
    );
    assert_eq!(
        v["metrics"]["api_keys"]["my-key-id"]["quota"]["remaining_requests"],
        json!(42)
    );
    let back: ModelView = serde_json::from_value(v).expect("deserializes");
    assert_eq!(back, models()[2]);
}

// ---------------------------------------------------------------------------------------------
// The native fast path behaves as the interpreter

fn interpreted(expr: &str, kind: StrategyKind) -> Strategy {
    NATIVE.with(|n| n.set(false));
    let s = compile(expr, kind);
    NATIVE.with(|n| n.set(true));
    s.unwrap_or_else(|e| panic!("{expr}: {e:#?}")).0
}

#[test]
fn native_comprehensions_match_the_interpreter() {
    let u = universe();
    let exprs = [
        "ai.models.filter(m, m.provider_id == 'openai' && m.id.contains('gpt-4'))",
        "ai.models.filter(m, m.metrics.global.latency.upstream_ms_p95 < 1500 && m.metrics.global.error_rate.total < 0.01)",
        "ai.models.filter(m, 'tool-calling' in m.supported_features)",
        "ai.models.filter(m, m.metadata.tier == 'budget')",
        "ai.models.filter(m, m.known)",
        "ai.models.filter(m, m.provider_id in ['ollama-gpu-1', 'ollama-gpu-2'])",
        "ai.models.filter(m, m.id.contains('turbo') || m.id.contains('mini')).filter(m, m.metrics.global.latency.upstream_ms_avg < 800 && m.metrics.global.error_rate.total < 0.02)",
        "ai.models.filter(m, 'my-key-id' in m.metrics.api_keys && m.metrics.api_keys['my-key-id'].latency.upstream_ms_avg < 1000)",
        "ai.models.filter(m, m.metrics.api_keys['nope'].latency.upstream_ms_avg < 1000)",
        "ai.models.sortBy(m, m.pricing.input)",
        "ai.models.sortBy(m, m.metrics.global.latency.upstream_ms_avg)",
        "ai.models.sortBy(m, m.known ? 1 : 'x')",
        "ai.models.filter(m, m.pricing.input < 1.0)",
        "ai.models.filter(m, m.pricing.input < 1.0 || m.known)",
        "ai.models.filter(m, m.known || m.pricing.input < 1.0)",
        "ai.models.filter(m, m.pricing.input > 1.0 && !m.known)",
        "ai.models.filter(m, !m.known && m.pricing.input > 1.0)",
        "ai.models.filter(m, m.id)",
        "ai.models.filter(m, !m.id)",
        "ai.models.filter(m, m.id && true)",
        "ai.models.filter(m, true || m.id)",
        "ai.models.filter(m, m.known ? m.id == 'gpt-4o' : m.custom)",
        "ai.models.filter(m, m.supported_features.contains('vision'))",
        "ai.models.filter(m, m.id.contains(1))",
        "ai.models.filter(m, size(m.id) > 10 && m.id.size() < 15 && size(m.supported_features) == 2)",
        "ai.models.filter(m, m.metadata.tier.size() > 3)",
        "ai.models.filter(m, size(m.metadata) > 0)",
        "ai.models.filter(m, m.metadata.config.region == 'us')",
        "ai.models.filter(m, m.metadata.nope.deeper == null)",
        "ai.models.filter(m, m.metadata.tier.deeper == null)",
        "ai.models.filter(m, has(m.metadata.tier) && !has(m.metadata.config.x))",
        "ai.models.filter(m, has(m.metrics.api_keys.nope) || has(m.id))",
        "ai.models.filter(m, m.metadata['tier'] == 'budget')",
        "ai.models.filter(m, m.datacenters[0].region == 'us-east-1')",
        "ai.models.filter(m, size(m.datacenters) > 0 && m.datacenters[0].region == 'us-east-1')",
        "ai.models.filter(m, m.id in ['gpt-4o', 'gpt-4o-mini'])",
        "ai.models.filter(m, m.max_context_window > 1000)",
        "ai.models.filter(m, m.max_context_window != null && m.max_context_window > 1000)",
        "ai.models.filter(m, m.parameter_count >= 1000u)",
        "ai.models.filter(m, m.known == 1)",
        "ai.models.filter(m, m.metrics.global.error_rate.total == 0 && m.metrics.global.request_count >= 0u)",
        "ai.models.filter(m, m.provider_id in ai.providers.filter(p, p.id.startsWith('ollama')).map(p, p.id))",
        "ai.models.filter(m, m.id.endsWith(':8b') == true)",
        "ai.models.filter(m, m.pricing.text.output >= 10 || m.pricing.text.output <= 0.6)",
        "ai.models.filter(m, m.datacenters.exists(d, d.country_code == 'DE'))",
        "ai.models.filter(m, m in ai.models.onlyProviders(['anthropic']))",
        "dyn(ai.models.map(m, m.pricing.input))",
        "dyn(ai.models.map(m, m.custom, m.id))",
        "dyn(ai.models.filter(m, m.known).map(m, m.metrics.global.latency))",
        "ai.models.map(m, m).filter(m, m.custom)",
        "ai.models.filter(m, m.id.matches('^gpt'))",
        "ai.models.filter(m, m.metrics.global['latency'].upstream_ms_avg > 500)",
        "ai.models.filter(m, m['id'] == 'gpt-4o')",
        "ai.models.filter(m, m.id < 'h' && m.id >= 'claude')",
        "ai.models.filter(m, m.metrics.global.error_rate.total == 0.005 || m.metrics.global.request_count == 100)",
        "ai.models.filter(m, m.known in [true] && m.id in ['gpt-4o', 1, null])",
        "ai.models.filter(m, m.metrics.global.latency.upstream_ms_avg <= 700.0)",
        "ai.models.filter(m, m.metrics.global.error_rate.total > 0)",
        "ai.models.filter(m, m.metadata.tier in ['budget'] && m.metadata.nope == null)",
        "ai.models.filter(m, m.metadata.tier < 'c')",
        "ai.models.filter(m, 1000 > m.metrics.global.latency.upstream_ms_avg && 'gpt-4o' != m.id)",
        "ai.models.filter(m, 'gpt-4o' == m.id || m.known == false)",
        "ai.models.filter(m, !m.known || m.custom ? m.metadata.tier != null : m.id.startsWith('gpt'))",
        "ai.models.filter(m, m.supported_features)",
        "ai.models.filter(m, m.metadata.tier)",
        "ai.models.filter(m, m.metadata.flag)",
        "ai.models.filter(m, m.metrics.api_keys.nope == 1)",
        "ai.models.filter(m, m.metrics.global.latency.upstream_ms_avg == 700.0 || m.metrics.global.error_rate.total >= 1)",
        "ai.models.filter(m, m.provider_id in ['openai', 'OAI'] && 'image' in m.input_modalities)",
        "ai.models.filter(m, m.id_aliases.size() > 0 || m.metadata.tier in ['premium', 1])",
        "ai.models.filter(m, m.quantization.startsWith('Q4'))",
        "ai.models.filter(m, m.quantization != null && m.quantization.contains('K_'))",
        "ai.models.filter(m, m.id.contains('') && m.description.endsWith(''))",
    ];
    for expr in exprs {
        let fast = compile(expr, StrategyKind::Models)
            .unwrap_or_else(|e| panic!("{expr}: {e:#?}"))
            .0;
        let slow = interpreted(expr, StrategyKind::Models);
        assert!(slow.natives.is_empty());
        let (a, b) = (
            eval_models(&fast, &u, ALL, 5),
            eval_models(&slow, &u, ALL, 5),
        );
        assert_eq!(a, b, "{expr}");
    }
    let natives = |e: &str| {
        compile(e, StrategyKind::Models)
            .expect("compiles")
            .0
            .natives
            .len()
    };
    assert_eq!(natives("ai.models.filter(m, m.provider_id == 'openai')"), 1);
    assert_eq!(
        natives("ai.models.filter(m, m.known).filter(m, m.custom).sortBy(m, m.id)"),
        3
    );
    assert_eq!(
        natives("ai.models.filter(m, m.datacenters.exists(d, d.region == 'x'))"),
        0
    );
    assert_eq!(natives("ai.models.filter(m, m.id.matches('^gpt'))"), 0);
}

#[test]
fn native_key_comprehensions_match_the_interpreter() {
    let mut ks = keys();
    ks[2].quota.remaining_requests = None;
    for expr in [
        "ai.keys.filter(k, k.quota.remaining_requests > 500 && k.error_rate.rate_limit < 0.05)",
        "ai.keys.filter(k, k.error_rate.total < 0.3)",
        "ai.keys.filter(k, k.quota.remaining_requests != null && k.quota.remaining_requests > 100)",
    ] {
        let fast = compile(expr, StrategyKind::Keys).expect("compiles").0;
        let slow = interpreted(expr, StrategyKind::Keys);
        assert_eq!(eval_keys(&fast, &ks, 1), eval_keys(&slow, &ks, 1), "{expr}");
    }
}

// ---------------------------------------------------------------------------------------------
// Depth: whatever compiles evaluates within a small stack (issue 23)

/// Expressions of about `n` levels without brackets: arithmetic chains, a ternary chain.
fn deep_shapes(n: usize) -> Vec<String> {
    let chain = |op: &str, term: &str| vec![term; n].join(op);
    vec![
        format!("ai.models.filter(m, {} > 0)", chain(" + ", "1")),
        format!("ai.models.filter(m, {} == 1)", chain(" * ", "1")),
        format!(
            "ai.models.filter(m, {}true)",
            "m.id == 'x' ? false : ".repeat(n)
        ),
        format!("ai.models.filter(m, {}1 > 0)", "1 - ".repeat(n)),
    ]
}

/// Evaluates `expr` on a thread with 1 MiB of stack; the number of models selected.
fn select_on_small_stack(expr: &str) -> usize {
    let s = compiled(expr, StrategyKind::Models);
    std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || eval_models(&s, &universe(), ALL, 7).map(|v| v.len()))
        .unwrap()
        .join()
        .unwrap_or_else(|_| panic!("{expr:.60}…: evaluation panicked"))
        .unwrap_or_else(|e| panic!("{expr:.60}…: {e}"))
}

#[test]
fn every_expression_that_compiles_evaluates_on_a_one_mib_stack() {
    // Just under the limit: accepted, and evaluated on a 1 MiB thread (a fresh segment is taken
    // for it: unguarded, 30 levels of `+` overflowed this thread in a debug build).
    for expr in deep_shapes(guard::MAX_DEPTH - 8) {
        select_on_small_stack(&expr);
    }
    // The parser balances `||` and `&&` chains: 5,000 terms are 13 levels, accepted and run.
    let ors = vec!["m.id == 'x'"; 5000].join(" || ");
    assert_eq!(
        select_on_small_stack(&format!("ai.models.filter(m, {ors})")),
        0
    );
    let ands = vec!["m.id != 'x'"; 5000].join(" && ");
    assert_eq!(
        select_on_small_stack(&format!("ai.models.filter(m, {ands})")),
        ALL.len()
    );
}

#[test]
fn expressions_deeper_than_the_limit_are_refused_naming_it() {
    for expr in deep_shapes(5000) {
        let (code, message, range) = model_issue(&expr);
        assert_eq!(code, "cel-syntax", "{expr:.60}");
        assert!(
            message.contains(&format!("aigw accepts at most {} levels", guard::MAX_DEPTH)),
            "{expr:.60}…: {message}"
        );
        assert!(
            range == expr,
            "{expr:.60}…: the range is not the expression"
        );
    }
}

#[test]
fn costly_regex_patterns_are_refused_and_ordinary_ones_run() {
    let (code, message, range) =
        model_issue(r#"ai.models.filter(m, m.id.matches('(?:\\w{50}){50}'))"#);
    assert_eq!(code, "cel-syntax");
    assert!(message.contains("too costly"), "{message}");
    assert_eq!(range, r#"'(?:\\w{50}){50}'"#);
    assert_eq!(
        select("ai.models.filter(m, m.id.matches('^gpt-[0-9a-z.-]+$'))").len(),
        select("ai.models.filter(m, m.id.startsWith('gpt-'))").len()
    );
}
