//! Service level objectives: each `[[slo]]` counts the requests of its
//! route (a label or a glob; all traffic without one) as good (not a 5xx,
//! not a gRPC error, and with `latency_ms` faster than it) or bad, decided
//! per request from the exact duration, never from histogram buckets.
//! Counting happens where the workers' samples are merged (off the request
//! path). From the counts ([`counts`]): the SLI over the period, the error
//! budget left, the burn rate over every configured window, and the time
//! until the budget is gone; and the `slo_burn` alert of Google's SRE
//! workbook: a row of `slo_alerts.windows` fires when its long and short
//! windows both burn faster than its rate, and resolves as soon as its
//! short window no longer does.

pub mod counts;
pub mod rules;

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::observe::alerts::Reading;
use crate::wire::routes::RouteId;

/// Objectives at most (one bit each per route).
pub const MAX_OBJECTIVES: usize = 64;

/// One objective, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    pub name: String,
    /// A route label or a glob (`*` matches anything); `None`: all traffic.
    pub route: Option<String>,
    pub objective: f64,
    pub latency_ms: Option<u64>,
    pub period_days: u64,
}

/// A finished request, as the objectives judge it.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub route: RouteId,
    pub micros: u32,
    /// A 5xx, or a gRPC call whose status is an error.
    pub failed: bool,
    /// Seconds since the metrics began, when it completed.
    pub at_secs: u32,
}

/// One row of `slo_alerts.windows`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnRow {
    pub long_ms: u64,
    pub short_ms: u64,
    pub burn: f64,
    pub severity: &'static str,
}

/// A window's burn rate, as `/performance` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BurnRate {
    pub window_ms: u64,
    pub rate: f64,
}

/// An objective's figures now (`/performance` `slos[]`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SloView {
    pub name: String,
    pub route: Option<String>,
    pub objective: f64,
    pub latency_ms: Option<u64>,
    pub period_days: u64,
    pub good: u64,
    pub total: u64,
    /// good / total over the period (1 when none).
    pub sli: f64,
    /// 1 − bad / ((1 − objective) · total); below 0 once overspent.
    pub error_budget_remaining: f64,
    pub burn_rates: Vec<BurnRate>,
    /// At the fastest long window's burn; `None` when not burning.
    pub exhaustion_seconds: Option<f64>,
}

/// An objective's counts as of a moment: over the period and over each
/// distinct window (what an instance publishes to the cluster view, and
/// what instances' sums are judged from).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, Serialize)]
pub struct Tally {
    pub name: String,
    /// (good, bad) over the period.
    pub period: (u64, u64),
    /// (window_ms, good, bad), shortest window first.
    pub windows: Vec<(u64, u64, u64)>,
}

impl Tally {
    /// Adds another instance's tally of the same objective.
    pub fn add(&mut self, other: &Tally) {
        self.period = (self.period.0 + other.period.0, self.period.1 + other.period.1);
        for &(w, g, b) in &other.windows {
            match self.windows.iter_mut().find(|x| x.0 == w) {
                Some(x) => (x.1, x.2) = (x.1 + g, x.2 + b),
                None => self.windows.push((w, g, b)),
            }
        }
        self.windows.sort_unstable_by_key(|x| x.0);
    }
}

/// The objectives and their counts.
#[derive(Debug)]
pub struct Slos {
    objectives: Vec<Objective>,
    rows: Vec<BurnRow>,
    /// Every distinct window of the rows, shortest first.
    windows: Vec<u64>,
    /// By route id: which objectives count it (bit i: objective i).
    matches: Mutex<Vec<Option<u64>>>,
    counts: Mutex<Vec<counts::Counts>>,
    /// By objective: the row that fired `slo_burn`, while it fires.
    firing: Mutex<Vec<Option<usize>>>,
    /// By objective: (good, bad) since start (the counters of `/metrics`).
    totals: Mutex<Vec<(u64, u64)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("SLO locks are never poisoned: no code under them panics")
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// `ms` as Prometheus writes a duration: `5m`, `1h`, `3d`, `90s`.
pub fn duration_words(ms: u64) -> String {
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

impl Slos {
    pub fn new(objectives: Vec<Objective>, rows: Vec<BurnRow>) -> Slos {
        let mut windows: Vec<u64> = rows.iter().flat_map(|r| [r.long_ms, r.short_ms]).collect();
        windows.sort_unstable();
        windows.dedup();
        // Kept for the period, or the longest window if that is longer.
        let longest = windows.last().map_or(0, |w| w.div_ceil(60_000));
        let counts = objectives
            .iter()
            .map(|o| counts::Counts::new(o.period_days * 1_440, longest.max(o.period_days * 1_440)))
            .collect();
        let (firing, totals) = (vec![None; objectives.len()], vec![(0, 0); objectives.len()]);
        Slos {
            objectives,
            rows,
            windows,
            matches: Mutex::default(),
            counts: Mutex::new(counts),
            firing: Mutex::new(firing),
            totals: Mutex::new(totals),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.objectives.is_empty()
    }

    pub fn objectives(&self) -> &[Objective] {
        &self.objectives
    }

    pub fn rows(&self) -> &[BurnRow] {
        &self.rows
    }

    /// Counts finished requests as they merge (`epoch`: the Unix second the
    /// metrics began; `label`: a route id's label).
    pub fn record(&self, samples: impl Iterator<Item = Outcome>, epoch: u64, label: impl Fn(RouteId) -> Arc<str>) {
        if self.objectives.is_empty() {
            return;
        }
        let mut matches = lock(&self.matches);
        // Per objective, the second being summed: samples of one batch
        // mostly share a second, so the counts are touched once a second.
        let mut summing: Vec<(u64, u64, u64)> = vec![(u64::MAX, 0, 0); self.objectives.len()];
        let mut counts = lock(&self.counts);
        let mut totals = lock(&self.totals);
        let mut settle = |n: usize, (second, good, bad): (u64, u64, u64)| {
            if second != u64::MAX {
                counts[n].record(second, good, bad);
                (totals[n].0, totals[n].1) = (totals[n].0 + good, totals[n].1 + bad);
            }
        };
        for s in samples {
            let i = s.route.0 as usize;
            if matches.len() <= i {
                matches.resize(i + 1, None);
            }
            let bits = *matches[i].get_or_insert_with(|| {
                let label = label(s.route);
                self.objectives
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.route.as_deref().is_none_or(|p| crate::wire::glob::matches(p, &label)))
                    .fold(0u64, |bits, (n, _)| bits | 1 << n)
            });
            if bits == 0 {
                continue;
            }
            let second = epoch + u64::from(s.at_secs);
            for (n, o) in self.objectives.iter().enumerate().filter(|(n, _)| bits & 1 << n != 0) {
                let slow = o.latency_ms.is_some_and(|ms| u64::from(s.micros) >= ms.saturating_mul(1000));
                let good = !s.failed && !slow;
                if summing[n].0 != second {
                    settle(n, std::mem::replace(&mut summing[n], (second, 0, 0)));
                }
                let sum = &mut summing[n];
                (sum.1, sum.2) = (sum.1 + u64::from(good), sum.2 + u64::from(!good));
            }
        }
        for (n, sum) in summing.into_iter().enumerate() {
            settle(n, sum);
        }
    }

    /// Every objective's counts as of `now` (a Unix second).
    pub fn tallies(&self, now: u64) -> Vec<Tally> {
        let mut counts = lock(&self.counts);
        self.objectives
            .iter()
            .zip(counts.iter_mut())
            .map(|(o, c)| {
                c.expire(now);
                let windows = self.windows.iter().map(|&w| {
                    let (g, b) = c.window(now, w);
                    (w, g, b)
                });
                Tally { name: o.name.clone(), period: c.period(now), windows: windows.collect() }
            })
            .collect()
    }

    /// Every objective's figures as of `now` (a Unix second).
    pub fn views(&self, now: u64) -> Vec<SloView> {
        self.views_of(&self.tallies(now))
    }

    /// Every objective's figures from `tallies` (this instance's, or the
    /// cluster's sums); an objective without a tally reads as no traffic.
    pub fn views_of(&self, tallies: &[Tally]) -> Vec<SloView> {
        self.objectives
            .iter()
            .map(|o| {
                let none = Tally::default();
                let t = tallies.iter().find(|t| t.name == o.name).unwrap_or(&none);
                let (good, bad) = t.period;
                let total = good + bad;
                let budget = 1.0 - o.objective;
                let remaining = if total == 0 { 1.0 } else { 1.0 - bad as f64 / (budget * total as f64) };
                let burn = |window_ms: u64| {
                    let (g, b) = t.windows.iter().find(|x| x.0 == window_ms).map_or((0, 0), |x| (x.1, x.2));
                    share(b, g + b) / budget
                };
                let burn_rates: Vec<BurnRate> =
                    self.windows.iter().map(|&w| BurnRate { window_ms: w, rate: burn(w) }).collect();
                // The fastest long window's pace of bad requests against
                // what the budget still allows over the period's traffic.
                let fastest = self.rows.iter().map(|r| r.long_ms).max_by(|a, b| burn(*a).total_cmp(&burn(*b)));
                let bad_per_second = fastest.map_or(0.0, |w| {
                    let bad = t.windows.iter().find(|x| x.0 == w).map_or(0, |x| x.2);
                    bad as f64 / (w as f64 / 1000.0)
                });
                let allowed_left = (budget * total as f64 - bad as f64).max(0.0);
                SloView {
                    name: o.name.clone(),
                    route: o.route.clone(),
                    objective: o.objective,
                    latency_ms: o.latency_ms,
                    period_days: o.period_days,
                    good,
                    total,
                    sli: if total == 0 { 1.0 } else { share(good, total) },
                    error_budget_remaining: remaining,
                    burn_rates,
                    exhaustion_seconds: (bad_per_second > 0.0).then(|| allowed_left / bad_per_second),
                }
            })
            .collect()
    }

    /// Per objective, the minutes from `from` (a minute since the epoch):
    /// (name, minute, good, bad), for history.
    pub fn minutes_since(&self, from: u64) -> Vec<(String, u64, u64, u64)> {
        let counts = lock(&self.counts);
        self.objectives
            .iter()
            .zip(counts.iter())
            .flat_map(|(o, c)| c.minutes_since(from).into_iter().map(|(m, g, b)| (o.name.clone(), m, g, b)))
            .collect()
    }

    /// Adds a minute read back from history to objective `name`.
    pub fn restore(&self, name: &str, minute: u64, good: u64, bad: u64) {
        if let Some(i) = self.objectives.iter().position(|o| o.name == name) {
            lock(&self.counts)[i].restore(minute, good, bad);
        }
    }

    /// The `slo_burn` readings as of `now`: per objective, the rows whose
    /// long and short windows both burn above their rate fire (the row that
    /// fired stays while its short window still does); the most severe of
    /// them (then the fastest) is the alert's, so a warning escalates to
    /// critical when a faster row breaches too.
    pub fn readings(&self, now: u64) -> Vec<Reading> {
        let views = self.views(now);
        let mut firing = lock(&self.firing);
        let mut out = Vec::with_capacity(views.len());
        let rows = &self.rows;
        let rank = |i: usize| u8::from(rows[i].severity == "critical");
        for ((view, o), state) in views.iter().zip(&self.objectives).zip(firing.iter_mut()) {
            // Judged as the alert engine sees the value: to 3 decimals.
            let burn_of = |w| {
                let rate = view.burn_rates.iter().find(|b| b.window_ms == w).map_or(0.0, |b| b.rate);
                (rate * 1000.0).round() / 1000.0
            };
            let both = |r: &BurnRow| burn_of(r.long_ms).min(burn_of(r.short_ms));
            let mut breaching: Vec<(usize, f64)> =
                rows.iter().enumerate().filter(|(_, r)| both(r) > r.burn).map(|(i, r)| (i, both(r))).collect();
            if let Some(l) = *state {
                let short = burn_of(rows[l].short_ms);
                if short > rows[l].burn && !breaching.iter().any(|b| b.0 == l) {
                    breaching.push((l, short));
                }
            }
            let chosen = breaching.into_iter().max_by(|a, b| {
                rank(a.0).cmp(&rank(b.0)).then((a.1 / rows[a.0].burn).total_cmp(&(b.1 / rows[b.0].burn)))
            });
            let (row, value) = match (chosen, *state) {
                (Some(c), _) => c,
                // Resolving: the row that fired, its short window now clear.
                (None, Some(l)) => (l, burn_of(rows[l].short_ms)),
                (None, None) => {
                    let closest = (0..rows.len())
                        .max_by(|&a, &b| (both(&rows[a]) / rows[a].burn).total_cmp(&(both(&rows[b]) / rows[b].burn)));
                    match closest {
                        Some(i) => (i, both(&rows[i])),
                        None => continue,
                    }
                }
            };
            *state = chosen.map(|c| c.0);
            let r = &rows[row];
            let message = format!(
                "SLO {}: error budget burning {:.1}x over {} and {:.1}x over {} (alert above {}x); {:.1} % of the budget left",
                o.name,
                burn_of(r.long_ms),
                duration_words(r.long_ms),
                burn_of(r.short_ms),
                duration_words(r.short_ms),
                r.burn,
                view.error_budget_remaining * 100.0
            );
            out.push(Reading {
                rule: "slo_burn",
                subject: Some(o.name.clone()),
                value: Some(value),
                threshold: r.burn,
                above: true,
                unit: "x",
                severity: Some(r.severity),
                message: Some(message),
                immediate: true,
            });
        }
        out
    }

    /// By objective: (good, bad) counted since start.
    pub fn totals(&self) -> Vec<(u64, u64)> {
        lock(&self.totals).clone()
    }

    /// Buckets held by every objective's counts.
    pub fn held(&self) -> usize {
        lock(&self.counts).iter().map(counts::Counts::held).sum()
    }
}

#[cfg(test)]
mod tests;
