//! Counts per key over a sliding window, in bounded memory: two
//! pingora-limits count-min [`Estimator`]s, one for the current window and
//! one for the previous, read as Cloudflare's sliding estimate (the
//! previous window's count weighted by what is left of it, plus the
//! current one's). The same idea as pingora-limits' `Rate`, driven by the
//! caller's clock: a request already knows when it began, where `Rate`
//! reads the clock, takes two `SeqCst` atomics on every call and asserts
//! when two threads reset it at once. A sketch never undercounts; each
//! count may read high by `e / slots` of the window's total, with
//! probability at most `e^-hashes`.

use std::hash::Hash;
use std::time::{Duration, Instant};

use pingora_limits::estimator::Estimator;

/// Counts for the current and the previous window.
pub struct SlidingCounts {
    current: Estimator,
    previous: Estimator,
    /// Every key's counts added up, per window: no key's count is more.
    totals: [isize; 2],
    window: Duration,
    /// When the current window began, and ends.
    began: Instant,
    ends: Instant,
}

impl std::fmt::Debug for SlidingCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlidingCounts").field("window", &self.window).finish_non_exhaustive()
    }
}

impl SlidingCounts {
    /// `hashes` rows of `slots` counters per window.
    pub fn new(window: Duration, hashes: usize, slots: usize, now: Instant) -> SlidingCounts {
        SlidingCounts {
            current: Estimator::new(hashes, slots),
            previous: Estimator::new(hashes, slots),
            totals: [0; 2],
            window: window.max(Duration::from_millis(1)),
            began: now,
            ends: now + window.max(Duration::from_millis(1)),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// When the current window ends.
    pub fn ends(&self) -> Instant {
        self.ends
    }

    /// Moves on to the window that holds `now` (an earlier `now` changes nothing).
    #[inline]
    pub fn advance(&mut self, now: Instant) {
        if now >= self.ends {
            self.roll(now);
        }
    }

    #[inline(never)]
    fn roll(&mut self, now: Instant) {
        let past = now.saturating_duration_since(self.began);
        if past < self.window * 2 {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.reset();
            self.totals = [0, self.totals[0]];
            self.began += self.window;
        } else {
            // Two windows or more without a count: nothing is recent.
            self.current.reset();
            self.previous.reset();
            self.totals = [0, 0];
            let windows = past.as_nanos() / self.window.as_nanos();
            self.began += self.window * windows.min(u128::from(u32::MAX)) as u32;
        }
        self.ends = self.began + self.window;
    }

    /// `key`'s count in the previous window.
    #[inline]
    pub fn previous<K: Hash>(&self, key: &K) -> f64 {
        if self.totals[1] == 0 {
            return 0.0;
        }
        self.previous.get(key).max(0) as f64
    }

    /// All keys' counts in the previous window: at least any one key's.
    #[inline]
    pub fn previous_total(&self) -> f64 {
        self.totals[1] as f64
    }

    /// How far into the current window `now` is (0..1).
    pub fn fraction(&self, now: Instant) -> f64 {
        let into = now.saturating_duration_since(self.began).as_secs_f64() / self.window.as_secs_f64();
        into.min(1.0)
    }

    /// Adds `n` to `key` in the current window; its count there now.
    #[inline]
    pub fn add<K: Hash>(&mut self, key: &K, n: isize) -> isize {
        self.totals[0] += n;
        self.current.incr(key, n)
    }

    /// Takes back `n` that [`SlidingCounts::add`] counted.
    pub fn take_back<K: Hash>(&mut self, key: &K, n: isize) {
        self.totals[0] -= n;
        self.current.decr(key, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_window_fades_as_the_current_one_fills() {
        let t0 = Instant::now();
        let s = |secs: f64| t0 + Duration::from_secs_f64(secs);
        let mut c = SlidingCounts::new(Duration::from_secs(10), 4, 1024, t0);
        assert_eq!(c.add(&7u64, 100), 100);
        c.advance(s(12.5));
        assert_eq!(c.add(&7u64, 10), 10);
        assert_eq!(c.previous(&7u64), 100.0);
        assert_eq!(c.previous_total(), 100.0);
        assert!((c.fraction(s(12.5)) - 0.25).abs() < 1e-9);
        // Aligned to the windows: the next begins at 20 s.
        c.advance(s(19.9));
        assert_eq!(c.add(&7u64, 0), 10);
        c.advance(s(20.0));
        assert_eq!(c.previous(&7u64), 10.0);
        assert_eq!(c.add(&7u64, 0), 0);
        // Two windows without a count: nothing left.
        c.advance(s(45.0));
        assert_eq!((c.previous(&7u64), c.add(&7u64, 0)), (0.0, 0));
        assert_eq!(c.ends(), s(50.0));
        c.add(&7u64, 1);
        c.take_back(&7u64, 1);
        assert_eq!(c.add(&7u64, 0), 0);
    }
}
