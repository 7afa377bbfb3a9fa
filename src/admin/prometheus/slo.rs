//! `perfproxy_slo_*`: the service level objectives' families.

use prometheus::proto::{MetricFamily, MetricType};

use super::{counter, family, gauge};

/// `perfproxy_slo_*`: each objective's requests by outcome (since start),
/// error budget left, burn rate per window (seconds) and objective.
pub(super) fn families(families: &mut Vec<MetricFamily>, slos: &crate::observe::slo::Slos, now_unix: u64) {
    let views = slos.views(now_unix);
    let totals = slos.totals();
    let outcomes = views
        .iter()
        .zip(&totals)
        .flat_map(|(v, (good, bad))| {
            [
                counter(&[("slo", &v.name), ("outcome", "good")], *good),
                counter(&[("slo", &v.name), ("outcome", "bad")], *bad),
            ]
        })
        .collect();
    families.push(family(
        "perfproxy_slo_requests_total",
        "Requests counted by each service level objective, good or bad",
        MetricType::COUNTER,
        outcomes,
    ));
    families.push(family(
        "perfproxy_slo_error_budget_remaining",
        "Share of the error budget left over the objective's period (below 0 once overspent)",
        MetricType::GAUGE,
        views.iter().map(|v| gauge(&[("slo", &v.name)], v.error_budget_remaining)).collect(),
    ));
    let burns = views
        .iter()
        .flat_map(|v| {
            v.burn_rates
                .iter()
                .map(|b| gauge(&[("slo", &v.name), ("window", &(b.window_ms / 1000).to_string())], b.rate))
        })
        .collect();
    families.push(family(
        "perfproxy_slo_burn_rate",
        "Error budget burn rate over each alert window (window in seconds; 1 spends the budget over the period)",
        MetricType::GAUGE,
        burns,
    ));
    families.push(family(
        "perfproxy_slo_objective",
        "Each service level objective's target share of good requests",
        MetricType::GAUGE,
        views.iter().map(|v| gauge(&[("slo", &v.name)], v.objective)).collect(),
    ));
}
