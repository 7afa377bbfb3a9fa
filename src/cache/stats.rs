//! The cache's counters: one shard per worker, written only by it (relaxed
//! atomics on a line no other core writes), summed when read.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one worker (only it writes them; readers sum all shards).
#[derive(Debug, Default)]
pub struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub uncacheable: AtomicU64,
    pub stale: AtomicU64,
    pub stores: AtomicU64,
    pub bypasses: AtomicU64,
    pub invalidations: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The counters summed, for `/performance` (its `cache` section) and `/metrics`.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Answers from the cache, stale ones included.
    pub hits: u64,
    /// Hits served stale.
    pub stale: u64,
    /// Lookups that went upstream for a response that was stored or could have been.
    pub misses: u64,
    /// Lookups whose response could not be stored.
    pub uncacheable: u64,
    pub stores: u64,
    pub bypasses: u64,
    pub invalidations: u64,
    pub errors: u64,
    pub memory_bytes: u64,
    /// Keys held by the memory layer.
    pub entries: u64,
}

impl Stats {
    /// `hits / (hits + misses)`: stale answers count as hits here.
    pub fn hit_rate(&self) -> f64 {
        ratio(self.hits, self.hits + self.misses)
    }

    /// `(hits - stale) / (hits + misses)`: an outage served from stale does
    /// not look like a healthy cache (the `cache_hit_rate` alert reads this).
    pub fn fresh_hit_rate(&self) -> f64 {
        ratio(self.hits.saturating_sub(self.stale), self.hits + self.misses)
    }
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}
