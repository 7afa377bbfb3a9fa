//! One objective's good and bad requests over time: by second for the
//! last hour (windows up to an hour are exact to the second), by minute
//! for the whole period (longer windows to the minute). Both are sparse
//! (a second or minute without traffic holds nothing) and bounded: at most
//! 3 600 seconds and `period` minutes (40 320 for 28 days) of 24 bytes.

use std::collections::VecDeque;

/// Seconds kept by second.
pub const RECENT_SECONDS: u64 = 3_600;

/// (time, good, bad): a second or a minute since the Unix epoch.
type Bucket = (u64, u64, u64);

#[derive(Debug, Default, Clone)]
pub struct Counts {
    seconds: VecDeque<Bucket>,
    minutes: VecDeque<Bucket>,
    /// Minutes the period covers, and minutes kept (the longest window's
    /// when that is longer).
    period_minutes: u64,
    keep_minutes: u64,
}

/// Adds to the bucket of `at`. Samples arrive nearly in order: a late one
/// finds its own bucket among the last few, or joins the last (the order
/// of the buckets is kept either way).
fn add(buckets: &mut VecDeque<Bucket>, at: u64, good: u64, bad: u64) {
    match buckets.back() {
        Some(last) if at <= last.0 => {
            let own = buckets.iter().rev().take(8).position(|b| b.0 == at);
            let i = buckets.len() - 1 - own.unwrap_or(0);
            buckets[i].1 += good;
            buckets[i].2 += bad;
        }
        _ => buckets.push_back((at, good, bad)),
    }
}

fn sum_since(buckets: &VecDeque<Bucket>, from: u64) -> (u64, u64) {
    buckets.iter().rev().take_while(|b| b.0 >= from).fold((0, 0), |(g, b), x| (g + x.1, b + x.2))
}

impl Counts {
    pub fn new(period_minutes: u64, keep_minutes: u64) -> Counts {
        let period_minutes = period_minutes.max(1);
        Counts { period_minutes, keep_minutes: keep_minutes.max(period_minutes), ..Counts::default() }
    }

    /// `good` and `bad` requests that completed at `second` (since the epoch).
    pub fn record(&mut self, second: u64, good: u64, bad: u64) {
        add(&mut self.seconds, second, good, bad);
        add(&mut self.minutes, second / 60, good, bad);
    }

    /// Adds a minute read back from history (its seconds are not known),
    /// in its place among the minutes counted since start.
    pub fn restore(&mut self, minute: u64, good: u64, bad: u64) {
        match self.minutes.binary_search_by_key(&minute, |b| b.0) {
            Ok(i) => (self.minutes[i].1, self.minutes[i].2) = (self.minutes[i].1 + good, self.minutes[i].2 + bad),
            Err(i) => self.minutes.insert(i, (minute, good, bad)),
        }
    }

    /// Drops what has left the period (and the hour) as of `now`.
    pub fn expire(&mut self, now: u64) {
        while self.seconds.front().is_some_and(|b| b.0 + RECENT_SECONDS <= now) {
            self.seconds.pop_front();
        }
        let minute = now / 60;
        while self.minutes.front().is_some_and(|b| b.0 + self.keep_minutes <= minute) {
            self.minutes.pop_front();
        }
    }

    /// (good, bad) over the last `window_ms` as of `now`: to the second up
    /// to an hour, to the minute beyond.
    pub fn window(&self, now: u64, window_ms: u64) -> (u64, u64) {
        let secs = window_ms.div_ceil(1000).max(1);
        if secs <= RECENT_SECONDS {
            sum_since(&self.seconds, (now + 1).saturating_sub(secs))
        } else {
            sum_since(&self.minutes, (now / 60 + 1).saturating_sub(secs.div_ceil(60)))
        }
    }

    /// (good, bad) over the period as of `now`.
    pub fn period(&self, now: u64) -> (u64, u64) {
        sum_since(&self.minutes, (now / 60 + 1).saturating_sub(self.period_minutes))
    }

    /// Per minute, for history: (minute, good, bad) since `from` (a minute).
    pub fn minutes_since(&self, from: u64) -> Vec<(u64, u64, u64)> {
        self.minutes.iter().filter(|b| b.0 >= from).copied().collect()
    }

    /// Buckets held (seconds, minutes).
    pub fn held(&self) -> usize {
        self.seconds.len() + self.minutes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_exact_to_the_second_within_the_hour_and_to_the_minute_beyond() {
        let mut c = Counts::new(60 * 24, 60 * 24);
        let t0 = 1_800_000_000 / 60 * 60; // a minute's start
        c.record(t0, 10, 0);
        c.record(t0 + 50, 5, 5);
        c.record(t0 + 59, 0, 1);
        c.record(t0 + 58, 1, 0); // late, a second back
        assert_eq!(c.window(t0 + 59, 10_000), (6, 6));
        assert_eq!(c.window(t0 + 59, 1_000), (1, 1));
        assert_eq!(c.window(t0 + 59, 60_000), (16, 6));
        assert_eq!(c.period(t0 + 59), (16, 6));
        // Two hours later: the seconds are gone, the minutes stay.
        let later = t0 + 7_200;
        c.record(later, 1, 0);
        c.expire(later);
        assert_eq!(c.window(later, 600_000), (1, 0));
        assert_eq!(c.window(later, 3 * 3_600_000), (17, 6));
        // Minutes read back from history land in their place.
        c.restore(t0 / 60 - 5, 2, 1);
        c.restore(t0 / 60, 1, 0);
        assert_eq!(c.window(later, 3 * 3_600_000), (20, 7));
        assert_eq!(c.minutes_since(0).first(), Some(&(t0 / 60 - 5, 2, 1)));
        // A day later the period (one day) has let the first minute go.
        c.expire(t0 + 86_400);
        assert_eq!(c.period(t0 + 86_400), (1, 0));
        // Kept longer than the period (a longer window): the period still
        // sums only its own minutes.
        let mut long = Counts::new(60, 180);
        long.record(t0, 1, 1);
        long.record(t0 + 7_200, 1, 0);
        long.expire(t0 + 7_200);
        assert_eq!(long.period(t0 + 7_200), (1, 0));
        assert_eq!(long.window(t0 + 7_200, 3 * 3_600_000), (2, 1));
    }
}
