//! The express lane's deadlines (`header_read_timeout_ms`,
//! `upstream_timeout_ms`): one timer per connection, moved lazily as
//! requests follow each other instead of registered and removed per request.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// A connection's `timer` made to expire at `deadline` (`timeout` from
/// now), exactly, for little: the timer is moved only when it is set to
/// fire more than a lazy delay (300 ms, nginx's `NGX_TIMER_LAZY_DELAY`, for
/// timeouts of 2.4 s or more; none below) before `deadline`, so
/// back-to-back requests leave it alone; when it fires before `deadline`,
/// it is moved then and waited for again.
pub(super) fn deadline(
    mut timer: Pin<&mut tokio::time::Sleep>,
    deadline: tokio::time::Instant,
    timeout: std::time::Duration,
) -> Deadline<'_> {
    // 300 ms for timeouts of 2.4 s or more (an eighth of those is more);
    // shorter ones are moved every time. Compares only: this runs per request.
    const LAZY: std::time::Duration = std::time::Duration::from_millis(300);
    let lazy = if timeout >= LAZY * 8 { LAZY } else { std::time::Duration::ZERO };
    let set = timer.deadline();
    if set > deadline || deadline - set >= lazy || timer.is_elapsed() {
        timer.as_mut().reset(deadline);
    }
    Deadline { timer, at: deadline }
}

/// Resolves at `at` (see [`deadline`]).
pub(super) struct Deadline<'a> {
    timer: Pin<&'a mut tokio::time::Sleep>,
    at: tokio::time::Instant,
}

impl Future for Deadline<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        loop {
            std::task::ready!(self.timer.as_mut().poll(cx));
            if tokio::time::Instant::now() >= self.at {
                return Poll::Ready(());
            }
            let at = self.at;
            self.timer.as_mut().reset(at);
        }
    }
}
