//! The background tasks, each handed what it reads from the process's
//! shared state: the layers below see only those closures and traits, never
//! `Shared` itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::observe::alerts::{self, Reading};
use crate::observe::cluster::wire::Published;
use crate::shared::state::Shared;

/// How often the TLS listener's files are looked at for a change.
const TLS_FILES_EVERY: Duration = Duration::from_secs(1);

/// Starts every background task; each ends when `stop` turns true.
pub fn spawn(shared: &Arc<Shared>, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let (s1, s2, s3, s4) = (shared.clone(), shared.clone(), shared.clone(), shared.clone());
    let health_settings = move || s1.live.load().health.clone();
    let alert_settings = move || s2.live.load().alerts.clone();
    let alert_readings = move || readings(&s3);
    let figures = move |now| {
        let snap = s4.metrics.snapshot(None);
        let mut published =
            Published::from_snapshot(&s4.cluster.instance, &snap, &s4.routes.names(), s4.cache.stats(), now);
        if let Some(slos) = s4.metrics.slos() {
            published.slos = slos.tallies(s4.metrics.now_unix());
        }
        published
    };
    let mut background = vec![
        tokio::spawn(shared.metrics.clone().merge_periodically(stopped(stop.clone()))),
        tokio::spawn(shared.health.clone().probe_periodically(
            shared.config.clone(),
            shared.database.as_ref().map(|d| d.pool().clone()),
            health_settings,
            stopped(stop.clone()),
        )),
        tokio::spawn(shared.alerts.clone().evaluate_periodically(
            alert_settings,
            alert_readings,
            stopped(stop.clone()),
        )),
        tokio::spawn(crate::runtime::reload::on_sighup(shared.clone(), stopped(stop.clone()))),
        tokio::spawn(shared.cache.clone().run(stopped(stop.clone()))),
        tokio::spawn(shared.cluster.clone().run(figures, stopped(stop.clone()))),
        tokio::spawn(shared.history.clone().run(shared.clone(), stopped(stop.clone()))),
    ];
    if let Some(tls) = &shared.config.tls {
        let watch = tls.config.clone().watch_files(TLS_FILES_EVERY, stopped(stop.clone()));
        background.push(tokio::spawn(watch));
    }
    if let Some(db) = shared.database.clone() {
        let limit = shared.config.settings.database.slow_query_limit as usize;
        background.push(tokio::spawn(db.clone().watch(limit, stopped(stop.clone()))));
        if shared.metrics.enabled() {
            let interval = Duration::from_millis(shared.config.settings.slow.sample_interval_ms);
            let sampler = db.sample_while_slow(shared.metrics.clone(), interval, stopped(stop.clone()));
            background.push(tokio::spawn(sampler));
        }
    }
    background
}

/// Days before a certificate's end when `tls_expiry` warns, and when it is critical.
const TLS_EXPIRY_WARNING_DAYS: f64 = 14.0;
const TLS_EXPIRY_CRITICAL_DAYS: f64 = 3.0;

/// `tls_expiry`: one reading per certificate presented (the TLS listener's,
/// and the client certificate shown to an `https://` upstream: days left), firing
/// as soon as under 14 days (warning), critical under 3. Its subject is the
/// file (and the place in the chain after the leaf), so a renewed
/// certificate under another name still resolves the alert at once.
fn tls_expiry(certificates: &[crate::tls::files::CertificateInfo]) -> Vec<Reading> {
    let now = crate::tls::files::unix_now();
    certificates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let days = c.days_left(now);
            let critical = days < TLS_EXPIRY_CRITICAL_DAYS;
            let message = match days <= 0.0 {
                true => format!("TLS certificate {} ({}) has expired", c.subject, c.file),
                false => format!("TLS certificate {} ({}) expires in {days:.1} days", c.subject, c.file),
            };
            Reading {
                rule: "tls_expiry",
                subject: Some(if i == 0 { c.file.clone() } else { format!("{} (chain {i})", c.file) }),
                value: Some(days),
                threshold: TLS_EXPIRY_WARNING_DAYS,
                above: false,
                unit: " days",
                severity: Some(if critical { "critical" } else { "warning" }),
                message: Some(message),
                immediate: true,
            }
        })
        .collect()
}

/// Reads every alert rule's current value from the shared state.
fn readings(shared: &Shared) -> Vec<Reading> {
    let live = shared.live.load();
    let a = &live.alerts;
    let mut out = Vec::new();
    let snap = shared.metrics.snapshot(None);
    let recent = snap.total.recent(snap.now_epoch);
    // Too few requests to judge: no data (not the last value seen).
    let judged = recent.count >= alerts::MIN_REQUESTS;
    let share = |n: u64| judged.then(|| n as f64 / recent.count as f64);
    out.push(Reading {
        rule: "error_rate",
        subject: None,
        value: share(recent.errors),
        threshold: a.error_rate,
        above: true,
        unit: "",
        ..Reading::default()
    });
    // Only with rules: a share of requests a rate limit refused.
    if shared.limits.any() || recent.limited > 0 {
        out.push(Reading {
            rule: "rate_limited",
            subject: None,
            value: share(recent.limited),
            threshold: a.rate_limited,
            above: true,
            unit: "",
            ..Reading::default()
        });
    }
    let names = shared.routes.names();
    for (id, series) in &snap.routes {
        let r = series.recent(snap.now_epoch);
        if r.count >= alerts::MIN_ROUTE_REQUESTS {
            let p95_ms = r.quantile_micros(0.95) as f64 / 1000.0;
            let subject = names.get(id.0 as usize).map(|n| n.to_string());
            out.push(Reading {
                rule: "slow_requests",
                subject,
                value: Some(p95_ms),
                threshold: a.slow_request_ms as f64,
                above: true,
                unit: " ms",
                ..Reading::default()
            });
        }
    }
    if let Some(db) = &shared.database {
        for q in &db.report().slow_queries {
            let subject = Some(q.query.chars().take(200).collect());
            out.push(Reading {
                rule: "slow_queries",
                subject,
                value: Some(q.mean_ms),
                threshold: a.slow_query_ms as f64,
                above: true,
                unit: " ms",
                ..Reading::default()
            });
        }
    }
    if let Some(slos) = shared.metrics.slos() {
        out.extend(slos.readings(shared.metrics.now_unix()));
    }
    if let Some(tls) = &shared.config.tls {
        out.extend(tls_expiry(&tls.config.certificates()));
    }
    if let Some(upstream) = &shared.config.upstream_tls {
        out.extend(tls_expiry(&upstream.client_certificates));
    }
    let (rss, _) = crate::system::memory();
    out.push(Reading {
        rule: "memory",
        subject: None,
        value: Some(rss as f64),
        threshold: a.memory_bytes as f64,
        above: true,
        unit: " bytes",
        ..Reading::default()
    });
    let cache = shared.cache.stats();
    let window = Duration::from_millis(a.window_ms);
    // Fresh hits only: an outage answered from stale is not a healthy cache.
    let fresh = cache.hits.saturating_sub(cache.stale);
    let (hits, lookups) = shared.alerts.cache_window(fresh, cache.hits + cache.misses, window);
    out.push(Reading {
        rule: "cache_hit_rate",
        subject: None,
        value: (lookups >= alerts::MIN_LOOKUPS).then(|| hits as f64 / lookups as f64),
        threshold: a.cache_hit_rate,
        above: false,
        unit: "",
        ..Reading::default()
    });
    out
}
