//! Service level objectives in history: each minute (and at exit) the
//! objectives' counts of the last two minutes are written to
//! `perfproxy.slo_minutes` under the instance's id (a minute written
//! again replaces itself: it holds the minute's whole count), and at start
//! the instance's minutes of the last period are read back and added, so
//! a restart does not reset an error budget. Until that read succeeds
//! (retried each minute) nothing is written: a minute written before it
//! would replace the previous process's with this one's alone. The
//! instance id must be the same across restarts (`cluster.instance`; the
//! default holds the pid).

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{epoch_secs, History, Traffic, WriteError, DB_TIMEOUT};

impl History {
    /// Adds this instance's minutes of the last period from the database
    /// (once: a later call after a success does nothing).
    pub(super) async fn restore_slos(&self, traffic: &impl Traffic) {
        if self.slo_restored.load(Ordering::Relaxed) {
            return;
        }
        let Some(slos) = traffic.metrics().slos() else { return };
        let Some(pool) = self.pool() else { return };
        let days = slos.objectives().iter().map(|o| o.period_days).max().unwrap_or(28);
        self.slo_days.store(days, Ordering::Relaxed);
        let since = SystemTime::now() - Duration::from_secs(days * 86_400);
        let read = async {
            let client = pool.get().await.map_err(WriteError::from)?;
            let rows = client
                .query(
                    "SELECT slo, minute, good, bad FROM perfproxy.slo_minutes \
                     WHERE instance = $1 AND minute >= $2 ORDER BY minute",
                    &[&self.instance, &since],
                )
                .await?;
            Ok::<_, WriteError>(rows)
        };
        match tokio::time::timeout(DB_TIMEOUT, read).await {
            Ok(Ok(rows)) => {
                for row in &rows {
                    let (name, minute, good, bad): (String, SystemTime, i64, i64) =
                        (row.get(0), row.get(1), row.get(2), row.get(3));
                    slos.restore(&name, epoch_secs(minute) / 60, good.max(0) as u64, bad.max(0) as u64);
                }
                tracing::debug!(minutes = rows.len(), "history: SLO counts read back");
                self.slo_restored.store(true, Ordering::Relaxed);
            }
            Ok(Err(e)) if super::no_schema(&e) => self.slo_table_missing(),
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::redact::text(&e.to_string()), "history: SLO counts not read back")
            }
            Err(_) => tracing::warn!("history: SLO counts not read back in time"),
        }
    }

    /// Writes the objectives' last two minutes (the one that just ended and
    /// the one under way).
    pub(super) async fn write_slo_minutes(&self, traffic: &impl Traffic) {
        let Some(slos) = traffic.metrics().slos() else { return };
        let Some(pool) = self.pool() else { return };
        if !self.slo_table.load(Ordering::Relaxed) || !self.slo_restored.load(Ordering::Relaxed) {
            return;
        }
        let from = traffic.metrics().now_unix() / 60 - 1;
        let rows = slos.minutes_since(from);
        if rows.is_empty() {
            return;
        }
        let write = async {
            let client = pool.get().await?;
            let minutes: Vec<SystemTime> = rows.iter().map(|r| UNIX_EPOCH + Duration::from_secs(r.1 * 60)).collect();
            let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
            let good: Vec<i64> = rows.iter().map(|r| r.2 as i64).collect();
            let bad: Vec<i64> = rows.iter().map(|r| r.3 as i64).collect();
            client
                .execute(
                    "INSERT INTO perfproxy.slo_minutes (minute, slo, instance, good, bad) \
                     SELECT minute, slo, $3, good, bad FROM UNNEST($1::timestamptz[], $2::text[], $4::int8[], \
                     $5::int8[]) AS t(minute, slo, good, bad) \
                     ON CONFLICT (slo, instance, minute) DO UPDATE SET good = EXCLUDED.good, bad = EXCLUDED.bad",
                    &[&minutes, &names, &self.instance, &good, &bad],
                )
                .await?;
            Ok::<_, WriteError>(())
        };
        match tokio::time::timeout(DB_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if super::no_schema(&e) => self.slo_table_missing(),
            Ok(Err(e)) => {
                tracing::debug!(error = %crate::redact::text(&e.to_string()), "history: SLO minutes not written")
            }
            Err(_) => tracing::debug!("history: SLO minutes not written in time"),
        }
    }

    /// Deletes minutes older than the longest period, `limit` at a time.
    pub(super) async fn expire_slo_minutes(&self, client: &tokio_postgres::Client, limit: i64) {
        let days = self.slo_days.load(Ordering::Relaxed);
        if days == 0 || !self.slo_table.load(Ordering::Relaxed) {
            return;
        }
        let cutoff = SystemTime::now() - Duration::from_secs(days * 86_400);
        for _ in 0..10 {
            let deleted = client
                .execute(
                    "DELETE FROM perfproxy.slo_minutes WHERE ctid IN \
                     (SELECT ctid FROM perfproxy.slo_minutes WHERE instance = $3 AND minute < $1 LIMIT $2)",
                    &[&cutoff, &limit, &self.instance],
                )
                .await;
            if !deleted.is_ok_and(|n| n as i64 == limit) {
                return;
            }
        }
    }

    fn slo_table_missing(&self) {
        if !self.slo_table.swap(false, Ordering::Relaxed) {
            return;
        }
        tracing::warn!("history: no perfproxy.slo_minutes table (run `perfproxy migrate`); SLO counts restart at zero");
    }
}
