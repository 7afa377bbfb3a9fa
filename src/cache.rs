//! The two-layer HTTP response cache: a memory layer bounded by
//! bytes (moka, with per-entry expiry) in front of Redis. [`Cache`] holds
//! both, the rules a reload swaps and the invalidation log. Around it:
//! - `pipeline::serve`: the request path through it, top to bottom;
//! - [`policy`]: RFC 9111 decisions; [`key`]: keys, variants and globs;
//! - [`entry`]: a stored response and its binary form; [`fill`]: the copy
//!   kept while a response streams (`pipeline::answer` makes responses from entries);
//! - [`redis_layer`]: Redis; [`flights`]: collapsing and hit-for-pass;
//!   [`index`]: the memory layer's keys by path (invalidation at the cost of what it drops);
//!   [`variants`]: which stored variant answers a request (vary values, then codings);
//!   `invalidation`: what unsafe requests, purges and other instances drop;
//! - [`rules`], [`stats`]: compiled settings and counters (`POST /cache/purge`
//!   is `pipeline::purge`).
//!
//! A Redis fault never fails a request: every Redis call is time-boxed by
//! `cache.redis_timeout_ms`, counted in `errors` when it fails, and the
//! request goes on with the memory layer alone.

pub mod entry;
pub mod fill;
pub mod flights;
pub mod index;
mod invalidation;
pub mod key;
pub mod policy;
pub mod redis_layer;
pub mod rules;
pub mod stats;
mod unconfirmed;
pub mod variants;

pub use flights::{FlightGuard, Flights, Joined, Passes};
pub use rules::{Rule, Rules};
pub use stats::{Counters, Stats};
pub use variants::choose;
use variants::pick;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderMap;
use tracing::debug;

use crate::settings::CacheSettings;
use crate::wire::encoding::Ranked;
use entry::Entry;
use index::PathIndex;
use key::Glob;
use redis_layer::RedisLayer;

/// A Redis lookup's timing, carried in a response's extensions from the
/// cache to where the request is recorded.
#[derive(Debug, Clone, Copy)]
pub struct RedisLookup {
    pub sent: Instant,
    pub took: Duration,
    pub outcome: &'static str,
}

/// Variants kept per primary key.
const MAX_VARIANTS: usize = 16;
/// What a key costs besides its bytes (held three times: the memory layer,
/// the path index's key and path) and its entries': moka's entry, deque and
/// timer nodes, the path index's map slots, the slot's `Arc` and `Vec`,
/// allocator rounding (measured, see `Entry::weight`).
const KEY_OVERHEAD: usize = 600;

/// What the memory layer holds for one primary key: its variants, newest first.
pub type Slot = Arc<Vec<Arc<Entry>>>;

/// What a lookup found.
#[derive(Debug)]
pub enum Found {
    Entry(Arc<Entry>),
    Nothing,
}

/// The cache, shared by every worker.
pub struct Cache {
    memory: moka::sync::Cache<String, Slot>,
    /// The memory layer's keys by path, kept in step by its eviction listener.
    index: Arc<PathIndex>,
    redis: Option<Arc<RedisLayer>>,
    rules: ArcSwap<Rules>,
    shards: Mutex<Vec<Arc<Counters>>>,
    /// The shard of work done outside a worker (pub/sub, purges).
    background: Arc<Counters>,
    flights: Arc<Flights>,
    /// This process's name on the invalidation channel.
    instance: String,
    /// Invalidations so far (bumped before the log below is written).
    generation: AtomicU64,
    /// The latest invalidations, by generation.
    recent: Mutex<VecDeque<(u64, Glob)>>,
    /// Invalidations Redis has yet to take (never read back meanwhile).
    unconfirmed: unconfirmed::Unconfirmed,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("redis", &self.redis).field("entries", &self.memory.entry_count()).finish()
    }
}

struct SlotExpiry;

impl moka::Expiry<String, Slot> for SlotExpiry {
    fn expire_after_create(&self, _: &String, slot: &Slot, _: Instant) -> Option<Duration> {
        Some(slot_ttl(slot))
    }
    fn expire_after_update(&self, _: &String, slot: &Slot, _: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(slot_ttl(slot))
    }
}

/// A slot's identity in the path index.
fn slot_id(slot: &Slot) -> usize {
    Arc::as_ptr(slot) as usize
}

fn slot_ttl(slot: &Slot) -> Duration {
    let now = SystemTime::now();
    slot.iter().map(|e| e.ttl(now)).max().unwrap_or(Duration::ZERO)
}

impl Cache {
    pub fn new(settings: &CacheSettings, redis_url: Option<&str>) -> Arc<Cache> {
        let index = Arc::new(PathIndex::default());
        let listener_index = index.clone();
        let memory = moka::sync::Cache::builder()
            .max_capacity(settings.memory_bytes)
            .weigher(|key: &String, slot: &Slot| {
                let held: usize = slot.iter().map(|e| e.weight()).sum();
                u32::try_from(KEY_OVERHEAD + 3 * key.len() + held).unwrap_or(u32::MAX)
            })
            .expire_after(SlotExpiry)
            .eviction_listener(move |key: Arc<String>, slot: Slot, _| {
                listener_index.remove(&key, slot_id(&slot));
            })
            .build();
        let background = Arc::new(Counters::default());
        Arc::new(Cache {
            memory,
            index,
            redis: redis_url.and_then(RedisLayer::new).map(Arc::new),
            rules: ArcSwap::from_pointee(Rules::new(settings)),
            shards: Mutex::new(vec![background.clone()]),
            background,
            flights: Arc::default(),
            instance: instance_name(),
            generation: AtomicU64::new(0),
            recent: Mutex::default(),
            unconfirmed: unconfirmed::Unconfirmed::default(),
        })
    }

    pub fn rules(&self) -> arc_swap::Guard<Arc<Rules>> {
        self.rules.load()
    }

    /// The rules as an owned handle, to hold across awaits.
    pub fn rules_now(&self) -> Arc<Rules> {
        self.rules.load_full()
    }

    /// Applies reloaded `[cache]` settings (`memory_bytes` needs a restart).
    pub fn configure(&self, settings: &CacheSettings) {
        self.rules.store(Arc::new(Rules::new(settings)));
    }

    /// `redis` once the Redis layer has connected, else `memory`.
    pub fn backend(&self) -> &'static str {
        if self.redis.as_ref().is_some_and(|r| r.connected()) {
            "redis"
        } else {
            "memory"
        }
    }

    /// A worker's own counters.
    pub fn counters(&self) -> Arc<Counters> {
        let shard = Arc::new(Counters::default());
        self.shards.lock().expect("no code panics holding the shard list").push(shard.clone());
        shard
    }

    /// What the memory layer's side structures hold: the path and tag
    /// index, and the misses in flight (`/performance` `memory.held`).
    pub fn held(&self) -> (index::IndexSizes, usize) {
        (self.index.sizes(), self.flights.in_flight())
    }

    /// As [`Cache::stats`], after the memory layer has applied its pending
    /// work, which quiet traffic may not trigger: so `entries` and
    /// `memory_bytes` say what is held now. For the `/performance` and
    /// `/metrics` builders (they run on the blocking pool); the periodic
    /// readers on the control thread take [`Cache::stats`], which never waits.
    pub fn stats_settled(&self) -> Stats {
        // The eviction listener runs here, before any lock of ours is taken.
        self.memory.run_pending_tasks();
        self.stats()
    }

    pub fn stats(&self) -> Stats {
        let shards = self.shards.lock().expect("no code panics holding the shard list");
        let mut s = Stats::default();
        for c in shards.iter() {
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            s.hits += get(&c.hits);
            s.misses += get(&c.misses);
            s.uncacheable += get(&c.uncacheable);
            s.stale += get(&c.stale);
            s.stores += get(&c.stores);
            s.bypasses += get(&c.bypasses);
            s.invalidations += get(&c.invalidations);
            s.errors += get(&c.errors);
        }
        s.memory_bytes = self.memory.weighted_size();
        s.entries = self.memory.entry_count();
        s
    }

    /// The memory layer's variant of `key` for `request` (whose codings,
    /// best first, are `codings`), else Redis' (which then fill memory),
    /// with the Redis lookup's timing if one was made.
    pub async fn lookup(
        &self,
        key: &str,
        request: &HeaderMap,
        codings: &Ranked,
        counters: &Counters,
    ) -> (Found, Option<RedisLookup>) {
        if let Some(e) = self.lookup_memory(key, request, codings) {
            return (Found::Entry(e), None);
        }
        let Some(redis) = &self.redis else { return (Found::Nothing, None) };
        if self.unconfirmed.selects(key) {
            // Redis may still hold what a write or a purge removed.
            return (Found::Nothing, None);
        }
        let timeout = self.rules().redis_timeout;
        let sent = Instant::now();
        let asked = tokio::time::timeout(timeout, redis.get(key)).await;
        let timed = |outcome| Some(RedisLookup { sent, took: sent.elapsed(), outcome });
        match asked {
            Ok(Ok(entries)) if !entries.is_empty() => {
                let now = SystemTime::now();
                let variants: Vec<Arc<Entry>> =
                    entries.into_iter().filter(|e| !e.ttl(now).is_zero()).take(MAX_VARIANTS).map(Arc::new).collect();
                let found = pick(&variants, request, codings);
                if !variants.is_empty() {
                    self.insert(key, Arc::new(variants));
                }
                let outcome = if found.is_some() { "hit" } else { "miss" };
                (found.map_or(Found::Nothing, Found::Entry), timed(outcome))
            }
            Ok(Ok(_)) => (Found::Nothing, timed("miss")),
            Ok(Err(e)) => {
                debug!(error = %e, "cache: redis lookup failed");
                Counters::add(&counters.errors, 1);
                (Found::Nothing, timed("error"))
            }
            Err(_) => {
                debug!("cache: redis lookup timed out");
                Counters::add(&counters.errors, 1);
                (Found::Nothing, timed("error"))
            }
        }
    }

    /// The memory layer's variants of `key`, newest first.
    pub fn memory_slot(&self, key: &str) -> Option<Slot> {
        self.memory.get(key)
    }

    /// Whether a Redis layer is configured (a memory miss asks it).
    pub fn has_redis(&self) -> bool {
        self.redis.is_some()
    }

    /// Whether the memory layer holds any variant of `key` (a vary miss, not a URI miss).
    pub fn holds_key(&self, key: &str) -> bool {
        self.memory.contains_key(key)
    }

    /// The memory layer's variant of `key` for `request` (see [`pick`]).
    pub fn lookup_memory(&self, key: &str, request: &HeaderMap, codings: &Ranked) -> Option<Arc<Entry>> {
        self.memory.get(key).and_then(|variants| pick(&variants, request, codings))
    }

    /// Stores `entry`, fetched when the log stood at `since`, unless the key
    /// was invalidated after that.
    pub fn store_fetched(&self, key: &str, entry: Arc<Entry>, since: u64, counters: &Arc<Counters>) {
        if self.invalidated_since(key, since) {
            debug!(key, "cache: not stored, invalidated while it was fetched");
            return;
        }
        self.store(key, entry, counters);
    }

    /// Stores `entry` under `key` in memory now and in Redis behind.
    pub fn store(&self, key: &str, entry: Arc<Entry>, counters: &Arc<Counters>) {
        let now = SystemTime::now();
        let variant = entry.variant();
        let mut variants: Vec<Arc<Entry>> = match self.memory.get(key) {
            Some(old) => old
                .iter()
                .filter(|e| e.variant() != variant && !e.ttl(now).is_zero())
                .take(MAX_VARIANTS - 1)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        variants.insert(0, entry.clone());
        self.insert(key, Arc::new(variants));
        Counters::add(&counters.stores, 1);
        if let Some(redis) = self.redis.clone() {
            let (key, counters, timeout) = (key.to_string(), counters.clone(), self.rules().redis_timeout);
            let tags = self.rules().tags(&entry.headers);
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, redis.put(&key, &entry, &tags)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        debug!(error = %e, "cache: redis store failed");
                        Counters::add(&counters.errors, 1);
                    }
                    Err(_) => Counters::add(&counters.errors, 1),
                }
            });
        }
    }

    /// Puts a slot in the memory layer, indexed first; if an invalidation
    /// selecting the key ran meanwhile (it may have found the index entry
    /// and missed the insert), the slot is taken out again.
    fn insert(&self, key: &str, slot: Slot) {
        let since = self.generation();
        self.index.add(key, slot_id(&slot), &self.tags_of(&slot));
        self.memory.insert(key.to_string(), slot);
        if self.invalidated_since(key, since) {
            self.memory.remove(key);
        }
    }

    /// The tags of a slot's variants.
    fn tags_of(&self, variants: &[Arc<Entry>]) -> Vec<String> {
        let rules = self.rules();
        let mut tags = Vec::new();
        for e in variants {
            for t in rules.tags(&e.headers) {
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
        }
        tags
    }

    /// The counters of work done outside a worker.
    pub fn background_counters(&self) -> &Counters {
        &self.background
    }

    pub fn flights(&self) -> &Arc<Flights> {
        &self.flights
    }
}

/// A name no other cache shares: pid, start time and a per-process count
/// (several caches may live in one process, as in the tests).
fn instance_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}-{:x}-{n}", std::process::id(), policy::epoch_ms(SystemTime::now()))
}
