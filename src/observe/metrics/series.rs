//! One metric series (a route, or the total): all-time [`Stats`] and a ring
//! of window slots, each slot its own `Stats`, merged on read.

use hdrhistogram::Counter;

use super::hist::Hist;

use super::Sample;

/// Counters and a latency histogram (µs). All-time stats count in `u64`;
/// window slots, which hold seconds of traffic, in `u32`.
#[derive(Debug, Clone)]
pub struct Stats<C: Counter = u64> {
    pub count: u64,
    pub errors: u64,
    pub slow: u64,
    /// Refused by a rate limit (429, never forwarded).
    pub limited: u64,
    /// Index 1..=5: 1xx..5xx (0 unused).
    pub status: [u64; 6],
    pub sum_micros: u64,
    /// The exact extremes (`min_micros` is `u64::MAX` while empty): a
    /// percentile, read from a bucket's top, is clamped to them.
    pub min_micros: u64,
    pub max_micros: u64,
    pub hist: Hist<C>,
    /// The upstream's share: request sent → response head read (requests
    /// that went upstream only; all-time figures only).
    pub upstream: Part<C>,
    /// perfproxy's own share: the request's time less the upstream's and
    /// less the time spent writing the body to the client.
    pub overhead: Part<C>,
    /// gRPC calls' statuses and messages (boxed: only gRPC routes pay).
    pub grpc: Option<Box<Grpc>>,
}

/// gRPC calls: how many ended with each status, and the messages they carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grpc {
    /// By status code, 0–16.
    pub codes: [u64; 17],
    pub messages: u64,
}

impl Grpc {
    pub fn add(&mut self, other: &Grpc) {
        for (a, b) in self.codes.iter_mut().zip(other.codes) {
            *a += b;
        }
        self.messages += other.messages;
    }
}

/// One share of the requests' time: a histogram (µs), its exact sum and
/// extremes.
#[derive(Debug, Clone)]
pub struct Part<C: Counter = u64> {
    pub count: u64,
    pub sum_micros: u64,
    /// `u64::MAX` while empty.
    pub min_micros: u64,
    pub max_micros: u64,
    pub hist: Hist<C>,
}

impl<C: Counter> Part<C> {
    pub fn new(sigfig: u8) -> Part<C> {
        Part { count: 0, sum_micros: 0, min_micros: u64::MAX, max_micros: 0, hist: Hist::new(sigfig) }
    }

    /// A share with these figures.
    pub fn of(count: u64, sum_micros: u64, (min_micros, max_micros): (u64, u64), hist: Hist<C>) -> Part<C> {
        Part { count, sum_micros, min_micros, max_micros, hist }
    }

    /// Records one request's share, never more than its `whole` (µs, as
    /// recorded in the request's own figures).
    fn record(&mut self, micros: u32, whole: u64) {
        let v = recorded(micros).min(whole);
        self.count += 1;
        self.sum_micros += v;
        self.min_micros = self.min_micros.min(v);
        self.max_micros = self.max_micros.max(v);
        self.hist.record(v);
    }

    fn add(&mut self, other: &Part<C>) {
        self.count += other.count;
        self.sum_micros += other.sum_micros;
        self.min_micros = self.min_micros.min(other.min_micros);
        self.max_micros = self.max_micros.max(other.max_micros);
        self.hist.add(&other.hist);
    }

    /// The `q` quantile (µs) within the recorded extremes; 0 when empty.
    pub fn quantile_micros(&self, q: f64) -> u64 {
        within(self.count, self.hist.value_at_quantile(q), self.min_micros, self.max_micros)
    }
}

/// A time as recorded (µs): 1 µs to the histograms' highest.
fn recorded(micros: u32) -> u64 {
    u64::from(micros).clamp(1, super::hist::HIGHEST)
}

/// A histogram's quantile (a bucket's top) brought inside the extremes
/// actually recorded: no percentile above the maximum or below the minimum.
fn within(count: u64, value: u64, min: u64, max: u64) -> u64 {
    if count == 0 {
        0
    } else {
        value.min(max).max(min.min(max))
    }
}

impl<C: Counter> Stats<C> {
    pub fn new(sigfig: u8) -> Stats<C> {
        let hist = Hist::new(sigfig);
        Stats {
            count: 0,
            errors: 0,
            slow: 0,
            limited: 0,
            status: [0; 6],
            sum_micros: 0,
            min_micros: u64::MAX,
            max_micros: 0,
            hist,
            upstream: Part::new(sigfig),
            overhead: Part::new(sigfig),
            grpc: None,
        }
    }

    fn record(&mut self, s: &Sample, slow: bool) {
        self.count += 1;
        self.errors += u64::from(s.status >= 500 || s.grpc.is_some_and(|g| g.error));
        if let Some(g) = s.grpc {
            let grpc = self.grpc.get_or_insert_with(Default::default);
            grpc.codes[usize::from(g.code).min(16)] += 1;
            grpc.messages += u64::from(g.messages);
        }
        self.slow += u64::from(slow);
        self.limited += u64::from(s.limited);
        self.status[usize::from(s.status / 100).min(5)] += 1;
        let v = recorded(s.micros);
        self.sum_micros += v;
        self.min_micros = self.min_micros.min(v);
        self.max_micros = self.max_micros.max(v);
        self.hist.record(v);
    }

    /// Records the sample's latency split (all-time figures only: the
    /// window's slots keep the total latency, which is what the alerts and
    /// the chart read).
    fn record_split(&mut self, s: &Sample) {
        let whole = recorded(s.micros);
        if let Some(up) = s.upstream_micros {
            self.upstream.record(up, whole);
        }
        self.overhead.record(s.overhead_micros, whole);
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Stats<C>) {
        self.count += other.count;
        self.errors += other.errors;
        self.slow += other.slow;
        self.limited += other.limited;
        for (a, b) in self.status.iter_mut().zip(other.status) {
            *a += b;
        }
        self.sum_micros += other.sum_micros;
        self.min_micros = self.min_micros.min(other.min_micros);
        self.max_micros = self.max_micros.max(other.max_micros);
        self.hist.add(&other.hist);
        self.upstream.add(&other.upstream);
        self.overhead.add(&other.overhead);
        if let Some(g) = &other.grpc {
            self.grpc.get_or_insert_with(Default::default).add(g);
        }
    }

    /// The `q` quantile of the latency (µs) within the recorded extremes;
    /// 0 when empty.
    pub fn quantile_micros(&self, q: f64) -> u64 {
        within(self.count, self.hist.value_at_quantile(q), self.min_micros, self.max_micros)
    }

    pub fn error_rate(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.errors as f64 / self.count as f64
        }
    }
}

#[derive(Debug, Clone)]
struct Slot {
    epoch: u64,
    stats: Stats<u32>,
}

/// All-time stats plus the rolling window.
#[derive(Debug, Clone)]
pub struct Series {
    pub all: Stats,
    /// Boxed: a slot no traffic has reached costs a pointer.
    ring: Vec<Option<Box<Slot>>>,
    sigfig: u8,
}

impl Series {
    pub fn new(slots: usize, sigfig: u8) -> Series {
        Series { all: Stats::new(sigfig), ring: vec![None; slots], sigfig }
    }

    pub(super) fn record(&mut self, s: &Sample, slow: bool, epoch: u64) {
        self.all.record(s, slow);
        self.all.record_split(s);
        let n = self.ring.len() as u64;
        let slot = &mut self.ring[(epoch % n) as usize];
        match slot {
            Some(slot) if slot.epoch == epoch => slot.stats.record(s, slow),
            Some(slot) if slot.epoch > epoch => {} // a late sample for a slot already reused
            _ => {
                let mut stats = Stats::new(self.sigfig);
                stats.record(s, slow);
                *slot = Some(Box::new(Slot { epoch, stats }));
            }
        }
    }

    /// The window's slots ending at `now_epoch`, oldest first: each
    /// epoch with its stats (`None`: no traffic in it).
    pub fn slots(&self, now_epoch: u64) -> Vec<(u64, Option<&Stats<u32>>)> {
        let n = self.ring.len() as u64;
        (now_epoch.saturating_sub(n - 1)..=now_epoch)
            .map(|epoch| {
                let slot = self.ring[(epoch % n) as usize].as_ref().filter(|s| s.epoch == epoch);
                (epoch, slot.map(|s| &s.stats))
            })
            .collect()
    }

    /// The window ending at slot `now_epoch`: the slots of the last `slots` epochs.
    pub fn recent(&self, now_epoch: u64) -> Stats<u32> {
        let n = self.ring.len() as u64;
        let mut out = Stats::new(self.sigfig);
        for slot in self.ring.iter().flatten() {
            if slot.epoch <= now_epoch && slot.epoch + n > now_epoch {
                out.add(&slot.stats);
            }
        }
        out
    }
}
