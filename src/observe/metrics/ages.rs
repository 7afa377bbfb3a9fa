//! How old the requests in flight are, for the slow-request sampler: each
//! worker counts its requests in flight by when they began (a ring of
//! [`SLOTS`] slots of [`QUANTUM_MS`], plain cells: only the worker touches
//! them) and publishes the oldest beginning it holds with its samples.
//! A request older than the ring's span shares its slot with newer ones;
//! the slot keeps the oldest beginning until all of them end (a newer
//! request may look older for a while: the sampler then looks once too
//! often, never once too few).

use std::cell::Cell;
use std::time::Duration;

/// The resolution of a beginning.
pub const QUANTUM_MS: u64 = 125;
/// Slots in the ring (16 s at 125 ms).
const SLOTS: usize = 128;

/// One worker's requests in flight by beginning.
#[derive(Debug)]
pub struct Ages {
    /// (quantum of the oldest beginning counted here, requests counted).
    slots: [Cell<(u32, u32)>; SLOTS],
}

impl Default for Ages {
    fn default() -> Self {
        Ages { slots: std::array::from_fn(|_| Cell::new((0, 0))) }
    }
}

/// The quantum a request `since` the metrics started began in.
pub fn quantum(since: Duration) -> u32 {
    (since.as_secs() * (1000 / QUANTUM_MS) + u64::from(since.subsec_millis()) / QUANTUM_MS) as u32
}

impl Ages {
    /// A request began in `quantum`; returns its slot, for [`Ages::ended`].
    #[inline]
    pub fn began(&self, quantum: u32) -> u8 {
        let i = quantum as usize % SLOTS;
        let (oldest, n) = self.slots[i].get();
        self.slots[i].set((if n == 0 { quantum } else { oldest.min(quantum) }, n + 1));
        i as u8
    }

    /// The request counted in `slot` ended.
    #[inline]
    pub fn ended(&self, slot: u8) {
        let cell = &self.slots[usize::from(slot)];
        let (oldest, n) = cell.get();
        cell.set((oldest, n.saturating_sub(1)));
    }

    /// The quantum the oldest request in flight began in.
    pub fn oldest(&self) -> Option<u32> {
        self.slots.iter().map(Cell::get).filter(|&(_, n)| n > 0).map(|(q, _)| q).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_request_in_flight_is_known_until_it_ends() {
        let ages = Ages::default();
        assert_eq!(ages.oldest(), None);
        let a = ages.began(quantum(Duration::from_millis(1_000)));
        let b = ages.began(quantum(Duration::from_millis(1_300)));
        assert_eq!(ages.oldest(), Some(8));
        ages.ended(a);
        assert_eq!(ages.oldest(), Some(10));
        // A request a ring's span later shares the slot, which keeps the older.
        let c = ages.began(10 + SLOTS as u32);
        assert_eq!(c, b);
        assert_eq!(ages.oldest(), Some(10));
        ages.ended(b);
        ages.ended(c);
        assert_eq!(ages.oldest(), None);
    }
}
