//! The backend's PostgreSQL, watched when `DATABASE_URL` is set: a
//! small pool (deadpool, `DATABASE_POOL_SIZE`, connect and statement
//! timeouts), slow queries from `pg_stat_statements`, index advice, and
//! what it is doing while a request is slow (`activity`). A background
//! task polls; `/performance` reads the latest [`DatabaseReport`] through
//! arc-swap. Proxied traffic never waits on any of it.

mod activity;
mod advice;
pub mod migrate;
mod normalise;
mod statements;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use deadpool_postgres::{ManagerConfig, Pool, PoolConfig, RecyclingMethod, Runtime, Timeouts};
use serde::Serialize;
use tokio_postgres::NoTls;
use tracing::debug;

pub use statements::SlowQuery;

use crate::config::Config;

/// The one-line fix when `pg_stat_statements` cannot be read.
pub const PGSS_FIX: &str = "add pg_stat_statements to shared_preload_libraries in postgresql.conf, restart \
PostgreSQL, then run CREATE EXTENSION pg_stat_statements (perfproxy migrate does)";

/// What the latest poll found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DatabaseReport {
    /// `pg_stat_statements`, `unavailable`, or `pending` before the first poll.
    pub slow_queries_source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_queries_fix: Option<&'static str>,
    pub slow_queries: Vec<SlowQuery>,
    pub advice: Vec<String>,
}

/// The watched database.
pub struct Database {
    pool: Pool,
    latest: ArcSwap<DatabaseReport>,
    interval: Duration,
    window: Duration,
    /// `SLOW_QUERY_THRESHOLD` in ms; a reload changes it.
    threshold_ms: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("pool", &self.pool.status()).finish()
    }
}

impl Database {
    /// `None` without `DATABASE_URL`. Connecting is lazy: a database that is
    /// down at start is reported, not fatal.
    pub fn new(config: &Config) -> Option<Arc<Database>> {
        let s = &config.settings;
        let url = s.database_url.as_ref()?;
        let mut cfg = deadpool_postgres::Config::new();
        cfg.url = Some(url.clone());
        cfg.connect_timeout = Some(Duration::from_millis(s.health.timeout_ms));
        cfg.options = Some(format!("-c statement_timeout={}", s.database.statement_timeout_ms));
        cfg.application_name = Some("perfproxy".into());
        cfg.manager = Some(ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let timeouts = Timeouts {
            wait: Some(Duration::from_millis(s.health.timeout_ms)),
            create: Some(Duration::from_millis(s.health.timeout_ms)),
            recycle: Some(Duration::from_millis(s.health.timeout_ms)),
        };
        cfg.pool = Some(PoolConfig { max_size: s.database_pool_size as usize, timeouts, ..PoolConfig::default() });
        let pool = cfg.create_pool(Some(Runtime::Tokio1), NoTls).ok()?;
        Some(Arc::new(Database {
            pool,
            latest: ArcSwap::from_pointee(DatabaseReport { slow_queries_source: "pending", ..Default::default() }),
            interval: Duration::from_millis(s.database.poll_interval_ms),
            window: Duration::from_millis(s.alerts.window_ms),
            threshold_ms: s.alerts.slow_query_ms.into(),
        }))
    }

    /// Changes what counts as a slow query from the next poll on.
    pub fn set_threshold(&self, threshold: Duration) {
        self.threshold_ms.store(threshold.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The latest poll's findings.
    pub fn report(&self) -> Arc<DatabaseReport> {
        self.latest.load_full()
    }

    /// (maximum size, idle connections).
    /// The pool, shared with the history writer.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn pool_status(&self) -> (usize, usize) {
        let s = self.pool.status();
        (s.max_size, s.available)
    }

    /// Polls every `database.poll_interval_ms` until `shutdown` resolves.
    pub async fn watch(self: Arc<Self>, limit: usize, shutdown: impl std::future::Future<Output = ()>) {
        let mut watch = statements::Watch::new(self.window, limit);
        tokio::pin!(shutdown);
        loop {
            if let Some(report) = self.poll(&mut watch).await {
                self.latest.store(Arc::new(report));
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One poll; `None` when the database cannot be reached (health reports that).
    async fn poll(&self, watch: &mut statements::Watch) -> Option<DatabaseReport> {
        let client = match self.pool.get().await {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %crate::redact::text(&e.to_string()), "database watch: no connection");
                return None;
            }
        };
        let mut report = DatabaseReport::default();
        match statements::snapshot(&client).await {
            Ok(snap) => {
                report.slow_queries_source = "pg_stat_statements";
                let threshold = Duration::from_millis(self.threshold_ms.load(std::sync::atomic::Ordering::Relaxed));
                report.slow_queries = watch.observe(Instant::now(), snap, threshold);
            }
            Err(e) => {
                debug!(error = %e, "pg_stat_statements unavailable");
                report.slow_queries_source = "unavailable";
                report.slow_queries_fix = Some(PGSS_FIX);
            }
        }
        match advice::collect(&client).await {
            Ok(advice) => report.advice = advice,
            Err(e) => debug!(error = %e, "index advice query failed"),
        }
        Some(report)
    }
}
