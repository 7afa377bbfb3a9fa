//! The `/performance` document, built from a metrics snapshot, the
//! latest health report and the process's own facts.

use std::time::SystemTime;

use serde::Serialize;

use crate::admin::figures::{figures, route_view, slot_view, sort_routes, Figures, RouteView, SlotView};
use crate::observe::metrics::Snapshot;
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
    /// The alert thresholds in force (as reloaded), so a reader (the
    /// dashboard's colours) judges figures by them.
    pub thresholds: Thresholds,
    /// The clients with the most requests over the recent window (this instance's).
    pub top_clients: Vec<crate::admit::clients::top::TopClient>,
    /// The last `slow.keep` slow requests, newest first, with what the
    /// database was doing meanwhile (this instance's).
    pub slow_requests: Vec<SlowRequestView>,
    /// `[[slo]]`: each objective's SLI, error budget and burn rates.
    pub slos: Vec<crate::observe::slo::SloView>,
    /// The TLS listener's certificates and handshakes; the upstream's handshakes.
    pub tls: TlsView,
    /// `[compression]`: whether it is on, and what each coding did.
    pub compression: CompressionView,
    /// `?scope=cluster` only: `cluster` (merged over the live instances)
    /// or `instance` (no Redis: this instance alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<crate::observe::cluster::Instance>>,
}

/// `compression`: `enabled`, then per coding (`gzip`, `br`, `zstd`) the
/// answers compressed and their bytes in (the upstream's) and out.
#[derive(Serialize)]
pub struct CompressionView {
    pub enabled: bool,
    /// The codings in use, preferred first.
    pub algorithms: Vec<&'static str>,
    pub gzip: CodingView,
    pub br: CodingView,
    pub zstd: CodingView,
}

#[derive(Serialize)]
pub struct CodingView {
    pub responses: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// `bytes_out / bytes_in` (0 before any).
    pub ratio: f64,
}

pub fn compression_view(shared: &Shared) -> CompressionView {
    use crate::wire::encoding::Coding;
    let stats = &shared.compression.stats;
    let view = |c: Coding| {
        let f = stats.figures(c);
        let ratio = if f.bytes_in == 0 { 0.0 } else { (f.bytes_out as f64 / f.bytes_in as f64 * 1e4).round() / 1e4 };
        CodingView { responses: f.responses, bytes_in: f.bytes_in, bytes_out: f.bytes_out, ratio }
    };
    let table = shared.compression.table();
    CompressionView {
        enabled: table.enabled,
        algorithms: table.order.iter().map(|c| c.token()).collect(),
        gzip: view(Coding::Gzip),
        br: view(Coding::Br),
        zstd: view(Coding::Zstd),
    }
}

/// `tls`: what the TLS listener presents and how its handshakes went;
/// the upstream's handshakes when it is `https://`.
#[derive(Serialize, Default)]
pub struct TlsView {
    /// `tls_listen`, or null without a TLS listener.
    pub listen: Option<String>,
    pub certificates: Vec<CertificateView>,
    /// Handshakes on `tls_listen` by result.
    pub handshakes: std::collections::BTreeMap<&'static str, u64>,
    /// The mean time of a successful handshake.
    pub handshake_ms_mean: f64,
    pub upstream: Option<UpstreamTlsView>,
}

#[derive(Serialize)]
pub struct CertificateView {
    pub file: String,
    pub subject: String,
    /// RFC 3339, UTC.
    pub not_after: String,
    pub not_after_unix: i64,
    pub days_left: f64,
}

#[derive(Serialize)]
pub struct UpstreamTlsView {
    pub server_name: String,
    /// The client certificate presented to the upstream (`client_cert_file`), leaf first.
    pub client_certificates: Vec<CertificateView>,
    /// `full`, `resumed` (a session kept from an earlier connection), `failed`.
    pub handshakes: std::collections::BTreeMap<&'static str, u64>,
}

impl CertificateView {
    fn of(c: crate::tls::files::CertificateInfo, now: i64) -> CertificateView {
        CertificateView {
            not_after: std::time::UNIX_EPOCH
                .checked_add(std::time::Duration::from_secs(c.not_after.max(0) as u64))
                .map_or_else(String::new, |t| humantime::format_rfc3339_seconds(t).to_string()),
            not_after_unix: c.not_after,
            days_left: c.days_left(now),
            file: c.file,
            subject: c.subject,
        }
    }
}

pub fn tls_view(shared: &Shared) -> TlsView {
    let mut view = TlsView::default();
    let now = crate::tls::files::unix_now();
    if let Some(tls) = &shared.config.tls {
        view.listen = Some(tls.addr.to_string());
        view.certificates = tls.config.certificates().into_iter().map(|c| CertificateView::of(c, now)).collect();
        let counts = tls.config.handshakes.read();
        view.handshakes = counts.by_outcome.iter().copied().collect();
        let ok = counts.cumulative.last().copied().unwrap_or(0);
        if ok > 0 {
            view.handshake_ms_mean = (counts.seconds_sum * 1000.0 / ok as f64 * 1000.0).round() / 1000.0;
        }
    }
    if let Some(up) = &shared.config.upstream_tls {
        view.upstream = Some(UpstreamTlsView {
            server_name: up.server_name().to_str().into_owned(),
            client_certificates: up.client_certificates.iter().cloned().map(|c| CertificateView::of(c, now)).collect(),
            handshakes: up.handshakes.read().into_iter().collect(),
        });
    }
    view
}

/// A slow request with its route's label.
#[derive(Serialize)]
pub struct SlowRequestView {
    pub route: String,
    #[serde(flatten)]
    pub request: std::sync::Arc<crate::observe::slow::SlowRequest>,
}

/// `alerts.*` thresholds, as configured.
#[derive(Serialize)]
pub struct Thresholds {
    pub error_rate: f64,
    pub slow_request_ms: u64,
    pub slow_query_ms: u64,
    pub memory_bytes: u64,
    pub cache_hit_rate: f64,
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
        thresholds: {
            let a = &shared.live.load().alerts;
            Thresholds {
                error_rate: a.error_rate,
                slow_request_ms: a.slow_request_ms,
                slow_query_ms: a.slow_query_ms,
                memory_bytes: a.memory_bytes,
                cache_hit_rate: a.cache_hit_rate,
            }
        },
        top_clients: if shared.metrics.enabled() { shared.top_clients.top() } else { Vec::new() },
        slow_requests: slow_requests(shared),
        slos: shared.metrics.slos().map_or_else(Vec::new, |s| s.views(shared.metrics.now_unix())),
        tls: tls_view(shared),
        compression: compression_view(shared),
        scope: None,
        instances: None,
    }
}

/// The slow requests kept, newest first, each with its route's label.
pub fn slow_requests(shared: &Shared) -> Vec<SlowRequestView> {
    let names = shared.routes.names();
    let label = |id: crate::wire::routes::RouteId| names.get(id.0 as usize).map_or_else(String::new, |n| n.to_string());
    shared
        .metrics
        .slow
        .latest()
        .into_iter()
        .map(|request| SlowRequestView { route: label(request.route), request })
        .collect()
}

/// What each structure a client can grow holds now (`memory.held`).
/// `cache`: the cache's figures as the document read them.
pub fn held(shared: &Shared, cache: &crate::cache::Stats) -> Held {
    let (index, flights) = shared.cache.held();
    let (history_queue, history_points, history_series) = shared.history.held();
    let (route_positions, route_literals) = shared.routes.discovery_held();
    let (slow_statements, slow_requests) = shared.metrics.slow.held();
    Held {
        cache_entries: cache.entries,
        cache_bytes: cache.memory_bytes,
        cache_index_paths: index.paths,
        cache_index_keys: index.keys,
        cache_tags: index.tags,
        cache_tagged_keys: index.tagged_keys,
        cache_flights: flights,
        route_labels: shared.routes.label_count(),
        route_positions,
        route_literals,
        clients: shared.top_clients.held(),
        history_queue,
        history_points,
        history_series,
        alerts_firing: shared.alerts.firing().len(),
        slow_statements,
        slow_requests,
        slo_buckets: shared.metrics.slos().map_or(0, crate::observe::slo::Slos::held),
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
