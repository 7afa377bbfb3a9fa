//! What the watched database is doing, sampled while a request is slow:
//! one query of `pg_stat_activity` for all slow requests, at most every
//! `slow.sample_interval_ms`, on the database pool, one at a time and
//! bounded by [`SAMPLE_TIMEOUT`] (a database that is down or slow to
//! answer costs the sampler a timeout, never a request anything). The
//! backends are those of the watched database other than perfproxy's own
//! (its connections say `application_name = perfproxy`), not idle, the
//! longest running first; each statement is normalised here, so no
//! literal leaves this module. `query_id` comes with PostgreSQL 14+ when
//! the server computes one, and calls and mean time when
//! `pg_stat_statements` has the statement.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use super::normalise::normalise;
use super::Database;
use crate::observe::metrics::Metrics;
use crate::observe::slow::{Activity, Backend};

/// One sample (a connection from the pool and the query) at most this long.
pub const SAMPLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Backends one sample lists at most.
const MAX_ROWS: i64 = 20;
/// After a failed query shape, how long before the fuller one is tried again.
const RETRY_FULLER: Duration = Duration::from_secs(60);

/// The backends' columns, shared by every shape of the query.
const ACTIVITY: &str = "
  FROM pg_stat_activity a
 WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
   AND a.backend_type = 'client backend' AND a.state IS NOT NULL AND a.state <> 'idle'
   AND a.application_name IS DISTINCT FROM 'perfproxy'";

/// When a backend's statement (or, idle in a transaction, its transaction) began.
const SINCE: &str = "extract(epoch FROM CASE WHEN a.state = 'active' THEN a.query_start \
ELSE coalesce(a.xact_start, a.state_change) END)::float8 * 1000";

/// The query's shapes, fullest first: with `pg_stat_statements`, with
/// `query_id` alone (PostgreSQL 14+), with neither.
fn shapes() -> [String; 3] {
    let now = "extract(epoch FROM clock_timestamp())::float8 * 1000";
    let with_statements = format!(
        "WITH act AS (SELECT a.pid, a.query, a.query_id, a.state, a.wait_event_type, a.wait_event, \
         {SINCE} AS since_ms, a.datid {ACTIVITY} ORDER BY since_ms LIMIT {MAX_ROWS}),
         st AS (SELECT s.queryid, sum(s.calls)::int8 AS calls,
                       sum(s.total_exec_time) / nullif(sum(s.calls), 0) AS mean_ms
                  FROM pg_stat_statements s
                 WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND s.queryid IN (SELECT query_id FROM act)
                 GROUP BY s.queryid)
         SELECT act.pid, act.query, act.query_id, act.state, act.wait_event_type, act.wait_event,
                act.since_ms, {now}, st.calls, st.mean_ms::float8
           FROM act LEFT JOIN st ON st.queryid = act.query_id ORDER BY act.since_ms"
    );
    let with_query_id = format!(
        "SELECT a.pid, a.query, a.query_id, a.state, a.wait_event_type, a.wait_event, {SINCE} AS since_ms, \
         {now}, NULL::int8, NULL::float8 {ACTIVITY} ORDER BY since_ms LIMIT {MAX_ROWS}"
    );
    let bare = format!(
        "SELECT a.pid, a.query, NULL::int8, a.state, a.wait_event_type, a.wait_event, {SINCE} AS since_ms, \
         {now}, NULL::int8, NULL::float8 {ACTIVITY} ORDER BY since_ms LIMIT {MAX_ROWS}"
    );
    [with_statements, with_query_id, bare]
}

/// Which shape of the query this database answers.
struct Shape {
    queries: [String; 3],
    current: usize,
    since: Instant,
}

impl Database {
    /// Samples `pg_stat_activity` every `interval` while a request has been
    /// in flight longer than the slow threshold, until `shutdown` resolves.
    pub async fn sample_while_slow(
        self: Arc<Self>,
        metrics: Arc<Metrics>,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut shape = Shape { queries: shapes(), current: 0, since: Instant::now() };
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut sampling = false;
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            let oldest = metrics.oldest_in_flight();
            let slow = oldest.is_some_and(|began| began.elapsed() > metrics.slow_threshold());
            if !slow {
                if sampling {
                    sampling = false;
                    if oldest.is_none() {
                        metrics.slow.forget_samples();
                    }
                }
                continue;
            }
            sampling = true;
            let at = Instant::now();
            let counts = &metrics.slow.counts;
            match tokio::time::timeout(SAMPLE_TIMEOUT, self.activity(&mut shape)).await {
                Ok(Some(activity)) => {
                    counts.ok.fetch_add(1, Ordering::Relaxed);
                    metrics.slow.sampled(at, activity, oldest);
                }
                Ok(None) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    debug!("database activity sample timed out");
                    counts.timed_out.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// One look at `pg_stat_activity`; `None` when the database cannot answer.
    async fn activity(&self, shape: &mut Shape) -> Option<Activity> {
        let client = match self.pool.get().await {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %crate::redact::text(&e.to_string()), "activity sample: no connection");
                return None;
            }
        };
        if shape.current > 0 && shape.since.elapsed() > RETRY_FULLER {
            shape.current = 0;
        }
        loop {
            match client.query(shape.queries[shape.current].as_str(), &[]).await {
                Ok(rows) => return Some(read(&rows)),
                // A shape this server lacks (no pg_stat_statements, no
                // query_id before PostgreSQL 14): the next one.
                Err(e) if e.as_db_error().is_some() && shape.current + 1 < shape.queries.len() => {
                    debug!(error = %e, shape = shape.current, "activity sample: a simpler query");
                    (shape.current, shape.since) = (shape.current + 1, Instant::now());
                }
                Err(e) => {
                    debug!(error = %e, "activity sample failed");
                    return None;
                }
            }
        }
    }
}

/// The rows as backends, each statement normalised.
fn read(rows: &[tokio_postgres::Row]) -> Activity {
    let mut activity = Activity::default();
    for row in rows {
        let text: Option<String> = row.get(1);
        // Another role's statement without pg_read_all_stats.
        let query = text.filter(|t| t != "<insufficient privilege>").map(|t| normalise(&t));
        activity.server_now_ms = row.get(7);
        activity.backends.push(Backend {
            pid: row.get(0),
            query,
            query_id: row.get(2),
            state: row.get::<_, Option<String>>(3).unwrap_or_default(),
            wait_event_type: row.get(4),
            wait_event: row.get(5),
            since_ms: row.get::<_, Option<f64>>(6).unwrap_or(activity.server_now_ms),
            calls: row.get(8),
            mean_ms: row.get::<_, Option<f64>>(9).map(|m| (m * 1000.0).round() / 1000.0),
        });
    }
    activity
}
