//! A route's minute as history keeps it ([`Rollup`]): what its series did
//! since the last rollup (counts, percentiles within the range recorded,
//! the minute's histogram as V2 + DEFLATE), and how rollups are written
//! (one `INSERT … SELECT FROM UNNEST` per batch, an instance's minute
//! written again replacing itself).

use std::time::SystemTime;

use deadpool_postgres::Pool;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};

use super::{ms_at, WriteError};
use crate::observe::metrics::Stats;

/// One route's minute.
#[derive(Debug, Clone)]
pub struct Rollup {
    pub minute: SystemTime,
    pub route: String,
    pub requests: i64,
    pub errors: i64,
    pub slow: i64,
    pub p50_ms: f32,
    pub p95_ms: f32,
    pub p99_ms: f32,
    pub max_ms: f32,
    pub histogram: Vec<u8>,
}

/// What a series did since `before` (its all-time stats then).
pub(super) fn since(now: &Stats, before: Option<&Stats>) -> Stats {
    let mut d = now.clone();
    if let Some(b) = before {
        d.count -= b.count.min(d.count);
        d.errors -= b.errors.min(d.errors);
        d.slow -= b.slow.min(d.slow);
        d.sum_micros -= b.sum_micros.min(d.sum_micros);
        if d.hist.subtract(&b.hist).is_err() {
            d.hist.reset();
        }
    }
    // The minute's extremes: its histogram's range, within what was
    // recorded all along (a bucket's top is never above the maximum seen).
    d.max_micros = d.hist.max().min(now.max_micros);
    d.min_micros = d.hist.min().max(now.min_micros).min(d.max_micros);
    d
}

pub(super) fn rollup(minute: SystemTime, route: &str, d: &Stats) -> Rollup {
    let mut histogram = Vec::new();
    let _ = V2DeflateSerializer::new().serialize(&d.hist.to_hdr(), &mut histogram);
    Rollup {
        minute,
        route: route.to_string(),
        requests: d.count as i64,
        errors: d.errors as i64,
        slow: d.slow as i64,
        p50_ms: ms_at(d, 0.5) as f32,
        p95_ms: ms_at(d, 0.95) as f32,
        p99_ms: ms_at(d, 0.99) as f32,
        max_ms: (d.max_micros as f64 / 1000.0) as f32,
        histogram,
    }
}

/// Writes `rows` as `instance`'s.
pub(super) async fn insert(pool: &Pool, instance: &str, rows: &[Rollup]) -> Result<(), WriteError> {
    let client = pool.get().await?;
    let col = |f: &dyn Fn(&Rollup) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
    let real = |f: &dyn Fn(&Rollup) -> f32| rows.iter().map(f).collect::<Vec<f32>>();
    let minutes: Vec<SystemTime> = rows.iter().map(|r| r.minute).collect();
    let routes: Vec<&str> = rows.iter().map(|r| r.route.as_str()).collect();
    let instances: Vec<&str> = rows.iter().map(|_| instance).collect();
    let hists: Vec<&[u8]> = rows.iter().map(|r| r.histogram.as_slice()).collect();
    client
        .execute(
            "INSERT INTO perfproxy.route_minutes \
             (minute, route, instance, requests, errors, slow, p50_ms, p95_ms, p99_ms, max_ms, histogram) \
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[], \
             $7::float4[], $8::float4[], $9::float4[], $10::float4[], $11::bytea[]) \
             ON CONFLICT (route, minute, instance) DO UPDATE SET requests = EXCLUDED.requests, \
             errors = EXCLUDED.errors, slow = EXCLUDED.slow, p50_ms = EXCLUDED.p50_ms, p95_ms = EXCLUDED.p95_ms, \
             p99_ms = EXCLUDED.p99_ms, max_ms = EXCLUDED.max_ms, histogram = EXCLUDED.histogram",
            &[
                &minutes,
                &routes,
                &instances,
                &col(&|r| r.requests),
                &col(&|r| r.errors),
                &col(&|r| r.slow),
                &real(&|r| r.p50_ms),
                &real(&|r| r.p95_ms),
                &real(&|r| r.p99_ms),
                &real(&|r| r.max_ms),
                &hists,
            ],
        )
        .await?;
    Ok(())
}
