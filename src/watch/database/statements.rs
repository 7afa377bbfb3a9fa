//! Slow queries from `pg_stat_statements` (PostgreSQL 13+ column names:
//! `total_exec_time`, `max_exec_time`). Each poll takes a snapshot; the
//! figures are the difference between the newest snapshot and the oldest one
//! still inside the window, so a query is judged by what it did lately, not
//! since the statistics were last reset.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;
use tracing::warn;

/// One statement's cumulative counters at a poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    pub query: String,
    pub calls: i64,
    pub total_ms: f64,
    pub max_ms: f64,
}

/// A query slow over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowQuery {
    pub query: String,
    pub calls: i64,
    pub mean_ms: f64,
    pub max_ms: f64,
    pub total_ms: f64,
    /// Its part of all statement time in the window, 0..1.
    pub share: f64,
}

const SNAPSHOT: &str = "
SELECT queryid, query, calls, total_exec_time, max_exec_time
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND queryid IS NOT NULL AND query NOT LIKE '%pg_stat_statements%'";

/// Reads the current counters, keyed by `queryid`.
pub async fn snapshot(client: &Client) -> Result<HashMap<i64, Counters>, tokio_postgres::Error> {
    let rows = client.query(SNAPSHOT, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), Counters { query: r.get(1), calls: r.get(2), total_ms: r.get(3), max_ms: r.get(4) }))
        .collect())
}

/// The snapshots of the window and what has been logged already.
#[derive(Debug)]
pub struct Watch {
    window: Duration,
    limit: usize,
    snapshots: VecDeque<(Instant, HashMap<i64, Counters>)>,
    logged: HashSet<i64>,
}

impl Watch {
    pub fn new(window: Duration, limit: usize) -> Watch {
        Watch { window, limit, snapshots: VecDeque::new(), logged: HashSet::new() }
    }

    /// Adds a snapshot taken `at` and returns the slow queries of the window,
    /// slowest total first; logs each newly slow query once.
    pub fn observe(&mut self, at: Instant, snap: HashMap<i64, Counters>, threshold: Duration) -> Vec<SlowQuery> {
        let threshold_ms = threshold.as_secs_f64() * 1000.0;
        self.snapshots.push_back((at, snap));
        // Keep one snapshot at or before the window's start as the baseline.
        while self.snapshots.len() > 2 && at.duration_since(self.snapshots[1].0) >= self.window {
            self.snapshots.pop_front();
        }
        let (Some((_, base)), Some((_, now))) = (self.snapshots.front(), self.snapshots.back()) else {
            return Vec::new();
        };
        if self.snapshots.len() < 2 {
            return Vec::new();
        }
        let mut deltas: Vec<(i64, SlowQuery)> = Vec::new();
        for (id, c) in now {
            let (calls0, total0) = base.get(id).map_or((0, 0.0), |b| (b.calls, b.total_ms));
            let (calls, total) = (c.calls - calls0, c.total_ms - total0);
            if calls > 0 && total >= 0.0 {
                let q = SlowQuery {
                    query: c.query.clone(),
                    calls,
                    mean_ms: total / calls as f64,
                    max_ms: c.max_ms,
                    total_ms: total,
                    share: 0.0,
                };
                deltas.push((*id, q));
            }
        }
        let all_ms: f64 = deltas.iter().map(|(_, q)| q.total_ms).sum();
        let mut slow: Vec<(i64, SlowQuery)> = deltas.into_iter().filter(|(_, q)| q.mean_ms > threshold_ms).collect();
        slow.sort_by(|a, b| b.1.total_ms.total_cmp(&a.1.total_ms));
        slow.truncate(self.limit);
        for (id, q) in &mut slow {
            q.share = if all_ms > 0.0 { q.total_ms / all_ms } else { 0.0 };
            q.mean_ms = (q.mean_ms * 1000.0).round() / 1000.0;
            q.total_ms = (q.total_ms * 1000.0).round() / 1000.0;
            q.max_ms = (q.max_ms * 1000.0).round() / 1000.0;
            if self.logged.insert(*id) {
                warn!(query = %q.query, calls = q.calls, mean_ms = q.mean_ms, max_ms = q.max_ms, "Slow database query");
            }
        }
        slow.into_iter().map(|(_, q)| q).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(entries: &[(i64, &str, i64, f64)]) -> HashMap<i64, Counters> {
        entries
            .iter()
            .map(|(id, q, calls, total)| {
                (*id, Counters { query: q.to_string(), calls: *calls, total_ms: *total, max_ms: 0.0 })
            })
            .collect()
    }

    #[test]
    fn slow_queries_are_judged_over_the_window() {
        let mut w = Watch::new(Duration::from_secs(60), 10);
        let t = Duration::from_millis(100);
        let t0 = Instant::now();
        // Historically slow query 1: before the window it does not count.
        assert!(w.observe(t0, snap(&[(1, "old slow", 10, 5000.0), (2, "fast", 100, 10.0)]), t).is_empty());
        let s = w.observe(
            t0 + Duration::from_secs(10),
            snap(&[(1, "old slow", 10, 5000.0), (2, "fast", 200, 20.0), (3, "new", 3, 900.0)]),
            t,
        );
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].query.as_str(), s[0].calls, s[0].mean_ms), ("new", 3, 300.0));
        assert!((s[0].share - 900.0 / 910.0).abs() < 1e-9);
        // 70 s later the first snapshot has left the window; the baseline moves.
        let s = w.observe(
            t0 + Duration::from_secs(75),
            snap(&[(1, "old slow", 10, 5000.0), (2, "fast", 300, 30.0), (3, "new", 3, 900.0)]),
            t,
        );
        assert!(s.is_empty(), "{s:?}");
    }
}
