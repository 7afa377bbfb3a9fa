//! History: what `/performance` said, kept past restarts. Each minute the
//! instance turns what its routes (and its total, route `*`) did in that
//! minute into rollups (count, errors, slow, percentiles and the minute's
//! HdrHistogram, V2 + DEFLATE) and writes them to `perfproxy.route_minutes`
//! with its instance id; [`query`] merges them per step and across
//! instances. Rollups wait in a bounded queue while the database is away
//! (the oldest dropped and counted when it is full); requests never wait on
//! any of it. Without the schema (`perfproxy migrate` not run) history
//! turns itself off with one warning. Rows older than
//! `history.retention_days` are deleted in bounded batches. Slow requests
//! are written beside the rollups ([`slow_requests`]).
//!
//! Without a database the dashboard still gets a chart on page load: the
//! last 15 minutes of the total at the window's slot resolution (10 s), kept
//! in memory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;
use tracing::{debug, warn};

mod rollups;
mod slo_minutes;
mod slow_requests;

pub use rollups::Rollup;
use rollups::{insert, rollup, since};

pub use slow_requests::query as slow_requests_between;

use crate::observe::metrics::Metrics;
use crate::observe::metrics::Stats;
use crate::wire::routes::RouteTable;

/// The route label of an instance's total.
pub const TOTAL: &str = "*";
/// Rollups waiting for the database at most.
const MAX_QUEUE: usize = 100_000;
/// Rows per insert.
const BATCH: usize = 1_000;
/// Rows per retention delete, and deletes per minute at most.
const DELETE_BATCH: i64 = 5_000;
const DELETES_PER_TICK: usize = 10;
/// How long the in-memory series reaches back.
const MEMORY_SPAN: Duration = Duration::from_secs(15 * 60);
/// One database call at most this long.
pub(crate) const DB_TIMEOUT: Duration = Duration::from_secs(5);

/// One point of the in-memory series (the total, per window slot).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Point {
    /// The slot's start, seconds since the Unix epoch.
    #[serde(skip)]
    pub at: u64,
    pub count: u64,
    pub errors: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// What history reads from the layers above: the traffic's figures and the
/// routes' labels (the process's shared state implements it).
pub trait Traffic: Send + Sync + 'static {
    fn metrics(&self) -> &Metrics;
    fn routes(&self) -> &RouteTable;
}

#[derive(Debug)]
pub struct History {
    instance: String,
    retention_days: u64,
    pool: Option<Pool>,
    /// Off without a database, or once the schema was found missing.
    on: AtomicBool,
    queue: Mutex<VecDeque<Rollup>>,
    dropped: AtomicU64,
    /// The total per window slot, by slot start (seconds), the last 15 minutes.
    memory: Mutex<BTreeMap<u64, Point>>,
    slot_seconds: AtomicU64,
    /// Each series' all-time stats at the last rollup.
    before: Mutex<HashMap<String, Stats>>,
    /// Slow requests waiting for the database.
    slow_queue: Mutex<VecDeque<slow_requests::SlowRow>>,
    /// Off once `perfproxy.slow_requests` was found missing (until the
    /// next minute), and whether that was said.
    slow_table: AtomicBool,
    slow_warned: AtomicBool,
    /// Off once `perfproxy.slo_minutes` was found missing.
    slo_table: AtomicBool,
    /// The longest objective's period (days): older SLO minutes are deleted.
    slo_days: AtomicU64,
    /// This instance's SLO minutes were read back (writes wait for it).
    slo_restored: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("history locks are never poisoned: nothing panics under them")
}

/// From now to the start of the next wall-clock minute (at least 1 s).
fn to_next_minute() -> Duration {
    Duration::from_secs(60 - epoch_secs(SystemTime::now()) % 60)
}

pub(crate) fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn ms_at<C: hdrhistogram::Counter>(s: &Stats<C>, q: f64) -> f64 {
    s.quantile_micros(q) as f64 / 1000.0
}

impl History {
    pub fn new(instance: String, retention_days: u64, pool: Option<Pool>) -> Arc<History> {
        Arc::new(History {
            instance,
            retention_days,
            on: AtomicBool::new(pool.is_some()),
            pool,
            queue: Mutex::default(),
            dropped: AtomicU64::new(0),
            memory: Mutex::default(),
            slot_seconds: AtomicU64::new(10),
            before: Mutex::default(),
            slow_queue: Mutex::default(),
            slow_table: AtomicBool::new(true),
            slow_warned: AtomicBool::new(false),
            slo_table: AtomicBool::new(true),
            slo_days: AtomicU64::new(0),
            slo_restored: AtomicBool::new(false),
        })
    }

    /// Whether rollups go to the database.
    pub fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    pub(crate) fn pool(&self) -> Option<&Pool> {
        self.pool.as_ref().filter(|_| self.on())
    }

    /// Rollups dropped: the queue was full while the database was away.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The in-memory series from `from` (seconds since the epoch), and its resolution.
    pub fn memory_points(&self, from: u64, to: u64) -> (u64, Vec<Point>) {
        let points = lock(&self.memory).range(from..to).map(|(_, p)| *p).collect();
        (self.slot_seconds.load(Ordering::Relaxed), points)
    }

    /// Rolls up every minute, keeps the in-memory series (every 10 s, or
    /// half the window if shorter) and retries queued writes, until
    /// `shutdown` ([`History::finish`] writes the last minute).
    pub async fn run<T: Traffic>(self: Arc<Self>, traffic: Arc<T>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        self.check_schema().await;
        if self.on() {
            traffic.metrics().slow.keep_for_history();
            self.restore_slos(&*traffic).await;
        }
        self.expire().await;
        // Often enough that no window slot expires unseen.
        let every = (traffic.metrics().window() / 2).clamp(Duration::from_secs(1), Duration::from_secs(10));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The minute's deadline lives across the loop and moves only when the
        // minute is rolled up: a tick that fires at the boundary, or a write
        // that runs across it, must not push the rollup a minute late (and
        // under the next minute's label).
        let mut minute = epoch_secs(SystemTime::now()) / 60;
        let boundary = tokio::time::sleep(to_next_minute());
        tokio::pin!(boundary);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    self.keep_memory_series(traffic.metrics());
                    if !lock(&self.queue).is_empty() {
                        self.write().await;
                    }
                    self.write_slow_requests(&*traffic).await;
                }
                () = &mut boundary => {
                    boundary.as_mut().reset(tokio::time::Instant::now() + to_next_minute());
                    let now = epoch_secs(SystemTime::now()) / 60;
                    if now == minute {
                        continue; // the timer ran ahead of the wall clock
                    }
                    self.roll_up(&*traffic, UNIX_EPOCH + Duration::from_secs(minute * 60));
                    self.slow_table.store(true, Ordering::Relaxed);
                    minute = now;
                    self.write().await;
                    self.restore_slos(&*traffic).await;
                    self.write_slo_minutes(&*traffic).await;
                    self.expire().await;
                }
            }
        }
    }

    /// At exit, once the workers have stopped (their last samples merged):
    /// rolls up and writes the current minute, so a restart loses nothing.
    pub async fn finish(&self, traffic: &impl Traffic) {
        let minute = UNIX_EPOCH + Duration::from_secs(epoch_secs(SystemTime::now()) / 60 * 60);
        self.roll_up(traffic, minute);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.write()).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.write_slow_requests(traffic)).await;
        self.write_slo_minutes(traffic).await;
    }

    /// Turns history off, with one warning, when the schema is missing.
    async fn check_schema(&self) {
        let Some(pool) = self.pool() else { return };
        let Ok(Ok(client)) = tokio::time::timeout(DB_TIMEOUT, pool.get()).await else { return };
        let probe = client.query("SELECT instance, histogram FROM perfproxy.route_minutes LIMIT 0", &[]).await;
        if let Err(e) = probe {
            if no_schema(&WriteError::Db(e)) {
                self.turn_off();
            }
        }
    }

    fn turn_off(&self) {
        if self.on.swap(false, Ordering::Relaxed) {
            warn!("history: no perfproxy schema in the database (run `perfproxy migrate`); history is off");
        }
        lock(&self.queue).clear();
    }

    /// What history holds: rollups queued for the database, points kept in
    /// memory, series remembered between rollups.
    pub fn held(&self) -> (usize, usize, usize) {
        let queued = lock(&self.queue).len() + lock(&self.slow_queue).len();
        (queued, lock(&self.memory).len(), lock(&self.before).len())
    }

    /// Queues the rollups of what happened since the last ones.
    fn roll_up(&self, traffic: &impl Traffic, minute: SystemTime) {
        if self.pool.is_none() || !self.on() {
            return;
        }
        let mut before = lock(&self.before);
        let snap = traffic.metrics().snapshot(None);
        let names = traffic.routes().names();
        let mut fresh = Vec::new();
        let series = snap
            .routes
            .iter()
            .map(|(id, s)| (names.get(id.0 as usize).map_or_else(String::new, |n| n.to_string()), &s.all))
            .chain(std::iter::once((TOTAL.to_string(), &snap.total.all)));
        for (label, all) in series {
            let d = since(all, before.get(&label));
            if d.count > 0 {
                fresh.push(rollup(minute, &label, &d));
            }
            before.insert(label, all.clone());
        }
        debug!(minute = epoch_secs(minute), rollups = fresh.len(), "history: rolled up");
        let mut queue = lock(&self.queue);
        for r in fresh {
            if queue.len() >= MAX_QUEUE {
                queue.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            queue.push_back(r);
        }
    }

    /// Writes the queued rollups; they stay queued if the database is away.
    async fn write(&self) {
        let Some(pool) = self.pool() else { return };
        loop {
            let batch: Vec<Rollup> = lock(&self.queue).iter().take(BATCH).cloned().collect();
            if batch.is_empty() {
                return;
            }
            match tokio::time::timeout(DB_TIMEOUT, insert(pool, &self.instance, &batch)).await {
                Ok(Ok(())) => {
                    let mut queue = lock(&self.queue);
                    let n = batch.len().min(queue.len());
                    queue.drain(..n);
                }
                Ok(Err(e)) if no_schema(&e) => {
                    self.turn_off();
                    return;
                }
                Ok(Err(e)) => {
                    debug!(error = %crate::redact::text(&e.to_string()), queued = lock(&self.queue).len(), "history: write failed; kept");
                    return;
                }
                Err(_) => {
                    debug!("history: write timed out; kept");
                    return;
                }
            }
        }
    }

    /// Deletes rows past the retention, a bounded batch at a time.
    async fn expire(&self) {
        let Some(pool) = self.pool() else { return };
        let Ok(client) = pool.get().await else { return };
        let cutoff = SystemTime::now() - Duration::from_secs(self.retention_days * 86_400);
        for _ in 0..DELETES_PER_TICK {
            if slow_requests::expire(&client, cutoff, DELETE_BATCH).await < DELETE_BATCH as u64 {
                break;
            }
        }
        self.expire_slo_minutes(&client, DELETE_BATCH).await;
        for _ in 0..DELETES_PER_TICK {
            let deleted = client
                .execute(
                    "DELETE FROM perfproxy.route_minutes WHERE ctid IN \
                     (SELECT ctid FROM perfproxy.route_minutes WHERE minute < $1 LIMIT $2)",
                    &[&cutoff, &DELETE_BATCH],
                )
                .await;
            match deleted {
                Ok(n) if n as i64 == DELETE_BATCH => continue,
                Ok(_) => return,
                Err(e) => {
                    debug!(error = %e, "history: retention delete failed");
                    return;
                }
            }
        }
    }

    /// Adds the window's completed slots to the in-memory series.
    fn keep_memory_series(&self, metrics: &Metrics) {
        let snap = metrics.snapshot_total();
        let secs = snap.slot.as_secs().max(1);
        self.slot_seconds.store(secs, Ordering::Relaxed);
        let now = epoch_secs(SystemTime::now());
        let mut memory = lock(&self.memory);
        for (epoch, stats) in snap.total.slots(snap.now_epoch) {
            let ago = (snap.now_epoch - epoch) * secs;
            if ago == 0 {
                continue; // still filling
            }
            let at = (now - ago) / secs * secs;
            let point = stats.map_or(Point { at, count: 0, errors: 0, p50: 0.0, p95: 0.0, p99: 0.0 }, |s| Point {
                at,
                count: s.count,
                errors: s.errors,
                p50: ms_at(s, 0.5),
                p95: ms_at(s, 0.95),
                p99: ms_at(s, 0.99),
            });
            memory.insert(at, point);
        }
        let keep_from = now.saturating_sub(MEMORY_SPAN.as_secs());
        *memory = memory.split_off(&keep_from);
    }
}

/// The schema (or its columns) is missing: `perfproxy migrate` was not run.
fn no_schema(e: &WriteError) -> bool {
    let WriteError::Db(e) = e else { return false };
    e.code().is_some_and(|c| {
        [SqlState::UNDEFINED_TABLE, SqlState::UNDEFINED_COLUMN, SqlState::INVALID_SCHEMA_NAME].contains(c)
    })
}

/// Why rollups could not be written.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("{0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("no connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}
