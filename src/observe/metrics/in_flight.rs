//! The requests in flight on one worker: when each began, its
//! `X-Request-Id` and its client's address, kept in a slab the worker alone
//! touches (no lock, no atomic) so that a request that turns out slow can
//! say who it was without the recording carrying those bytes through every
//! move. A recording holds its slot's index; the worker publishes the
//! oldest beginning with its samples (every 50 ms) for the slow-request
//! sampler. The slab grows to the worker's most requests at once; past
//! [`SHRINK_PAST`] slots, once at least half are free, new requests take
//! the lowest free slots and the free slots at its end are let go, so it
//! shrinks back as a burst drains even while requests keep coming.

use std::net::IpAddr;
use std::time::Instant;

/// Slots a slab keeps without shrinking.
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

    /// When the oldest request in flight began (the worker asks every 50
    /// ms); shrinks the slab when it is large and mostly free.
    pub fn oldest(&mut self) -> Option<Instant> {
        if self.slots.len() > SHRINK_PAST && self.free.len() * 2 > self.slots.len() {
            self.shrink();
        }
        self.slots.iter().filter_map(|s| s.started).min()
    }

    /// Requests in flight now.
    #[inline]
    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Slots held (in use or free), for `memory.held`.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Lets the free slots at the end go, and hands out the lowest free
    /// slots first from now on (the free list highest first: `pop` takes
    /// the lowest), so the end keeps draining.
    fn shrink(&mut self) {
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        let mut gone = 0;
        while self.slots.last().is_some_and(|s| s.started.is_none()) {
            self.slots.pop();
            gone += 1;
        }
        // The free list is exactly the free slots: the `gone` highest.
        self.free.drain(..gone);
        if self.slots.capacity() > 2 * self.slots.len().max(SHRINK_PAST) {
            self.slots.shrink_to(self.slots.len().max(SHRINK_PAST));
            self.free.shrink_to(self.slots.len());
        }
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
    fn a_slab_shrinks_back_after_a_burst_while_requests_keep_coming() {
        let mut slab = InFlight::default();
        let t0 = Instant::now();
        let burst: Vec<u32> = (0..8_000).map(|_| slab.began(t0, b"id")).collect();
        // The burst drains but for a few requests that keep arriving and ending.
        for s in burst {
            slab.ended(s);
        }
        let mut live = vec![slab.began(t0, b"a"), slab.began(t0, b"b")];
        for round in 0..4 {
            slab.oldest();
            // New requests take the lowest free slots; old ones end.
            let next = [slab.began(t0, b"c"), slab.began(t0, b"d")];
            for s in live.drain(..) {
                slab.ended(s);
            }
            live.extend(next);
            assert!(live.iter().all(|&s| s < 8), "round {round}: {live:?}");
        }
        slab.oldest();
        assert!(slab.len() <= 8, "{}", slab.len());
        assert!(slab.slots.capacity() <= 2 * SHRINK_PAST);
        assert_eq!(slab.free.len(), slab.slots.iter().filter(|s| s.started.is_none()).count());
    }
}
