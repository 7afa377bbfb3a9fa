//! Why a request was slow: the evidence kept for requests slower than
//! `SLOW_REQUEST_THRESHOLD`. While one is in flight, the database watch
//! samples what the watched database is doing ([`SlowRequests::sampled`]:
//! its backends, their statements already normalised, no literal kept);
//! when a slow request ends, its recording attaches the backends seen by
//! the samples taken while it was in flight ([`SlowRequests::record`]),
//! each once, longest running first. `/performance` lists the last
//! `slow.keep`; with history on they are also written to the database.
//!
//! Bounded: [`MAX_SAMPLES`] samples (the oldest dropped, and every sample
//! older than the oldest request in flight), each of at most the
//! sampler's row limit; [`MAX_BACKENDS`] backends per slow request;
//! `slow.keep` requests; [`MAX_PENDING`] waiting for history. A backend
//! seen by many samples is held once (shared between them).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::wire::routes::RouteId;

/// Samples kept at most (5 minutes at the default interval).
pub const MAX_SAMPLES: usize = 1_200;
/// Backends listed for one slow request at most.
pub const MAX_BACKENDS: usize = 20;
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

/// A backend as a slow request shows it: how long it had been running at
/// the last sample that saw it.
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
    pub request_id: String,
    pub client: String,
    pub database: Vec<Seen>,
}

/// What a recording knows of a slow request when it ends.
#[derive(Debug)]
pub struct Ended<'a> {
    pub route: RouteId,
    pub status: u16,
    pub started: Instant,
    pub duration: Duration,
    pub upstream: Option<Duration>,
    pub overhead: Duration,
    pub trace_id: Option<String>,
    pub request_id: &'a [u8],
    pub client: Option<IpAddr>,
}

#[derive(Debug)]
struct Sample {
    at: Instant,
    server_now_ms: f64,
    backends: Vec<Arc<Backend>>,
}

/// How the sampler's looks at the database went.
#[derive(Debug, Default)]
pub struct SampleCounts {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
}

/// The samples and the slow requests, shared by the workers (recording),
/// the sampler and the readers.
#[derive(Debug)]
pub struct SlowRequests {
    keep: AtomicUsize,
    samples: Mutex<VecDeque<Sample>>,
    records: Mutex<VecDeque<Arc<SlowRequest>>>,
    /// Kept for history only while history wants them.
    history: AtomicBool,
    pending: Mutex<Vec<Arc<SlowRequest>>>,
    pub counts: SampleCounts,
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
            samples: Mutex::default(),
            records: Mutex::default(),
            history: AtomicBool::new(false),
            pending: Mutex::default(),
            counts: SampleCounts::default(),
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

    /// A sample taken `at`; samples taken before `oldest_in_flight` began
    /// can no longer be attached to anything and are dropped.
    pub fn sampled(&self, at: Instant, activity: Activity, oldest_in_flight: Option<Instant>) {
        let mut samples = lock(&self.samples);
        // A backend still running the same statement is held once.
        let before: HashMap<(i32, u64), &Arc<Backend>> =
            samples.back().map_or_else(HashMap::new, |s| s.backends.iter().map(|b| (identity(b), b)).collect());
        let backends = activity
            .backends
            .into_iter()
            .map(|b| match before.get(&identity(&b)) {
                Some(kept) if ***kept == b => Arc::clone(kept),
                _ => Arc::new(b),
            })
            .collect();
        samples.push_back(Sample { at, server_now_ms: activity.server_now_ms, backends });
        let oldest = oldest_in_flight.unwrap_or(at);
        while samples.len() > MAX_SAMPLES || samples.front().is_some_and(|s| s.at < oldest) {
            samples.pop_front();
        }
    }

    /// Drops every sample (no request in flight needs them).
    pub fn forget_samples(&self) {
        lock(&self.samples).clear();
    }

    /// A slow request ended: keeps it with the backends the samples saw
    /// while it was in flight.
    pub fn record(&self, ended: Ended<'_>) {
        let keep = self.keep.load(Ordering::Relaxed);
        let history = self.history.load(Ordering::Relaxed);
        if keep == 0 && !history {
            return;
        }
        let end = ended.started + ended.duration;
        let mut seen: HashMap<(i32, u64), Seen> = HashMap::new();
        for sample in lock(&self.samples).iter().filter(|s| s.at >= ended.started && s.at <= end) {
            for b in &sample.backends {
                let running_ms = ((sample.server_now_ms - b.since_ms).max(0.0) * 1000.0).round() / 1000.0;
                let entry = seen.entry(identity(b)).or_insert_with(|| Seen { backend: b.clone(), running_ms });
                // The latest sample says where it is now (its wait event).
                (entry.backend, entry.running_ms) = (b.clone(), entry.running_ms.max(running_ms));
            }
        }
        let mut database: Vec<Seen> = seen.into_values().collect();
        database.sort_by(|a, b| b.running_ms.total_cmp(&a.running_ms).then(a.backend.pid.cmp(&b.backend.pid)));
        database.truncate(MAX_BACKENDS);
        let received = SystemTime::now().checked_sub(ended.started.elapsed()).unwrap_or_else(SystemTime::now);
        let record = Arc::new(SlowRequest {
            at: humantime::format_rfc3339_millis(received).to_string(),
            route: ended.route,
            status: ended.status,
            latency_ms: ms(ended.duration),
            upstream_ms: ended.upstream.map(ms),
            overhead_ms: ms(ended.overhead),
            trace_id: ended.trace_id,
            request_id: String::from_utf8_lossy(ended.request_id).into_owned(),
            client: ended.client.map_or_else(String::new, |ip| ip.to_string()),
            database,
        });
        if history {
            let mut pending = lock(&self.pending);
            if pending.len() < MAX_PENDING {
                pending.push(record.clone());
            }
        }
        if keep > 0 {
            let mut records = lock(&self.records);
            records.push_back(record);
            while records.len() > keep {
                records.pop_front();
            }
        }
    }

    /// The slow requests kept, newest first.
    pub fn latest(&self) -> Vec<Arc<SlowRequest>> {
        lock(&self.records).iter().rev().cloned().collect()
    }

    /// The slow requests not yet written to history.
    pub fn take_pending(&self) -> Vec<Arc<SlowRequest>> {
        std::mem::take(&mut *lock(&self.pending))
    }

    /// (samples, slow requests) held now, for `memory.held`.
    pub fn held(&self) -> (usize, usize) {
        (lock(&self.samples).len(), lock(&self.records).len())
    }
}

/// A backend's statement: its process and when the statement began.
fn identity(b: &Backend) -> (i32, u64) {
    (b.pid, b.since_ms.to_bits())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(pid: i32, since_ms: f64, wait: &str) -> Backend {
        Backend {
            pid,
            query: Some("SELECT pg_sleep($1)".into()),
            query_id: Some(7),
            state: "active".into(),
            wait_event_type: Some("Timeout".into()),
            wait_event: Some(wait.into()),
            calls: None,
            mean_ms: None,
            since_ms,
        }
    }

    fn ended(started: Instant, duration: Duration, id: &[u8]) -> Ended<'_> {
        Ended {
            route: RouteId(1),
            status: 200,
            started,
            duration,
            upstream: Some(duration),
            overhead: Duration::from_micros(150),
            trace_id: None,
            request_id: id,
            client: Some("10.0.0.7".parse().expect("an address")),
        }
    }

    #[test]
    fn a_slow_request_gets_the_backends_seen_while_it_ran_each_once_longest_first() {
        let slow = SlowRequests::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // Before the request: not its evidence.
        slow.sampled(at(0), Activity { server_now_ms: 1000.0, backends: vec![backend(1, 0.0, "PgSleep")] }, None);
        let two = vec![backend(1, 0.0, "PgSleep"), backend(2, 1200.0, "PgSleep")];
        slow.sampled(at(300), Activity { server_now_ms: 1300.0, backends: two }, Some(t0));
        let three = vec![backend(1, 0.0, "Other"), backend(3, 1500.0, "PgSleep")];
        slow.sampled(at(600), Activity { server_now_ms: 1600.0, backends: three }, Some(t0));
        let id = b"rid-1";
        slow.record(ended(at(100), Duration::from_millis(600), id));
        let kept = slow.latest();
        assert_eq!(kept.len(), 1);
        let db = &kept[0].database;
        let seen: Vec<(i32, f64, Option<&str>)> =
            db.iter().map(|s| (s.backend.pid, s.running_ms, s.backend.wait_event.as_deref())).collect();
        assert_eq!(seen, [(1, 1600.0, Some("Other")), (2, 100.0, Some("PgSleep")), (3, 100.0, Some("PgSleep"))]);
        assert_eq!((kept[0].request_id.as_str(), kept[0].client.as_str()), ("rid-1", "10.0.0.7"));
        assert_eq!(kept[0].latency_ms, 600.0);
    }

    #[test]
    fn keep_bounds_the_list_and_samples_before_the_oldest_request_go() {
        let slow = SlowRequests::default();
        slow.set_keep(3);
        let t0 = Instant::now();
        let id = [b'x'; 100];
        for i in 0..5 {
            slow.record(ended(t0, Duration::from_millis(i), &id));
        }
        let kept = slow.latest();
        assert_eq!(kept.iter().map(|r| r.latency_ms).collect::<Vec<_>>(), [4.0, 3.0, 2.0]);
        assert_eq!(kept[0].request_id.len(), 100, "a long id is kept whole");
        for i in 0..10 {
            let at = t0 + Duration::from_millis(i * 10);
            slow.sampled(at, Activity { server_now_ms: 0.0, backends: vec![backend(1, 0.0, "PgSleep")] }, Some(t0));
        }
        assert_eq!(slow.held().0, 10);
        let later = t0 + Duration::from_millis(200);
        slow.sampled(later, Activity::default(), Some(t0 + Duration::from_millis(45)));
        assert_eq!(slow.held().0, 6, "samples before the oldest request in flight are dropped");
        // Unchanged backends are shared between samples, not copied.
        let samples = lock(&slow.samples);
        assert!(Arc::ptr_eq(&samples[0].backends[0], &samples[1].backends[0]));
    }
}
