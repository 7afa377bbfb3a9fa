//! Invalidation: what an unsafe request, a purge or another instance's
//! message drops from both layers, and the log that keeps a fill racing an
//! invalidation from being stored (a generation counter and the recent
//! patterns, [`Cache::invalidated_since`]); and the background task that
//! hears other instances' invalidations and sweeps Redis' indexes.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::key::{self, Glob};
use super::unconfirmed::Invalidation;
use super::{Cache, Counters};

/// Invalidations remembered to stop racing fills (see [`Cache::invalidated_since`]).
const RECENT_INVALIDATIONS: usize = 256;

/// How often the Redis index is swept of expired keys.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl Cache {
    /// Connects the Redis layer, listens for other instances'
    /// invalidations and sweeps the index, until `shutdown`.
    pub async fn run(self: Arc<Cache>, shutdown: impl std::future::Future<Output = ()>) {
        let Some(redis) = self.redis.clone() else { return };
        let this = self.clone();
        let work = async move {
            redis.connect().await;
            let drop_pattern = |pattern: Glob| {
                let n = this.drop_from_memory(&pattern).len();
                debug!(pattern = pattern.as_str(), dropped = n, "cache: invalidation from another instance");
            };
            let drop_tag = |tag: String| {
                let n = this.drop_tag_from_memory(&tag).len();
                debug!(tag, dropped = n, "cache: tag purge from another instance");
            };
            let sweeper = async {
                loop {
                    tokio::time::sleep(SWEEP_EVERY).await;
                    match redis.sweep().await {
                        Ok(n) => debug!(dropped = n, "cache: redis index swept"),
                        Err(e) => debug!(error = %e, "cache: redis index sweep failed"),
                    }
                    match redis.sweep_tags().await {
                        Ok(n) => debug!(dropped = n, "cache: redis tag index swept"),
                        Err(e) => debug!(error = %e, "cache: redis tag index sweep failed"),
                    }
                }
            };
            let listener = redis.listen(&this.instance, drop_pattern, drop_tag, || this.drop_all_memory());
            let retrier = this.unconfirmed.retry(&redis, &this.instance);
            tokio::join!(sweeper, listener, retrier);
        };
        tokio::select! {
            _ = work => {},
            _ = shutdown => {},
        }
    }

    /// Drops what `pattern` selects from memory; returns the keys that held
    /// entries. Found through the path index: the cost is that of the
    /// entries dropped, whatever the memory layer holds besides.
    fn drop_from_memory(&self, pattern: &Glob) -> HashSet<String> {
        self.record_invalidation(pattern);
        let mut dropped = HashSet::new();
        for key in self.index.take_matching(pattern) {
            if self.memory.remove(key.as_str()).is_some() {
                dropped.insert(key);
            }
        }
        dropped
    }

    /// Drops the memory layer's entries carrying `tag`; returns their keys.
    fn drop_tag_from_memory(&self, tag: &str) -> HashSet<String> {
        let mut dropped = HashSet::new();
        for key in self.index.tagged(tag) {
            // Their paths too, so a fill racing this purge is not stored.
            self.record_invalidation(&Glob::exact(key::path_of(&key)));
            if self.memory.remove(key.as_str()).is_some() {
                dropped.insert(key);
            }
        }
        dropped
    }

    /// Drops every entry carrying one of `tags` from both layers and tells
    /// the other instances; returns how many keys held entries.
    pub async fn purge_tags(&self, tags: &[String], timeout: Duration, counters: &Counters) -> usize {
        let mut purged = HashSet::new();
        for tag in tags {
            purged.extend(self.drop_tag_from_memory(tag));
        }
        let paths = purged.iter().map(|k| Glob::exact(key::path_of(k))).collect();
        self.invalidate_in_redis(Invalidation::Tags(tags.to_vec(), paths), timeout, counters, &mut purged).await;
        Counters::add(&counters.invalidations, purged.len() as u64);
        purged.len()
    }

    /// Tells Redis (and through it the other instances) of an invalidation
    /// memory has had; the keys Redis held join `purged`. One that fails or
    /// outlasts `timeout` is held and retried in the background
    /// ([`unconfirmed`](super::unconfirmed)), never lost.
    async fn invalidate_in_redis(
        &self,
        invalidation: Invalidation,
        timeout: Duration,
        counters: &Counters,
        purged: &mut HashSet<String>,
    ) {
        let Some(redis) = &self.redis else { return };
        let failed = match tokio::time::timeout(timeout, invalidation.send(redis, &self.instance)).await {
            Ok(Ok(keys)) => {
                purged.extend(keys);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", timeout.as_millis()),
        };
        Counters::add(&counters.errors, 1);
        debug!(?invalidation, error = %failed, "cache: redis did not take an invalidation; retrying it in the background");
        self.unconfirmed.hold(invalidation);
    }

    /// Drops the whole memory layer (after missed invalidations).
    fn drop_all_memory(&self) {
        self.index.clear();
        self.memory.invalidate_all();
    }

    /// Drops what `pattern` selects from both layers and tells the other
    /// instances; returns how many keys held entries. `timeout` bounds the
    /// Redis part.
    pub async fn invalidate(&self, pattern: &Glob, timeout: Duration, counters: &Counters) -> usize {
        let mut purged = self.drop_from_memory(pattern);
        self.invalidate_in_redis(Invalidation::Pattern(pattern.clone()), timeout, counters, &mut purged).await;
        Counters::add(&counters.invalidations, purged.len() as u64);
        purged.len()
    }

    /// Where the invalidation log stands: taken before a fetch, so that its
    /// response is not stored if the key was invalidated meanwhile.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn record_invalidation(&self, pattern: &Glob) {
        let mut recent = self.recent.lock().expect("no code panics holding the invalidation log");
        let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        recent.push_back((g, pattern.clone()));
        if recent.len() > RECENT_INVALIDATIONS {
            recent.pop_front();
        }
    }

    /// Whether an invalidation after generation `since` selects `key` (a
    /// write raced the fetch of what would be stored); also when the log no
    /// longer reaches back that far.
    pub fn invalidated_since(&self, key: &str, since: u64) -> bool {
        if self.generation() == since {
            return false;
        }
        let recent = self.recent.lock().expect("no code panics holding the invalidation log");
        match recent.front() {
            Some((oldest, _)) if *oldest <= since + 1 => {
                recent.iter().any(|(g, pattern)| *g > since && pattern.selects(key))
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;
    use crate::cache::entry::test_entry as entry;
    use crate::settings::CacheSettings;
    use crate::wire::encoding::Ranked;

    #[test]
    fn invalidation_finds_its_keys_through_the_index_which_follows_evictions() {
        let settings = CacheSettings { memory_bytes: 200_000, ..CacheSettings::default() };
        let cache = Cache::new(&settings, None);
        let counters = cache.counters();
        for i in 0..2000 {
            cache.store(&format!("/items/{i} h"), entry(500), &counters);
        }
        cache.store("/users/1 h", entry(10), &counters);
        cache.store("/users/1?page=2 h", entry(10), &counters);
        cache.memory.run_pending_tasks();
        let held = cache.memory.entry_count() as usize;
        assert!(held < 2002, "the budget evicted entries: {held}");
        assert!(
            cache.index.paths() <= held + 1,
            "the index follows evictions: {} paths, {held} keys",
            cache.index.paths()
        );
        let users = ["/users/1 h", "/users/1?page=2 h"];
        let present = users.iter().filter(|k| cache.memory.contains_key(**k)).count();
        let dropped = cache.drop_from_memory(&Glob::new("/users/1"));
        assert_eq!(dropped.len(), present);
        assert!(cache.lookup_memory("/users/1 h", &HeaderMap::new(), &Ranked::identity()).is_none());
        // Without evictions: exactly the path's keys, all variants and queries.
        let big = Cache::new(&CacheSettings::default(), None);
        for i in 0..2000 {
            big.store(&format!("/items/{i} h"), entry(10), &counters);
        }
        for k in users {
            big.store(k, entry(10), &counters);
        }
        let mut dropped: Vec<String> = big.drop_from_memory(&Glob::new("/users/1")).into_iter().collect();
        dropped.sort();
        assert_eq!(dropped, users);
        big.memory.run_pending_tasks();
        assert_eq!(big.memory.entry_count(), 2000);
        let left = cache.memory.iter().filter(|(k, _)| k.starts_with("/items/")).count();
        let under = cache.drop_from_memory(&Glob::new("/items/*"));
        assert_eq!(under.len(), left, "a pattern drops exactly what it selects");
        cache.memory.run_pending_tasks();
        assert_eq!(cache.memory.entry_count(), 0);
        assert_eq!(cache.index.paths(), 0);
    }

    #[test]
    fn the_invalidation_log_stops_racing_fills_and_errs_on_the_safe_side() {
        let cache = Cache::new(&CacheSettings::default(), None);
        let before = cache.generation();
        assert!(!cache.invalidated_since("/a/1 h", before));
        cache.drop_from_memory(&Glob::new("/a/*"));
        assert!(cache.invalidated_since("/a/1 h", before));
        assert!(!cache.invalidated_since("/b h", before), "other keys stay storable");
        assert!(!cache.invalidated_since("/a/1 h", cache.generation()), "a fetch begun after it is fine");
        for i in 0..RECENT_INVALIDATIONS + 1 {
            cache.drop_from_memory(&Glob::new(&format!("/c/{i}")));
        }
        assert!(cache.invalidated_since("/b h", before), "the log no longer reaches back: not stored");
    }
}
