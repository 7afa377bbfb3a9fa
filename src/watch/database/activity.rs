//! What the watched database is doing, sampled while a request is slow:
//! one query of `pg_stat_activity` for all slow requests, at most every
//! `slow.sample_interval_ms`, on the database pool, one at a time and
//! bounded by [`SAMPLE_TIMEOUT`] (a database that is down or slow to
//! answer costs the sampler a timeout, never a request anything; a query
//! that overruns is cancelled on the server and its connection closed, so
//! no look outlives its turn). The backends are those of the watched
//! database other than perfproxy's own (its connections say
//! `application_name = perfproxy`), not idle, active ones first, then the
//! longest running; each statement is normalised here, so no literal
//! leaves this module. `query_id` comes with PostgreSQL 14+ when
//! the server computes one, and calls and mean time when
//! `pg_stat_statements` has the statement.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;
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
   AND a.backend_type IN ('client backend', 'autovacuum worker') AND a.state IS NOT NULL AND a.state <> 'idle'
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
         {SINCE} AS since_ms, a.datid {ACTIVITY} ORDER BY a.state <> 'active', since_ms LIMIT {MAX_ROWS}),
         st AS (SELECT s.queryid, sum(s.calls)::int8 AS calls,
                       sum(s.total_exec_time) / nullif(sum(s.calls), 0) AS mean_ms
                  FROM pg_stat_statements s
                 WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND s.queryid IN (SELECT query_id FROM act)
                 GROUP BY s.queryid)
         SELECT act.pid, act.query, act.query_id, act.state, act.wait_event_type, act.wait_event,
                act.since_ms, {now}, st.calls, st.mean_ms::float8
           FROM act LEFT JOIN st ON st.queryid = act.query_id ORDER BY act.state <> 'active', act.since_ms"
    );
    let with_query_id = format!(
        "SELECT a.pid, a.query, a.query_id, a.state, a.wait_event_type, a.wait_event, {SINCE} AS since_ms, \
         {now}, NULL::int8, NULL::float8 {ACTIVITY} ORDER BY a.state <> 'active', since_ms LIMIT {MAX_ROWS}"
    );
    let bare = format!(
        "SELECT a.pid, a.query, NULL::int8, a.state, a.wait_event_type, a.wait_event, {SINCE} AS since_ms, \
         {now}, NULL::int8, NULL::float8 {ACTIVITY} ORDER BY a.state <> 'active', since_ms LIMIT {MAX_ROWS}"
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
            match self.activity(&mut shape).await {
                Ok(activity) => {
                    counts.ok.fetch_add(1, Ordering::Relaxed);
                    metrics.slow.sampled(at, activity, oldest);
                }
                Err(Missed::Failed) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                }
                Err(Missed::TimedOut) => {
                    debug!("database activity sample timed out");
                    counts.timed_out.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// One look at `pg_stat_activity`, within [`SAMPLE_TIMEOUT`] all told.
    async fn activity(&self, shape: &mut Shape) -> Result<Activity, Missed> {
        let deadline = tokio::time::Instant::now() + SAMPLE_TIMEOUT;
        let client = match tokio::time::timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                debug!(error = %crate::redact::text(&e.to_string()), "activity sample: no connection");
                return Err(Missed::Failed);
            }
            Err(_) => return Err(Missed::TimedOut),
        };
        if shape.current > 0 && shape.since.elapsed() > RETRY_FULLER {
            shape.current = 0;
        }
        loop {
            let asked = tokio::time::timeout_at(deadline, client.query(shape.queries[shape.current].as_str(), &[]));
            match asked.await {
                Ok(Ok(rows)) => return Ok(read(&rows)),
                // A shape this server lacks (no pg_stat_statements, no
                // query_id before PostgreSQL 14): the next one.
                Ok(Err(e)) if lacks(&e) && shape.current + 1 < shape.queries.len() => {
                    debug!(error = %e, shape = shape.current, "activity sample: a simpler query");
                    (shape.current, shape.since) = (shape.current + 1, Instant::now());
                }
                Ok(Err(e)) => {
                    debug!(error = %e, "activity sample failed");
                    return Err(Missed::Failed);
                }
                Err(_) => {
                    // Stop it on the server and never reuse its connection:
                    // the next look must not queue behind this one.
                    let token = client.cancel_token();
                    tokio::spawn(async move { token.cancel_query(NoTls).await });
                    drop(deadpool_postgres::Object::take(client));
                    return Err(Missed::TimedOut);
                }
            }
        }
    }
}

/// Why a look found nothing.
#[derive(Debug, Clone, Copy)]
enum Missed {
    Failed,
    TimedOut,
}

/// The server lacks what a shape of the query reads (a table, view,
/// column or function, or `pg_stat_statements` not loaded).
fn lacks(e: &tokio_postgres::Error) -> bool {
    let lacking = [
        SqlState::UNDEFINED_TABLE,
        SqlState::UNDEFINED_COLUMN,
        SqlState::UNDEFINED_FUNCTION,
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        SqlState::INSUFFICIENT_PRIVILEGE,
    ];
    e.code().is_some_and(|c| lacking.contains(c))
}

/// The rows as backends, each statement normalised.
fn read(rows: &[tokio_postgres::Row]) -> Activity {
    let mut activity = Activity::default();
    // A value that cannot be read (text that is not UTF-8 in a SQL_ASCII
    // database) is left out, never a reason to stop sampling.
    let text = |row: &tokio_postgres::Row, i| row.try_get::<_, Option<String>>(i).ok().flatten();
    for row in rows {
        // Another role's statement without pg_read_all_stats.
        let query = text(row, 1).filter(|t| t != "<insufficient privilege>").map(|t| normalise(&t));
        activity.server_now_ms = row.try_get(7).unwrap_or_default();
        activity.backends.push(Backend {
            pid: row.try_get(0).unwrap_or_default(),
            query,
            query_id: row.try_get(2).ok().flatten(),
            state: text(row, 3).unwrap_or_default(),
            wait_event_type: text(row, 4),
            wait_event: text(row, 5),
            since_ms: row.try_get::<_, Option<f64>>(6).ok().flatten().unwrap_or(activity.server_now_ms),
            calls: row.try_get(8).ok().flatten(),
            mean_ms: row.try_get::<_, Option<f64>>(9).ok().flatten().map(|m| (m * 1000.0).round() / 1000.0),
        });
    }
    activity
}
