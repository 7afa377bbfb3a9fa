//! A worker's [`Recorder`]: its requests in flight, and its samples
//! buffered locally (no lock, no atomic) until they move to its shard.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{lock, micros, semconv, Batch, Called, Recorder, Sample, FLUSH_AT};
use crate::wire::routes::RouteId;

/// Move a worker's local samples to its shard once this many have collected.
const LOCAL_BATCH: usize = 256;

impl Recorder {
    /// A request (its `X-Request-Id`: `request_id`) began at `started`:
    /// counted in flight; returns its slot, for [`Recorder::finish`].
    #[inline]
    pub(super) fn began(&self, started: Instant, request_id: &[u8]) -> u32 {
        let mut requests = self.requests.borrow_mut();
        let slot = requests.began(started, request_id);
        self.publish_in_flight(requests.in_use());
        slot
    }

    /// Its response is complete.
    pub(super) fn finish(
        &self,
        slot: u32,
        route: RouteId,
        (status, limited, grpc): (u16, bool, Option<Called>),
        started: Instant,
        split: (Option<u32>, u32),
        exemplar: Option<semconv::Exemplar>,
    ) {
        let now = Instant::now();
        let micros = micros(now.duration_since(started));
        let at_secs = now.duration_since(self.metrics.started).as_secs() as u32;
        {
            let mut requests = self.requests.borrow_mut();
            requests.ended(slot);
            self.publish_in_flight(requests.in_use());
        }
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

    /// Its requests in flight now (its slab's count): only this worker
    /// writes it, a plain store, no read-modify-write.
    fn publish_in_flight(&self, n: usize) {
        self.shard.in_flight.store(n as i64, Ordering::Relaxed);
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

    /// Slots of this worker's slab of requests in flight (`memory.held`).
    pub fn in_flight_slots(&self) -> usize {
        self.requests.borrow().len()
    }

    /// Publishes every `period` for as long as the worker runs.
    pub async fn publish_periodically(self: std::rc::Rc<Self>, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.publish();
            let oldest = self.requests.borrow_mut().oldest();
            let micros =
                oldest.map_or(u64::MAX, |t| t.saturating_duration_since(self.metrics.started).as_micros() as u64);
            self.shard.oldest.store(micros, Ordering::Relaxed);
            self.clients.borrow_mut().publish(Instant::now());
        }
    }
}
