//! What goes upstream and how often: misses in progress by key ([`Flights`],
//! so concurrent misses make one request) and what each worker remembers of
//! keys ([`Passes`]): URLs recently found uncacheable (hit-for-pass: straight
//! upstream, never collapsed) and URLs whose last response was stored (the
//! only ones, with rule-named routes, worth collapsing: waiting behind a
//! leader whose answer turns out uncacheable only adds its latency).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Keys a worker remembers in each of its maps, at most.
const MAX_REMEMBERED: usize = 10_000;
/// How long a stored key counts as storable for collapsing.
const STORABLE_FOR: Duration = Duration::from_secs(600);

/// What one worker remembers of keys (no lock, no shared state: each
/// worker learns for itself, at the price of one extra miss per worker).
/// Looked up on every request the cache passes: hashed with foldhash
/// (seeded per process), not SipHash.
/// Both maps are bounded: past [`MAX_REMEMBERED`] expired keys go, then all.
#[derive(Debug, Default)]
pub struct Passes {
    until: foldhash::HashMap<String, Instant>,
    storable: foldhash::HashMap<String, Instant>,
}

fn remember(map: &mut foldhash::HashMap<String, Instant>, key: &str, until: Instant) {
    if map.len() >= MAX_REMEMBERED {
        let now = Instant::now();
        map.retain(|_, t| *t > now);
        if map.len() >= MAX_REMEMBERED {
            map.clear();
        }
    }
    map.insert(key.to_string(), until);
}

impl Passes {
    /// Whether `key` is a pass now (found uncacheable within `cache.uncacheable_ttl_ms`).
    pub fn active(&self, key: &str) -> bool {
        self.until.get(key).is_some_and(|until| Instant::now() < *until)
    }

    /// `key`'s response could not be stored: straight upstream for `ttl`.
    pub fn mark(&mut self, key: &str, ttl: Duration) {
        self.storable.remove(key);
        remember(&mut self.until, key, Instant::now() + ttl);
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
        self.until.remove(key);
    }

    /// `key`'s response was stored: its misses are worth collapsing.
    pub fn mark_storable(&mut self, key: &str) {
        if !self.storable.contains_key(key) {
            remember(&mut self.storable, key, Instant::now() + STORABLE_FOR);
        }
    }

    /// Whether `key`'s last response was stored (recently).
    pub fn storable(&self, key: &str) -> bool {
        self.storable.get(key).is_some_and(|until| Instant::now() < *until)
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
    pub fn join(self: &Arc<Self>, key: &str) -> Joined {
        let mut map = self.map.lock().expect("no code panics holding the flight map");
        if let Some(tx) = map.get(key) {
            return Joined::Follower(tx.subscribe());
        }
        map.insert(key.to_string(), watch::channel(()).0);
        Joined::Leader(FlightGuard { flights: self.clone(), key: key.to_string() })
    }
}
