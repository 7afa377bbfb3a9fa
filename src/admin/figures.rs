//! One set of requests' figures as `/performance` shows them (counts,
//! status classes, latency percentiles, the upstream's and perfproxy's
//! shares, a route's entry, a window slot), from [`Stats`]. Percentiles come
//! from the histogram, clamped to the recorded minimum and maximum; a part
//! never exceeds its whole.

use hdrhistogram::Counter;
use serde::Serialize;

use crate::observe::metrics::Stats;

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

/// The spread of a set of times, in ms: the extremes recorded and the
/// percentiles between them (a share's figures; the whole's with `avg`).
#[derive(Serialize, Default)]
pub struct Split {
    pub min: f64,
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
    #[serde(flatten)]
    pub spread: Split,
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
        upstream_ms: split(&s.upstream, s.max_micros),
        overhead_ms: split(&s.overhead, s.max_micros),
    }
}

/// A share's percentiles; `None` when it holds nothing. A part never
/// exceeds its whole: nothing above `whole_max` (µs), the requests' own
/// maximum (each request's share is recorded at most its total; this holds
/// figures merged from instances that predate that too).
fn split<C: Counter>(p: &crate::observe::metrics::Part<C>, whole_max: u64) -> Option<Split> {
    if p.count == 0 {
        return None;
    }
    let top = p.max_micros.min(whole_max);
    Some(spread(|q| p.quantile_micros(q).min(top), p.min_micros.min(top), top))
}

/// The spread from a quantile function and the extremes (µs).
fn spread(quantile: impl Fn(f64) -> u64, min: u64, max: u64) -> Split {
    let q = |q: f64| ms(quantile(q) as f64);
    Split { min: ms(min as f64), p50: q(0.5), p90: q(0.9), p95: q(0.95), p99: q(0.99), max: ms(max as f64) }
}

fn classes<C: Counter>(s: &Stats<C>) -> Classes {
    Classes { c1: s.status[1], c2: s.status[2], c3: s.status[3], c4: s.status[4], c5: s.status[5] }
}

/// Percentiles from the histogram; the average from the exact sum.
pub fn latency<C: Counter>(s: &Stats<C>) -> Latency {
    if s.count == 0 {
        return Latency { avg: 0.0, spread: Split::default() };
    }
    Latency {
        avg: ms(s.sum_micros as f64 / s.count as f64),
        spread: spread(|q| s.quantile_micros(q), s.min_micros, s.max_micros),
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
        upstream_ms: split(&a.upstream, a.max_micros),
        overhead_ms: split(&a.overhead, a.max_micros),
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

/// One window slot's entry (`None`: no traffic in it).
pub fn slot_view<C: Counter>(slot: u64, seconds: u64, ago: u64, stats: Option<&Stats<C>>) -> SlotView {
    let ms = |st: &Stats<C>, q: f64| st.quantile_micros(q) as f64 / 1000.0;
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
