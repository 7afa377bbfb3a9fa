//! The requests in flight on one worker: when each began, its
//! `X-Request-Id` and its client's address, kept in a slab the worker alone
//! touches (no lock, no atomic) so that a request that turns out slow can
//! say who it was without the recording carrying those bytes through every
//! move. A recording holds its slot's index; the worker publishes the
//! oldest beginning with its samples (every 50 ms) for the slow-request
//! sampler. The slab grows to the worker's most requests at once and is
//! let go when it empties past [`SHRINK_PAST`] slots.

use std::net::IpAddr;
use std::time::Instant;

/// Slots kept once every request has ended; past this many the slab is freed.
const SHRINK_PAST: usize = 1_024;
/// `X-Request-Id`s this long or shorter are held in place (perfproxy's own
/// are 32 bytes, a UUID 36); longer ones (to 128) are boxed.
const INLINE_ID: usize = 40;

#[derive(Debug)]
struct Slot {
    /// `None`: free.
    started: Option<Instant>,
    id_len: u8,
    id: [u8; INLINE_ID],
    long_id: Option<Box<[u8]>>,
    client: Option<IpAddr>,
}

/// One worker's requests in flight.
#[derive(Debug, Default)]
pub struct InFlight {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl InFlight {
    /// A request began at `started`; returns its slot.
    #[inline]
    pub fn began(&mut self, started: Instant, request_id: &[u8]) -> u32 {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                let slot = Slot { started: None, id_len: 0, id: [0; INLINE_ID], long_id: None, client: None };
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[i as usize];
        (slot.started, slot.client) = (Some(started), None);
        if request_id.len() <= INLINE_ID {
            slot.id[..request_id.len()].copy_from_slice(request_id);
            slot.id_len = request_id.len() as u8;
            if slot.long_id.is_some() {
                slot.long_id = None;
            }
        } else {
            slot.long_id = Some(request_id.into());
        }
        i
    }

    /// The request in slot `i` is from `client`.
    #[inline]
    pub fn client(&mut self, i: u32, client: IpAddr) {
        if let Some(slot) = self.slots.get_mut(i as usize) {
            slot.client = Some(client);
        }
    }

    /// The request in slot `i`: its `X-Request-Id` and client.
    pub fn who(&self, i: u32) -> (&[u8], Option<IpAddr>) {
        match self.slots.get(i as usize) {
            Some(slot) => {
                let id = slot.long_id.as_deref().unwrap_or(&slot.id[..usize::from(slot.id_len)]);
                (id, slot.client)
            }
            None => (&[], None),
        }
    }

    /// The request in slot `i` ended.
    #[inline]
    pub fn ended(&mut self, i: u32) {
        if let Some(slot) = self.slots.get_mut(i as usize) {
            slot.started = None;
            self.free.push(i);
        }
    }

    /// When the oldest request in flight began; frees the slab when it is
    /// empty and large.
    pub fn oldest(&mut self) -> Option<Instant> {
        if self.free.len() == self.slots.len() && self.slots.len() > SHRINK_PAST {
            (self.slots, self.free) = Default::default();
        }
        self.slots.iter().filter_map(|s| s.started).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_request_is_known_until_it_ends_and_the_oldest_is_found() {
        let mut slab = InFlight::default();
        let t0 = Instant::now();
        assert_eq!(slab.oldest(), None);
        let a = slab.began(t0, b"first");
        let long = [b'x'; 100];
        let b = slab.began(t0 + Duration::from_millis(5), &long);
        slab.client(b, "10.0.0.9".parse().expect("an address"));
        assert_eq!(slab.who(a), (&b"first"[..], None));
        assert_eq!(slab.who(b), (&long[..], Some("10.0.0.9".parse().expect("an address"))));
        assert_eq!(slab.oldest(), Some(t0));
        slab.ended(a);
        assert_eq!(slab.oldest(), Some(t0 + Duration::from_millis(5)));
        // A freed slot is reused, its old id and client gone.
        let c = slab.began(t0 + Duration::from_millis(9), b"third");
        assert_eq!((c, slab.who(c)), (a, (&b"third"[..], None)));
        slab.ended(b);
        slab.ended(c);
        assert_eq!(slab.oldest(), None);
    }

    #[test]
    fn an_empty_slab_past_its_bound_is_freed() {
        let mut slab = InFlight::default();
        let t0 = Instant::now();
        let slots: Vec<u32> = (0..2_000).map(|_| slab.began(t0, b"id")).collect();
        for s in slots {
            slab.ended(s);
        }
        assert_eq!(slab.oldest(), None);
        assert_eq!((slab.slots.capacity(), slab.free.capacity()), (0, 0));
    }
}
