//! Top clients: who sends the most requests over the recent window. Each
//! worker counts its requests per client key in a sliding count-min sketch
//! ([`SlidingCounts`]: 4 rows of 4 096 counters for the current and the
//! previous window, 256 KiB whatever the number of clients) and keeps a
//! bounded set of candidates, the heavy hitters: a client enters when its
//! sketch count in the current window passes the weakest candidate's (the
//! Space-Saving rule, the sketch's estimate standing in for its guess), and
//! is counted exactly from then on, so memory stays flat with any number of
//! distinct clients and the busiest cost a lookup, not a sketch update. A worker's
//! [`Tally`] is its own (no lock on the request path); every 50 ms it
//! publishes its candidates' figures to a board readers merge, rank by rate
//! and cut to `top_clients.count`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::sliding::SlidingCounts;
use super::{Key, KeySpec, Shown, Who};
use crate::wire::routes::RouteId;

/// The sketch's rows and counters per row (see the error bounds in docs/operations.md).
const HASHES: usize = 4;
const SLOTS: usize = 4096;
/// Distinct routes counted per candidate and window, at most.
const MAX_ROUTES: usize = 256;

/// One client in `/performance.top_clients`.
#[derive(Debug, Clone, Serialize)]
pub struct TopClient {
    pub client: String,
    /// Requests per second over the recent window.
    pub rps: f64,
    /// Share of its requests answered 5xx, over the same window.
    pub error_rate: f64,
    /// Distinct routes it asked for (at most 256 counted).
    pub routes: u64,
}

/// A worker's candidates as it last published them.
type Board = Arc<Mutex<Vec<(Key, Row)>>>;

/// Every worker's board, and how many clients to list.
#[derive(Debug)]
pub struct TopClients {
    count: usize,
    /// What a client is (`top_clients.key`).
    pub spec: KeySpec,
    window: Duration,
    boards: Mutex<Vec<Board>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("top-client locks are never poisoned: no code under them panics")
}

impl TopClients {
    pub fn new(count: usize, spec: KeySpec, window: Duration) -> TopClients {
        TopClients { count, spec, window: window.max(Duration::from_secs(1)), boards: Mutex::default() }
    }

    /// A tally for one worker, publishing to a board of its own.
    pub fn tally(&self) -> Tally {
        let board = Board::default();
        lock(&self.boards).push(board.clone());
        Tally::new(self.window, (self.count * 2).max(64), board)
    }

    /// Candidates on every worker's board now (each board is bounded by
    /// twice `top_clients.count`, 64 at least).
    pub fn held(&self) -> usize {
        let boards = lock(&self.boards).clone();
        boards.iter().map(|b| lock(b).len()).sum()
    }

    /// The first `top_clients.count` clients by rate, over every worker.
    pub fn top(&self) -> Vec<TopClient> {
        let boards = lock(&self.boards).clone();
        let mut merged: HashMap<Key, Row> = HashMap::new();
        for board in boards {
            for (key, row) in lock(&board).iter() {
                let m = merged.entry(*key).or_insert_with(|| Row { shown: row.shown, ..Row::default() });
                (m.rps, m.requests, m.errors) = (m.rps + row.rps, m.requests + row.requests, m.errors + row.errors);
                m.routes.extend(&row.routes);
            }
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
#[derive(Debug, Clone)]
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
#[derive(Debug)]
pub struct Tally {
    counts: SlidingCounts,
    started: Instant,
    /// When the sketch's current window ends.
    next: Instant,
    capacity: usize,
    candidates: Vec<Candidate>,
    index: foldhash::HashMap<Key, usize>,
    /// The weakest candidate's weight; a stale value is lower, never higher
    /// (it admits more, never fewer).
    floor: isize,
    board: Board,
    /// Requests counted since the last publish.
    dirty: bool,
    /// The last candidate counted (a connection's requests mostly share a client).
    last: Option<(Key, usize)>,
}

#[derive(Debug)]
struct Candidate {
    key: Key,
    shown: Shown,
    /// Its count in the current window (the sketch's when it became a
    /// candidate, then its own), and the previous window's.
    seen: isize,
    seen_before: isize,
    /// Index 0: the current window; 1: the previous.
    requests: [u64; 2],
    errors: [u64; 2],
    routes: [foldhash::HashSet<u32>; 2],
    /// The route of its last request (counted already).
    last_route: Option<RouteId>,
}

impl Candidate {
    fn weight(&self) -> isize {
        self.seen + self.seen_before
    }

    fn count(&mut self, route: RouteId) {
        self.requests[0] += 1;
        if self.last_route != Some(route) && self.routes[0].len() < MAX_ROUTES {
            self.routes[0].insert(route.0);
            self.last_route = Some(route);
        }
    }
}

impl Tally {
    fn new(window: Duration, capacity: usize, board: Board) -> Tally {
        let now = Instant::now();
        let counts = SlidingCounts::new(window, HASHES, SLOTS, now);
        Tally {
            next: now + counts.window(),
            counts,
            started: now,
            capacity,
            candidates: Vec::with_capacity(capacity),
            index: Default::default(),
            floor: 0,
            board,
            dirty: false,
            last: None,
        }
    }

    /// Counts a request from `who` for `route`, begun `at`; returns its key.
    /// A candidate is counted exactly, in its own counters; any other
    /// client in the sketch, which decides when it becomes one.
    pub fn note(&mut self, who: &Who, route: RouteId, at: Instant) -> Key {
        if at >= self.next {
            self.rotate(at);
        }
        self.dirty = true;
        let key = who.key();
        let found = match self.last {
            Some((k, i)) if k == key => Some(i),
            _ => self.index.get(&key).copied(),
        };
        if let Some(i) = found {
            self.last = Some((key, i));
            let c = &mut self.candidates[i];
            c.seen += 1;
            c.count(route);
            return key;
        }
        let seen = self.counts.add(&key, 1);
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
            last_route: None,
        };
        c.count(route);
        self.index.insert(key, self.candidates.len());
        self.last = Some((key, self.candidates.len()));
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

    /// Moves the sketch and the candidates' counts on to the window of `now`.
    fn rotate(&mut self, now: Instant) {
        let before = self.next;
        self.counts.advance(now);
        self.next = self.counts.ends();
        // One window on, or more (then nothing is recent).
        let one = now < before + self.counts.window();
        for c in &mut self.candidates {
            c.seen_before = if one { c.seen } else { 0 };
            c.seen = 0;
            for counts in [&mut c.requests, &mut c.errors] {
                *counts = [0, if one { counts[0] } else { 0 }];
            }
            c.routes.swap(0, 1);
            c.routes[0].clear();
            c.last_route = None;
            if !one {
                c.routes[1].clear();
            }
        }
        self.floor = self.weakest().map_or(0, |i| self.candidates[i].weight());
    }

    /// Publishes each candidate's figures over the recent window to the
    /// board (when requests came since the last time).
    pub fn publish(&mut self, now: Instant) {
        if now >= self.next {
            self.rotate(now);
        }
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        // Younger than a window, the rate is over the time there has been (1 s at least).
        let window = self.counts.window().as_secs_f64();
        let covered = now.saturating_duration_since(self.started).as_secs_f64().clamp(1.0, window);
        let into = self.counts.fraction(now);
        let weighted = |c: [u64; 2]| c[1] as f64 * (1.0 - into) + c[0] as f64;
        let rows = self
            .candidates
            .iter()
            .map(|c| {
                let rps = (c.seen_before as f64 * (1.0 - into) + c.seen as f64) / covered;
                let mut routes = c.routes[0].clone();
                routes.extend(&c.routes[1]);
                let (requests, errors) = (weighted(c.requests), weighted(c.errors));
                (c.key, Row { shown: c.shown, rps, requests, errors, routes })
            })
            .collect();
        *lock(&self.board) = rows;
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
        let mut t = top.tally();
        let noisy = ip(0x0a00_0001);
        for n in 0..100_000u32 {
            t.note(&ip(0x0100_0000 + n), RouteId(n % 7), Instant::now());
            if n % 20 == 0 {
                let key = t.note(&noisy, RouteId(n % 3), Instant::now());
                if n % 40 == 0 {
                    t.error(key);
                }
            }
        }
        assert!(t.candidates.len() <= 64);
        t.publish(Instant::now());
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
        let (mut a, mut b) = (top.tally(), top.tally());
        for _ in 0..30 {
            a.note(&ip(7), RouteId(1), Instant::now());
            b.note(&ip(7), RouteId(2), Instant::now());
            b.note(&ip(8), RouteId(2), Instant::now());
        }
        a.publish(Instant::now());
        b.publish(Instant::now());
        let ranked = top.top();
        assert_eq!(ranked[0].client, "0.0.0.7");
        assert_eq!(ranked[0].routes, 2);
        let (seven, eight) = (ranked[0].rps, ranked[1].rps);
        assert!((seven / eight - 2.0).abs() < 0.01, "{seven} {eight}");
    }
}
