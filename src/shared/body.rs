//! The body that goes to the client: [`ProxyBody`] (the upstream's streamed body, or bytes perfproxy made
//! itself). Neither is boxed, and neither buffers: frames pass through as
//! they arrive (compressed one by one when the answer is, [`Encoder`]); a
//! response being stored keeps a copy of what the client gets on the side
//! ([`Fill`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::cache::fill::Fill;
use crate::compress::Encoder;
use crate::observe::metrics::Recording;
use crate::upstream::Lease;

/// Why a body sent to the client broke off.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Upstream(#[from] hyper::Error),
    /// No more of the upstream's body within `upstream_read_timeout_ms`.
    #[error("upstream body stalled past upstream_read_timeout_ms")]
    Stalled,
    /// The compressor failed (it cannot, writing to memory, short of memory).
    #[error("compression failed: {0}")]
    Compression(#[from] std::io::Error),
}

/// An upstream body's first frame, read with its head (a `502` instead of a
/// cut-off answer when it is malformed).
#[derive(Debug)]
pub enum Peeked {
    /// Given as the body's first frame.
    Frame(Frame<Bytes>),
    /// The body ended early (the upstream closed): given after the head has
    /// gone, as on the express lane, which relays a head before it reads on
    /// (hyper's server, finding the error at once, would send nothing).
    Ended(hyper::Error),
    /// [`Peeked::Ended`] once the head has had its turn.
    Due(hyper::Error),
}

/// A body sent to the client; when it completes (last frame sent, or
/// dropped), its request's sample is recorded.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
    done: Option<Recording>,
    /// The cache's copy, while this body is being stored.
    fill: Option<Box<Fill>>,
    /// The upstream's body broke off (else a body dropped before its end
    /// was left by its client).
    failed: bool,
    /// Its trailers have gone: the last frame (hyper's HTTP/1.1 server drops
    /// the body then, without asking for more).
    ended: bool,
}

#[derive(Debug)]
enum Kind {
    /// The upstream's body, streamed; its connection returns to the pool
    /// once the body has been read to the end. A wait for its next frame
    /// is bounded by `read_timeout` (the timer made at the first wait).
    Upstream {
        body: Incoming,
        /// Read before the head went, given first.
        first: Option<Box<Peeked>>,
        lease: Option<Lease>,
        read_timeout: Duration,
        stall: Option<Stall>,
        coded: Option<Box<Coded>>,
    },
    /// A body perfproxy produced (errors, its own endpoints).
    Full(Option<Bytes>),
}

/// The timer of an upstream body's waits, re-armed after each frame.
#[derive(Debug)]
struct Stall {
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// A frame came since the timer was armed.
    progressed: bool,
}

impl Stall {
    /// Whether the wait that has begun has lasted `timeout` (polling arms
    /// the timer: at the first wait, or the first since a frame came).
    fn expired(stall: &mut Option<Stall>, timeout: Duration, cx: &mut Context<'_>) -> bool {
        let s = stall.get_or_insert_with(|| Stall { sleep: Box::pin(tokio::time::sleep(timeout)), progressed: false });
        if std::mem::take(&mut s.progressed) {
            s.sleep.as_mut().reset(tokio::time::Instant::now() + timeout);
        }
        s.sleep.as_mut().poll(cx).is_ready()
    }
}

impl ProxyBody {
    /// The upstream's body; `lease` is its pooled connection, if any;
    /// `read_timeout` bounds each wait for more of it (`upstream_read_timeout_ms`).
    pub fn upstream(body: Incoming, lease: Option<Lease>, read_timeout: Duration) -> ProxyBody {
        let kind = Kind::Upstream { body, first: None, lease, read_timeout, stall: None, coded: None };
        let mut b = ProxyBody { kind, done: None, fill: None, failed: false, ended: false };
        b.release_if_done();
        b
    }

    /// Gives `peeked`, the upstream body's first frame already read, first.
    pub fn after(mut self, peeked: Option<Box<Peeked>>) -> ProxyBody {
        if let Kind::Upstream { first, .. } = &mut self.kind {
            *first = peeked;
        }
        self
    }

    /// Compresses the upstream's body frame by frame with `encoder`, if any.
    pub fn encoded(mut self, encoder: Option<Box<Encoder>>) -> ProxyBody {
        if let (Kind::Upstream { coded, .. }, Some(encoder)) = (&mut self.kind, encoder) {
            *coded = Some(Box::new(Coded { encoder, trailers: None }));
        }
        self
    }

    pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
        ProxyBody { kind: Kind::Full(Some(bytes.into())), done: None, fill: None, failed: false, ended: false }
    }

    pub fn empty() -> ProxyBody {
        ProxyBody { kind: Kind::Full(None), done: None, fill: None, failed: false, ended: false }
    }

    /// Ends `recording` once this body has been sent or dropped.
    pub fn on_complete(mut self, recording: Recording) -> ProxyBody {
        self.done = Some(recording);
        self
    }

    /// Keeps a copy of the frames for the cache; stored at the end.
    pub fn filling(mut self, fill: Fill) -> ProxyBody {
        self.fill = Some(Box::new(fill));
        self
    }

    fn finish_fill_if_done(&mut self) {
        if self.fill.is_some() && self.is_end_stream() {
            if let Some(fill) = self.fill.take() {
                fill.finish();
            }
        }
    }

    fn release_if_done(&mut self) {
        if let Kind::Upstream { body, lease, .. } = &mut self.kind {
            if body.is_end_stream() {
                if let Some(lease) = lease.take() {
                    lease.release();
                }
            }
        }
    }

    fn complete(&mut self) {
        // Dropping the recording takes the sample.
        self.done = None;
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        let unfinished = !self.failed && !self.is_end_stream();
        if let (Some(recording), true) = (&mut self.done, unfinished) {
            recording.client_left();
        }
        self.finish_fill_if_done();
        self.release_if_done();
        self.complete();
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let mut polled = match &mut this.kind {
            Kind::Upstream { coded: Some(coded), .. } if coded.encoder.finished() => {
                Poll::Ready(coded.trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            Kind::Upstream { body, first, lease, read_timeout, stall, coded } => match next_frame(body, first, cx) {
                Poll::Pending if Stall::expired(stall, *read_timeout, cx) => {
                    if let Some(recording) = &mut this.done {
                        recording.upstream_stalled();
                    }
                    tracing::warn!("upstream body stalled past upstream_read_timeout_ms: response cut off");
                    Poll::Ready(Some(Err(BodyError::Stalled)))
                }
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => {
                    if let Some(lease) = lease.take() {
                        lease.release();
                    }
                    Poll::Ready(None)
                }
                Poll::Ready(Some(frame)) => {
                    if let Some(s) = stall {
                        s.progressed = true;
                    }
                    // Trailers end a body: its connection goes back.
                    let frame = match frame {
                        Ok(f) if f.is_trailers() => {
                            if let Some(lease) = lease.take() {
                                lease.release();
                            }
                            let mut trailers = f.into_trailers().expect("a frame that is trailers");
                            crate::wire::headers::strip_trailers(&mut trailers);
                            Ok(Frame::trailers(trailers))
                        }
                        other => other,
                    };
                    Poll::Ready(Some(frame.map_err(BodyError::from)))
                }
            }
            .map(|polled| match coded {
                Some(coded) => coded.encode(polled, body.is_end_stream()),
                None => polled,
            }),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        if let (Some(recording), Poll::Ready(Some(Ok(frame)))) = (&mut this.done, &polled) {
            if let Some(data) = frame.data_ref() {
                recording.sent(data.len());
                recording.grpc_data(data);
            } else if let Some(trailers) = frame.trailers_ref() {
                recording.grpc_status(trailers);
            }
        }
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            this.ended |= frame.is_trailers();
        }
        if let Some(fill) = &mut this.fill {
            match &mut polled {
                Poll::Ready(Some(Ok(frame))) => {
                    // A compressed body is judged by the upstream's bytes too.
                    let read = match &this.kind {
                        Kind::Upstream { coded: Some(c), .. } => c.encoder.bytes_in(),
                        _ => 0,
                    };
                    if let Some(data) = frame.data_ref() {
                        if !fill.push(data) || read > fill.limit() as u64 {
                            this.fill = None;
                        }
                    }
                    // hyper stops polling once the body says it has ended.
                    this.finish_fill_if_done();
                }
                Poll::Ready(None) => {
                    if let Some(fill) = this.fill.take() {
                        fill.finish();
                    }
                }
                // A failed body is never stored.
                Poll::Ready(Some(Err(_))) => this.fill = None,
                Poll::Pending => {}
            }
        }
        match &polled {
            Poll::Ready(None) => this.complete(),
            Poll::Ready(Some(Err(_))) => this.failed = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        if self.ended {
            return true;
        }
        match &self.kind {
            Kind::Upstream { coded: Some(c), .. } => c.encoder.finished() && c.trailers.is_none(),
            Kind::Upstream { body, first, .. } => first.is_none() && body.is_end_stream(),
            Kind::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            // Compressed: as long as it turns out.
            Kind::Upstream { coded: Some(_), .. } => SizeHint::default(),
            Kind::Upstream { body, first: None, .. } => body.size_hint(),
            Kind::Upstream { body, first: Some(peeked), .. } => match &**peeked {
                Peeked::Frame(frame) => {
                    let held = frame.data_ref().map_or(0, |d| d.len() as u64);
                    let rest = body.size_hint();
                    let mut hint = SizeHint::new();
                    hint.set_lower(rest.lower() + held);
                    if let Some(upper) = rest.upper() {
                        hint.set_upper(upper + held);
                    }
                    hint
                }
                _ => SizeHint::default(),
            },
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// The upstream body's next frame: the one read with its head first.
fn next_frame(
    body: &mut Incoming,
    first: &mut Option<Box<Peeked>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
    match first.take().map(|p| *p) {
        Some(Peeked::Frame(frame)) => Poll::Ready(Some(Ok(frame))),
        Some(Peeked::Ended(e)) => {
            *first = Some(Box::new(Peeked::Due(e)));
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Some(Peeked::Due(e)) => Poll::Ready(Some(Err(e))),
        None => Pin::new(body).poll_frame(cx),
    }
}

/// An upstream body being compressed: each data frame becomes the
/// compressor's output, flushed; its end (the last frame, the trailers, or
/// the body's end) finishes the coding, trailers held back until then.
#[derive(Debug)]
struct Coded {
    encoder: Box<Encoder>,
    /// Held until the coding has ended (its encoder finished, which it
    /// does only when the upstream's body has).
    trailers: Option<http::HeaderMap>,
}

impl Coded {
    /// The client's frame for the upstream's `polled` (`last`: the
    /// upstream's body has ended with it).
    fn encode(
        &mut self,
        polled: Option<Result<Frame<Bytes>, BodyError>>,
        last: bool,
    ) -> Option<Result<Frame<Bytes>, BodyError>> {
        let end = |this: &mut Coded| Some(this.encoder.encode(&[], true).map(Frame::data).map_err(BodyError::from));
        match polled {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => Some(self.encoder.encode(&data, last).map(Frame::data).map_err(BodyError::from)),
                Err(frame) => {
                    // Digests of the upstream's bytes do not describe the coding's.
                    self.trailers = frame.into_trailers().ok().map(|mut t| {
                        let digests: Vec<_> =
                            t.keys().filter(|n| crate::wire::encoding::is_digest(n)).cloned().collect();
                        for name in digests {
                            t.remove(name);
                        }
                        t
                    });
                    end(self)
                }
            },
            None if !self.encoder.finished() => end(self),
            other => other,
        }
    }
}
