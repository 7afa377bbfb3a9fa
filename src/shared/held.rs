//! How much each structure a client can grow holds now ([`Held`],
//! `/performance` `memory.held` and `/metrics` `perfproxy_held_entries`), so
//! a growth in a long run points at its cause (`bench/soak.sh`). What only a
//! worker can read (its hit-for-pass keys, route memo, idle upstream
//! connections, open connections) it publishes into its own
//! [`WorkerHeld`] once a second (`Worker::publish_held`); the rest is read
//! when the document is built (`admin::performance::held`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One worker's sizes, as it last published them.
#[derive(Debug, Default)]
pub struct WorkerHeld {
    hit_for_pass: AtomicUsize,
    storable_keys: AtomicUsize,
    route_memo: AtomicUsize,
    upstream_idle: AtomicUsize,
    connections: AtomicUsize,
    in_flight_slots: AtomicUsize,
}

/// Every worker's sizes.
#[derive(Debug, Default)]
pub struct HeldBoard {
    workers: Mutex<Vec<Arc<WorkerHeld>>>,
}

impl HeldBoard {
    /// A new worker's slot.
    pub fn join(&self) -> Arc<WorkerHeld> {
        let held = Arc::new(WorkerHeld::default());
        self.workers.lock().expect("no code panics holding the held board").push(held.clone());
        held
    }

    fn sum(&self, field: impl Fn(&WorkerHeld) -> &AtomicUsize) -> usize {
        let workers = self.workers.lock().expect("no code panics holding the held board");
        workers.iter().map(|w| field(w).load(Ordering::Relaxed)).sum()
    }
}

impl WorkerHeld {
    /// Publishes a worker's sizes (see `Worker::publish_held`).
    pub fn publish(&self, sizes: WorkerSizes) {
        self.hit_for_pass.store(sizes.hit_for_pass, Ordering::Relaxed);
        self.storable_keys.store(sizes.storable_keys, Ordering::Relaxed);
        self.route_memo.store(sizes.route_memo, Ordering::Relaxed);
        self.upstream_idle.store(sizes.upstream_idle, Ordering::Relaxed);
        self.connections.store(sizes.connections, Ordering::Relaxed);
        self.in_flight_slots.store(sizes.in_flight_slots, Ordering::Relaxed);
    }
}

/// What one worker holds, as it publishes it.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerSizes {
    pub hit_for_pass: usize,
    pub storable_keys: usize,
    pub route_memo: usize,
    pub upstream_idle: usize,
    pub connections: usize,
    pub in_flight_slots: usize,
}

/// Entries (bytes for `cache_bytes`) in each structure a client can grow.
#[derive(Debug, Serialize, Default, Clone, PartialEq, Eq)]
pub struct Held {
    /// The memory layer: keys, and bytes by its weigher.
    pub cache_entries: u64,
    pub cache_bytes: u64,
    /// The memory layer's index: paths, keys (within a few keys of
    /// `cache_entries`: those being stored now), tags, tagged keys.
    pub cache_index_paths: usize,
    pub cache_index_keys: usize,
    pub cache_tags: usize,
    pub cache_tagged_keys: usize,
    /// Misses being fetched now (collapsed by key).
    pub cache_flights: usize,
    /// Keys found uncacheable lately, and keys whose last answer was stored
    /// (per worker, at most 10 000 each).
    pub hit_for_pass: usize,
    pub storable_keys: usize,
    /// Route labels (at most `max_routes` plus one `OTHER` per method), and
    /// the workers' memos of paths and labels already resolved.
    pub route_labels: usize,
    pub route_memo: usize,
    /// Route discovery: positions counting values, and values learned (each
    /// at most four times `max_routes`).
    pub route_positions: usize,
    pub route_literals: usize,
    /// Top-client candidates on the workers' boards.
    pub clients: usize,
    /// Idle pooled connections to the upstream, and open client connections.
    pub upstream_idle: usize,
    pub connections: usize,
    /// History: rollups waiting for the database, points in memory, series
    /// remembered between rollups.
    pub history_queue: usize,
    pub history_points: usize,
    pub history_series: usize,
    /// Alerts firing.
    pub alerts_firing: usize,
    /// Statements tracked for the slow requests in flight (at most 4 096),
    /// slow requests listed (`slow.keep`), and the workers' slots for
    /// requests in flight (their most at once, shrinking back).
    pub slow_statements: usize,
    pub slow_requests: usize,
    pub in_flight_slots: usize,
    /// Service level objectives' count buckets (seconds of the last hour
    /// and minutes of the period, with traffic).
    pub slo_buckets: usize,
}

impl Held {
    /// Adds the workers' published sizes to `self` (what the rest of the
    /// process holds, read by the caller).
    pub fn with_workers(mut self, board: &HeldBoard) -> Held {
        self.hit_for_pass = board.sum(|w| &w.hit_for_pass);
        self.storable_keys = board.sum(|w| &w.storable_keys);
        self.route_memo = board.sum(|w| &w.route_memo);
        self.upstream_idle = board.sum(|w| &w.upstream_idle);
        self.connections = board.sum(|w| &w.connections);
        self.in_flight_slots = board.sum(|w| &w.in_flight_slots);
        self
    }

    /// Each size by name, for `/metrics`.
    pub fn named(&self) -> [(&'static str, f64); 24] {
        [
            ("cache_entries", self.cache_entries as f64),
            ("cache_bytes", self.cache_bytes as f64),
            ("cache_index_paths", self.cache_index_paths as f64),
            ("cache_index_keys", self.cache_index_keys as f64),
            ("cache_tags", self.cache_tags as f64),
            ("cache_tagged_keys", self.cache_tagged_keys as f64),
            ("cache_flights", self.cache_flights as f64),
            ("hit_for_pass", self.hit_for_pass as f64),
            ("storable_keys", self.storable_keys as f64),
            ("route_labels", self.route_labels as f64),
            ("route_memo", self.route_memo as f64),
            ("route_positions", self.route_positions as f64),
            ("route_literals", self.route_literals as f64),
            ("clients", self.clients as f64),
            ("upstream_idle", self.upstream_idle as f64),
            ("connections", self.connections as f64),
            ("history_queue", self.history_queue as f64),
            ("history_points", self.history_points as f64),
            ("history_series", self.history_series as f64),
            ("alerts_firing", self.alerts_firing as f64),
            ("slow_statements", self.slow_statements as f64),
            ("slow_requests", self.slow_requests as f64),
            ("in_flight_slots", self.in_flight_slots as f64),
            ("slo_buckets", self.slo_buckets as f64),
        ]
    }
}
