//! What goes upstream and how often: misses in progress by key ([`Flights`],
//! so concurrent misses make one request) and each worker's hit-for-pass
//! keys ([`Passes`], URLs recently found uncacheable).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How long a URL whose last response could not be stored goes straight
/// upstream: no lookup, no collapsing, nothing stored (Varnish's
/// "hit-for-pass").
const PASS_FOR: Duration = Duration::from_secs(10);
/// Keys a worker remembers as passes, at most.
const MAX_PASSES: usize = 10_000;

/// One worker's hit-for-pass keys (no lock, no shared state: each worker
/// learns for itself, at the price of one extra miss per worker).
#[derive(Debug, Default)]
pub struct Passes {
    until: HashMap<String, Instant>,
}

impl Passes {
    /// Whether `key` is a pass now.
    pub fn active(&self, key: &str) -> bool {
        self.until.get(key).is_some_and(|until| Instant::now() < *until)
    }

    pub fn mark(&mut self, key: &str) {
        let now = Instant::now();
        if self.until.len() >= MAX_PASSES {
            self.until.retain(|_, until| *until > now);
            if self.until.len() >= MAX_PASSES {
                self.until.clear();
            }
        }
        self.until.insert(key.to_string(), now + PASS_FOR);
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
