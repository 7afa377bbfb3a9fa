//! Per-route request metrics. The request path only appends a
//! small [`Sample`] to its worker's local buffer (no lock, no atomic);
//! batches move to the worker's shard (a mutex no other worker takes), so
//! recording never serialises workers. A
//! background task, and every reader, drains the buffers into one
//! [`Aggregate`]: per route and in total, counters plus HdrHistograms for all
//! time and for a rolling window (a ring of sub-window slots, merged on read).
//!
//! Precision: totals use 3 significant digits (0.1 %); per-route histograms
//! use 2 (1 %), so that 1000 routes stay inside the memory budget. All
//! histograms span 1 µs to 1 h, grow only as far as the values seen, and the
//! window's slots exist only while they hold samples.

mod counts;
pub mod hist;
mod in_flight;
mod recorder;
mod recording;
pub mod semconv;
mod series;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use hist::Hist;
use recording::micros;
pub use recording::Recording;
pub use series::{Grpc, Part, Series, Stats};

use crate::wire::routes::RouteId;

/// Drain a worker's buffer from the request path once it holds this many.
const FLUSH_AT: usize = 16_384;

/// One finished request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub route: RouteId,
    pub micros: u32,
    pub status: u16,
    /// Seconds since the metrics started, when the response completed.
    pub at_secs: u32,
    /// Request sent upstream → response head read; `None`: not upstream (a hit).
    pub upstream_micros: Option<u32>,
    /// perfproxy's own time (see [`Recording::head_ready`]).
    pub overhead_micros: u32,
    /// Refused by a rate limit (answered 429, never forwarded).
    pub limited: bool,
    /// A gRPC call's outcome.
    pub grpc: Option<Called>,
}

/// How a gRPC call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Called {
    /// Its `grpc-status` (0–16).
    pub code: u8,
    /// The code is one of `grpc.error_codes`.
    pub error: bool,
    /// Messages it carried, both ways.
    pub messages: u32,
}

/// Samples not yet merged, and the exemplars (sampled traces) among them.
#[derive(Debug, Default)]
pub struct Batch {
    samples: Vec<Sample>,
    exemplars: Vec<semconv::Exemplar>,
}

/// One worker's buffer of samples not yet merged, its in-flight count and
/// when its oldest request in flight began (µs since the metrics started;
/// `u64::MAX`: none).
#[derive(Debug)]
pub struct Shard {
    samples: Mutex<Batch>,
    in_flight: AtomicI64,
    oldest: AtomicU64,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { samples: Mutex::default(), in_flight: AtomicI64::new(0), oldest: AtomicU64::new(u64::MAX) }
    }
}

/// Everything merged so far.
#[derive(Debug)]
pub struct Aggregate {
    pub total: Series,
    /// Shared with the snapshots that copied them: a merge copies a route
    /// only while a reader still holds it (`Arc::make_mut`), so a read costs
    /// a pointer per route, not the route's histograms.
    pub routes: Vec<Arc<Series>>,
    /// `http_server_request_duration_seconds`.
    pub durations: semconv::Durations,
}

/// Process-wide metrics: the shards, the aggregate and the settings.
#[derive(Debug)]
pub struct Metrics {
    enabled: bool,
    slow_micros: AtomicU64,
    slot_secs: u32,
    slots: usize,
    started: Instant,
    shards: Mutex<Vec<Arc<Shard>>>,
    aggregate: Mutex<Aggregate>,
    /// Slow requests and what the database was doing meanwhile.
    pub slow: crate::observe::slow::SlowRequests,
    /// `[[slo]]`, counted as samples merge, with each route id's label.
    slos: std::sync::OnceLock<(crate::observe::slo::Slos, RouteLabels)>,
    /// The Unix second recording began at.
    started_unix: u64,
}

/// A route id's label (the route table, from the layer above).
pub struct RouteLabels(pub Box<dyn Fn(RouteId) -> Arc<str> + Send + Sync>);

impl std::fmt::Debug for RouteLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteLabels")
    }
}

/// A worker's handle for recording: samples collect in a local buffer (no
/// atomics, no lock) and move to the worker's shard every 256 samples or
/// when [`Recorder::publish`] runs (every 50 ms), so readers see figures at
/// most that old.
#[derive(Debug)]
pub struct Recorder {
    shard: Arc<Shard>,
    /// This worker's top-client counts (its own: no lock per request).
    clients: std::cell::RefCell<crate::admit::clients::top::Tally>,
    metrics: Arc<Metrics>,
    local: std::cell::RefCell<Batch>,
    /// Each request in flight: when it began, its id and client.
    requests: std::cell::RefCell<in_flight::InFlight>,
}

/// A point-in-time copy for readers.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub total: Series,
    pub routes: Vec<(RouteId, Arc<Series>)>,
    pub in_flight: i64,
    pub durations: semconv::Durations,
    /// The current window slot, for telling recent from expired slots.
    pub now_epoch: u64,
    pub window: Duration,
    /// How long a slot lasts.
    pub slot: Duration,
    /// Since recording began (slot epochs count from there).
    pub elapsed: Duration,
}

impl Snapshot {
    /// How much time the recent window covers now: the full window, less
    /// what is still to come of the current slot, or less if recording
    /// began within it.
    pub fn covered(&self) -> Duration {
        let slot = self.slot.as_secs_f64().max(1.0);
        let elapsed = self.elapsed.as_secs_f64();
        let slots = (self.window.as_secs_f64() / slot).round();
        let covered = (slots - 1.0) * slot + elapsed % slot;
        Duration::from_secs_f64(covered.min(elapsed).max(0.001))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("metrics locks are never poisoned: no code under them panics")
}

impl Metrics {
    /// `window` is the recent view's length, kept as 6 slots (at least 1 s each).
    pub fn new(enabled: bool, slow: Duration, window: Duration) -> Arc<Metrics> {
        let slots = 6usize;
        let slot_secs = (window.as_secs() / slots as u64).max(1) as u32;
        Arc::new(Metrics {
            enabled,
            slow_micros: AtomicU64::new(slow.as_micros() as u64),
            slot_secs,
            slots,
            started: Instant::now(),
            shards: Mutex::default(),
            aggregate: Mutex::new(Aggregate {
                total: Series::new(slots, 3),
                routes: Vec::new(),
                durations: semconv::Durations::default(),
            }),
            slow: Default::default(),
            slos: std::sync::OnceLock::new(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The recent window as configured (slots × slot length).
    pub fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.slot_secs) * self.slots as u64)
    }

    /// A recorder for one worker thread, counting its clients in `clients`.
    pub fn recorder(self: &Arc<Self>, clients: crate::admit::clients::top::Tally) -> Recorder {
        let clients = std::cell::RefCell::new(clients);
        let shard = Arc::new(Shard::default());
        lock(&self.shards).push(shard.clone());
        let (local, requests) = Default::default();
        Recorder { shard, clients, metrics: self.clone(), local, requests }
    }

    fn now_secs(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    /// Counts `slos` from now on (once, at start), naming routes with `labels`.
    pub fn count_slos(&self, slos: crate::observe::slo::Slos, labels: RouteLabels) {
        let _ = self.slos.set((slos, labels));
    }

    /// Now, in Unix seconds on the clock samples are stamped with (the
    /// wall clock at start plus the monotonic time since: a step of the
    /// wall clock later moves neither).
    pub fn now_unix(&self) -> u64 {
        self.started_unix + self.started.elapsed().as_secs()
    }

    /// The objectives counted, when there are any.
    pub fn slos(&self) -> Option<&crate::observe::slo::Slos> {
        self.slos.get().map(|(s, _)| s).filter(|s| !s.is_empty())
    }

    /// What counts as slow now.
    pub fn slow_threshold(&self) -> Duration {
        Duration::from_micros(self.slow_micros.load(Ordering::Relaxed))
    }

    /// When the oldest request in flight began (as the workers last
    /// published it, at most 50 ms ago).
    pub fn oldest_in_flight(&self) -> Option<Instant> {
        let oldest = lock(&self.shards).iter().map(|s| s.oldest.load(Ordering::Relaxed)).min()?;
        (oldest != u64::MAX).then(|| self.started + Duration::from_micros(oldest))
    }

    /// Changes what counts as slow from now on (a reload).
    pub fn set_slow(&self, slow: Duration) {
        self.slow_micros.store(slow.as_micros() as u64, Ordering::Relaxed);
    }

    fn merge(&self, agg: &mut Aggregate, samples: &[Sample]) {
        let slow_micros = self.slow_micros.load(Ordering::Relaxed);
        for s in samples {
            let epoch = u64::from(s.at_secs / self.slot_secs);
            let slow = u64::from(s.micros) > slow_micros;
            agg.total.record(s, slow, epoch);
            let i = s.route.0 as usize;
            if agg.routes.len() <= i {
                agg.routes.resize_with(i + 1, || Arc::new(Series::new(self.slots, 2)));
            }
            Arc::make_mut(&mut agg.routes[i]).record(s, slow, epoch);
            agg.durations.record(s);
        }
        if let Some((slos, labels)) = self.slos.get() {
            let outcomes = samples.iter().map(|s| crate::observe::slo::Outcome {
                route: s.route,
                micros: s.micros,
                failed: s.status >= 500 || s.grpc.is_some_and(|g| g.error),
                at_secs: s.at_secs,
            });
            slos.record(outcomes, self.started_unix, &labels.0);
        }
    }

    fn drain_shard(&self, agg: &mut Aggregate, shard: &Shard, spare: &mut Batch) {
        std::mem::swap(&mut *lock(&shard.samples), spare);
        self.merge(agg, &spare.samples);
        for e in &spare.exemplars {
            agg.durations.exemplar(e);
        }
        spare.samples.clear();
        spare.exemplars.clear();
    }

    /// Merges every worker's buffered samples into the aggregate.
    pub fn flush(&self) {
        let shards = lock(&self.shards).clone();
        let mut agg = lock(&self.aggregate);
        let mut spare = Batch::default();
        for shard in &shards {
            self.drain_shard(&mut agg, shard, &mut spare);
        }
    }

    /// Flushes, then copies the total only (no route is copied).
    pub fn snapshot_total(&self) -> Snapshot {
        self.snapshot_where(|_| false)
    }

    /// Flushes, then copies the aggregate (optionally one route only).
    pub fn snapshot(&self, only: Option<RouteId>) -> Snapshot {
        self.snapshot_where(|id| only.is_none_or(|r| r == id))
    }

    fn snapshot_where(&self, keep: impl Fn(RouteId) -> bool) -> Snapshot {
        self.flush();
        let in_flight = lock(&self.shards).iter().map(|s| s.in_flight.load(Ordering::Relaxed)).sum();
        let agg = lock(&self.aggregate);
        let routes = agg
            .routes
            .iter()
            .enumerate()
            .filter(|(i, s)| s.all.count > 0 && keep(RouteId(*i as u32)))
            .map(|(i, s)| (RouteId(i as u32), s.clone()))
            .collect();
        Snapshot {
            total: agg.total.clone(),
            routes,
            in_flight,
            durations: agg.durations.clone(),
            now_epoch: u64::from(self.now_secs() / self.slot_secs),
            window: self.window(),
            slot: Duration::from_secs(u64::from(self.slot_secs)),
            elapsed: self.started.elapsed(),
        }
    }

    /// Merges on a timer until `shutdown` resolves, so buffers stay small
    /// even when nobody reads.
    pub async fn merge_periodically(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {
                    self.flush();
                    // Slow requests that ended get their evidence here, off
                    // the request path.
                    self.slow.attach();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
