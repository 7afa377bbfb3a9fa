//! A compact HdrHistogram: the buckets of the `hdrhistogram` crate (values
//! from 1, the same bucket boundaries and the same quantile rule), with the
//! counts kept only from the lowest to the highest bucket in use. A route
//! that has seen one latency holds one counter, not the 256–3 200 of a
//! dense histogram; one that sees 1–5 ms holds ~300, of 2 bytes each while
//! they fit ([`super::counts`]). Serialisation (the
//! cluster wire, history) goes through [`Hist::to_hdr`] and
//! [`Hist::from_hdr`], so what leaves the process is the crate's V2 format;
//! the tests check every figure against the crate's own histogram.

use hdrhistogram::{Counter, Histogram};

use super::counts::Counts;

/// The largest value kept (1 h in µs); larger ones count here.
pub const HIGHEST: u64 = 3_600_000_000;

/// Counts per bucket from `lo` on (see the module).
#[derive(Debug, Clone)]
pub struct Hist<C: Counter = u64> {
    /// The bucket index of `counts[0]`.
    lo: u32,
    counts: Counts<C>,
    total: u64,
    sigfig: u8,
    /// log2 of half the sub-bucket count (7 for 2 digits, 10 for 3).
    half_mag: u8,
}

impl<C: Counter> Hist<C> {
    /// An empty histogram of `sigfig` (1 to 3) significant digits; it holds
    /// no counts until the first value.
    pub fn new(sigfig: u8) -> Hist<C> {
        // The crate's sub-bucket count: 2 * 10^sigfig rounded up to a power of two.
        let half_mag = match sigfig {
            1 => 4,
            2 => 7,
            3 => 10,
            _ => panic!("1 to 3 significant digits are supported, not {sigfig}"),
        };
        Hist { lo: 0, counts: Counts::new(), total: 0, sigfig, half_mag }
    }

    pub fn sigfig(&self) -> u8 {
        self.sigfig
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    fn index_for(&self, value: u64) -> u32 {
        let mag = u32::from(self.half_mag) + 1;
        let mask = (1u64 << mag) - 1;
        let bucket = (64 - mag) - (value | mask).leading_zeros();
        let sub = (value >> bucket) as u32;
        ((bucket + 1) << self.half_mag) + sub - (1 << self.half_mag)
    }

    /// The lowest value of bucket `index`, and the width of its range.
    fn range_of(&self, index: u32) -> (u64, u64) {
        let half = 1u32 << self.half_mag;
        let bucket = (index >> self.half_mag).saturating_sub(1);
        let sub = if index >> self.half_mag == 0 { index } else { (index & (half - 1)) + half };
        (u64::from(sub) << bucket, 1u64 << bucket)
    }

    fn highest_at(&self, index: u32) -> u64 {
        let (low, width) = self.range_of(index);
        low + width - 1
    }

    /// Makes room for buckets `from..=to`.
    fn cover(&mut self, from: u32, to: u32) {
        if self.counts.is_empty() {
            self.lo = from;
        }
        if from < self.lo {
            self.counts.grow_front((self.lo - from) as usize);
            self.lo = from;
        }
        self.counts.grow_to((to - self.lo + 1) as usize);
    }

    /// Counts `value` (clamped to 1 µs .. 1 h) `n` more times; a counter at
    /// its maximum stays there.
    pub fn record_n(&mut self, value: u64, n: u64) {
        if n == 0 {
            return;
        }
        let i = self.index_for(value.clamp(1, HIGHEST));
        self.cover(i, i);
        self.counts.add((i - self.lo) as usize, n);
        self.total = self.total.saturating_add(n);
    }

    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Buckets with counts: (index, count).
    fn nonzero(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        let lo = self.lo;
        (0..self.counts.len()).map(move |j| (lo + j as u32, self.counts.get(j))).filter(|(_, c)| *c > 0)
    }

    /// Adds `other`'s counts into these.
    pub fn add<D: Counter>(&mut self, other: &Hist<D>) {
        if other.is_empty() {
            return;
        }
        if self.sigfig != other.sigfig {
            // Another precision's buckets: each counted at its lowest value.
            for (i, c) in other.nonzero() {
                self.record_n(other.range_of(i).0, c);
            }
            return;
        }
        let (from, to) = (other.lo, other.lo + other.counts.len() as u32 - 1);
        self.cover(from, to);
        let at = (from - self.lo) as usize;
        for j in 0..other.counts.len() {
            self.counts.add(at + j, other.counts.get(j));
        }
        self.total = self.total.saturating_add(other.total);
    }

    /// Takes `other`'s counts away; `Err` (nothing changed) when it holds a
    /// count these do not.
    pub fn subtract(&mut self, other: &Hist<C>) -> Result<(), ()> {
        if self.sigfig != other.sigfig {
            return Err(()); // other buckets: nothing to take them from
        }
        let holds = other.nonzero().all(|(i, c)| {
            i >= self.lo && ((i - self.lo) as usize) < self.counts.len() && self.counts.get((i - self.lo) as usize) >= c
        });
        if !holds {
            return Err(());
        }
        for (i, c) in other.nonzero() {
            let j = (i - self.lo) as usize;
            self.counts.set(j, self.counts.get(j) - c);
        }
        self.total -= other.total.min(self.total);
        Ok(())
    }

    pub fn reset(&mut self) {
        self.counts = Counts::new();
        self.total = 0;
    }

    /// The crate's `value_at_quantile`: the highest value of the bucket the
    /// `ceil(q × count)`-th value falls in (0 when empty).
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        let q = if q > 1.0 { 1.0 } else { q }; // as the crate (a NaN stays NaN)
        let target = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen: u64 = 0;
        for (i, c) in self.nonzero() {
            seen = seen.saturating_add(c);
            if seen >= target {
                return if q == 0.0 { self.range_of(i).0 } else { self.highest_at(i) };
            }
        }
        0
    }

    /// The lowest value of the lowest bucket in use (0 when empty).
    pub fn min(&self) -> u64 {
        self.nonzero().next().map_or(0, |(i, _)| self.range_of(i).0)
    }

    /// The highest value of the highest bucket in use (0 when empty).
    pub fn max(&self) -> u64 {
        self.nonzero().last().map_or(0, |(i, _)| self.highest_at(i))
    }

    /// Each bucket in use: its highest value and its count, lowest first
    /// (the crate's `iter_recorded`).
    pub fn recorded(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.nonzero().map(|(i, c)| (self.highest_at(i), c))
    }

    /// The crate's histogram with these counts (for its serialisations).
    pub fn to_hdr(&self) -> Histogram<u64> {
        let mut h = Histogram::new(self.sigfig).expect("1 to 3 significant digits are supported");
        for (i, c) in self.nonzero() {
            h.record_n(self.range_of(i).0, c).expect("an auto-resizing u64 histogram takes any count under 1 h");
        }
        h
    }

    /// These buckets counted from the crate's histogram `h`.
    pub fn from_hdr<D: Counter>(h: &Histogram<D>, sigfig: u8) -> Hist<C> {
        let mut out = Hist::new(sigfig);
        for v in h.iter_recorded() {
            out.record_n(h.lowest_equivalent(v.value_iterated_to()), v.count_at_value().as_u64());
        }
        out
    }

    /// Bytes held on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.counts.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(sigfig: u8, values: &[u64]) -> (Hist<u64>, Histogram<u64>) {
        let mut mine = Hist::new(sigfig);
        let mut theirs = Histogram::new(sigfig).unwrap();
        for v in values {
            mine.record(*v);
            theirs.record(*v).unwrap();
        }
        (mine, theirs)
    }

    fn values(seed: u64, n: usize) -> Vec<u64> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n)
            .map(|_| {
                // Log-uniform over 1 µs .. 1 h, so every bucket size is reached.
                let exp = rng.f64() * (HIGHEST as f64).ln();
                (exp.exp() as u64).clamp(1, HIGHEST)
            })
            .collect()
    }

    #[test]
    fn every_figure_matches_the_crates_histogram() {
        for sigfig in 1..=3 {
            for seed in 0..20 {
                let n = [1, 2, 7, 100, 5_000][seed as usize % 5];
                let (mine, theirs) = both(sigfig, &values(seed, n));
                assert_eq!(mine.len(), theirs.len());
                for q in [0.0, 0.001, 0.1, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
                    assert_eq!(
                        mine.value_at_quantile(q),
                        theirs.value_at_quantile(q),
                        "sigfig {sigfig} seed {seed} q {q}"
                    );
                }
                assert_eq!(mine.max(), theirs.max());
                assert_eq!(mine.value_at_quantile(f64::NAN), theirs.value_at_quantile(f64::NAN));
                let recorded: Vec<_> =
                    theirs.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
                assert_eq!(mine.recorded().collect::<Vec<_>>(), recorded);
                let back = mine.to_hdr();
                assert_eq!(back.value_at_quantile(0.99), theirs.value_at_quantile(0.99));
                assert_eq!(back.len(), theirs.len());
                let again = Hist::<u64>::from_hdr(&theirs, sigfig);
                assert_eq!(again.recorded().collect::<Vec<_>>(), mine.recorded().collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn adding_and_subtracting_match_the_crate() {
        let (mut a, mut ha) = both(2, &values(1, 300));
        let (b, hb) = both(2, &values(2, 40));
        a.add(&b);
        ha.add(&hb).unwrap();
        assert_eq!(a.recorded().collect::<Vec<_>>(), Hist::<u64>::from_hdr(&ha, 2).recorded().collect::<Vec<_>>());
        a.subtract(&b).unwrap();
        ha.subtract(&hb).unwrap();
        assert_eq!(a.value_at_quantile(0.5), ha.value_at_quantile(0.5));
        assert_eq!(a.len(), 300);
        // Another precision's buckets are not these: nothing is taken.
        assert!(a.subtract(&Hist::<u64>::from_hdr(&hb, 3)).is_err() || hb.is_empty());
        // Another precision's counts land in these buckets, as the crate's do.
        let (mut fine, mut hfine) = both(3, &values(4, 200));
        fine.add(&b);
        hfine.add(&hb).unwrap();
        assert_eq!(fine.value_at_quantile(0.9), hfine.value_at_quantile(0.9));
        assert_eq!(fine.len(), 240);
        let (c, _) = both(2, &[HIGHEST]);
        let before = a.recorded().count();
        assert!(a.subtract(&c).is_err() || a.len() < 300);
        assert_eq!(a.recorded().count(), before, "a refused subtraction changes nothing");
        // Into a smaller counter: counts saturate, never wrap.
        let mut small = Hist::<u8>::new(2);
        let mut many = Hist::<u64>::new(2);
        many.record_n(500, 1_000);
        small.add(&many);
        assert_eq!(small.recorded().next(), Some((501, 255)), "500's bucket is 500-501");
        // Widened past 16 bits, never wrapped.
        let mut wide = Hist::<u64>::new(2);
        wide.record_n(700, 65_000);
        wide.record_n(900, 3);
        assert_eq!(wide.heap_bytes() % 2, 0);
        wide.record_n(700, 1_000);
        wide.record_n(700, 5_000_000_000);
        assert_eq!(wide.recorded().next(), Some((703, 5_000_066_000)));
        assert_eq!(wide.len(), 5_000_066_003);
        let mut slot = Hist::<u32>::new(2);
        slot.add(&wide);
        assert_eq!(slot.recorded().next(), Some((703, u64::from(u32::MAX))), "a 32-bit counter saturates");
    }

    #[test]
    fn one_value_holds_one_counter() {
        let (one, _) = both(2, &[1_234]);
        assert_eq!(one.heap_bytes(), 2, "a 16-bit counter");
        let (spread, dense) = both(2, &values(3, 10_000).iter().map(|v| 1_000 + v % 4_000).collect::<Vec<_>>());
        assert!(spread.heap_bytes() < dense.distinct_values() * 8 / 2, "{} bytes", spread.heap_bytes());
    }
}
