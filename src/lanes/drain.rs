//! A worker's open connections, counted and wakeable: when the worker
//! stops, every connection is woken to finish its in-flight request and
//! close. Both lanes and HTTP/2 connections register here ([`Drainable`]
//! for hyper's); the server waits on it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use crate::lanes::linger::Activity;

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

    /// Resolves when draining begins (`id`'s waker registered meanwhile).
    pub(crate) fn stopped(&self, id: u64) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.stopping() {
                return Poll::Ready(());
            }
            self.register(id, cx.waker());
            Poll::Pending
        })
    }

    pub(crate) fn begin(&self) {
        self.stopping.set(true);
        for (_, waker) in self.wakers.borrow_mut().drain() {
            waker.wake();
        }
    }
}

/// A served connection that can be asked to finish what it is doing and close.
pub(crate) trait Graceful: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self)
    }
}

impl<I, S, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self)
    }
}

/// A client connection that finishes its in-flight requests and closes once
/// its worker drains (HTTP/1.1: after the current exchange; HTTP/2: a
/// GOAWAY, open streams finish). Only requests in progress hold it: once
/// asked to close, it ends as soon as its [`Activity`] says it can be
/// closed without cutting an answer, whatever the client does: an idle
/// keep-alive connection, a partial head, an HTTP/2 connection with no
/// open stream or one that never answers the GOAWAY's PING. Costs one
/// `Cell` read per poll.
pub(crate) struct Drainable<C> {
    conn: Pin<Box<C>>,
    drain: Rc<Drain>,
    id: u64,
    activity: Arc<Activity>,
    /// When to ask the activity again (an HTTP/2 connection not yet quiet).
    recheck: Option<Pin<Box<tokio::time::Sleep>>>,
    registered: bool,
    closing: bool,
}

impl<C> Drainable<C> {
    pub(crate) fn new(conn: C, drain: Rc<Drain>, id: u64, activity: Arc<Activity>) -> Drainable<C> {
        Drainable { conn: Box::pin(conn), drain, id, activity, recheck: None, registered: false, closing: false }
    }

    /// Whether a closing connection can end now; else a timer is armed to
    /// ask again when the activity says.
    fn closable_now(&mut self, cx: &mut Context<'_>) -> bool {
        // A timer that fired is asked again; a few times at most.
        for _ in 0..4 {
            match self.activity.closable() {
                Ok(()) => return true,
                Err(None) => return false,
                Err(Some(after)) => {
                    let at = tokio::time::Instant::now() + after;
                    match &mut self.recheck {
                        Some(sleep) => sleep.as_mut().reset(at),
                        None => self.recheck = Some(Box::pin(tokio::time::sleep_until(at))),
                    }
                    let sleep = self.recheck.as_mut().expect("armed above");
                    if sleep.as_mut().poll(cx).is_pending() {
                        return false;
                    }
                }
            }
        }
        false
    }
}

impl<C: Graceful> Drainable<C> {
    /// Asks the connection to finish what it is doing and close, as a drain does.
    pub(crate) fn close_gracefully(&mut self) {
        if !self.closing {
            self.closing = true;
            // Closed with nothing in progress: no lingering close after it.
            if self.activity.closable().is_ok() {
                self.activity.drained();
            }
            self.conn.as_mut().graceful_shutdown();
        }
    }
}

impl<C: Graceful<Output = hyper::Result<()>>> Future for Drainable<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.drain.stopping() {
            this.close_gracefully();
        } else if !this.registered {
            this.registered = true;
            this.drain.register(this.id, cx.waker());
        }
        match this.conn.as_mut().poll(cx) {
            // Polled once since the close was asked for: a GOAWAY is written.
            Poll::Pending if this.closing && this.closable_now(cx) => {
                this.activity.drained();
                Poll::Ready(Ok(()))
            }
            // Idle, nothing of a next head read: hyper closes (an idle
            // HTTP/1.1 connection at once) and the socket is parked.
            Poll::Pending if !this.closing && this.activity.take_parkable() => {
                this.activity.park();
                this.conn.as_mut().graceful_shutdown();
                this.conn.as_mut().poll(cx)
            }
            polled => polled,
        }
    }
}

impl<C> Drop for Drainable<C> {
    fn drop(&mut self) {
        self.drain.unregister(self.id);
    }
}
