//! The send timeout (`send_timeout_ms`, nginx's `send_timeout`): how long
//! a write to a client may wait with none of its bytes taken. A client that
//! stops reading (its receive window full: a slow-read attack, or a client
//! that hung) would otherwise hold its connection, the upstream connection
//! behind it and the answer's buffers for as long as it liked. The clock
//! starts when a write has to wait and starts again whenever the client
//! takes bytes, so a slow client that keeps reading is never cut; a write
//! that waited the whole timeout fails with [`SendTimedOut`] and the
//! connection is closed. Both lanes keep one: the express lane around each
//! of its writes ([`ClientStream::send`](super::ClientStream::send)),
//! hyper's lanes in the socket they write to.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A client took none of an answer's bytes for `send_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("the client took nothing for send_timeout_ms")]
pub struct SendTimedOut;

/// Whether a write failed because the client stopped reading.
pub fn is_send_timeout(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<SendTimedOut>())
}

/// One connection's send clock: no timer at all until a write waits (the
/// timer is made then, and kept for the connection's next waits).
#[derive(Debug)]
pub struct SendClock {
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// A write went through since the timer was last set.
    moved: bool,
}

impl SendClock {
    pub fn new(timeout: Duration) -> SendClock {
        SendClock { timeout, timer: None, moved: false }
    }

    /// What a write (or a flush) polled, passed on; a wait that has lasted
    /// the whole timeout since the client last took bytes becomes the
    /// [`SendTimedOut`] error.
    pub fn watch<R>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.moved = true;
            return polled;
        }
        // The clock is read only when the timer is (re)set, not on every
        // wake of a wait that goes on.
        let timer = match &mut self.timer {
            None => self.timer.insert(Box::pin(tokio::time::sleep_until(Instant::now() + self.timeout))),
            Some(timer) => {
                if self.moved {
                    timer.as_mut().reset(Instant::now() + self.timeout);
                }
                timer
            }
        };
        self.moved = false;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, SendTimedOut))),
            Poll::Pending => Poll::Pending,
        }
    }
}
