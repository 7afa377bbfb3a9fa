//! The buffers an express request borrows while it is in flight
//! ([`Scratch`]), lent by its worker ([`ScratchPool`]) so that an idle
//! keep-alive connection holds only its read buffer.

use std::cell::RefCell;

use bytes::BytesMut;

use super::READ_CHUNK;

/// The buffers a request needs while it is in flight: a worker keeps a few
/// and lends them out, so an idle keep-alive connection holds only its read
/// buffer.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The upstream request, kept until answered (a stale connection retries it).
    pub(super) upstream_out: Vec<u8>,
    /// Bytes from the upstream not yet used.
    pub(super) up_buf: BytesMut,
    /// What the client is sent next.
    pub(super) out: Vec<u8>,
}

/// Scratch sets a worker keeps for its next requests, at most.
const SCRATCH_KEPT: usize = 64;

/// A worker's spare [`Scratch`] sets.
#[derive(Debug, Default)]
pub struct ScratchPool(RefCell<Vec<Scratch>>);

impl ScratchPool {
    pub(super) fn lend(&self) -> Scratch {
        self.0.borrow_mut().pop().unwrap_or_else(|| Scratch {
            upstream_out: Vec::with_capacity(1024),
            up_buf: BytesMut::new(),
            out: Vec::with_capacity(2048),
        })
    }

    pub(super) fn take_back(&self, mut scratch: Scratch) {
        let mut spare = self.0.borrow_mut();
        if spare.len() < SCRATCH_KEPT && scratch.up_buf.capacity() <= 4 * READ_CHUNK {
            scratch.up_buf.clear();
            spare.push(scratch);
        }
    }
}
