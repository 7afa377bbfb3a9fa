//! The `/performance` document, built from a metrics snapshot, the
//! latest health report and the process's own facts.

use std::time::SystemTime;

use hdrhistogram::Counter;
use serde::Serialize;

use crate::observe::metrics::{Snapshot, Stats};
use crate::shared::held::Held;
use crate::shared::state::Shared;
use crate::watch::health::CheckStatus;

#[derive(Serialize)]
pub struct Performance {
    pub generated_at: String,
    pub window_seconds: u64,
    pub requests: Requests,
    pub routes: Vec<RouteView>,
    pub cache: CacheView,
    pub database: DatabaseView,
    pub memory: MemoryView,
    pub system: SystemView,
    pub alerts: Vec<crate::observe::alerts::Alert>,
    /// The clients with the most requests over the recent window (this instance's).
    pub top_clients: Vec<crate::admit::clients::top::TopClient>,
    /// `?scope=cluster` only: `cluster` (merged over the live instances)
    /// or `instance` (no Redis: this instance alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<crate::observe::cluster::Instance>>,
}

#[derive(Serialize)]
pub struct Requests {
    #[serde(flatten)]
    pub all: Figures,
    pub in_flight: i64,
    pub recent: Figures,
    /// Requests per second over the recent window (the time it covers so far).
    pub rate_per_second: f64,
    /// The recent window slot by slot, oldest first (the dashboard's chart).
    pub slots: Vec<SlotView>,
}

/// One slot of the recent window.
#[derive(Serialize)]
pub struct SlotView {
    /// The slot's number since perfproxy started (slots of `seconds`).
    pub slot: u64,
    pub seconds: u64,
    /// How long ago the slot ended (0: the current one, still filling).
    pub ended_seconds_ago: u64,
    pub count: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// Counts, status classes and latency of a set of requests.
#[derive(Serialize)]
pub struct Figures {
    pub total: u64,
    pub success: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub status: Classes,
    pub latency_ms: Latency,
    pub slow: u64,
    /// Refused by a rate limit (429, never forwarded).
    pub limited: u64,
    /// The upstream's share (absent when nothing went upstream: hits only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<Split>,
    /// perfproxy's own share (all-time figures only, as `upstream_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overhead_ms: Option<Split>,
}

/// Percentiles of one share of the requests' time, in ms.
#[derive(Serialize)]
pub struct Split {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Serialize)]
pub struct Classes {
    #[serde(rename = "1xx")]
    pub c1: u64,
    #[serde(rename = "2xx")]
    pub c2: u64,
    #[serde(rename = "3xx")]
    pub c3: u64,
    #[serde(rename = "4xx")]
    pub c4: u64,
    #[serde(rename = "5xx")]
    pub c5: u64,
}

#[derive(Serialize)]
pub struct Latency {
    pub avg: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Serialize)]
pub struct RouteView {
    pub route: String,
    pub count: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub slow: u64,
    /// Refused by a rate limit (429, never forwarded).
    pub limited: u64,
    pub status: Classes,
    pub latency_ms: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<Split>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overhead_ms: Option<Split>,
    /// gRPC routes only: calls by `grpc-status` name (codes seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<std::collections::BTreeMap<&'static str, u64>>,
    /// gRPC routes only: messages streamed, both ways.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    pub recent: Figures,
}

#[derive(Serialize)]
pub struct CacheView {
    pub enabled: bool,
    pub backend: &'static str,
    pub hit_rate: f64,
    pub fresh_hit_rate: f64,
    #[serde(flatten)]
    pub counts: crate::cache::Stats,
}

#[derive(Serialize)]
pub struct DatabaseView {
    pub configured: bool,
    pub status: &'static str,
    pub probe_ms: f64,
    pub error: Option<String>,
    pub pool: Pool,
    /// `pg_stat_statements`, `unavailable` (with `slow_queries_fix`), `pending`, or `not_configured`.
    pub slow_queries_source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_queries_fix: Option<&'static str>,
    pub slow_queries: Vec<crate::watch::database::SlowQuery>,
    pub advice: Vec<String>,
}

#[derive(Serialize)]
pub struct Pool {
    pub size: u64,
    pub idle: u64,
}

#[derive(Serialize)]
pub struct MemoryView {
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    /// What each structure a client can grow holds now.
    pub held: Held,
}

#[derive(Serialize)]
pub struct SystemView {
    pub uptime_seconds: u64,
    pub version: &'static str,
    pub platform: String,
    pub pid: u32,
}

fn ms(micros: f64) -> f64 {
    (micros / 1000.0 * 1000.0).round() / 1000.0
}

pub fn figures<C: Counter>(s: &Stats<C>) -> Figures {
    Figures {
        total: s.count,
        success: s.count - s.errors,
        errors: s.errors,
        error_rate: s.error_rate(),
        status: classes(s),
        latency_ms: latency(s),
        slow: s.slow,
        limited: s.limited,
        upstream_ms: split(&s.upstream),
        overhead_ms: split(&s.overhead),
    }
}

/// A share's percentiles; `None` when it holds nothing.
fn split<C: Counter>(p: &crate::observe::metrics::Part<C>) -> Option<Split> {
    if p.count == 0 {
        return None;
    }
    let h = &p.hist;
    let q = |q: f64| ms(h.value_at_quantile(q) as f64);
    Some(Split { p50: q(0.5), p90: q(0.9), p95: q(0.95), p99: q(0.99), max: ms(h.max() as f64) })
}

fn classes<C: Counter>(s: &Stats<C>) -> Classes {
    Classes { c1: s.status[1], c2: s.status[2], c3: s.status[3], c4: s.status[4], c5: s.status[5] }
}

/// Percentiles from the histogram; the average from the exact sum.
pub fn latency<C: Counter>(s: &Stats<C>) -> Latency {
    if s.count == 0 {
        return Latency { avg: 0.0, p50: 0.0, p90: 0.0, p95: 0.0, p99: 0.0, max: 0.0 };
    }
    let q = |q: f64| ms(s.hist.value_at_quantile(q) as f64);
    Latency {
        avg: ms(s.sum_micros as f64 / s.count as f64),
        p50: q(0.50),
        p90: q(0.90),
        p95: q(0.95),
        p99: q(0.99),
        max: ms(s.max_micros as f64),
    }
}

/// One route's entry: all-time figures and the recent window's.
pub fn route_view<C: Counter, D: Counter>(route: String, a: &Stats<C>, recent: &Stats<D>) -> RouteView {
    RouteView {
        route,
        count: a.count,
        errors: a.errors,
        error_rate: a.error_rate(),
        slow: a.slow,
        limited: a.limited,
        status: classes(a),
        latency_ms: latency(a),
        upstream_ms: split(&a.upstream),
        overhead_ms: split(&a.overhead),
        grpc_status: a.grpc.as_ref().map(|g| {
            let seen = g.codes.iter().enumerate().filter(|(_, n)| **n > 0);
            seen.map(|(code, n)| (crate::wire::grpc::NAMES[code], *n)).collect()
        }),
        messages: a.grpc.as_ref().map(|g| g.messages),
        recent: figures(recent),
    }
}

/// Busiest first, then by label.
pub fn sort_routes(routes: &mut [RouteView]) {
    routes.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.route.cmp(&b.route)));
}

/// Builds the document; `route` narrows `routes` to that label.
pub fn build(shared: &Shared, route: Option<&str>) -> Performance {
    let only = route.map(|r| shared.routes.id_of(r));
    let snap: Snapshot = match only {
        Some(None) => shared.metrics.snapshot_total(),
        Some(Some(id)) => shared.metrics.snapshot(Some(id)),
        None => shared.metrics.snapshot(None),
    };
    let names = shared.routes.names();
    let mut routes: Vec<RouteView> = snap
        .routes
        .iter()
        .map(|(id, series)| {
            let label = names.get(id.0 as usize).map_or_else(String::new, |n| n.to_string());
            route_view(label, &series.all, &series.recent(snap.now_epoch))
        })
        .collect();
    sort_routes(&mut routes);

    let report = shared.health.report();
    let db = report.checks.iter().find(|(n, _)| n == "database").map(|(_, c)| c.clone());
    let settings = &shared.config.settings;
    let db_report = shared.database.as_ref().map(|d| d.report());
    let cache = shared.cache.stats_settled();
    let held_now = held(shared, &cache);
    let db_idle = shared.database.as_ref().map_or(0, |d| d.pool_status().1 as u64);
    let (rss, peak) = crate::system::memory();
    Performance {
        generated_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        window_seconds: snap.window.as_secs(),
        requests: Requests {
            all: figures(&snap.total.all),
            in_flight: snap.in_flight,
            recent: figures(&snap.total.recent(snap.now_epoch)),
            rate_per_second: snap.total.recent(snap.now_epoch).count as f64 / snap.covered().as_secs_f64(),
            slots: slots(&snap),
        },
        routes,
        cache: CacheView {
            enabled: shared.cache.rules().enabled,
            backend: shared.cache.backend(),
            hit_rate: cache.hit_rate(),
            fresh_hit_rate: cache.fresh_hit_rate(),
            counts: cache,
        },
        database: DatabaseView {
            configured: settings.database_url.is_some(),
            status: match db.as_ref().map(|c| c.status) {
                Some(CheckStatus::Up) => "up",
                Some(CheckStatus::Down) => "down",
                _ => "not_configured",
            },
            probe_ms: db.as_ref().map_or(0.0, |c| c.latency_ms),
            error: db.and_then(|c| c.error),
            pool: Pool { size: settings.database_pool_size, idle: db_idle },
            slow_queries_source: db_report.as_ref().map_or("not_configured", |r| r.slow_queries_source),
            slow_queries_fix: db_report.as_ref().and_then(|r| r.slow_queries_fix),
            slow_queries: db_report.as_ref().map_or_else(Vec::new, |r| r.slow_queries.clone()),
            advice: db_report.as_ref().map_or_else(Vec::new, |r| r.advice.clone()),
        },
        memory: MemoryView { rss_bytes: rss, peak_rss_bytes: peak, held: held_now },
        system: SystemView {
            uptime_seconds: shared.started.elapsed().as_secs(),
            version: crate::system::VERSION,
            platform: crate::system::platform(),
            pid: std::process::id(),
        },
        alerts: shared.alerts.firing().to_vec(),
        top_clients: if shared.metrics.enabled() { shared.top_clients.top() } else { Vec::new() },
        scope: None,
        instances: None,
    }
}

/// What each structure a client can grow holds now (`memory.held`).
/// `cache`: the cache's figures as the document read them.
pub fn held(shared: &Shared, cache: &crate::cache::Stats) -> Held {
    let (index, flights) = shared.cache.held();
    let (history_queue, history_points, history_series) = shared.history.held();
    Held {
        cache_entries: cache.entries,
        cache_bytes: cache.memory_bytes,
        cache_index_paths: index.paths,
        cache_index_keys: index.keys,
        cache_tags: index.tags,
        cache_tagged_keys: index.tagged_keys,
        cache_flights: flights,
        route_labels: shared.routes.label_count(),
        clients: shared.top_clients.held(),
        history_queue,
        history_points,
        history_series,
        alerts_firing: shared.alerts.firing().len(),
        ..Held::default()
    }
    .with_workers(&shared.held)
}

/// The total's window slots, oldest first.
fn slots(snap: &Snapshot) -> Vec<SlotView> {
    let seconds = snap.slot.as_secs().max(1);
    snap.total
        .slots(snap.now_epoch)
        .into_iter()
        .map(|(epoch, stats)| slot_view(epoch, seconds, (snap.now_epoch - epoch) * seconds, stats))
        .collect()
}

/// One window slot's entry (`None`: no traffic in it).
pub fn slot_view<C: Counter>(slot: u64, seconds: u64, ago: u64, stats: Option<&Stats<C>>) -> SlotView {
    let ms = |st: &Stats<C>, q: f64| if st.count == 0 { 0.0 } else { st.hist.value_at_quantile(q) as f64 / 1000.0 };
    SlotView {
        slot,
        seconds,
        ended_seconds_ago: ago,
        count: stats.map_or(0, |s| s.count),
        errors: stats.map_or(0, |s| s.errors),
        p50_ms: stats.map_or(0.0, |s| ms(s, 0.5)),
        p95_ms: stats.map_or(0.0, |s| ms(s, 0.95)),
        p99_ms: stats.map_or(0.0, |s| ms(s, 0.99)),
    }
}
