//! How a client connection ends when perfproxy closes it first: a lingering
//! close (nginx's `lingering_close`). An answer that ends a connection while
//! the client may still be sending (a `400`, `413`, `431`, an early answer)
//! is followed by a half-close and input read and discarded for up to
//! [`LINGER_TIME`] or [`LINGER_BYTES`], so the client reads the answer
//! instead of a reset (a socket closed with unread input sends a RST, and
//! the client's kernel may then discard the answer it had not read yet).
//!
//! Both lanes use it: the express lane calls [`close`] when it ends a
//! connection; hyper's lanes get their socket as a [`ClientIo`], which
//! lingers when dropped unless the client closed first. `ClientIo` also
//! tells the drain whether a connection is busy ([`Activity`]): a request
//! in progress, or an answer still being written.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The longest a closed connection's input is read and discarded.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// The most input read and discarded after a close.
pub const LINGER_BYTES: usize = 64 * 1024;

/// Half-closes `io` (what was written goes first, then a FIN) and reads and
/// discards what the client still sends, up to [`LINGER_TIME`] or
/// [`LINGER_BYTES`], before dropping it: in a task of its own on the
/// worker's runtime (outside one, as a runtime shuts down, it just closes).
pub fn close<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: T) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(discard(io));
    }
}

async fn discard<T: AsyncRead + AsyncWrite + Unpin + Send>(mut io: T) {
    let _ = io.shutdown().await;
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut left = LINGER_BYTES;
    let mut sink = [0u8; 2048];
    while left > 0 {
        match tokio::time::timeout_at(deadline, io.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

/// What a hyper connection is doing, for the drain: requests whose answer
/// is not yet sent, and whether the socket refused a write (an answer still
/// on its way out).
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    write_blocked: AtomicBool,
}

impl Activity {
    /// A request has begun; it ends when the guard drops (with its answer's body).
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// No request in progress and nothing left to write: the connection
    /// can be closed without cutting an answer.
    pub fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 && !self.write_blocked.load(Ordering::Relaxed)
    }
}

/// A request in progress on a hyper connection (see [`Activity::enter`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client socket as hyper's lanes use it: lingers when dropped unless the
/// client closed (or reset) first, and records blocked writes in its
/// connection's [`Activity`].
#[derive(Debug)]
pub struct ClientIo<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    io: Option<T>,
    client_closed: bool,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientIo<T> {
    pub fn new(io: T, activity: Arc<Activity>) -> ClientIo<T> {
        ClientIo { io: Some(io), client_closed: false, activity }
    }

    fn io(&mut self) -> Pin<&mut T> {
        Pin::new(self.io.as_mut().expect("the socket is taken only on drop"))
    }

    fn wrote<R>(&self, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        self.activity.write_blocked.store(polled.is_pending(), Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for ClientIo<T> {
    fn drop(&mut self) {
        if let (Some(io), false) = (self.io.take(), self.client_closed) {
            close(io);
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for ClientIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.io().poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => self.client_closed = true,
            Poll::Ready(Err(_)) => self.client_closed = true,
            _ => {}
        }
        polled
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for ClientIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = self.io().poll_write(cx, buf);
        self.wrote(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = self.io().poll_write_vectored(cx, bufs);
        self.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(T::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = self.io().poll_flush(cx);
        self.wrote(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

/// An answer's body that keeps its request counted in progress
/// ([`InFlight`]) until hyper has sent it (or dropped it).
#[derive(Debug)]
pub struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(body: B, in_flight: InFlight) -> Tracked<B> {
        Tracked { body, _in_flight: in_flight }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
