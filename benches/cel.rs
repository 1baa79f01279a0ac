//! CEL strategy compile and evaluation costs: `cargo bench --bench cel`.

use aigw::routing::cel::{
    Datacenter, ModelView, Pricing, ProviderView, StrategyKind, Universe, compile, eval_models,
};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

const PROVIDERS: [&str; 4] = ["ollama", "openai", "anthropic", "groq"];

/// `n` models spread over four providers, with metadata, prices, datacenters and metrics.
fn universe(n: usize) -> Universe {
    let models = (0..n)
        .map(|i| {
            let provider = PROVIDERS[i % PROVIDERS.len()];
            let mut m = ModelView {
                id: format!("model-{i}{}", if i % 7 == 0 { "-mini" } else { "" }),
                provider_id: provider.to_owned(),
                author_id: provider.to_owned(),
                known: i % 5 != 0,
                input_modalities: vec!["text".to_owned()],
                supported_features: vec!["tool-calling".to_owned()],
                datacenters: vec![Datacenter {
                    country_code: "US".to_owned(),
                    region: "us-east-1".to_owned(),
                }],
                ..ModelView::default()
            };
            if provider != "ollama" {
                m.pricing = Pricing(
                    [
                        ("text.input".to_owned(), (i % 13) as f64 * 0.1),
                        ("text.output".to_owned(), 1.0),
                    ]
                    .into_iter()
                    .collect(),
                );
            }
            m.metadata.insert(
                "tier".to_owned(),
                if i % 3 == 0 { "premium" } else { "budget" }.into(),
            );
            m.metrics.global.latency.upstream_ms_avg = (i as u64 * 37) % 2000;
            m.metrics.global.error_rate.total = (i % 10) as f64 / 100.0;
            m
        })
        .collect();
    let providers = PROVIDERS
        .iter()
        .map(|p| ProviderView {
            id: (*p).to_owned(),
            ..ProviderView::default()
        })
        .collect();
    Universe::new(models, providers, Vec::new())
}

const SIMPLE: &str = "ai.models.filter(m, m.provider_id == 'ollama')";
const THREE: [&str; 3] = [
    "ai.models.filter(m, m.provider_id == 'openai' && m.metadata.tier == 'gold')",
    "ai.models.filter(m, m.provider_id == 'anthropic' && m.metrics.global.error_rate.total < 0.01)",
    "ai.models",
];
const CHAINED: &str = "ai.models.filter(m, m.id.contains('mini') || m.known).filter(m, m.metrics.global.latency.upstream_ms_avg < 1500 && m.metrics.global.error_rate.total < 0.05).sortBy('price')";

fn bench(c: &mut Criterion) {
    c.bench_function("compile/simple", |b| {
        b.iter(|| compile(black_box(SIMPLE), StrategyKind::Models).expect("compiles"))
    });
    c.bench_function("compile/chained", |b| {
        b.iter(|| compile(black_box(CHAINED), StrategyKind::Models).expect("compiles"))
    });
    let simple = compile(SIMPLE, StrategyKind::Models).expect("compiles").0;
    let chained = compile(CHAINED, StrategyKind::Models).expect("compiles").0;
    let three: Vec<_> = THREE
        .iter()
        .map(|s| compile(s, StrategyKind::Models).expect("compiles").0)
        .collect();
    for n in [10, 1000] {
        let u = universe(n);
        let visible: Vec<usize> = (0..n).collect();
        c.bench_function(&format!("eval/simple/{n}"), |b| {
            b.iter(|| eval_models(&simple, &u, black_box(&visible), 1).expect("evaluates"))
        });
        c.bench_function(&format!("eval/three-strategies/{n}"), |b| {
            b.iter(|| {
                for s in &three {
                    let picked = eval_models(s, &u, black_box(&visible), 1).expect("evaluates");
                    if !picked.is_empty() {
                        return picked;
                    }
                }
                Vec::new()
            })
        });
        c.bench_function(&format!("eval/chained/{n}"), |b| {
            b.iter(|| eval_models(&chained, &u, black_box(&visible), 1).expect("evaluates"))
        });
        c.bench_function(&format!("universe/new/{n}"), |b| {
            b.iter(|| universe(black_box(n)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
