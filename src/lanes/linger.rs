//! How a client connection ends when perfproxy closes it first: a lingering
//! close (nginx's `lingering_close`). An answer that ends a connection while
//! the client may still be sending (a `400`, `413`, `431`, an early answer)
//! is followed by a half-close and input read and discarded for up to
//! [`LINGER_TIME`] or [`LINGER_BYTES`], so the client reads the answer
//! instead of a reset (a socket closed with unread input sends a RST, and
//! the client's kernel may then discard the answer it had not read yet).
//!
//! A connection closed after a whole exchange with nothing more to read is
//! closed plainly. Both lanes linger inside the connection's own task, so a
//! lingering connection still counts against `max_connections` and still
//! holds its worker's drain (at most [`LINGER_TIME`]): the express lane
//! awaits [`discard`] when its own answer ended a connection or input is
//! waiting; hyper's lanes get their socket as a [`ClientIo`], which hands
//! it back when dropped (unless the client closed first or the drain closed
//! it idle), and the server lingers when hyper's connection ended in an
//! error (its `400`s) or input is waiting.
//! `ClientIo` also tells the drain whether a connection is busy
//! ([`Activity`]).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;

use crate::tls::send_clock::SendClock;

/// The longest a closed connection's input is read and discarded.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// The most input read and discarded after a close.
pub const LINGER_BYTES: usize = 64 * 1024;
/// How long an HTTP/2 connection that has carried streams must have been
/// silent both ways, with none in progress, before a drain closes it: h2
/// may still hold the end of an answer until the client opens its window.
pub const HTTP2_QUIET: Duration = Duration::from_secs(2);

/// Half-closes `io` (what was written goes first, then a FIN) and reads and
/// discards what the client still sends, up to [`LINGER_TIME`] or
/// [`LINGER_BYTES`], then drops it.
pub async fn discard<T: AsyncRead + AsyncWrite + Unpin>(mut io: T) {
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    // Bounded too: over TLS the close_notify waits for room in the socket,
    // which a client that stopped reading never makes.
    let _ = tokio::time::timeout_at(deadline, io.shutdown()).await;
    let mut left = LINGER_BYTES;
    let mut sink = [0u8; 1024];
    while left > 0 {
        match tokio::time::timeout_at(deadline, io.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

/// Milliseconds since the first call, a clock for [`Activity`]'s last I/O.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What a hyper connection is doing, for the drain: requests whose answer
/// is not yet sent, whether the socket refused a write (an answer still on
/// its way out), and for HTTP/2 whether it ever carried a stream and when
/// it last read or wrote.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    write_blocked: AtomicBool,
    multiplexed: bool,
    ever_busy: AtomicBool,
    last_io_ms: AtomicU64,
    /// Closed by the drain with nothing in progress: no lingering close.
    drained: AtomicBool,
    /// The last request came without a body (an idle HTTP/1.1 connection
    /// may be parked only then: nothing of it is left to read).
    bodiless: AtomicBool,
    /// hyper waits for a new head and has read nothing of one: the
    /// connection may be parked ([`Activity::take_parkable`]).
    parkable: AtomicBool,
    /// Being parked: hyper's close leaves the socket open and hands it back.
    parking: AtomicBool,
}

impl Activity {
    /// An HTTP/1.1 connection's (`multiplexed` false) or HTTP/2's.
    pub fn new(multiplexed: bool) -> Arc<Activity> {
        Arc::new(Activity { multiplexed, last_io_ms: AtomicU64::new(now_ms()), ..Activity::default() })
    }

    /// A request has begun; it ends when the guard drops (with its answer's body).
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.ever_busy.store(true, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Whether the connection can be closed now without cutting an answer
    /// (`Ok`), or when to ask again (`Err(Some)`; `Err(None)`: when it
    /// next makes progress). HTTP/1.1: no request in progress and nothing
    /// left to write. HTTP/2: no stream in progress and, once it has
    /// carried any, [`HTTP2_QUIET`] of silence (h2 keeps an answer's end
    /// until the client's window lets it out, unseen from here).
    pub fn closable(&self) -> Result<(), Option<Duration>> {
        if self.in_flight.load(Ordering::Relaxed) > 0 || self.write_blocked.load(Ordering::Relaxed) {
            return Err(None);
        }
        if !self.multiplexed || !self.ever_busy.load(Ordering::Relaxed) {
            return Ok(());
        }
        let quiet = Duration::from_millis(now_ms().saturating_sub(self.last_io_ms.load(Ordering::Relaxed)));
        match HTTP2_QUIET.checked_sub(quiet) {
            Some(left) if !left.is_zero() => Err(Some(left)),
            _ => Ok(()),
        }
    }

    /// The drain closes the connection: nothing is in progress, no lingering.
    pub fn drained(&self) {
        self.drained.store(true, Ordering::Relaxed);
    }

    /// Whether a request is in progress (its answer not all handed over).
    pub fn in_progress(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    /// Whether a request ever began on the connection.
    pub fn ever_busy(&self) -> bool {
        self.ever_busy.load(Ordering::Relaxed)
    }

    /// Notes whether the request hyper just read came with a body.
    pub fn last_request_bodiless(&self, bodiless: bool) {
        self.bodiless.store(bodiless, Ordering::Relaxed);
    }

    /// Whether the connection may be parked now (asked once per chance):
    /// hyper waits for a new head having read none of it, nothing is in
    /// progress and nothing is left to write.
    pub fn take_parkable(&self) -> bool {
        self.parkable.swap(false, Ordering::Relaxed) && self.closable().is_ok()
    }

    /// The connection is being parked: hyper's close will not shut the
    /// socket, which comes back (see [`ClientIo::parking`]).
    pub fn park(&self) {
        self.parking.store(true, Ordering::Relaxed);
    }

    /// Whether it was parked (its socket then waits for the next request).
    pub fn parked(&self) -> bool {
        self.parking.load(Ordering::Relaxed)
    }

    fn saw_io(&self) {
        if self.multiplexed {
            self.last_io_ms.store(now_ms(), Ordering::Relaxed);
        }
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

/// A client socket as hyper's lanes use it: handed back for a lingering
/// close when dropped (see [`ClientIo::new`]) unless the client closed (or
/// reset) first or the drain closed it idle, and its blocked writes and
/// I/O times recorded in its connection's [`Activity`].
#[derive(Debug)]
pub struct ClientIo<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    io: Option<T>,
    client_closed: bool,
    activity: Arc<Activity>,
    back: Option<oneshot::Sender<T>>,
    /// An HTTP/1.1 connection that may be parked when idle.
    parks: bool,
    /// The last bytes read ended a head (`CRLF CRLF`).
    ended_head: bool,
    /// `send_timeout_ms` over its writes.
    clock: SendClock,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientIo<T> {
    /// The socket for hyper, and where it comes back when hyper is done
    /// with it and perfproxy closed first (await [`discard`] on it).
    /// A write that waits `send_timeout` with none of its bytes taken fails.
    pub fn new(io: T, activity: Arc<Activity>, send_timeout: Duration) -> (ClientIo<T>, oneshot::Receiver<T>) {
        let (back, returned) = oneshot::channel();
        let io = ClientIo {
            io: Some(io),
            client_closed: false,
            activity,
            back: Some(back),
            parks: false,
            ended_head: false,
            clock: SendClock::new(send_timeout),
        };
        (io, returned)
    }

    /// As [`ClientIo::new`], for an HTTP/1.1 connection that may be parked:
    /// when hyper waits for a new head, the last request had no body and
    /// the last bytes read ended its head (so hyper holds nothing of the
    /// next one), [`Activity::take_parkable`] says so. Parked, hyper's
    /// close leaves the socket open and it comes back through the receiver.
    pub fn parking(io: T, activity: Arc<Activity>, send_timeout: Duration) -> (ClientIo<T>, oneshot::Receiver<T>) {
        let (mut io, returned) = ClientIo::new(io, activity, send_timeout);
        io.parks = true;
        (io, returned)
    }

    fn io(&mut self) -> Pin<&mut T> {
        Pin::new(self.io.as_mut().expect("the socket is taken only on drop"))
    }

    fn wrote<R>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        let polled = self.clock.watch(cx, polled);
        self.activity.write_blocked.store(polled.is_pending(), Ordering::Relaxed);
        if polled.is_ready() {
            self.activity.saw_io();
        }
        polled
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for ClientIo<T> {
    fn drop(&mut self) {
        // Back unless the client closed first: parked (to serve again), or
        // for a lingering close unless the drain closed it idle.
        let hand_back =
            !self.client_closed && (self.activity.parked() || !self.activity.drained.load(Ordering::Relaxed));
        if let (Some(io), Some(back), true) = (self.io.take(), self.back.take(), hand_back) {
            // Nobody waiting (an upgraded connection's tunnel): just closed.
            let _ = back.send(io);
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
            Poll::Ready(Ok(())) => {
                self.activity.saw_io();
                self.ended_head = buf.filled()[before..].ends_with(b"\r\n\r\n");
            }
            Poll::Pending => {
                if self.parks && self.ended_head && self.activity.bodiless.load(Ordering::Relaxed) {
                    self.activity.parkable.store(true, Ordering::Relaxed);
                }
            }
        }
        polled
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for ClientIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = self.io().poll_write(cx, buf);
        self.wrote(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = self.io().poll_write_vectored(cx, bufs);
        self.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(T::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = self.io().poll_flush(cx);
        self.wrote(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.activity.parked() {
            // Parked: the socket stays open for the next request.
            return Poll::Ready(Ok(()));
        }
        self.io().poll_shutdown(cx)
    }
}
