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
pub mod semconv;
mod series;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use hist::Hist;
pub use series::{Grpc, Part, Series, Stats};

use crate::routes::RouteId;

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

/// One worker's buffer of samples not yet merged, and its in-flight count.
#[derive(Debug, Default)]
pub struct Shard {
    samples: Mutex<Batch>,
    in_flight: AtomicI64,
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
}

/// A worker's handle for recording: samples collect in a local buffer (no
/// atomics, no lock) and move to the worker's shard every 256 samples or
/// when [`Recorder::publish`] runs (every 50 ms), so readers see figures at
/// most that old.
#[derive(Debug)]
pub struct Recorder {
    shard: Arc<Shard>,
    /// This worker's top-client counts (its own: no lock per request).
    clients: std::cell::RefCell<crate::clients::top::Tally>,
    metrics: Arc<Metrics>,
    local: std::cell::RefCell<Batch>,
    in_flight: std::cell::Cell<i64>,
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
    pub fn recorder(self: &Arc<Self>, clients: crate::clients::top::Tally) -> Recorder {
        let clients = std::cell::RefCell::new(clients);
        let shard = Arc::new(Shard::default());
        lock(&self.shards).push(shard.clone());
        Recorder { shard, clients, metrics: self.clone(), local: Default::default(), in_flight: Default::default() }
    }

    fn now_secs(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
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
                _ = tick.tick() => self.flush(),
            }
        }
    }
}

/// Move a worker's local samples to its shard once this many have collected.
const LOCAL_BATCH: usize = 256;

/// What a request whose client left before its answer is recorded as
/// (nginx's "client closed request").
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// One request being recorded, from its head to the end of its response.
/// Its sample is taken when this drops: with the status it was answered
/// with, or 499 if it never was (its client left first). Its access-log
/// line and its spans (when sampled) are sent then too.
#[derive(Debug)]
pub struct Recording {
    /// `None` with monitoring off (the request may still be traced or logged).
    recorder: Option<std::rc::Rc<Recorder>>,
    route: RouteId,
    started: Instant,
    status: u16,
    upstream: Option<Duration>,
    overhead: Duration,
    /// Its access-log line, when it is logged.
    access: Option<Box<(Arc<crate::access_log::AccessLog>, crate::access_log::Entry)>>,
    /// Its trace, when tracing is on (boxed: tracing off costs a pointer).
    trace: Option<Box<Traced>>,
    /// Its client among the top clients (monitoring on).
    client: Option<crate::clients::Key>,
    limited: bool,
    /// A gRPC call's status and message counts (boxed: HTTP costs a pointer).
    grpc: Option<Box<GrpcCall>>,
}

/// What a recording learns of a gRPC call as it goes.
#[derive(Debug)]
struct GrpcCall {
    code: Option<crate::grpc::Code>,
    /// `grpc.error_codes`, bit per code.
    error_codes: u32,
    /// The client's messages, counted by its request body.
    request: std::rc::Rc<std::cell::Cell<crate::grpc::MessageCount>>,
    response: crate::grpc::MessageCount,
    /// Its `grpc-timeout`: a client that leaves once it has passed saw
    /// `DEADLINE_EXCEEDED`, not a cancellation.
    deadline: Option<Duration>,
}

/// A request's trace, and its spans' record when it is sampled.
#[derive(Debug)]
struct Traced {
    context: crate::trace::TraceContext,
    span: Option<(Arc<crate::trace::Tracer>, crate::trace::SpanRecord)>,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

impl Recording {
    /// The status the client is being answered with.
    pub fn answered(&mut self, status: u16) {
        self.status = status;
    }

    /// The request went upstream at `sent`; its response head (or its
    /// failure) came `took` later.
    pub fn upstream(&mut self, sent: Instant, took: Duration) {
        self.upstream = Some(took);
        if let Some((_, span)) = self.trace.as_mut().and_then(|t| t.span.as_mut()) {
            span.upstream = Some((sent.saturating_duration_since(span.started), took));
        }
    }

    /// The upstream's share as [`Recording::upstream`], and perfproxy's
    /// own: what passed before `sent` (no clock read here).
    pub fn split(&mut self, sent: Instant, took: Duration) {
        self.upstream(sent, took);
        self.overhead = sent.saturating_duration_since(self.started);
    }

    /// The upstream gave no answer (`why`: the span's `error.type`).
    pub fn upstream_failed(&mut self, why: &'static str) {
        if let Some((_, span)) = self.trace.as_mut().and_then(|t| t.span.as_mut()) {
            span.upstream_error = Some(why);
        }
    }

    /// A request for `route` has been read. With `recorder` (monitoring on)
    /// it is counted; without, only traced or logged.
    pub fn begin(recorder: Option<&std::rc::Rc<Recorder>>, route: RouteId) -> Recording {
        Recording::begin_at(recorder, route, Instant::now())
    }

    /// As [`Recording::begin`], for a request whose head was read `started`.
    pub fn begin_at(recorder: Option<&std::rc::Rc<Recorder>>, route: RouteId, started: Instant) -> Recording {
        if let Some(r) = recorder {
            r.set_in_flight(1);
        }
        Recording {
            recorder: recorder.cloned(),
            route,
            started,
            status: CLIENT_CLOSED_REQUEST,
            upstream: None,
            overhead: Duration::ZERO,
            access: None,
            trace: None,
            client: None,
            limited: false,
            grpc: None,
        }
    }

    /// Counts the request under its client as `spec` names it, for the top
    /// clients (with monitoring on; the client is not asked otherwise).
    pub fn client<F: crate::clients::Fields>(
        &mut self,
        asker: &crate::clients::Asker<F>,
        spec: &crate::clients::KeySpec,
    ) {
        if let Some(r) = &self.recorder {
            if let Some(who) = asker.who(spec) {
                self.client = Some(r.clients.borrow_mut().note(&who, self.route, self.started));
            }
        }
    }

    /// The rate limits refused the request with `status` (`limited`: over a
    /// limit, not a 400 for an ambiguous key); its answer is ready.
    pub fn refused(&mut self, status: u16, limited: bool) {
        self.limited = limited;
        self.status = status;
        self.head_ready();
    }

    /// The route it is recorded under.
    pub fn route(&self) -> RouteId {
        self.route
    }

    /// When the request head was read.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Logs this request to `log` when it ends (status, times and the
    /// body's bytes filled in then).
    pub fn log_to(&mut self, log: Arc<crate::access_log::AccessLog>, entry: crate::access_log::Entry) {
        self.access = Some(Box::new((log, entry)));
    }

    /// The request's trace (for the access log and the upstream).
    pub fn traced(&mut self, context: crate::trace::TraceContext) {
        if let Some(a) = &mut self.access {
            a.1.trace_id = Some(crate::trace::trace_id_hex(context.trace_id));
        }
        self.trace = Some(Box::new(Traced { context, span: None }));
    }

    /// The `traceparent` the upstream gets, when tracing is on.
    pub fn traceparent(&self) -> Option<[u8; 55]> {
        self.trace.as_ref().map(|t| t.context.traceparent())
    }

    /// Exports this request's spans when it ends (after [`Recording::traced`],
    /// its trace sampled).
    pub fn trace(&mut self, tracer: Arc<crate::trace::Tracer>, span: crate::trace::SpanRecord) {
        if let Some(t) = &mut self.trace {
            t.span = Some((tracer, span));
        }
    }

    /// Whether the cache's outcome is wanted (the request is logged or traced).
    pub fn wants_outcome(&self) -> bool {
        self.access.is_some() || self.trace.as_ref().is_some_and(|t| t.span.is_some())
    }

    /// `n` more body bytes sent to the client (for the access log).
    pub fn sent(&mut self, n: usize) {
        if let Some(a) = &mut self.access {
            a.1.bytes_out += n as u64;
        }
    }

    /// The cache's outcome, once known (for the access log and the span).
    pub fn cache(&mut self, outcome: &'static str) {
        if let Some(a) = &mut self.access {
            a.1.cache = outcome;
        }
        if let Some((_, span)) = self.trace.as_mut().and_then(|t| t.span.as_mut()) {
            span.cache = outcome;
        }
    }

    /// The cache asked Redis (for the span).
    pub fn redis(&mut self, lookup: crate::trace::RedisLookup) {
        if let Some((_, span)) = self.trace.as_mut().and_then(|t| t.span.as_mut()) {
            let from = lookup.sent.saturating_duration_since(span.started);
            span.redis = Some((from, lookup.took, lookup.outcome));
        }
    }

    /// The request is a gRPC call (`error_codes`: `grpc.error_codes` as
    /// bits); the returned count is its request body's to keep.
    pub fn grpc_call(
        &mut self,
        error_codes: u32,
        deadline: Option<Duration>,
    ) -> std::rc::Rc<std::cell::Cell<crate::grpc::MessageCount>> {
        let request = std::rc::Rc::default();
        let response = Default::default();
        let call = GrpcCall { code: None, error_codes, request: std::rc::Rc::clone(&request), response, deadline };
        self.grpc = Some(Box::new(call));
        request
    }

    /// A `grpc-status` seen in the response's head (Trailers-Only) or trailers.
    pub fn grpc_status(&mut self, headers: &http::HeaderMap) {
        if let Some(call) = &mut self.grpc {
            if let Some(code) = crate::grpc::status_in(headers) {
                call.code.get_or_insert(code);
            }
        }
    }

    /// Response body bytes of a gRPC call, for its message count.
    pub fn grpc_data(&mut self, data: &[u8]) {
        if let Some(call) = &mut self.grpc {
            call.response.feed(data);
        }
    }

    /// The response head is ready to be written: perfproxy's own time is
    /// what has passed since the request head was read, less the upstream's
    /// share (what follows is the body's transfer, the client's pace).
    pub fn head_ready(&mut self) {
        let so_far = self.started.elapsed();
        self.overhead = so_far.saturating_sub(self.upstream.unwrap_or_default());
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let split = (self.upstream.map(micros), micros(self.overhead));
        let duration = self.started.elapsed();
        if let Some(access) = self.access.take() {
            let (log, mut entry) = *access;
            (entry.status, entry.duration, entry.upstream) = (self.status, duration, self.upstream);
            let slow = self
                .recorder
                .as_ref()
                .is_some_and(|r| duration.as_micros() > u128::from(r.metrics.slow_micros.load(Ordering::Relaxed)));
            log.log(entry, slow);
        }
        let exemplar = self.trace.take().and_then(|t| t.span).map(|(tracer, mut record)| {
            (record.status, record.duration) = (self.status, duration);
            let unix_ms = (record.start + duration).duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let exemplar = semconv::Exemplar {
                route: self.route,
                status: self.status,
                micros: micros(duration),
                trace_id: record.context.trace_id.to_bytes(),
                span_id: record.context.server.to_bytes(),
                unix_ms: unix_ms.as_millis() as u64,
            };
            tracer.finish(Box::new(record));
            exemplar
        });
        if let Some(r) = &self.recorder {
            if let Some(key) = self.client.filter(|_| self.status >= 500) {
                r.clients.borrow_mut().error(key);
            }
            let grpc = self.grpc.take().map(|g| {
                // No status at all: the client saw its call cancelled (it
                // left) or fail (the stream broke off).
                // The client's clock started before perfproxy's: within 10 %.
                let expired = g.deadline.is_some_and(|d| duration >= d.mul_f64(0.9));
                let code = match g.code {
                    Some(code) => code,
                    None if self.status == 499 && expired => crate::grpc::Code::DeadlineExceeded,
                    None => crate::grpc::Code::without_status(self.status),
                } as u8;
                let messages = g.request.get().messages + g.response.messages;
                Called {
                    code,
                    error: g.error_codes & (1 << code) != 0,
                    messages: messages.min(u64::from(u32::MAX)) as u32,
                }
            });
            r.finish(self.route, (self.status, self.limited, grpc), self.started, split, exemplar);
        }
    }
}

impl Recorder {
    /// Its response is complete.
    fn finish(
        &self,
        route: RouteId,
        (status, limited, grpc): (u16, bool, Option<Called>),
        started: Instant,
        split: (Option<u32>, u32),
        exemplar: Option<semconv::Exemplar>,
    ) {
        let now = Instant::now();
        let micros = micros(now.duration_since(started));
        let at_secs = now.duration_since(self.metrics.started).as_secs() as u32;
        self.set_in_flight(-1);
        let full = {
            let mut local = self.local.borrow_mut();
            let (upstream_micros, overhead_micros) = split;
            local.samples.push(Sample {
                route,
                micros,
                status,
                at_secs,
                upstream_micros,
                overhead_micros,
                limited,
                grpc,
            });
            local.exemplars.extend(exemplar);
            local.samples.len() >= LOCAL_BATCH
        };
        if full {
            self.publish();
        }
    }

    /// Only this worker writes its count: a plain store, no read-modify-write.
    fn set_in_flight(&self, delta: i64) {
        let n = self.in_flight.get() + delta;
        self.in_flight.set(n);
        self.shard.in_flight.store(n, Ordering::Relaxed);
    }

    /// Moves the local samples to the shard, where readers find them.
    pub fn publish(&self) {
        let mut local = self.local.borrow_mut();
        if local.samples.is_empty() {
            return;
        }
        let full = {
            let mut shared = lock(&self.shard.samples);
            shared.samples.append(&mut local.samples);
            shared.exemplars.append(&mut local.exemplars);
            shared.samples.len() >= FLUSH_AT
        };
        if full {
            let mut agg = lock(&self.metrics.aggregate);
            self.metrics.drain_shard(&mut agg, &self.shard, &mut Batch::default());
        }
    }

    /// Publishes every `period` for as long as the worker runs.
    pub async fn publish_periodically(self: std::rc::Rc<Self>, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.publish();
            self.clients.borrow_mut().publish(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_tally() -> crate::clients::top::Tally {
        crate::clients::top::TopClients::new(10, crate::clients::KeySpec::Client, Duration::from_secs(60)).tally()
    }

    #[test]
    fn counts_and_percentiles_come_from_histograms() {
        let m = Metrics::new(true, Duration::from_millis(100), Duration::from_secs(60));
        let r = m.recorder(test_tally());
        let a = RouteId(0);
        let b = RouteId(3);
        for i in 1..=100u32 {
            let s = Sample {
                route: a,
                micros: i * 1000,
                status: if i % 10 == 0 { 503 } else { 200 },
                at_secs: 0,
                upstream_micros: Some(400),
                overhead_micros: 20,
                limited: false,
                grpc: None,
            };
            lock(&r.shard.samples).samples.push(s);
        }
        lock(&r.shard.samples).samples.push(Sample {
            route: b,
            micros: 5,
            status: 404,
            at_secs: 0,
            upstream_micros: None,
            overhead_micros: 0,
            limited: false,
            grpc: None,
        });
        let snap = m.snapshot(None);
        assert_eq!(snap.total.all.count, 101);
        assert_eq!(snap.total.all.errors, 10);
        assert_eq!(snap.routes.len(), 2);
        let ra = &snap.routes[0].1.all;
        assert_eq!((ra.count, ra.errors, ra.status[2], ra.status[5]), (100, 10, 90, 10));
        let p50 = ra.hist.value_at_quantile(0.5) as f64;
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.01, "p50 {p50}");
        assert!(ra.hist.value_at_quantile(0.99) >= 98_000);
        assert_eq!(ra.max_micros, 100_000);
        assert_eq!(ra.slow, 0, "100 ms is not slower than 100 ms");
        let only_b = m.snapshot(Some(b));
        assert_eq!(only_b.routes.len(), 1);
        assert_eq!(only_b.routes[0].1.all.status[4], 1);
    }

    #[test]
    fn recent_window_forgets_old_slots() {
        let m = Metrics::new(true, Duration::from_secs(2), Duration::from_secs(60));
        let r = m.recorder(test_tally());
        lock(&r.shard.samples).samples.push(Sample {
            route: RouteId(0),
            micros: 10,
            status: 200,
            at_secs: 0,
            upstream_micros: None,
            overhead_micros: 0,
            limited: false,
            grpc: None,
        });
        lock(&r.shard.samples).samples.push(Sample {
            route: RouteId(0),
            micros: 10,
            status: 500,
            at_secs: 125,
            upstream_micros: None,
            overhead_micros: 0,
            limited: false,
            grpc: None,
        });
        m.flush();
        let agg = lock(&m.aggregate);
        // At second 125 (epoch 12) the window covers epochs 7..=12.
        let recent = agg.total.recent(12);
        assert_eq!((recent.count, recent.errors), (1, 1));
        assert_eq!(agg.total.all.count, 2);
        let later = agg.total.recent(30);
        assert_eq!(later.count, 0);
    }
}
