//! The buffers an express request borrows while it is in flight
//! ([`Scratch`]), lent by its worker thread's [`ScratchPool`] so that an idle
//! keep-alive connection holds no buffer at all: its read buffer and its
//! head's buffers are lent too, while a request is read and served.

use std::cell::RefCell;

use bytes::BytesMut;

use super::head::HeadParts;
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

/// A worker's spare [`Scratch`] sets, and its spare read buffers (an idle
/// keep-alive connection holds none: it waits for readability, then
/// borrows one).
#[derive(Debug, Default)]
pub struct ScratchPool(RefCell<Vec<Scratch>>, RefCell<Vec<BytesMut>>, RefCell<Vec<HeadParts>>);

thread_local! {
    /// This worker's pool: a worker is one thread, and only its own
    /// connections borrow from it.
    static POOL: ScratchPool = const {
        ScratchPool(RefCell::new(Vec::new()), RefCell::new(Vec::new()), RefCell::new(Vec::new()))
    };
}

impl ScratchPool {
    /// Runs `f` with this worker thread's pool.
    pub(super) fn with<R>(f: impl FnOnce(&ScratchPool) -> R) -> R {
        POOL.with(f)
    }

    /// A read buffer with room for a head's first chunk.
    pub(super) fn lend_buf(&self) -> BytesMut {
        self.1.borrow_mut().pop().unwrap_or_else(|| BytesMut::with_capacity(super::HEAD_CHUNK))
    }

    /// An empty read buffer back; kept if it is no larger than two head
    /// chunks (a larger one was grown by a body and is let go).
    pub(super) fn take_back_buf(&self, mut buf: BytesMut) {
        let mut spare = self.1.borrow_mut();
        buf.clear();
        // Reclaims the space before the consumed bytes (no copy: it is empty).
        buf.reserve(super::HEAD_CHUNK);
        if spare.len() < SCRATCH_KEPT && buf.capacity() <= super::HEAD_CHUNK * 2 {
            spare.push(buf);
        }
    }

    /// A head's buffers, for the head a connection is about to read.
    pub(super) fn lend_head(&self) -> HeadParts {
        self.2.borrow_mut().pop().unwrap_or_default()
    }

    /// A head's buffers back from a connection gone idle (kept unless a
    /// head with many fields grew them).
    pub(super) fn take_back_head(&self, parts: HeadParts) {
        let mut spare = self.2.borrow_mut();
        if spare.len() < SCRATCH_KEPT && parts.small() {
            spare.push(parts);
        }
    }

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
