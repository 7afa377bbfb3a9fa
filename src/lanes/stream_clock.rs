//! An answer's body as hyper's lanes send it ([`Tracked`]), and the send
//! timeout of an HTTP/2 stream.
//!
//! On HTTP/1.1 the send timeout lives in the socket (`linger::ClientIo`).
//! An HTTP/2 client can stop taking one stream's data without its socket
//! ever blocking: it reads the connection and answers PINGs but never
//! opens that stream's flow-control window. hyper then waits for window
//! before it asks the body for more, so the answer, its upstream
//! connection and up to a window of buffered data would stay for as long
//! as the client liked. Each stream's task therefore runs under a
//! [`StreamExec`] that watches its body: from the moment the body handed
//! hyper something (the head, a piece of data) until hyper asks it for the
//! next, past `send_timeout_ms` the task is dropped, which resets the
//! stream (`RST_STREAM`, `CANCEL`) and frees what it held, as nginx resets
//! a stream past its `send_timeout`. Data goes to hyper in pieces of at
//! most 16 KB, so a slow client that keeps taking them is never cut. The body learns its stream's clock
//! from the task polling it (a worker is one thread, and hyper polls the
//! body inside that task). hyper hands h2 a piece only once the window has
//! room past what it handed before, then asks for the next at once; so
//! that the clock covers an answer's last piece too, the body's last byte
//! goes as a piece of its own ([`Tracked::piece`]). A body whose end was
//! not known with its last data (a chunked upstream answer) ends with an
//! empty `DATA` frame; what h2 may still hold of it then is bounded by
//! the connection's own end (`http2::serve`).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use tokio::time::Instant;
use tracing::debug;

use crate::lanes::linger::InFlight;

/// When a stream's body last handed hyper something it has not come back
/// for (`None`: hyper is waiting on the body, not on the client).
#[derive(Debug, Default)]
struct StreamClock {
    handed: Cell<Option<Instant>>,
}

thread_local! {
    /// The clock of the stream task being polled on this worker.
    static POLLING: RefCell<Option<Rc<StreamClock>>> = const { RefCell::new(None) };
}

/// hyper's HTTP/2 server's executor: runs each stream's task on the
/// worker's `LocalSet` under its send timeout.
#[derive(Debug, Clone, Copy)]
pub struct StreamExec {
    pub send_timeout: Duration,
}

impl<F: Future<Output = ()> + 'static> hyper::rt::Executor<F> for StreamExec {
    fn execute(&self, stream: F) {
        let timeout = self.send_timeout;
        tokio::task::spawn_local(async move {
            let clock = Rc::new(StreamClock::default());
            let mut stream = std::pin::pin!(stream);
            let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
            std::future::poll_fn(|cx| {
                POLLING.with(|p| *p.borrow_mut() = Some(clock.clone()));
                let polled = stream.as_mut().poll(cx);
                POLLING.with(|p| p.borrow_mut().take());
                if polled.is_ready() {
                    return Poll::Ready(());
                }
                let Some(handed) = clock.handed.get() else {
                    timer = None;
                    return Poll::Pending;
                };
                let deadline = handed + timeout;
                let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        debug!("HTTP/2 client took nothing of a stream for send_timeout_ms: stream reset");
                        Poll::Ready(())
                    }
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
        });
    }
}

/// The most data an HTTP/2 stream's body hands hyper at once (one frame at
/// h2's default size): the client must take this much per
/// `send_timeout_ms` (about 270 bytes/s at the default), not a whole
/// stored body handed in one piece.
const PIECE: usize = 16 * 1024;

/// An answer's body as hyper's lanes send it: its request counts in
/// progress ([`InFlight`]) until hyper has sent it (or dropped it); on
/// HTTP/2 it keeps its stream's send clock and hands data over in pieces
/// of at most [`PIECE`].
#[derive(Debug)]
pub struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
    /// HTTP/2: the stream's clock.
    stream: Option<Rc<StreamClock>>,
    /// HTTP/2: data went out.
    sent_data: bool,
    /// HTTP/2: what is left of a piece of data larger than [`PIECE`], or
    /// the last byte of the body's data (`tail`).
    rest: Bytes,
    /// `rest` is the body's last byte, held back (see [`Tracked::piece`]).
    tail: bool,
    /// The held-back last byte went out: the body ends with it.
    tail_sent: bool,
}

impl<B: http_body::Body> Tracked<B> {
    /// Made in the request's task: on HTTP/2 its clock starts (the head is
    /// handed to hyper now).
    pub fn new(body: B, in_flight: InFlight) -> Tracked<B> {
        let stream = POLLING.with(|p| p.borrow().clone());
        if let Some(clock) = &stream {
            clock.handed.set(Some(Instant::now()));
        }
        Tracked {
            body,
            _in_flight: in_flight,
            stream,
            sent_data: false,
            rest: Bytes::new(),
            tail: false,
            tail_sent: false,
        }
    }

    /// The next piece of `data`, the rest kept for the next poll. The
    /// body's last data (it says it ended) keeps its last byte back as a
    /// piece of its own: hyper hands h2 a piece only once the stream's
    /// window has room past everything handed before, so the clock runs
    /// until the client has taken all but that byte (hyper's task would
    /// otherwise end with the last piece still waiting in h2, unwatched).
    fn piece(&mut self, mut data: Bytes) -> Bytes {
        if data.len() > PIECE {
            self.rest = data.split_off(PIECE);
        } else if data.len() > 1 && self.body.is_end_stream() {
            self.rest = data.split_off(data.len() - 1);
            self.tail = true;
        }
        data
    }
}

impl<B: http_body::Body<Data = Bytes> + Unpin> http_body::Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let Some(clock) = self.stream.clone() else {
            return Pin::new(&mut self.body).poll_frame(cx);
        };
        let polled = if self.rest.is_empty() {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(Frame::data(self.piece(data))))),
                    Err(frame) => Poll::Ready(Some(Ok(frame))),
                },
                other => other,
            }
        } else {
            let rest = std::mem::take(&mut self.rest);
            self.tail_sent = std::mem::take(&mut self.tail);
            Poll::Ready(Some(Ok(Frame::data(self.piece(rest)))))
        };
        let data = matches!(&polled, Poll::Ready(Some(Ok(frame))) if frame.is_data());
        clock.handed.set(data.then(Instant::now));
        self.sent_data |= data;
        polled
    }

    fn is_end_stream(&self) -> bool {
        // Once data went out on HTTP/2, the end goes with the held-back
        // last byte or, when the body's end was not known with its last
        // data, as an empty frame after it.
        self.body.is_end_stream() && self.rest.is_empty() && (!self.sent_data || self.tail_sent)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = self.body.size_hint();
        let rest = self.rest.len() as u64;
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + rest);
        }
        hint.set_lower(hint.lower() + rest);
        hint
    }
}
