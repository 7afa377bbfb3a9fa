//! `GET /metrics`: the same figures as `/performance` in the Prometheus text
//! exposition format, encoded by the `prometheus` crate's `TextEncoder` from
//! metric families built out of a fresh snapshot at each scrape. (The
//! classic text format, because that is what `promtool check metrics` and
//! every Prometheus version read.) A scraper that asks for OpenMetrics gets
//! the same families in that format, with exemplars ([`openmetrics`]).

mod compression;
mod openmetrics;
mod slo;
mod tls;

use hdrhistogram::Counter;
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::Encoder;

use crate::observe::metrics::{semconv, Stats};
use crate::shared::state::Shared;
use crate::watch::health::{CheckStatus, Overall};

/// Upper bounds (seconds) of the request duration histogram's buckets.
const BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The content type of [`render`]'s classic output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub use openmetrics::CONTENT_TYPE as OPENMETRICS_CONTENT_TYPE;

/// Whether a scraper's `Accept` asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&http::HeaderValue>) -> bool {
    accept.and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("application/openmetrics-text"))
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_string());
            l.set_value((*v).to_string());
            l
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(pairs: &[(&str, &str)], v: u64) -> Metric {
    let mut c = prometheus::proto::Counter::default();
    c.set_value(v as f64);
    let mut m = Metric::from_label(labels(pairs));
    m.set_counter(c);
    m
}

fn gauge(pairs: &[(&str, &str)], v: f64) -> Metric {
    let mut g = prometheus::proto::Gauge::default();
    g.set_value(v);
    let mut m = Metric::from_label(labels(pairs));
    m.set_gauge(g);
    m
}

/// A histogram in seconds from one in µs: cumulative counts per [`BUCKETS`].
fn histogram<C: Counter>(pairs: &[(&str, &str)], s: &Stats<C>) -> Metric {
    seconds(pairs, Some(&s.hist), s.count, s.sum_micros, s.max_micros)
}

/// A histogram in seconds from `hist` (µs), `count` samples summing
/// `sum_micros`, none above `max_micros` (a bucket's top is brought down to
/// the maximum recorded, so no sample lands in a bucket above it).
fn seconds<C: Counter>(
    pairs: &[(&str, &str)],
    hist: Option<&crate::observe::metrics::Hist<C>>,
    count: u64,
    sum_micros: u64,
    max_micros: u64,
) -> Metric {
    let mut per_bucket = [0u64; BUCKETS.len()];
    for (value, n) in hist.into_iter().flat_map(|h| h.recorded()) {
        let secs = value.min(max_micros) as f64 / 1e6;
        if let Some(i) = BUCKETS.iter().position(|le| secs <= *le) {
            per_bucket[i] += n;
        }
    }
    let mut cumulative = 0;
    let buckets = BUCKETS
        .iter()
        .zip(per_bucket)
        .map(|(le, n)| {
            cumulative += n;
            let mut b = Bucket::default();
            b.set_upper_bound(*le);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    let mut h = Histogram::default();
    h.set_sample_count(count);
    h.set_sample_sum(sum_micros as f64 / 1e6);
    h.set_bucket(buckets);
    let mut m = Metric::from_label(labels(pairs));
    m.set_histogram(h);
    m
}

/// `http_server_request_duration_seconds`, one histogram per method,
/// route template and status code.
fn semconv_durations(d: &semconv::Durations, names: &[std::sync::Arc<str>]) -> Vec<Metric> {
    let mut out = Vec::new();
    for ((route, status), b) in d.iter() {
        let label = names.get(route.0 as usize).map_or("", |n| &**n);
        let (method, template) = label.split_once(' ').unwrap_or(("", label));
        let code = if *status == semconv::OTHER_STATUS { "other".to_string() } else { status.to_string() };
        let mut cumulative = 0;
        let buckets = semconv::BOUNDS
            .iter()
            .zip(b.counts)
            .map(|(le, n)| {
                cumulative += n;
                let mut bucket = Bucket::default();
                bucket.set_upper_bound(*le);
                bucket.set_cumulative_count(cumulative);
                bucket
            })
            .collect();
        let mut h = Histogram::default();
        h.set_sample_count(b.count);
        h.set_sample_sum(b.sum_micros as f64 / 1e6);
        h.set_bucket(buckets);
        let pairs =
            [("http_request_method", method), ("http_route", template), ("http_response_status_code", code.as_str())];
        let mut m = Metric::from_label(labels(&pairs));
        m.set_histogram(h);
        out.push(m);
    }
    out
}

/// The text a scrape gets: OpenMetrics (with exemplars) or the classic format.
pub fn render(shared: &Shared, openmetrics: bool) -> String {
    let snap = shared.metrics.snapshot(None);
    let names = shared.routes.names();
    let routes: Vec<(String, &Stats)> = snap
        .routes
        .iter()
        .map(|(id, series)| (names.get(id.0 as usize).map_or_else(String::new, |n| n.to_string()), &series.all))
        .collect();
    let per_route = |f: &dyn Fn(&str, &Stats) -> Metric| routes.iter().map(|(r, s)| f(r, s)).collect::<Vec<_>>();

    let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    let mut families = vec![
        family(
            "perfproxy_requests_total",
            "Requests proxied, by route and status class",
            MetricType::COUNTER,
            routes
                .iter()
                .flat_map(|(r, s)| {
                    classes
                        .iter()
                        .enumerate()
                        .map(move |(i, c)| counter(&[("route", r), ("class", c)], s.status[i + 1]))
                })
                .collect(),
        ),
        family(
            "perfproxy_request_errors_total",
            "Responses with status >= 500, the proxy's own 502/504 included",
            MetricType::COUNTER,
            per_route(&|r, s| counter(&[("route", r)], s.errors)),
        ),
        family(
            "perfproxy_rate_limited_total",
            "Requests a rate limit refused (answered 429, never forwarded)",
            MetricType::COUNTER,
            per_route(&|r, s| counter(&[("route", r)], s.limited)),
        ),
        family(
            "perfproxy_grpc_responses_total",
            "gRPC calls by route and grpc-status name (from the trailers, or a Trailers-Only head)",
            MetricType::COUNTER,
            routes
                .iter()
                .flat_map(|(r, s)| {
                    let codes = s.grpc.as_ref().map(|g| g.codes).unwrap_or_default();
                    let seen = codes.into_iter().enumerate().filter(|(_, n)| *n > 0);
                    seen.map(move |(c, n)| counter(&[("route", r), ("code", crate::wire::grpc::NAMES[c])], n))
                })
                .collect(),
        ),
        family(
            "perfproxy_grpc_messages_total",
            "Messages gRPC calls carried, both ways, by route",
            MetricType::COUNTER,
            routes.iter().filter_map(|(r, s)| s.grpc.as_ref().map(|g| counter(&[("route", r)], g.messages))).collect(),
        ),
        family(
            "perfproxy_slow_requests_total",
            "Requests slower than SLOW_REQUEST_THRESHOLD",
            MetricType::COUNTER,
            per_route(&|r, s| counter(&[("route", r)], s.slow)),
        ),
        family(
            "perfproxy_request_duration_seconds",
            "Time from request head read to response complete",
            MetricType::HISTOGRAM,
            per_route(&|r, s| histogram(&[("route", r)], s)),
        ),
        family(
            "perfproxy_upstream_duration_seconds",
            "The upstream's share: request sent upstream to response head read (cache hits have none)",
            MetricType::HISTOGRAM,
            per_route(&|r, s| {
                let top = s.upstream.max_micros.min(s.max_micros);
                seconds(&[("route", r)], Some(&s.upstream.hist), s.upstream.count, s.upstream.sum_micros, top)
            }),
        ),
        family(
            "perfproxy_proxy_overhead_seconds",
            "perfproxy's own share: the request's time less the upstream's and the body's transfer",
            MetricType::HISTOGRAM,
            per_route(&|r, s| {
                let top = s.overhead.max_micros.min(s.max_micros);
                seconds(&[("route", r)], Some(&s.overhead.hist), s.overhead.count, s.overhead.sum_micros, top)
            }),
        ),
        family(
            "perfproxy_access_log_dropped_total",
            "Access-log lines dropped: the writer's queue was full, or its file could not be opened",
            MetricType::COUNTER,
            vec![counter(&[], shared.access_log.as_ref().map_or(0, |l| l.dropped()))],
        ),
        family(
            "perfproxy_requests_in_flight",
            "Requests being proxied now",
            MetricType::GAUGE,
            vec![gauge(&[], snap.in_flight as f64)],
        ),
    ];

    families.push(family(
        "http_server_request_duration_seconds",
        "Duration of HTTP server requests (OpenTelemetry HTTP semantic conventions)",
        MetricType::HISTOGRAM,
        semconv_durations(&snap.durations, &names),
    ));
    families.push(family(
        "perfproxy_history_rollups_dropped_total",
        "Per-minute rollups dropped: the queue was full while the database was away",
        MetricType::COUNTER,
        vec![counter(&[], shared.history.dropped())],
    ));
    let (exported, dropped) = shared.tracer.as_ref().map_or((0, 0), |t| t.counts());
    families.push(family(
        "perfproxy_trace_spans_exported_total",
        "Spans exported over OTLP",
        MetricType::COUNTER,
        vec![counter(&[], exported)],
    ));
    families.push(family(
        "perfproxy_trace_spans_dropped_total",
        "Spans dropped: the export queue was full, or the collector could not take them",
        MetricType::COUNTER,
        vec![counter(&[], dropped)],
    ));

    let (rss, peak) = crate::system::memory();
    let uptime = shared.started.elapsed().as_secs_f64();
    families.push(family(
        "perfproxy_resident_memory_bytes",
        "Resident set size",
        MetricType::GAUGE,
        vec![gauge(&[], rss as f64)],
    ));
    families.push(family(
        "perfproxy_peak_resident_memory_bytes",
        "Peak resident set size",
        MetricType::GAUGE,
        vec![gauge(&[], peak as f64)],
    ));
    let cache = shared.cache.stats_settled();
    let held = crate::admin::performance::held(shared, &cache);
    families.push(family(
        "perfproxy_held_entries",
        "Entries held now by each structure a client can grow (/performance memory.held; the memory layer's bytes are perfproxy_cache_memory_bytes)",
        MetricType::GAUGE,
        held.named().iter().filter(|(name, _)| *name != "cache_bytes").map(|(name, v)| gauge(&[("structure", name)], *v)).collect(),
    ));
    if let Some(slos) = shared.metrics.slos() {
        slo::families(&mut families, slos, shared.metrics.now_unix());
    }
    tls::families(&mut families, shared);
    compression::families(&mut families, shared);
    let samples = &shared.metrics.slow.counts;
    families.push(family(
        "perfproxy_database_activity_samples_total",
        "Looks at pg_stat_activity while a request was slow, by result (ok, failed, timeout)",
        MetricType::COUNTER,
        [("ok", &samples.ok), ("failed", &samples.failed), ("timeout", &samples.timed_out)]
            .iter()
            .map(|(result, n)| counter(&[("result", result)], n.load(std::sync::atomic::Ordering::Relaxed)))
            .collect(),
    ));
    families.push(family("perfproxy_uptime_seconds", "Time since start", MetricType::GAUGE, vec![gauge(&[], uptime)]));
    families.push(family(
        "perfproxy_admin_document_builds_total",
        "/performance and /metrics documents built (readers within 50 ms share one)",
        MetricType::COUNTER,
        vec![counter(&[], shared.admin_docs.builds())],
    ));

    let report = shared.health.report();
    let checked: Vec<_> = report.checks.iter().filter(|(_, c)| c.status != CheckStatus::NotConfigured).collect();
    families.push(family(
        "perfproxy_health_check_up",
        "1 when the check is up, 0 when down",
        MetricType::GAUGE,
        checked.iter().map(|(n, c)| gauge(&[("check", n)], f64::from(u8::from(c.status == CheckStatus::Up)))).collect(),
    ));
    families.push(family(
        "perfproxy_health_check_latency_seconds",
        "Duration of the latest probe",
        MetricType::GAUGE,
        checked.iter().map(|(n, c)| gauge(&[("check", n)], c.latency_ms / 1000.0)).collect(),
    ));
    let overall = shared.health.overall(&report);
    families.push(family(
        "perfproxy_health_status",
        "1 for the current overall status",
        MetricType::GAUGE,
        [(Overall::Healthy, "healthy"), (Overall::Degraded, "degraded"), (Overall::Unhealthy, "unhealthy")]
            .iter()
            .map(|(o, name)| gauge(&[("status", name)], f64::from(u8::from(overall == *o))))
            .collect(),
    ));

    for (name, help, value) in [
        ("perfproxy_cache_hits_total", "Cache lookups answered from the cache (stale ones included)", cache.hits),
        ("perfproxy_cache_stale_total", "Cache hits served stale", cache.stale),
        ("perfproxy_cache_misses_total", "Cache lookups that went upstream for a storable response", cache.misses),
        ("perfproxy_cache_uncacheable_total", "Cache lookups whose response could not be stored", cache.uncacheable),
        ("perfproxy_cache_stores_total", "Responses stored", cache.stores),
        ("perfproxy_cache_bypasses_total", "Requests the cache did not consider", cache.bypasses),
        ("perfproxy_cache_invalidations_total", "Keys invalidated or purged", cache.invalidations),
        ("perfproxy_cache_errors_total", "Cache backend (Redis) errors and timeouts", cache.errors),
    ] {
        families.push(family(name, help, MetricType::COUNTER, vec![counter(&[], value)]));
    }
    for (name, help, value) in [
        ("perfproxy_cache_memory_bytes", "Bytes held by the memory cache layer", cache.memory_bytes as f64),
        ("perfproxy_cache_entries", "Keys held by the memory cache layer", cache.entries as f64),
        ("perfproxy_cache_hit_ratio", "Hits (stale included) over hits and misses since start", cache.hit_rate()),
        ("perfproxy_cache_fresh_hit_ratio", "Fresh hits over hits and misses since start", cache.fresh_hit_rate()),
    ] {
        families.push(family(name, help, MetricType::GAUGE, vec![gauge(&[], value)]));
    }
    let top = if shared.metrics.enabled() { shared.top_clients.top() } else { Vec::new() };
    families.push(family(
        "perfproxy_top_client_requests_per_second",
        "Request rate of the busiest clients over the recent window, by rank (1: the busiest); the clients themselves are in /performance",
        MetricType::GAUGE,
        top.iter().enumerate().map(|(i, c)| gauge(&[("rank", &(i + 1).to_string())], c.rps)).collect(),
    ));
    let firing = shared.alerts.firing();
    families.push(family(
        "perfproxy_alerts_firing",
        "Alerts firing now, by rule",
        MetricType::GAUGE,
        ["error_rate", "slow_requests", "slow_queries", "memory", "cache_hit_rate", "rate_limited"]
            .iter()
            .map(|rule| gauge(&[("rule", rule)], firing.iter().filter(|a| a.rule == *rule).count() as f64))
            .collect(),
    ));
    let platform = crate::system::platform();
    families.push(family(
        "perfproxy_build_info",
        "Version and platform of this perfproxy",
        MetricType::GAUGE,
        vec![gauge(&[("version", crate::system::VERSION), ("platform", &platform)], 1.0)],
    ));

    // The encoder refuses families without samples (no routes yet, say).
    families.retain(|f| !f.get_metric().is_empty());
    if openmetrics {
        // In the order `semconv_durations` wrote the label sets.
        let kept = snap.durations.iter().map(|(_, b)| b.exemplars.as_deref()).collect();
        return openmetrics::encode(&families, &("http_server_request_duration_seconds", kept));
    }
    let mut out = Vec::with_capacity(16 * 1024);
    if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "encoding /metrics");
    }
    String::from_utf8_lossy(&out).into_owned()
}
