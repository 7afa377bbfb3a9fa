//! Why a request was slow: the evidence kept for requests slower than
//! `SLOW_REQUEST_THRESHOLD`. While one is in flight, the database watch
//! samples what the watched database is doing ([`SlowRequests::sampled`]:
//! its backends, their statements already normalised, no literal kept);
//! each statement seen is tracked from the first look that saw it to the
//! last. A slow request that ends is only queued by its worker
//! ([`SlowRequests::ended`]: a push under a lock no one holds for long);
//! off the request path ([`SlowRequests::attach`], every 250 ms and before
//! every read) it gets the statements seen while it was in flight, one per
//! backend (the longest running), longest running first. `/performance`
//! lists the last `slow.keep`; with history on they are also written to the
//! database.
//!
//! Bounded: [`MAX_STATEMENTS`] statements tracked (those last seen before
//! the oldest request still in flight or waiting are dropped);
//! [`MAX_BACKENDS`] backends per slow request; [`MAX_ENDED`] ended requests
//! waiting to be attached; `slow.keep` requests; [`MAX_PENDING`] waiting
//! for history.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::wire::routes::RouteId;

/// Statements tracked at most (20 a look for 20 minutes of distinct ones at 250 ms).
pub const MAX_STATEMENTS: usize = 4_096;
/// Backends listed for one slow request at most.
pub const MAX_BACKENDS: usize = 20;
/// Slow requests ended and not yet attached at most (past that, dropped and counted).
pub const MAX_ENDED: usize = 10_000;
/// Slow requests waiting to be written to history at most.
pub const MAX_PENDING: usize = 1_000;

/// A database backend as a sample saw it. Its statement is normalised
/// before it gets here: nothing a query holds is kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backend {
    pub pid: i32,
    /// The statement with every literal replaced by `$n`; `None` when the
    /// database role may not read other roles' statements.
    pub query: Option<String>,
    /// The server's query identifier (`compute_query_id`), when it has one.
    pub query_id: Option<i64>,
    pub state: String,
    pub wait_event_type: Option<String>,
    pub wait_event: Option<String>,
    /// Calls and mean time of this statement in `pg_stat_statements`, when it is there.
    pub calls: Option<i64>,
    pub mean_ms: Option<f64>,
    /// When its statement (or, idle in a transaction, its transaction)
    /// began, in the server's ms since the Unix epoch.
    #[serde(skip)]
    pub since_ms: f64,
}

/// What one look at the database found: its backends and the server's
/// clock (ms since the Unix epoch) when it looked.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    pub server_now_ms: f64,
    pub backends: Vec<Backend>,
}

/// A backend as a slow request shows it: how long its statement had been
/// running at the last look that saw it while the request was in flight.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    #[serde(flatten)]
    pub backend: Arc<Backend>,
    pub running_ms: f64,
}

/// One slow request and what the database was doing meanwhile.
#[derive(Debug, Clone, Serialize)]
pub struct SlowRequest {
    /// When it was received (RFC 3339).
    pub at: String,
    /// Its route (named when the document is built).
    #[serde(skip)]
    pub route: RouteId,
    pub status: u16,
    pub latency_ms: f64,
    /// `None`: it never went upstream.
    pub upstream_ms: Option<f64>,
    pub overhead_ms: f64,
    pub trace_id: Option<String>,
    /// Its trace was sampled (exported): a link to it leads somewhere.
    pub trace_sampled: bool,
    pub request_id: String,
    pub client: String,
    pub database: Vec<Seen>,
}

/// What a recording knows of a slow request when it ends.
#[derive(Debug)]
pub struct Ended {
    pub route: RouteId,
    pub status: u16,
    pub started: Instant,
    pub duration: Duration,
    pub upstream: Option<Duration>,
    pub overhead: Duration,
    /// Its trace id, and whether the trace was sampled.
    pub trace: Option<(String, bool)>,
    pub request_id: String,
    pub client: Option<IpAddr>,
}

/// A statement from the first look that saw it to the last.
#[derive(Debug)]
struct Track {
    first: Instant,
    last: Instant,
    /// As the last look saw it (its state, its wait event).
    backend: Arc<Backend>,
    /// How long it had been running at the last look.
    running_ms: f64,
}

/// How the sampler's looks at the database went.
#[derive(Debug, Default)]
pub struct SampleCounts {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
}

/// The statements tracked and the slow requests, shared by the workers
/// (queueing), the sampler and the readers.
#[derive(Debug)]
pub struct SlowRequests {
    keep: AtomicUsize,
    /// By backend and statement start: `(pid, since_ms)`.
    tracks: Mutex<HashMap<(i32, u64), Track>>,
    ended: Mutex<Vec<Ended>>,
    records: Mutex<VecDeque<Arc<SlowRequest>>>,
    /// Kept for history only while history wants them.
    history: AtomicBool,
    pending: Mutex<Vec<Arc<SlowRequest>>>,
    pub counts: SampleCounts,
    /// Slow requests dropped: [`MAX_ENDED`] were waiting.
    pub dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("slow-request locks are never poisoned: no code under them panics")
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

impl Default for SlowRequests {
    fn default() -> Self {
        SlowRequests {
            keep: AtomicUsize::new(50),
            tracks: Mutex::default(),
            ended: Mutex::default(),
            records: Mutex::default(),
            history: AtomicBool::new(false),
            pending: Mutex::default(),
            counts: SampleCounts::default(),
            dropped: AtomicU64::new(0),
        }
    }
}

impl SlowRequests {
    /// Lists the last `keep` slow requests from now on.
    pub fn set_keep(&self, keep: usize) {
        self.keep.store(keep, Ordering::Relaxed);
        let mut records = lock(&self.records);
        while records.len() > keep {
            records.pop_front();
        }
    }

    /// Keeps slow requests for history (until [`SlowRequests::take_pending`] takes them).
    pub fn keep_for_history(&self) {
        self.history.store(true, Ordering::Relaxed);
    }

    /// A look taken `at`. Statements last seen before `oldest_in_flight`
    /// began (and before every ended request still waiting) can no longer
    /// be attached to anything and are dropped.
    pub fn sampled(&self, at: Instant, activity: Activity, oldest_in_flight: Option<Instant>) {
        let waiting = lock(&self.ended).iter().map(|e| e.started).min();
        let mut tracks = lock(&self.tracks);
        for b in activity.backends {
            let running_ms = ((activity.server_now_ms - b.since_ms).max(0.0) * 1000.0).round() / 1000.0;
            let track = tracks.entry(identity(&b)).or_insert_with(|| Track {
                first: at,
                last: at,
                backend: Arc::new(b.clone()),
                running_ms,
            });
            if *track.backend != b {
                track.backend = Arc::new(b);
            }
            (track.last, track.running_ms) = (at, running_ms);
        }
        let bound = [oldest_in_flight, waiting].into_iter().flatten().min().unwrap_or(at);
        tracks.retain(|_, t| t.last >= bound);
        if tracks.len() > MAX_STATEMENTS {
            let mut lasts: Vec<Instant> = tracks.values().map(|t| t.last).collect();
            lasts.sort_unstable();
            let cut = lasts[tracks.len() - MAX_STATEMENTS];
            tracks.retain(|_, t| t.last >= cut);
        }
    }

    /// A slow request ended: queued for [`SlowRequests::attach`] (its
    /// worker does nothing more).
    pub fn ended(&self, ended: Ended) {
        if self.keep.load(Ordering::Relaxed) == 0 && !self.history.load(Ordering::Relaxed) {
            return;
        }
        let mut waiting = lock(&self.ended);
        if waiting.len() < MAX_ENDED {
            waiting.push(ended);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Gives each ended slow request the statements seen while it was in
    /// flight, and keeps it (for `/performance`, and for history when on).
    pub fn attach(&self) {
        let ended = std::mem::take(&mut *lock(&self.ended));
        if ended.is_empty() {
            return;
        }
        let records: Vec<Arc<SlowRequest>> = {
            let tracks = lock(&self.tracks);
            ended.into_iter().map(|e| Arc::new(evidence(&tracks, e))).collect()
        };
        if self.history.load(Ordering::Relaxed) {
            let mut pending = lock(&self.pending);
            let room = MAX_PENDING.saturating_sub(pending.len());
            pending.extend(records.iter().take(room).cloned());
        }
        let keep = self.keep.load(Ordering::Relaxed);
        let mut kept = lock(&self.records);
        kept.extend(records);
        while kept.len() > keep {
            kept.pop_front();
        }
    }

    /// Drops every tracked statement once every slow request has its evidence.
    pub fn forget_samples(&self) {
        self.attach();
        if lock(&self.ended).is_empty() {
            lock(&self.tracks).clear();
        }
    }

    /// The slow requests kept, newest first.
    pub fn latest(&self) -> Vec<Arc<SlowRequest>> {
        self.attach();
        lock(&self.records).iter().rev().cloned().collect()
    }

    /// The slow requests not yet written to history.
    pub fn take_pending(&self) -> Vec<Arc<SlowRequest>> {
        self.attach();
        std::mem::take(&mut *lock(&self.pending))
    }

    /// (statements tracked, slow requests listed) now, for `memory.held`.
    pub fn held(&self) -> (usize, usize) {
        self.attach();
        (lock(&self.tracks).len(), lock(&self.records).len())
    }
}

/// A backend's statement: its process and when the statement began.
fn identity(b: &Backend) -> (i32, u64) {
    (b.pid, b.since_ms.to_bits())
}

/// `e` with the statements tracked while it was in flight: per backend the
/// one running longest by then, longest running first.
fn evidence(tracks: &HashMap<(i32, u64), Track>, e: Ended) -> SlowRequest {
    let end = e.started + e.duration;
    let mut by_backend: HashMap<i32, Seen> = HashMap::new();
    for t in tracks.values().filter(|t| t.first <= end && t.last >= e.started) {
        // Seen last after the request ended: as long as it had run by then.
        let after = t.last.saturating_duration_since(end).as_secs_f64() * 1000.0;
        let running_ms = ((t.running_ms - after).max(0.0) * 1000.0).round() / 1000.0;
        let seen = Seen { backend: t.backend.clone(), running_ms };
        match by_backend.get(&t.backend.pid) {
            Some(kept) if kept.running_ms >= running_ms => {}
            _ => _ = by_backend.insert(t.backend.pid, seen),
        }
    }
    let mut database: Vec<Seen> = by_backend.into_values().collect();
    database.sort_by(|a, b| b.running_ms.total_cmp(&a.running_ms).then(a.backend.pid.cmp(&b.backend.pid)));
    database.truncate(MAX_BACKENDS);
    let received = SystemTime::now().checked_sub(e.started.elapsed()).unwrap_or_else(SystemTime::now);
    let (trace_id, trace_sampled) = e.trace.map_or((None, false), |(id, sampled)| (Some(id), sampled));
    SlowRequest {
        at: humantime::format_rfc3339_millis(received).to_string(),
        route: e.route,
        status: e.status,
        latency_ms: ms(e.duration),
        upstream_ms: e.upstream.map(ms),
        overhead_ms: ms(e.overhead),
        trace_id,
        trace_sampled,
        request_id: e.request_id,
        client: e.client.map_or_else(String::new, |ip| ip.to_string()),
        database,
    }
}

#[cfg(test)]
mod tests;
