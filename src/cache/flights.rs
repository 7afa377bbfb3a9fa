//! What goes upstream and how often: misses in progress by key ([`Flights`],
//! so concurrent misses make one request) and what each worker remembers of
//! keys ([`Passes`]): URLs recently found uncacheable (hit-for-pass: straight
//! upstream, never collapsed) and URLs whose last response was stored (the
//! only ones, with rule-named routes, worth collapsing: waiting behind a
//! leader whose answer turns out uncacheable only adds its latency).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Keys a worker remembers in each of its maps, at most.
const MAX_REMEMBERED: usize = 10_000;
/// How long a stored key counts as storable for collapsing.
const STORABLE_FOR: Duration = Duration::from_secs(600);

/// What one worker remembers of keys (no lock, no shared state: each
/// worker learns for itself, at the price of one extra miss per worker).
/// Looked up on every request the cache passes. A key is remembered by its
/// 64-bit hash (foldhash, seeded per process), not its text: 24 bytes an
/// entry whatever the URL's length. Two keys sharing a hash (about one
/// pair in 10^19) would share what is remembered of them: a pass or a
/// collapse too many, never a wrong answer.
/// Both maps are bounded: past [`MAX_REMEMBERED`] expired keys go, then all.
#[derive(Debug, Default)]
pub struct Passes {
    hasher: foldhash::fast::RandomState,
    until: foldhash::HashMap<u64, Instant>,
    storable: foldhash::HashMap<u64, Instant>,
}

fn remember(map: &mut foldhash::HashMap<u64, Instant>, key: u64, until: Instant) {
    if map.len() >= MAX_REMEMBERED {
        let now = Instant::now();
        map.retain(|_, t| *t > now);
        if map.len() >= MAX_REMEMBERED {
            map.clear();
        }
    }
    map.insert(key, until);
}

impl Passes {
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Keys remembered (hit-for-pass, storable).
    pub fn held(&self) -> (usize, usize) {
        (self.until.len(), self.storable.len())
    }

    /// Whether `key` is a pass now (found uncacheable within `cache.uncacheable_ttl_ms`).
    pub fn active(&self, key: &str) -> bool {
        self.until.get(&self.hash(key)).is_some_and(|until| Instant::now() < *until)
    }

    /// `key`'s response could not be stored: straight upstream for `ttl`.
    pub fn mark(&mut self, key: &str, ttl: Duration) {
        let h = self.hash(key);
        self.storable.remove(&h);
        remember(&mut self.until, h, Instant::now() + ttl);
    }

    /// `key`'s answer, `status`, could not be stored: hit-for-miss for
    /// `ttl`, unless it was a 5xx (an error passes; it says nothing of the URL).
    pub fn mark_uncacheable(&mut self, key: &str, status: u16, ttl: Duration) {
        if !(500..600).contains(&status) {
            self.mark(key, ttl);
        }
    }

    /// `key` may be storable again: looked up from its next request on.
    pub fn forget(&mut self, key: &str) {
        let h = self.hash(key);
        self.until.remove(&h);
    }

    /// `key`'s response was stored: its misses are worth collapsing.
    pub fn mark_storable(&mut self, key: &str) {
        let h = self.hash(key);
        if !self.storable.contains_key(&h) {
            remember(&mut self.storable, h, Instant::now() + STORABLE_FOR);
        }
    }

    /// Whether `key`'s last response was stored (recently).
    pub fn storable(&self, key: &str) -> bool {
        self.storable.get(&self.hash(key)).is_some_and(|until| Instant::now() < *until)
    }
}

/// Misses in progress, by key: the first becomes the leader and fetches;
/// the rest wait for its [`FlightGuard`] to drop (the entry is stored or
/// the fetch failed).
#[derive(Debug, Default)]
pub struct Flights {
    // A std mutex: held for a map operation, never across an await.
    map: Mutex<HashMap<String, watch::Sender<()>>>,
}

/// The leader's hold on a key; dropping it releases the followers.
#[derive(Debug)]
pub struct FlightGuard {
    flights: Arc<Flights>,
    key: String,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.flights.map.lock().expect("no code panics holding the flight map").remove(&self.key);
    }
}

/// A miss's part in its key's flight.
pub enum Joined {
    Leader(FlightGuard),
    Follower(watch::Receiver<()>),
}

impl Flights {
    /// Misses in flight now.
    pub fn in_flight(&self) -> usize {
        self.map.lock().expect("no code panics holding the flight map").len()
    }

    pub fn join(self: &Arc<Self>, key: &str) -> Joined {
        let mut map = self.map.lock().expect("no code panics holding the flight map");
        if let Some(tx) = map.get(key) {
            return Joined::Follower(tx.subscribe());
        }
        map.insert(key.to_string(), watch::channel(()).0);
        Joined::Leader(FlightGuard { flights: self.clone(), key: key.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_keys_stay_bounded() {
        let mut passes = Passes::default();
        let ttl = Duration::from_secs(60);
        for i in 0..MAX_REMEMBERED + 10 {
            passes.mark(&format!("/u/{i}"), ttl);
            passes.mark_storable(&format!("/s/{i}"));
        }
        let (until, storable) = passes.held();
        assert!(until <= MAX_REMEMBERED && storable <= MAX_REMEMBERED, "{until} {storable}");
        assert!(passes.active(&format!("/u/{}", MAX_REMEMBERED + 9)), "the newest key is kept");
        passes.forget(&format!("/u/{}", MAX_REMEMBERED + 9));
        assert_eq!(passes.held().0, until - 1);
    }
}
