//! Route discovery: which path segments are parameters, learned from the
//! traffic itself. A segment value becomes part of a label only once it has
//! been seen in `literal_after` requests and its position (the label up to
//! it, e.g. `/api/users`) holds fewer than `max_literals` learned values;
//! until then, and for every value past that, it is `:param`. Identifiers
//! (numbers, UUIDs, long hex, opaque tokens) stay `:id` as in the plain
//! normalisation. So a value sent once (a password in a path, an ETag, a
//! search word) never reaches a label, while `/api/users/me` does.
//!
//! Bounded whatever the paths: at most `max_positions` positions are
//! tracked (a position is a label prefix of at most [`LONGEST_POSITION`]
//! bytes), at most `max_positions` values are learned in all (none longer
//! than [`LONGEST_LITERAL`]), and each position counts at most
//! [`CANDIDATES`] values at a time, by a 64-bit hash, never as text: a
//! Misra–Gries summary, in which a value keeps its count while it is more
//! than 1/33 of its position's unlearned requests, and one-off values evict
//! each other. What is learned is published as a snapshot read without a
//! lock, with the positions that can learn no more marked closed; only a
//! value at an open position takes the lock, and only when it is free
//! (`try_lock`: a request never waits; a value counted while another
//! worker holds the lock is simply counted later).

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, TryLockError};

use arc_swap::ArcSwap;

/// Values counted at once per position.
pub const CANDIDATES: usize = 32;
/// A position deeper than this (its label prefix, in bytes) learns nothing.
pub const LONGEST_POSITION: usize = 256;
/// A segment longer than this is never learned (an opaque value, likely).
pub const LONGEST_LITERAL: usize = 64;
/// Positions tracked, and values learned, at most, whatever `max_routes`.
pub const MOST_POSITIONS: usize = 16_384;

/// What one position has learned, as the workers read it.
#[derive(Debug, Default)]
struct Known {
    values: foldhash::HashSet<Box<str>>,
    /// `max_literals` learned: nothing more is counted here.
    closed: bool,
}

/// What is learned, published whole (positions share their `Known`, so a
/// new snapshot copies pointers, not values).
#[derive(Debug, Default, Clone)]
struct Snapshot {
    positions: foldhash::HashMap<Box<str>, Arc<Known>>,
    /// No room left (positions or values): a position not in `positions`
    /// counts nothing.
    full: bool,
}

/// The process-wide discovery state.
#[derive(Debug)]
pub struct Discovery {
    literal_after: u32,
    max_literals: usize,
    max_positions: usize,
    hasher: foldhash::fast::RandomState,
    learned: ArcSwap<Snapshot>,
    counting: Mutex<Counting>,
}

#[derive(Debug, Default)]
struct Counting {
    positions: foldhash::HashMap<Box<str>, Position>,
    learned_total: usize,
}

/// One position's count: its learned values and the values being counted.
#[derive(Debug, Default)]
struct Position {
    literals: usize,
    candidates: Vec<(u64, u32)>,
}

impl Position {
    /// Counts one request of the value hashed `hash`; its count now (0 when
    /// the summary was full and every count went down by one instead).
    fn tally(&mut self, hash: u64) -> u32 {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.0 == hash) {
            c.1 += 1;
            return c.1;
        }
        if self.candidates.len() < CANDIDATES {
            self.candidates.push((hash, 1));
            return 1;
        }
        for c in &mut self.candidates {
            c.1 -= 1;
        }
        self.candidates.retain(|c| c.1 > 0);
        0
    }
}

/// Whether a path segment looks like an identifier rather than a name.
pub fn is_identifier(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    let is_uuid = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    if is_uuid {
        return true;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if b.len() >= 8 && digits > 0 && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    // Opaque tokens: long, URL-safe, mixing letters and digits (base64url, ULIDs, slugs with ids).
    let token_chars = b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.~=".contains(c));
    let letters = b.iter().any(u8::is_ascii_alphabetic);
    token_chars && letters && ((b.len() >= 16 && digits >= 2) || b.len() >= 40)
}

impl Discovery {
    /// `max_positions`: positions tracked and values learned, each at most
    /// (and never more than [`MOST_POSITIONS`]).
    pub fn new(literal_after: u32, max_literals: usize, max_positions: usize) -> Discovery {
        Discovery {
            literal_after: literal_after.max(1),
            max_literals,
            max_positions: max_positions.min(MOST_POSITIONS),
            hasher: foldhash::fast::RandomState::default(),
            learned: ArcSwap::from_pointee(Snapshot::default()),
            counting: Mutex::default(),
        }
    }

    /// Writes the label template of `path` into `out` (after what `out`
    /// holds: the method and a space), counting the values not learned yet.
    /// `identifiers`: identifier-like segments are `:id` (not for a gRPC
    /// method's path, whose names are learned like any other).
    pub fn label_into(&self, path: &str, out: &mut String, identifiers: bool) {
        let snapshot = self.learned.load();
        let base = out.len();
        for seg in path.strip_prefix('/').unwrap_or(path).split('/') {
            let position_end = out.len();
            out.push('/');
            if seg.is_empty() {
                continue; // `/` itself, or a trailing slash: as sent
            }
            if identifiers && is_identifier(seg) {
                out.push_str(":id");
                continue;
            }
            let literal = {
                let position = &out[base..position_end];
                match snapshot.positions.get(position) {
                    Some(known) if known.values.contains(seg) => true,
                    Some(known) if known.closed => false,
                    None if snapshot.full => false,
                    _ => self.count(position, seg),
                }
            };
            out.push_str(if literal { seg } else { ":param" });
        }
    }

    /// Counts `seg` at `position` when the lock is free; `true` when it is
    /// (now) learned there.
    fn count(&self, position: &str, seg: &str) -> bool {
        if position.len() > LONGEST_POSITION || seg.len() > LONGEST_LITERAL {
            return false;
        }
        let hash = self.hasher.hash_one(seg);
        let mut counting = match self.counting.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        let snapshot = self.learned.load();
        if snapshot.positions.get(position).is_some_and(|known| known.values.contains(seg)) {
            return true; // learned by another worker since the caller's snapshot
        }
        let Counting { positions, learned_total } = &mut *counting;
        let room = positions.len() < self.max_positions && *learned_total < self.max_positions;
        let here = match positions.get_mut(position) {
            Some(p) => p,
            None if room => positions.entry(position.into()).or_default(),
            None => {
                if !snapshot.full {
                    self.learned.store(Arc::new(Snapshot { full: true, ..(**snapshot).clone() }));
                }
                return false;
            }
        };
        if here.literals >= self.max_literals || *learned_total >= self.max_positions {
            return false;
        }
        if here.tally(hash) < self.literal_after {
            return false;
        }
        here.candidates.retain(|c| c.0 != hash);
        here.literals += 1;
        *learned_total += 1;
        let mut next = (**snapshot).clone();
        let known = next.positions.entry(position.into()).or_default();
        let mut values = known.values.clone();
        values.insert(seg.into());
        *known = Arc::new(Known { values, closed: here.literals >= self.max_literals });
        next.full = positions.len() >= self.max_positions || *learned_total >= self.max_positions;
        self.learned.store(Arc::new(next));
        true
    }

    /// Positions tracked and values learned (for `memory.held`).
    pub fn held(&self) -> (usize, usize) {
        let counting = self.counting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (counting.positions.len(), counting.learned_total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(d: &Discovery, path: &str) -> String {
        let mut out = String::from("GET ");
        d.label_into(path, &mut out, true);
        out
    }

    #[test]
    fn a_value_becomes_literal_after_enough_requests_and_identifiers_stay_ids() {
        let d = Discovery::new(3, 20, 1000);
        assert_eq!(label(&d, "/api/users/me"), "GET /:param/:param/:param");
        assert_eq!(label(&d, "/api/users/me"), "GET /:param/:param/:param");
        // The third request of each value at the root: learned there.
        assert_eq!(label(&d, "/api/users/me"), "GET /api/:param/:param");
        for _ in 0..3 {
            label(&d, "/api/users/me");
        }
        assert_eq!(label(&d, "/api/users/me"), "GET /api/users/me");
        assert_eq!(label(&d, "/api/users/42"), "GET /api/users/:id");
        assert_eq!(label(&d, "/api/users/"), "GET /api/users/");
        assert_eq!(label(&d, "/"), "GET /");
    }

    #[test]
    fn one_off_values_never_appear_and_a_position_learns_at_most_max_literals() {
        let d = Discovery::new(3, 20, 1000);
        for _ in 0..3 {
            label(&d, "/p");
        }
        for i in 0..100_000 {
            assert_eq!(label(&d, &format!("/p/secret{i}")), "GET /p/:param");
        }
        let mut labels = std::collections::BTreeSet::new();
        for i in 0..60 {
            for _ in 0..3 {
                labels.insert(label(&d, &format!("/p/word{i}")));
            }
        }
        assert_eq!(labels.len(), 21, "20 words and :param: {labels:?}");
        assert!(labels.contains("GET /p/:param") && labels.contains("GET /p/word0"));
        let (positions, learned) = d.held();
        assert!(positions <= 3 && learned == 21, "{positions} positions, {learned} learned");
    }

    #[test]
    fn a_frequent_value_is_learned_under_a_flood_of_one_off_values() {
        let d = Discovery::new(3, 20, 1000);
        for _ in 0..3 {
            label(&d, "/search");
        }
        let mut seen = 0;
        for i in 0..2000 {
            if i % 10 == 0 && label(&d, "/search/books") == "GET /search/books" {
                seen += 1;
            }
            label(&d, &format!("/search/q{i}x"));
        }
        assert!(seen > 0, "one request in ten keeps its count among one-off values");
    }

    #[test]
    fn positions_and_learned_values_are_bounded() {
        let d = Discovery::new(1, 20, 50);
        for i in 0..10_000 {
            label(&d, &format!("/a{i}/b{i}/c{i}"));
        }
        let (positions, learned) = d.held();
        assert!(positions <= 50 && learned <= 50, "{positions} positions, {learned} learned");
        let deep = format!("/{}", "x/".repeat(400));
        for _ in 0..3 {
            label(&d, &deep);
        }
        assert!(d.held().0 <= 50);
    }
}
