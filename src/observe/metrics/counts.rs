//! The counters behind a [`super::Hist`]: 16-bit while every count fits
//! (most buckets of most routes), widened once to `C` (the histogram's own
//! counter type) when one does not. As the HdrHistogram's Java "packed"
//! arrays do, this keeps a rarely used bucket at two bytes.

use hdrhistogram::Counter;

#[derive(Debug, Clone)]
pub enum Counts<C: Counter> {
    Narrow(Vec<u16>),
    Wide(Vec<C>),
}

/// `n` as a `C`, or `C`'s largest value when it does not fit.
pub fn saturate<C: Counter>(n: u64) -> C {
    [n, u64::from(u32::MAX), u64::from(u16::MAX), u64::from(u8::MAX)]
        .into_iter()
        .find_map(C::from_u64)
        .expect("every counter holds 255")
}

impl<C: Counter> Counts<C> {
    pub fn new() -> Counts<C> {
        Counts::Narrow(Vec::new())
    }

    /// The largest count `C` holds.
    fn ceiling() -> u64 {
        saturate::<C>(u64::MAX).as_u64()
    }

    pub fn len(&self) -> usize {
        match self {
            Counts::Narrow(v) => v.len(),
            Counts::Wide(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, j: usize) -> u64 {
        match self {
            Counts::Narrow(v) => u64::from(v[j]),
            Counts::Wide(v) => v[j].as_u64(),
        }
    }

    /// Sets counter `j` to `n` (at most `C`'s largest), widening if it must.
    pub fn set(&mut self, j: usize, n: u64) {
        let n = n.min(Self::ceiling());
        if let Counts::Narrow(v) = self {
            match u16::try_from(n) {
                Ok(n) => return v[j] = n,
                Err(_) if Self::ceiling() <= u64::from(u16::MAX) => return v[j] = u16::MAX,
                Err(_) => {
                    let mut wide = Vec::with_capacity(v.len());
                    wide.extend(v.iter().map(|c| saturate::<C>(u64::from(*c))));
                    *self = Counts::Wide(wide);
                }
            }
        }
        if let Counts::Wide(v) = self {
            v[j] = saturate(n);
        }
    }

    /// Counter `j` plus `n` (saturating).
    pub fn add(&mut self, j: usize, n: u64) {
        // The aggregator's per-sample path: no widening, no clamping.
        match self {
            // (`C` narrower than 16 bits takes the clamping path below.)
            Counts::Narrow(v) if std::mem::size_of::<C>() >= 2 => {
                if let Some(c) = u16::try_from(n).ok().and_then(|n| v[j].checked_add(n)) {
                    return v[j] = c;
                }
            }
            Counts::Narrow(_) => {}
            Counts::Wide(v) => {
                if let Some(c) = C::from_u64(n).and_then(|n| v[j].checked_add(&n)) {
                    return v[j] = c;
                }
            }
        }
        self.set(j, self.get(j).saturating_add(n));
    }

    /// `more` zero counters before the first.
    pub fn grow_front(&mut self, more: usize) {
        match self {
            Counts::Narrow(v) => prepend(v, more, 0),
            Counts::Wide(v) => prepend(v, more, C::zero()),
        }
    }

    /// Zero counters after the last, up to `len`.
    pub fn grow_to(&mut self, len: usize) {
        match self {
            Counts::Narrow(v) => append(v, len, 0),
            Counts::Wide(v) => append(v, len, C::zero()),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            Counts::Narrow(v) => v.capacity() * 2,
            Counts::Wide(v) => v.capacity() * std::mem::size_of::<C>(),
        }
    }
}

fn prepend<T: Copy>(v: &mut Vec<T>, more: usize, zero: T) {
    v.reserve_exact(more);
    v.splice(0..0, std::iter::repeat_n(zero, more));
}

fn append<T: Copy>(v: &mut Vec<T>, len: usize, zero: T) {
    if len > v.len() {
        v.reserve_exact(len - v.len());
        v.resize(len, zero);
    }
}
