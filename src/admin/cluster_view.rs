//! `/performance?scope=cluster`: the performance document merged over the
//! cluster view's live instances.

use std::time::Duration;

use crate::admin::figures;
use crate::admin::performance::{self, Performance};
use crate::shared::state::Shared;

/// `/performance?scope=cluster`: the document merged over the live
/// instances (same shape, plus `scope` and `instances`), or this instance
/// alone with `"scope": "instance"` when there is no cluster view.
pub fn document(shared: &Shared, route: Option<&str>) -> Performance {
    let mut doc = performance::build(shared, route);
    let Some(m) = shared.cluster.view() else {
        doc.scope = Some("instance");
        return doc;
    };
    let covered = Duration::from_millis(m.covered_ms.max(1));
    let n = m.slots.len() as u64;
    doc.window_seconds = m.window_seconds;
    doc.requests = performance::Requests {
        all: figures::figures(&m.total_all),
        in_flight: m.in_flight,
        recent: figures::figures(&m.total_recent),
        rate_per_second: m.total_recent.count as f64 / covered.as_secs_f64(),
        slots: m
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let ago = (n - 1 - i as u64) * m.slot_seconds;
                figures::slot_view(i as u64, m.slot_seconds, ago, Some(s))
            })
            .collect(),
    };
    doc.routes = m
        .routes
        .iter()
        .filter(|(label, _, _)| route.is_none_or(|r| r == label))
        .map(|(label, all, recent)| figures::route_view(label.clone(), all, recent))
        .collect();
    figures::sort_routes(&mut doc.routes);
    doc.cache.hit_rate = m.cache.hit_rate();
    doc.cache.fresh_hit_rate = m.cache.fresh_hit_rate();
    doc.cache.counts = m.cache;
    // Objectives: every instance's counts summed, judged as one.
    if let Some(slos) = shared.metrics.slos() {
        doc.slos = slos.views_of(&m.slos);
    }
    doc.scope = Some("cluster");
    doc.instances = Some(m.instances.clone());
    doc
}
