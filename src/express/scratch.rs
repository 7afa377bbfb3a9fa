//! The buffers an express request borrows while it is in flight
//! ([`Scratch`], and the read buffer), lent by its worker ([`ScratchPool`])
//! so that an idle keep-alive connection holds no buffer at all.

use std::cell::RefCell;

use bytes::BytesMut;

use super::head::RequestHead;
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

/// A worker's spare [`Scratch`] sets, read buffers and parsed heads (whose
/// field lists and texts keep their capacity).
#[derive(Debug, Default)]
#[allow(clippy::vec_box)] // heads are lent as boxes: kept boxed, none reallocated
pub struct ScratchPool(RefCell<Vec<Scratch>>, RefCell<Vec<BytesMut>>, RefCell<Vec<Box<RequestHead>>>);

impl ScratchPool {
    /// A parsed head's storage, for a connection whose client has sent something.
    pub(super) fn lend_head(&self) -> Box<RequestHead> {
        self.2.borrow_mut().pop().unwrap_or_default()
    }

    /// A head's storage back from a connection gone idle.
    pub(super) fn take_back_head(&self, head: Box<RequestHead>) {
        let mut spare = self.2.borrow_mut();
        if spare.len() < SCRATCH_KEPT {
            spare.push(head);
        }
    }

    /// A read buffer for a connection whose client has sent something.
    pub(super) fn lend_read(&self) -> BytesMut {
        self.1.borrow_mut().pop().unwrap_or_default()
    }

    /// A read buffer back from a connection gone idle (nothing unread in it).
    pub(super) fn take_back_read(&self, mut buf: BytesMut) {
        let mut spare = self.1.borrow_mut();
        if spare.len() < SCRATCH_KEPT && buf.capacity() > 0 && buf.capacity() <= 4 * READ_CHUNK {
            buf.clear();
            spare.push(buf);
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
