//! What the engine needs to know about a strategy beyond its result, read off the compiled AST
//! (never off the source text, where `'random'` in a string or a comment would fool it).

use cel::common::ast::{EntryExpr, Expr, IdedExpr};

use super::functions::{SORT_BY_INPUT, SORT_BY_KEYS};

/// Facts about one strategy expression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// Calls `random()` or `randomize()`: one request may plan differently each time.
    pub draws_random: bool,
    /// Reads a `metrics` field (`m.metrics.…`): live traffic figures change its answer.
    pub reads_metrics: bool,
    /// Reads an `aigw` field (`m.aigw.health`, …): the boxes' live state changes its answer.
    pub reads_live: bool,
    /// Returns every model, possibly reordered: `ai.models`, with any chain of
    /// `.randomize()` and `.sortBy(…)`.
    pub catch_all: bool,
}

impl Facts {
    pub fn of(e: &IdedExpr) -> Facts {
        let mut facts = Facts {
            catch_all: is_catch_all(e),
            ..Facts::default()
        };
        visit(e, &mut |e| match &e.expr {
            Expr::Call(c) if c.func_name == "random" || c.func_name == "randomize" => {
                facts.draws_random = true;
            }
            Expr::Select(s) if s.field == "metrics" => facts.reads_metrics = true,
            Expr::Select(s) if s.field == "aigw" => facts.reads_live = true,
            _ => {}
        });
        facts
    }
}

/// `ai.models`, `….randomize()`, `….sortBy('price')` and the expansion of `….sortBy(m, key)`.
fn is_catch_all(e: &IdedExpr) -> bool {
    match &e.expr {
        Expr::Select(s) => {
            !s.test
                && s.field == "models"
                && matches!(&s.operand.expr, Expr::Ident(ai) if ai == "ai")
        }
        Expr::Call(c)
            if (c.func_name == "randomize" && c.args.is_empty()) || c.func_name == "sortBy" =>
        {
            c.target.as_deref().is_some_and(is_catch_all)
        }
        // `list.sortBy(m, key)` binds `list` to SORT_BY_INPUT and sorts that binding.
        Expr::Comprehension(c) => {
            c.accu_var == SORT_BY_INPUT
                && matches!(&c.result.expr, Expr::Call(r) if r.func_name == SORT_BY_KEYS)
                && is_catch_all(&c.accu_init)
        }
        _ => false,
    }
}

/// Calls `f` on every node of the tree, parents first.
pub(crate) fn visit(e: &IdedExpr, f: &mut impl FnMut(&IdedExpr)) {
    f(e);
    match &e.expr {
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                visit(t, f);
            }
            c.args.iter().for_each(|a| visit(a, f));
        }
        Expr::Comprehension(c) => {
            for part in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                visit(part, f);
            }
        }
        Expr::List(l) => l.elements.iter().for_each(|a| visit(a, f)),
        Expr::Map(m) => m.entries.iter().for_each(|en| visit_entry(&en.expr, f)),
        Expr::Struct(s) => s.entries.iter().for_each(|en| visit_entry(&en.expr, f)),
        Expr::Select(s) => visit(&s.operand, f),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn visit_entry(e: &EntryExpr, f: &mut impl FnMut(&IdedExpr)) {
    match e {
        EntryExpr::MapEntry(m) => {
            visit(&m.key, f);
            visit(&m.value, f);
        }
        EntryExpr::StructField(s) => visit(&s.value, f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(src: &str) -> Facts {
        let program = super::super::ENV.compile(src).expect("parses");
        Facts::of(program.expression())
    }

    #[test]
    fn catch_alls_are_every_model_in_any_order() {
        for src in [
            "ai.models",
            "ai.models.randomize()",
            "ai.models.sortBy('price')",
            "ai.models.sortBy(m, m.id)",
            "ai.models.sortBy(m, m.id).randomize()",
            " ai . models ",
        ] {
            assert!(facts(src).catch_all, "{src}");
        }
        for src in [
            "ai.models.filter(m, m.provider_id == 'ollama')",
            "ai.models[0]",
            "ai.models.randomize()[0]",
            "[ai.models]",
            "x.models",
        ] {
            assert!(!facts(src).catch_all, "{src}");
        }
    }

    #[test]
    fn random_and_metrics_come_from_calls_and_fields_not_text() {
        assert!(facts("ai.models.randomize()").draws_random);
        assert!(facts("ai.models.filter(m, random() < 0.5)").draws_random);
        assert!(!facts("ai.models.filter(m, m.id == 'random')").draws_random);
        assert!(
            facts("ai.models.filter(m, m.metrics.global.error_rate.total < 0.1)").reads_metrics
        );
        assert!(!facts("ai.models.filter(m, m.id == 'metrics')").reads_metrics);
        assert!(facts("ai.models.filter(m, m.aigw.health == 'healthy')").reads_live);
        assert!(!facts("ai.models.filter(m, m.id == 'aigw')").reads_live);
    }
}
