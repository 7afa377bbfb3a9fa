//! Top clients: who sends the most requests over the recent window. Each
//! worker counts its requests per client key in a count-min sketch
//! (pingora-limits' [`Rate`]: 4 rows of 4 096 counters for the current and
//! the previous window, 256 KiB whatever the number of clients) and keeps a
//! bounded set of candidates, the heavy hitters: a client enters when its
//! sketch count in the current window passes the smallest candidate's (the
//! Space-Saving rule, the sketch's estimate standing in for its guess), so
//! memory stays flat with any number of distinct clients. A worker's
//! [`Tally`] sits behind its own mutex, taken by that worker once per
//! request (uncontended) and by readers; the sketch is only touched under it
//! (its lazy window reset must not race). Readers merge the workers'
//! candidates, rank them by rate and keep `top_clients.count`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora_limits::rate::{Rate, RateComponents};
use serde::Serialize;

use super::{Key, KeySpec, Shown, Who};
use crate::routes::RouteId;

/// The sketch's rows and counters per row (see the README's error bounds).
const HASHES: usize = 4;
const SLOTS: usize = 4096;
/// Distinct routes counted per candidate and window, at most.
const MAX_ROUTES: usize = 1024;

/// One client in `/performance.top_clients`.
#[derive(Debug, Clone, Serialize)]
pub struct TopClient {
    pub client: String,
    /// Requests per second over the recent window.
    pub rps: f64,
    /// Share of its requests answered 5xx, over the same window.
    pub error_rate: f64,
    /// Distinct routes it asked for (at most 1 024 counted).
    pub routes: u64,
}

/// Every worker's tally, and how many clients to list.
#[derive(Debug)]
pub struct TopClients {
    count: usize,
    /// What a client is (`top_clients.key`).
    pub spec: KeySpec,
    window: Duration,
    tallies: Mutex<Vec<Arc<Mutex<Tally>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("top-client locks are never poisoned: no code under them panics")
}

impl TopClients {
    pub fn new(count: usize, spec: KeySpec, window: Duration) -> TopClients {
        TopClients { count, spec, window: window.max(Duration::from_secs(1)), tallies: Mutex::default() }
    }

    /// A tally for one worker.
    pub fn tally(&self) -> Arc<Mutex<Tally>> {
        let tally = Arc::new(Mutex::new(Tally::new(self.window, (self.count * 4).max(64))));
        lock(&self.tallies).push(tally.clone());
        tally
    }

    /// The first `top_clients.count` clients by rate, over every worker.
    pub fn top(&self) -> Vec<TopClient> {
        let tallies = lock(&self.tallies).clone();
        let mut merged: HashMap<Key, Row> = HashMap::new();
        for tally in tallies {
            lock(&tally).rows(|key, row| {
                let m = merged.entry(key).or_insert_with(|| Row { shown: row.shown, ..Row::default() });
                (m.rps, m.requests, m.errors) = (m.rps + row.rps, m.requests + row.requests, m.errors + row.errors);
                m.routes.extend(row.routes);
            });
        }
        let mut rows: Vec<Row> = merged.into_values().filter(|r| r.rps > 0.0).collect();
        rows.sort_by(|a, b| b.rps.total_cmp(&a.rps));
        rows.truncate(self.count);
        rows.into_iter()
            .map(|r| TopClient {
                client: r.shown.to_string(),
                rps: (r.rps * 1000.0).round() / 1000.0,
                error_rate: if r.requests > 0.0 { (r.errors / r.requests).min(1.0) } else { 0.0 },
                routes: r.routes.len().min(MAX_ROUTES) as u64,
            })
            .collect()
    }
}

/// A candidate's figures as a reader merges them.
#[derive(Debug)]
struct Row {
    shown: Shown,
    rps: f64,
    requests: f64,
    errors: f64,
    routes: foldhash::HashSet<u32>,
}

impl Default for Row {
    fn default() -> Self {
        Row { shown: Shown::Everyone, rps: 0.0, requests: 0.0, errors: 0.0, routes: Default::default() }
    }
}

/// One worker's counts: the sketch and the candidates.
pub struct Tally {
    rate: Rate,
    window_ms: u64,
    started: Instant,
    /// The window the candidates' current counts are for.
    epoch: u64,
    capacity: usize,
    candidates: Vec<Candidate>,
    index: foldhash::HashMap<Key, usize>,
    /// The weakest candidate's weight; a stale value is lower, never higher
    /// (it admits more, never fewer).
    floor: isize,
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally").field("candidates", &self.candidates.len()).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Candidate {
    key: Key,
    shown: Shown,
    /// The sketch's count for the current window when last seen, and the
    /// previous window's.
    seen: isize,
    seen_before: isize,
    /// Index 0: the current window; 1: the previous.
    requests: [u64; 2],
    errors: [u64; 2],
    routes: [foldhash::HashSet<u32>; 2],
}

impl Candidate {
    fn weight(&self) -> isize {
        self.seen + self.seen_before
    }
}

impl Tally {
    fn new(window: Duration, capacity: usize) -> Tally {
        Tally {
            rate: Rate::new_with_estimator_config(window, HASHES, SLOTS),
            window_ms: window.as_millis().max(1) as u64,
            started: Instant::now(),
            epoch: 0,
            capacity,
            candidates: Vec::with_capacity(capacity),
            index: Default::default(),
            floor: 0,
        }
    }

    /// Counts a request from `who` for `route`; returns its key.
    pub fn note(&mut self, who: &Who, route: RouteId) -> Key {
        self.rotate();
        let key = who.key();
        let seen = self.rate.observe(&key, 1);
        if let Some(&i) = self.index.get(&key) {
            let c = &mut self.candidates[i];
            c.seen = seen;
            c.count(route);
            return key;
        }
        if self.candidates.len() >= self.capacity {
            if seen <= self.floor {
                return key;
            }
            let weakest = self.weakest().expect("a full set has a weakest candidate");
            self.index.remove(&self.candidates[weakest].key);
            self.candidates.swap_remove(weakest);
            if let Some(moved) = self.candidates.get(weakest) {
                self.index.insert(moved.key, weakest);
            }
        }
        let mut c = Candidate {
            key,
            shown: who.shown(),
            seen,
            seen_before: 0,
            requests: [0; 2],
            errors: [0; 2],
            routes: Default::default(),
        };
        c.count(route);
        self.index.insert(key, self.candidates.len());
        self.candidates.push(c);
        if self.candidates.len() >= self.capacity {
            self.floor = self.weakest().map_or(0, |i| self.candidates[i].weight());
        }
        key
    }

    /// A request from `key` was answered with a 5xx.
    pub fn error(&mut self, key: Key) {
        if let Some(&i) = self.index.get(&key) {
            self.candidates[i].errors[0] += 1;
        }
    }

    fn weakest(&self) -> Option<usize> {
        (0..self.candidates.len()).min_by_key(|&i| self.candidates[i].weight())
    }

    /// Moves the candidates' counts on when a window has passed.
    fn rotate(&mut self) {
        let epoch = self.started.elapsed().as_millis() as u64 / self.window_ms;
        if epoch == self.epoch {
            return;
        }
        let one = epoch == self.epoch + 1;
        self.epoch = epoch;
        for c in &mut self.candidates {
            c.seen_before = if one { c.seen } else { 0 };
            c.seen = 0;
            for counts in [&mut c.requests, &mut c.errors] {
                *counts = [0, if one { counts[0] } else { 0 }];
            }
            c.routes.swap(0, 1);
            c.routes[0].clear();
            if !one {
                c.routes[1].clear();
            }
        }
        self.floor = self.weakest().map_or(0, |i| self.candidates[i].weight());
    }

    /// Each candidate's figures over the recent window.
    fn rows(&mut self, mut each: impl FnMut(Key, Row)) {
        self.rotate();
        let into = (self.started.elapsed().as_millis() as u64 % self.window_ms) as f64 / self.window_ms as f64;
        let weighted = |c: [u64; 2]| c[1] as f64 * (1.0 - into) + c[0] as f64;
        // Younger than a window, the rate is over the time there has been (1 s at least).
        let covered = self.started.elapsed().as_secs_f64().clamp(1.0, self.window_ms as f64 / 1000.0);
        for c in &self.candidates {
            let rps = self.rate.rate_with(&c.key, |r: RateComponents| {
                let count = r.prev_samples as f64 * (1.0 - r.current_interval_fraction) + r.curr_samples as f64;
                count / covered
            });
            let mut routes = c.routes[0].clone();
            routes.extend(&c.routes[1]);
            let (requests, errors) = (weighted(c.requests), weighted(c.errors));
            each(c.key, Row { shown: c.shown, rps, requests, errors, routes });
        }
    }
}

impl Candidate {
    fn count(&mut self, route: RouteId) {
        self.requests[0] += 1;
        if self.routes[0].len() < MAX_ROUTES {
            self.routes[0].insert(route.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn ip(n: u32) -> Who<'static> {
        Who::Address(IpAddr::V4(Ipv4Addr::from(n)))
    }

    #[test]
    fn a_noisy_client_ranks_first_among_many_and_memory_stays_bounded() {
        let top = TopClients::new(10, KeySpec::Client, Duration::from_secs(60));
        let tally = top.tally();
        let noisy = ip(0x0a00_0001);
        for n in 0..100_000u32 {
            let mut t = lock(&tally);
            t.note(&ip(0x0100_0000 + n), RouteId(n % 7));
            if n % 20 == 0 {
                let key = t.note(&noisy, RouteId(n % 3));
                if n % 40 == 0 {
                    t.error(key);
                }
            }
        }
        assert!(lock(&tally).candidates.len() <= 64);
        let ranked = top.top();
        assert_eq!(ranked.len(), 10);
        assert_eq!(ranked[0].client, "10.0.0.1");
        assert_eq!(ranked[0].routes, 3);
        assert!((ranked[0].error_rate - 0.5).abs() < 0.01, "{:?}", ranked[0]);
        // Nothing is rated before a window has passed: the weighted estimate grows with it.
        assert!(ranked[0].rps > 0.0);
    }

    #[test]
    fn workers_tallies_add_up() {
        let top = TopClients::new(3, KeySpec::Client, Duration::from_secs(60));
        let (a, b) = (top.tally(), top.tally());
        for _ in 0..30 {
            lock(&a).note(&ip(7), RouteId(1));
            lock(&b).note(&ip(7), RouteId(2));
            lock(&b).note(&ip(8), RouteId(2));
        }
        let ranked = top.top();
        assert_eq!(ranked[0].client, "0.0.0.7");
        assert_eq!(ranked[0].routes, 2);
        let (seven, eight) = (ranked[0].rps, ranked[1].rps);
        assert!((seven / eight - 2.0).abs() < 0.01, "{seven} {eight}");
    }
}
