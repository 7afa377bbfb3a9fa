//! Slow requests in history: each one ended is queued (bounded, the oldest
//! dropped while the database is away) and written with the instance's
//! id to `perfproxy.slow_requests`, its backends as JSON (their statements
//! were normalised before they were ever kept); rows past the retention
//! are deleted with the rollups. [`query`] reads a time range back for
//! `/performance/history?kind=slow_requests`.

use std::time::SystemTime;

use deadpool_postgres::Pool;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{lock, History, Traffic, WriteError, DB_TIMEOUT};
use crate::observe::slow::SlowRequest;

/// Slow requests waiting for the database at most.
pub(super) const MAX_QUEUE: usize = 10_000;

/// Rows per insert (a row's backends can reach tens of KB).
const SLOW_BATCH: usize = 100;

/// One slow request as it is written: the request (shared with
/// `/performance`), its route's label.
#[derive(Debug, Clone)]
pub(super) struct SlowRow {
    request: Arc<SlowRequest>,
    route: String,
}

impl History {
    /// Queues the slow requests ended since the last call and writes the
    /// queue; it stays queued while the database is away.
    pub(super) async fn write_slow_requests(&self, traffic: &impl Traffic) {
        let ended = traffic.metrics().slow.take_pending();
        if !self.on() || !self.slow_table.load(Ordering::Relaxed) {
            return;
        }
        if !ended.is_empty() {
            let names = traffic.routes().names();
            let mut queue = lock(&self.slow_queue);
            for request in ended {
                let label = names.get(request.route.0 as usize).map_or_else(String::new, |n| n.to_string());
                if queue.len() >= MAX_QUEUE {
                    queue.pop_front();
                }
                queue.push_back(SlowRow { request, route: label });
            }
        }
        let Some(pool) = self.pool() else { return };
        loop {
            let batch: Vec<SlowRow> = lock(&self.slow_queue).iter().take(SLOW_BATCH).cloned().collect();
            if batch.is_empty() {
                return;
            }
            match tokio::time::timeout(DB_TIMEOUT, insert(pool, &self.instance, &batch)).await {
                Ok(Ok(())) => {
                    let mut queue = lock(&self.slow_queue);
                    let n = batch.len().min(queue.len());
                    queue.drain(..n);
                }
                Ok(Err(e)) if super::no_schema(&e) => {
                    // Tried again at the next minute (after `perfproxy migrate`).
                    if !self.slow_warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "history: no perfproxy.slow_requests table (run `perfproxy migrate`); slow requests are not kept"
                        );
                    }
                    self.slow_table.store(false, Ordering::Relaxed);
                    lock(&self.slow_queue).clear();
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %crate::redact::text(&e.to_string()), "history: slow requests kept");
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

/// Writes `rows` in one statement.
async fn insert(pool: &Pool, instance: &str, rows: &[SlowRow]) -> Result<(), WriteError> {
    let client = pool.get().await?;
    let requests: Vec<&SlowRequest> = rows.iter().map(|r| &*r.request).collect();
    let text = |f: &dyn Fn(&SlowRequest) -> &str| requests.iter().map(|r| f(r)).collect::<Vec<&str>>();
    let real = |f: &dyn Fn(&SlowRequest) -> Option<f64>| {
        requests.iter().map(|r| f(r).map(|v| v as f32)).collect::<Vec<Option<f32>>>()
    };
    let at: Vec<SystemTime> =
        requests.iter().map(|r| humantime::parse_rfc3339(&r.at).unwrap_or_else(|_| SystemTime::now())).collect();
    let routes: Vec<&str> = rows.iter().map(|r| r.route.as_str()).collect();
    let status: Vec<i32> = requests.iter().map(|r| i32::from(r.status)).collect();
    let trace: Vec<Option<&str>> = requests.iter().map(|r| r.trace_id.as_deref()).collect();
    let sampled: Vec<bool> = requests.iter().map(|r| r.trace_sampled).collect();
    let database: Vec<String> =
        requests.iter().map(|r| serde_json::to_string(&r.database).unwrap_or_else(|_| "[]".into())).collect();
    let database: Vec<&str> = database.iter().map(String::as_str).collect();
    client
        .execute(
            "INSERT INTO perfproxy.slow_requests (at, instance, route, status, latency_ms, upstream_ms, \
             overhead_ms, trace_id, trace_sampled, request_id, client, database) \
             SELECT at, $2, route, status, latency, upstream, overhead, trace, sampled, request, client, \
             database::jsonb FROM UNNEST($1::timestamptz[], $3::text[], $4::int4[], $5::float4[], $6::float4[], \
             $7::float4[], $8::text[], $9::bool[], $10::text[], $11::text[], $12::text[]) \
             AS t(at, route, status, latency, upstream, overhead, trace, sampled, request, client, database)",
            &[
                &at,
                &instance,
                &routes,
                &status,
                &real(&|r| Some(r.latency_ms)),
                &real(&|r| r.upstream_ms),
                &real(&|r| Some(r.overhead_ms)),
                &trace,
                &sampled,
                &text(&|r| &r.request_id),
                &text(&|r| &r.client),
                &database,
            ],
        )
        .await?;
    Ok(())
}

/// Deletes up to `limit` rows older than `cutoff`; returns how many went.
pub(super) async fn expire(client: &tokio_postgres::Client, cutoff: SystemTime, limit: i64) -> u64 {
    let deleted = client
        .execute(
            "DELETE FROM perfproxy.slow_requests WHERE ctid IN \
             (SELECT ctid FROM perfproxy.slow_requests WHERE at < $1 LIMIT $2)",
            &[&cutoff, &limit],
        )
        .await;
    deleted.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "history: slow-request retention delete failed");
        0
    })
}

/// The slow requests of every instance between `from` and `to` (on
/// `route` only, when given), newest first, at most `limit`.
pub async fn query(
    pool: &Pool,
    (from, to): (SystemTime, SystemTime),
    route: Option<&str>,
    limit: i64,
) -> Result<Vec<serde_json::Value>, Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT at, instance, route, status, latency_ms::float8, upstream_ms::float8, overhead_ms::float8, \
             trace_id, request_id, client, database::text, trace_sampled FROM perfproxy.slow_requests \
             WHERE at >= $1 AND at < $2 AND ($3::text IS NULL OR route = $3) ORDER BY at DESC LIMIT $4",
            &[&from, &to, &route, &limit],
        )
        .await?;
    let round = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
    Ok(rows
        .iter()
        .map(|r| {
            let at: SystemTime = r.get(0);
            let database: String = r.get(10);
            serde_json::json!({
                "at": humantime::format_rfc3339_millis(at).to_string(),
                "instance": r.get::<_, String>(1),
                "route": r.get::<_, String>(2),
                "status": r.get::<_, i32>(3),
                "latency_ms": round(r.get(4)),
                "upstream_ms": round(r.get(5)),
                "overhead_ms": round(r.get(6)),
                "trace_id": r.get::<_, Option<String>>(7),
                "trace_sampled": r.get::<_, bool>(11),
                "request_id": r.get::<_, String>(8),
                "client": r.get::<_, String>(9),
                "database": serde_json::from_str::<serde_json::Value>(&database).unwrap_or_default(),
            })
        })
        .collect())
}
