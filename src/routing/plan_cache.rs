//! Remembered plans: the same request against the same engine plans the same way unless a
//! strategy draws random numbers (the engine is pure and its `m.metrics` figures are fixed when
//! it is built), so `serve` plans each distinct request once per engine rather than per request.
//!
//! Bounded: model names come from clients, so at most [`CAPACITY`] plans are kept; a full cache
//! is emptied and refilled by what is asked next (a steady workload names a handful of models).
//! A read lock per request: readers do not block each other, and a writer only comes by once per
//! distinct request.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use super::plan::{Plan, Request};

pub const CAPACITY: usize = 1024;

#[derive(Default)]
pub struct PlanCache {
    /// By request hash; the request itself is kept to tell a collision from a hit.
    plans: RwLock<HashMap<u64, (Request, Arc<Plan>)>>,
}

fn key(req: &Request) -> u64 {
    // Fixed keys: the same request hashes the same way in every process (no DoS concern:
    // a collision is only a miss, and the map is bounded).
    let mut h = std::hash::DefaultHasher::new();
    req.path.hash(&mut h);
    req.model.hash(&mut h);
    req.models.hash(&mut h);
    h.finish()
}

fn same(a: &Request, b: &Request) -> bool {
    a.path == b.path && a.model == b.model && a.models == b.models
}

impl PlanCache {
    /// The plan for `req`, from the cache or from `plan` (then remembered).
    pub fn get_or_plan(&self, req: &Request, plan: impl FnOnce() -> Plan) -> Arc<Plan> {
        let k = key(req);
        {
            let plans = self.plans.read().unwrap_or_else(|e| e.into_inner());
            if let Some((r, p)) = plans.get(&k)
                && same(r, req)
            {
                return p.clone();
            }
        }
        let fresh = Arc::new(plan());
        let mut plans = self.plans.write().unwrap_or_else(|e| e.into_inner());
        if plans.len() >= CAPACITY {
            plans.clear();
        }
        // A colliding entry is replaced: the latest request wins the slot.
        plans.insert(k, (req.clone(), fresh.clone()));
        fresh
    }

    pub fn len(&self) -> usize {
        self.plans.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(model: &str) -> Request {
        Request {
            path: "/v1/chat/completions".into(),
            model: Some(model.into()),
            models: Vec::new(),
        }
    }

    fn plan_named(truncated: usize) -> Plan {
        Plan {
            route: None,
            requested: Vec::new(),
            strategies: Vec::new(),
            attempts: Vec::new(),
            truncated,
            left_out: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn plans_each_request_once() {
        let cache = PlanCache::default();
        let mut calls = 0;
        for _ in 0..3 {
            let p = cache.get_or_plan(&req("a"), || {
                calls += 1;
                plan_named(1)
            });
            assert_eq!(p.truncated, 1);
        }
        assert_eq!(calls, 1);
        let p = cache.get_or_plan(&req("b"), || plan_named(2));
        assert_eq!(p.truncated, 2);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn models_list_is_part_of_the_request() {
        let cache = PlanCache::default();
        let mut with_list = req("a");
        with_list.models = vec!["b".into()];
        cache.get_or_plan(&req("a"), || plan_named(1));
        let p = cache.get_or_plan(&with_list, || plan_named(2));
        assert_eq!(p.truncated, 2);
    }

    #[test]
    fn stays_bounded() {
        let cache = PlanCache::default();
        for i in 0..CAPACITY * 3 + 7 {
            cache.get_or_plan(&req(&format!("m{i}")), || plan_named(i));
            assert!(cache.len() <= CAPACITY);
        }
        // What was asked last is still there.
        let last = format!("m{}", CAPACITY * 3 + 6);
        let p = cache.get_or_plan(&req(&last), || plan_named(0));
        assert_eq!(p.truncated, CAPACITY * 3 + 6);
    }
}
