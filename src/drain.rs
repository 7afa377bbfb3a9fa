//! A worker's open connections, counted and wakeable: when the worker
//! stops, every connection is woken to finish its in-flight request and
//! close. Both lanes register here; the server waits on it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::task::Waker;

use tokio::sync::Notify;

/// A worker's open connections: counted, and wakeable when it drains.
#[derive(Default)]
pub(crate) struct Drain {
    stopping: Cell<bool>,
    pub(crate) open: Cell<usize>,
    pub(crate) next_id: Cell<u64>,
    wakers: RefCell<HashMap<u64, Waker>>,
    pub(crate) closed: Notify,
}

impl Drain {
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Wakes `waker` when draining begins.
    pub(crate) fn register(&self, id: u64, waker: &Waker) {
        self.wakers.borrow_mut().insert(id, waker.clone());
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.wakers.borrow_mut().remove(&id);
    }

    pub(crate) fn begin(&self) {
        self.stopping.set(true);
        for (_, waker) in self.wakers.borrow_mut().drain() {
            waker.wake();
        }
    }
}
