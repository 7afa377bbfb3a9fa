//! Alerts: rules evaluated by a background task over the recent
//! window (`error_rate`, `slow_requests`, `slow_queries`, `memory`,
//! `cache_hit_rate`, `rate_limited`). Each rule, per subject (a route for `slow_requests`, a
//! query for `slow_queries`), fires once when its condition has held at
//! every evaluation for `alerts.for_ms` and resolves once when it has been
//! clear for `alerts.keep_firing_ms` (Prometheus' `for` and
//! `keep_firing_for`), so a value jumping around its threshold does not
//! flap. A firing alert's value, severity and message follow every
//! evaluation; a window too thin to judge (too few requests or lookups, a
//! subject no longer reported) reads as no data (`value` null, the message
//! says why), never as the last value seen, so a resolved event carries the
//! value that cleared it. Every transition is a log line and, with
//! `alerts.webhook_url`, a JSON POST from a bounded queue (retried with
//! backoff, never blocking traffic: when the queue is full the event is
//! dropped and counted in the log).

mod webhook;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use tracing::{info, warn};

use crate::settings::AlertSettings;

/// Fewest requests in the window before `error_rate` is judged.
pub const MIN_REQUESTS: u64 = 20;
/// Fewest requests of a route before its p95 is judged.
pub const MIN_ROUTE_REQUESTS: u64 = 5;
/// Fewest cache lookups in the window before the hit rate is judged.
pub const MIN_LOOKUPS: u64 = 50;

/// A firing alert, as `/performance` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub rule: &'static str,
    /// `""` in JSON for rules without one, so every alert has the same fields.
    #[serde(serialize_with = "empty_when_none")]
    pub subject: Option<String>,
    pub severity: &'static str,
    /// `None` (null): no data in the window to judge.
    pub value: Option<f64>,
    pub threshold: f64,
    pub since: String,
    pub message: String,
}

fn empty_when_none<S: serde::Serializer>(subject: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(subject.as_deref().unwrap_or(""))
}

/// One evaluation's finding: a rule's current value for a subject, or
/// `None` when the window holds too little to judge.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub rule: &'static str,
    pub subject: Option<String>,
    pub value: Option<f64>,
    pub threshold: f64,
    /// `true` when breaching means going above the threshold.
    pub above: bool,
    pub unit: &'static str,
    /// The rule's own severity and message (else: critical past twice the
    /// threshold; the value against the threshold in words).
    pub severity: Option<&'static str>,
    pub message: Option<String>,
    /// Fires as soon as breached and resolves as soon as clear
    /// (`alerts.for_ms` and `keep_firing_ms` do not apply).
    pub immediate: bool,
}

impl Reading {
    fn breached(&self) -> bool {
        match self.value {
            Some(v) if self.above => v > self.threshold,
            Some(v) => v < self.threshold,
            None => false,
        }
    }
}

/// How long a condition must hold to fire, and stay clear to resolve.
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    hold: Duration,
    keep_firing: Duration,
}

/// One rule and subject between evaluations: breaching (pending or
/// firing), or firing and clear for a while.
#[derive(Debug, Default)]
struct State {
    /// Since when the condition has held at every evaluation.
    breached_since: Option<Instant>,
    /// Since when a firing alert's condition has been clear.
    clear_since: Option<Instant>,
    firing: Option<Alert>,
}

type Subject = (&'static str, Option<String>);

/// Alert states and the queue to the webhook.
#[derive(Debug)]
pub struct Alerts {
    states: Mutex<HashMap<Subject, State>>,
    published: ArcSwap<Vec<Alert>>,
    webhook: Option<webhook::Queue>,
    /// The cache's (hits, lookups) at past evaluations, for windowed rates.
    cache_history: Mutex<VecDeque<(Instant, u64, u64)>>,
}

impl Alerts {
    pub fn new(webhook_url: Option<&str>, webhook_tls: Option<Arc<rustls::ClientConfig>>) -> Arc<Alerts> {
        Arc::new(Alerts {
            states: Mutex::default(),
            published: ArcSwap::from_pointee(Vec::new()),
            webhook: webhook_url.map(|url| webhook::Queue::start(url, webhook_tls)),
            // The counters start at zero with the process.
            cache_history: Mutex::new(VecDeque::from([(Instant::now(), 0, 0)])),
        })
    }

    /// The alerts firing now, oldest first.
    pub fn firing(&self) -> Arc<Vec<Alert>> {
        self.published.load_full()
    }

    /// Evaluates every `alerts.interval_ms` (as reloaded: `settings`)
    /// what `readings` reads, until `shutdown` resolves.
    pub async fn evaluate_periodically(
        self: Arc<Self>,
        settings: impl Fn() -> AlertSettings,
        readings: impl Fn() -> Vec<Reading>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let a = settings();
            let interval = Duration::from_millis(a.interval_ms);
            let timing =
                Timing { hold: Duration::from_millis(a.for_ms), keep_firing: Duration::from_millis(a.keep_firing_ms) };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(interval) => {
                    for (status, alert) in self.evaluate(readings(), Instant::now(), timing) {
                        self.transition(status, &alert);
                    }
                }
            }
        }
    }

    /// The cache's hits and lookups over the last `window`: the counters
    /// now minus those at the oldest evaluation inside the window.
    pub fn cache_window(&self, hits: u64, lookups: u64, window: Duration) -> (u64, u64) {
        let mut history = self.cache_history.lock().expect("no panics under the history lock");
        let now = Instant::now();
        while history.len() > 1 && history.get(1).is_some_and(|(t, _, _)| now.duration_since(*t) >= window) {
            history.pop_front();
        }
        let (h0, l0) = history.front().map_or((0, 0), |(_, h, l)| (*h, *l));
        history.push_back((now, hits, lookups));
        (hits.saturating_sub(h0), lookups.saturating_sub(l0))
    }

    /// Applies one evaluation's readings at `now`: fires what has held
    /// for `timing.hold`, resolves what has been clear for
    /// `timing.keep_firing` (a subject no longer reported is clear), and
    /// brings every firing alert's value, severity and message up to date.
    /// Returns the transitions (`"firing"` / `"resolved"` and the alert as
    /// this evaluation left it).
    fn evaluate(&self, readings: Vec<Reading>, now: Instant, timing: Timing) -> Vec<(&'static str, Alert)> {
        let mut transitions = Vec::new();
        let mut states = self.states.lock().expect("alert lock is never poisoned: no panics under it");
        let mut seen = Vec::with_capacity(readings.len());
        for r in readings {
            let timing = if r.immediate { Timing::default() } else { timing };
            let key = (r.rule, r.subject.clone());
            let state = states.entry(key.clone()).or_default();
            seen.push(key);
            if r.breached() {
                state.breached_since.get_or_insert(now);
                state.clear_since = None;
            } else {
                state.breached_since = None;
                if state.firing.is_some() {
                    state.clear_since.get_or_insert(now);
                }
            }
            if let Some(alert) = &mut state.firing {
                let was = alert.severity;
                alert.value = r.value;
                alert.threshold = r.threshold; // as reloaded
                if r.value.is_some() {
                    alert.severity = severity(&r);
                }
                alert.message = message(&r);
                // A rule with its own severities (slo_burn's rows) says so
                // again when it escalates: a warning that turns critical pages.
                if r.immediate && r.breached() && was == "warning" && alert.severity == "critical" {
                    transitions.push(("firing", alert.clone()));
                }
                if r.immediate && state.clear_since.is_some() {
                    if let Some(alert) = state.firing.take() {
                        transitions.push(("resolved", alert));
                    }
                    continue;
                }
            } else if state.breached_since.is_some_and(|t| now.duration_since(t) >= timing.hold) {
                let alert = Alert {
                    rule: r.rule,
                    subject: r.subject.clone(),
                    severity: severity(&r),
                    value: r.value,
                    threshold: r.threshold,
                    since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                    message: message(&r),
                };
                transitions.push(("firing", alert.clone()));
                state.firing = Some(alert);
            }
        }
        for (key, state) in states.iter_mut() {
            // A subject that no longer reports (a route without requests,
            // a query gone from the window) is clear, and has no value.
            if !seen.contains(key) {
                state.breached_since = None;
                if let Some(alert) = &mut state.firing {
                    state.clear_since.get_or_insert(now);
                    alert.value = None;
                    alert.message = no_data(alert.rule, alert.subject.as_deref());
                }
            }
            if state.clear_since.is_some_and(|t| now.duration_since(t) >= timing.keep_firing) {
                if let Some(alert) = state.firing.take() {
                    transitions.push(("resolved", alert));
                }
            }
        }
        states.retain(|_, s| s.firing.is_some() || s.breached_since.is_some());
        let mut list: Vec<Alert> = states.values().filter_map(|s| s.firing.clone()).collect();
        list.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.rule.cmp(b.rule)));
        self.published.store(Arc::new(list));
        transitions
    }

    /// Logs a transition and hands it to the webhook queue. The value is
    /// the latest evaluation's: for a resolved alert, the one that cleared
    /// it (absent when that was no data; the message says so).
    fn transition(&self, status: &'static str, alert: &Alert) {
        let subject = alert.subject.as_deref().unwrap_or("");
        let (rule, threshold, message) = (alert.rule, alert.threshold, &alert.message);
        // `value = null` when there was no data (said so in the message).
        match (status, alert.value) {
            ("firing", Some(value)) => {
                warn!(rule = %rule, subject = %subject, value, threshold, detail = %message, "alert firing")
            }
            ("firing", None) => {
                warn!(rule = %rule, subject = %subject, value = "null", threshold, detail = %message, "alert firing")
            }
            (_, Some(value)) => {
                info!(rule = %rule, subject = %subject, value, threshold, detail = %message, "alert resolved")
            }
            (_, None) => {
                info!(rule = %rule, subject = %subject, value = "null", threshold, detail = %message, "alert resolved")
            }
        }
        if let Some(queue) = &self.webhook {
            queue.push(status, alert);
        }
    }
}

fn severity(r: &Reading) -> &'static str {
    if let Some(own) = r.severity {
        return own;
    }
    let Some(v) = r.value else {
        return "warning";
    };
    let far = if r.above { v > r.threshold * 2.0 } else { v < r.threshold / 2.0 };
    if far {
        "critical"
    } else {
        "warning"
    }
}

fn message(r: &Reading) -> String {
    if let Some(own) = &r.message {
        return own.clone();
    }
    let what = subject_words(r.rule, r.subject.as_deref());
    let Some(value) = r.value else {
        return no_data(r.rule, r.subject.as_deref());
    };
    // Where the value stands now: a clearing value reads "below" an upper
    // threshold.
    let dir = if value > r.threshold {
        "above"
    } else if value < r.threshold {
        "below"
    } else {
        "at"
    };
    format!("{what} is {}{} ({dir} the threshold of {}{})", round(value), r.unit, round(r.threshold), r.unit)
}

/// What a rule measures, in words.
fn subject_words(rule: &str, subject: Option<&str>) -> String {
    match rule {
        "error_rate" => "error rate".to_string(),
        "slow_requests" => format!("p95 latency of {}", subject.unwrap_or("a route")),
        "slow_queries" => "mean time of a database query".to_string(),
        "memory" => "perfproxy's resident memory".to_string(),
        "rate_limited" => "share of requests refused by a rate limit".to_string(),
        _ => "cache hit rate".to_string(),
    }
}

/// Why a rule has no value for `subject` this evaluation.
fn no_data(rule: &str, subject: Option<&str>) -> String {
    let why = match rule {
        "error_rate" | "rate_limited" => format!("fewer than {MIN_REQUESTS} requests in the window"),
        "slow_requests" => format!("fewer than {MIN_ROUTE_REQUESTS} requests to the route in the window"),
        "slow_queries" => "the query is no longer among the slow queries reported".to_string(),
        "cache_hit_rate" => format!("fewer than {MIN_LOOKUPS} cache lookups in the window"),
        _ => "nothing measured in the window".to_string(),
    };
    format!("no data on the {}: {why}", subject_words(rule, subject))
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests;
