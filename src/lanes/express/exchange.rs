//! The upstream side of an express request: a pooled connection checked
//! out (a stale one retried when the request can be replayed), the request
//! head and body written, the response head read past any 1xx and rewritten
//! into the client's, then the body relayed to the end its framing gives.

use std::future::Future;
use std::time::Duration;

use crate::tls::{ClientStream, UpstreamStream};
use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tracing::debug;

use super::framing::{Chunks, Framing};
use super::response::{self, Additions, ResponseHead};
use super::{upstream_io, Answer, Conn, Failed, Scratch, READ_CHUNK};
use crate::cache::fill::Fill;
use crate::shared::state::Worker;
use crate::upstream::UpstreamError;
use crate::wire::headers::ServerTiming;

/// What an exchange borrows from its connection: the client's stream only
/// when the rest of a body is to be read from it (else the connection
/// watches it meanwhile for a client that leaves).
pub(super) struct Exchange<'a> {
    pub worker: &'a Worker,
    pub client: Option<&'a mut ClientStream>,
    pub buf: &'a mut BytesMut,
    pub scratch: &'a mut Scratch,
    /// Body bytes still to come from the client.
    pub body_left: u64,
    /// A stale pooled connection may be retried (nothing unreplayable sent).
    pub replay: bool,
    pub answer: &'a Answer<'a>,
}

impl<'a> Exchange<'a> {
    /// Sends the request (a stale pooled connection: the next one, or a new
    /// one) and reads the response head; the client's head is in `out`.
    /// (A block, not an `async fn`: its state holds `self` once, not a copy
    /// of each argument too.)
    #[allow(clippy::manual_async_fn)] // an `async fn` would hold `self` twice
    pub(super) fn run(mut self) -> impl Future<Output = Result<(UpstreamStream, ResponseHead, Duration), Failed>> + 'a {
        async move {
            loop {
                let (mut up, reused) = self.worker.upstream.checkout().await.map_err(|e| Failed::Upstream(e.into()))?;
                match self.send(&mut up).await {
                    Ok((head, took)) => return Ok((up, head, took)),
                    Err(Failed::Stale) if reused && self.replay => {
                        debug!("upstream closed a pooled connection: retrying")
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    async fn send(&mut self, up: &mut UpstreamStream) -> Result<(ResponseHead, Duration), Failed> {
        let (mut body_left, answer) = (self.body_left, self.answer);
        up.write_all_flushed(&self.scratch.upstream_out).await.map_err(|_| Failed::Stale)?;
        while body_left > 0 {
            if self.buf.is_empty() {
                self.buf.reserve(READ_CHUNK);
                // The stream's own waker slot: no waiter queued (`readable()`).
                let client = self.client.as_deref_mut().expect("an exchange with a body to read holds the client");
                std::future::poll_fn(|cx| client.poll_read_ready(cx)).await.map_err(|_| Failed::Client)?;
                match client.try_read_buf(self.buf) {
                    Ok(0) => return Err(Failed::Client),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return Err(Failed::Client),
                }
            }
            let n = self.buf.len().min(usize::try_from(body_left).unwrap_or(usize::MAX));
            up.write_all_flushed(&self.buf[..n]).await.map_err(upstream_io)?;
            self.buf.advance(n);
            body_left -= n as u64;
        }
        self.scratch.up_buf.clear();
        let max_head = self.worker.upstream.max_response_head();
        loop {
            self.scratch.up_buf.reserve(READ_CHUNK);
            match up.read_buf(&mut self.scratch.up_buf).await {
                Ok(0) | Err(_) if self.scratch.up_buf.is_empty() => return Err(Failed::Stale),
                Ok(0) => return Err(upstream_io(std::io::ErrorKind::UnexpectedEof.into())),
                Err(e) => return Err(upstream_io(e)),
                Ok(_) => {}
            }
            loop {
                self.scratch.out.clear();
                // One clock read for `Server-Timing` and the latency split.
                let took = answer.sent.elapsed();
                let timing = ServerTiming::of(took);
                let add = Additions {
                    head_request: answer.head_request,
                    server_timing: timing.as_bytes(),
                    date: crate::wire::http1::date,
                    x_cache: answer.x_cache,
                    cache_status: answer.cache_status,
                    keep_fields: answer.keep_fields,
                    rule_route: answer.rule_route,
                    drop: answer.drop,
                    strip_surrogate: answer.strip_surrogate,
                    request_id: answer.request_id,
                    close: answer.close,
                };
                match response::parse(&self.scratch.up_buf, &add, &mut self.scratch.out) {
                    // One read can bring more than the limit: the head is held to it whole.
                    Ok(response::Parsed::Complete(head)) if head.len <= max_head => return Ok((head, took)),
                    Ok(response::Parsed::Interim(n)) => self.scratch.up_buf.advance(n),
                    Ok(response::Parsed::Partial) if self.scratch.up_buf.len() < max_head => break,
                    Ok(response::Parsed::Complete(_) | response::Parsed::Partial) => {
                        return Err(Failed::Upstream(
                            UpstreamError::Malformed(crate::wire::http1::Malformed("head too large")).into(),
                        ))
                    }
                    Err(m) => return Err(Failed::Upstream(UpstreamError::Malformed(m).into())),
                }
            }
        }
    }
}

impl Conn {
    /// The response head in `out`, then the body as it arrives, to its end;
    /// `fill` keeps a copy of its data (a chunked body's without the
    /// framing), dropped if it outgrows its limit. A body delimited by the
    /// upstream closing goes to the client chunked, as hyper sends it, so
    /// the client's connection goes on. Returns the body's bytes relayed;
    /// an upstream silent for `upstream_read_timeout_ms` mid-body is
    /// `TimedOut`.
    pub(super) async fn relay(
        &mut self,
        up: &mut UpstreamStream,
        framing: Framing,
        fill: &mut Option<Box<Fill>>,
    ) -> std::io::Result<usize> {
        let mut body = 0;
        let mut chunks = Chunks::default();
        let mut left = if let Framing::Length(n) = framing { n } else { 0 };
        let mut head_sent = false;
        let read_timeout = self.client.worker.shared.config.upstream_read_timeout;
        let keep = |fill: &mut Option<Box<Fill>>, data: &[u8]| {
            if fill.as_mut().is_some_and(|f| !f.push(data)) {
                *fill = None;
            }
        };
        // A close-delimited body's end was read (its last chunk goes next).
        let mut ended = false;
        loop {
            let (mut cut, mut broken) = (None, None);
            let (take, done) = match framing {
                Framing::Empty => (0, true),
                Framing::Length(_) => {
                    let n = left.min(self.scratch.up_buf.len() as u64);
                    left -= n;
                    (n as usize, left == 0)
                }
                Framing::Chunked => {
                    let scanned = chunks.scan(&self.scratch.up_buf, |data| keep(fill, data));
                    cut = chunks.cut();
                    scanned.unwrap_or_else(|bad| {
                        // What came before goes (as hyper's lane sends the
                        // chunks it decoded), then the connection is cut.
                        broken = Some(bad);
                        (cut.take().map_or(bad.at, |c| c.start.min(bad.at)), false)
                    })
                }
                Framing::Close => (self.scratch.up_buf.len(), ended),
            };
            if !matches!(framing, Framing::Chunked) {
                keep(fill, &self.scratch.up_buf[..take]);
            }
            // One write per turn (one await in this loop, every body takes it).
            let bytes: &[u8] = if let Some(cut) = cut {
                // Trailer fields: read, not relayed.
                without(&mut self.scratch.out, &self.scratch.up_buf[..take], cut, head_sent);
                &self.scratch.out
            } else if framing == Framing::Close {
                // Re-framed as one chunk per read.
                as_chunk(&mut self.scratch.out, &self.scratch.up_buf[..take], head_sent, ended);
                &self.scratch.out
            } else if head_sent {
                &self.scratch.up_buf[..take]
            } else {
                self.scratch.out.extend_from_slice(&self.scratch.up_buf[..take]);
                &self.scratch.out
            };
            self.stream.send(bytes, self.client.worker.shared.config.send_timeout).await?;
            if let Some(bad) = broken {
                return Err(std::io::Error::other(bad));
            }
            head_sent = true;
            self.scratch.up_buf.advance(take);
            body += take;
            if done {
                return Ok(body);
            }
            self.scratch.up_buf.clear();
            self.scratch.up_buf.reserve(READ_CHUNK);
            if read_within(up, &mut self.scratch.up_buf, read_timeout).await? == 0 {
                if framing != Framing::Close {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                ended = true;
            }
        }
    }
}

/// `data` as one chunk after what `out` holds (the response head), or in
/// its place once the head is sent; the last chunk after it when `last`.
/// Out of the relay loop, which every body goes through: a close-delimited
/// body is the rare kind.
#[inline(never)]
fn as_chunk(out: &mut Vec<u8>, data: &[u8], head_sent: bool, last: bool) {
    use std::io::Write;
    if head_sent {
        out.clear();
    }
    if !data.is_empty() {
        write!(out, "{:x}\r\n", data.len()).expect("writing to a Vec cannot fail");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    if last {
        out.extend_from_slice(b"0\r\n\r\n");
    }
}

/// `bytes` but the range `cut` after what `out` holds (the response head),
/// or in its place once the head is sent. Out of the relay loop: trailer
/// fields are rare.
#[inline(never)]
fn without(out: &mut Vec<u8>, bytes: &[u8], cut: std::ops::Range<usize>, head_sent: bool) {
    if head_sent {
        out.clear();
    }
    out.extend_from_slice(&bytes[..cut.start]);
    out.extend_from_slice(&bytes[cut.end..]);
}

/// Reads more of an upstream body; a wait longer than `timeout`
/// (`upstream_read_timeout_ms`) is `TimedOut`. The timer is made only when
/// the read has to wait: bytes already there cost no clock read.
async fn read_within(up: &mut UpstreamStream, buf: &mut BytesMut, timeout: Duration) -> std::io::Result<usize> {
    let mut read = std::pin::pin!(up.read_buf(buf));
    let mut timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(r) = read.as_mut().poll(cx) {
            return std::task::Poll::Ready(r);
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::ErrorKind::TimedOut.into())),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
    .await
}
