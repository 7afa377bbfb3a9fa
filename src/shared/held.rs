//! How much each structure a client can grow holds now ([`Held`],
//! `/performance` `memory.held` and `/metrics` `perfproxy_held_entries`), so
//! a growth in a long run points at its cause (`bench/soak.sh`). What only a
//! worker can read (its hit-for-pass keys, route memo, idle upstream
//! connections, open connections) it publishes into its own
//! [`WorkerHeld`] once a second; the rest is read when the document is built.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::shared::state::{Shared, Worker};

/// One worker's sizes, as it last published them.
#[derive(Debug, Default)]
pub struct WorkerHeld {
    hit_for_pass: AtomicUsize,
    storable_keys: AtomicUsize,
    route_memo: AtomicUsize,
    upstream_idle: AtomicUsize,
    connections: AtomicUsize,
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

impl Worker {
    /// Publishes this worker's sizes; `connections`: the client
    /// connections it has open.
    pub fn publish_held(&self, connections: usize) {
        let (passes, storable) = self.cache_passes.borrow().held();
        let h = &self.held;
        h.hit_for_pass.store(passes, Ordering::Relaxed);
        h.storable_keys.store(storable, Ordering::Relaxed);
        h.route_memo.store(self.route_cache.borrow().held(), Ordering::Relaxed);
        h.upstream_idle.store(self.upstream.idle_len(), Ordering::Relaxed);
        h.connections.store(connections, Ordering::Relaxed);
    }
}

/// Entries (bytes for `cache_bytes`) in each structure a client can grow.
#[derive(Debug, Serialize, Default, Clone, PartialEq, Eq)]
pub struct Held {
    /// The memory layer: keys, and bytes by its weigher.
    pub cache_entries: u64,
    pub cache_bytes: u64,
    /// The memory layer's index: paths, keys (the same as `cache_entries`
    /// once the layer has run its pending evictions), tags, tagged keys.
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
}

impl Held {
    /// Reads every size now.
    pub fn read(shared: &Shared) -> Held {
        let cache = shared.cache.stats();
        let (index, flights) = shared.cache.held();
        let (history_queue, history_points, history_series) = shared.history.held();
        let workers = &shared.held;
        Held {
            cache_entries: cache.entries,
            cache_bytes: cache.memory_bytes,
            cache_index_paths: index.paths,
            cache_index_keys: index.keys,
            cache_tags: index.tags,
            cache_tagged_keys: index.tagged_keys,
            cache_flights: flights,
            hit_for_pass: workers.sum(|w| &w.hit_for_pass),
            storable_keys: workers.sum(|w| &w.storable_keys),
            route_labels: shared.routes.label_count(),
            route_memo: workers.sum(|w| &w.route_memo),
            clients: shared.top_clients.held(),
            upstream_idle: workers.sum(|w| &w.upstream_idle),
            connections: workers.sum(|w| &w.connections),
            history_queue,
            history_points,
            history_series,
            alerts_firing: shared.alerts.firing().len(),
        }
    }

    /// Each size by name, for `/metrics`.
    pub fn named(&self) -> [(&'static str, f64); 18] {
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
            ("clients", self.clients as f64),
            ("upstream_idle", self.upstream_idle as f64),
            ("connections", self.connections as f64),
            ("history_queue", self.history_queue as f64),
            ("history_points", self.history_points as f64),
            ("history_series", self.history_series as f64),
            ("alerts_firing", self.alerts_firing as f64),
        ]
    }
}
