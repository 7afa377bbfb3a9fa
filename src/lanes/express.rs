//! The express lane: HTTP/1.1 proxying at the byte level for the requests
//! that make up nearly all traffic. A client connection starts here. Each
//! request head is parsed in place ([`head`]), rewritten into the upstream's
//! head without building a `HeaderMap`, and sent on a pooled upstream socket
//! ([`UpstreamPool`](crate::upstream::UpstreamPool)); the response head is rewritten the same way ([`response`])
//! and the body passes through as bytes, its end found from its framing
//! ([`framing`]). Four lanes per request, chosen in `lane`:
//! - **express**: plain requests to the upstream (cache bypasses and the
//!   cache's plain misses too, stored on the way: [`cached`]);
//! - **hit**: a fresh memory-layer hit, written from its entry's bytes;
//! - **own**: perfproxy's endpoints and the cache's other lookups (with
//!   `[compression]` on, every request but hits), answered by
//!   [`proxy::respond`] and written by [`reply`];
//! - **handoff**: anything unusual (upgrades, chunked or `Expect` request
//!   bodies, malformed or oversized heads, HTTP/1.0, purges): hyper takes the
//!   connection from there, the bytes already read replayed ([`Rewind`]).
//!
//! The semantics match the hyper path (tests run against both): same
//! header rules, same errors (502/504 as [`ProxyError`]), same metrics.

mod cached;
mod deadline;
mod exchange;
mod forward;
mod framing;
mod head;
mod lane;
mod record;
mod reply;
mod response;
mod rewind;
mod scratch;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use http::header::HeaderName;
use http::{Method, Request};
use tokio::io::AsyncReadExt;
use tracing::debug;

use deadline::deadline;
pub use rewind::Rewind;
pub use scratch::{Scratch, ScratchPool};

use crate::cache::entry::Entry;
use crate::cache::policy::Policy;
use crate::lanes::drain::Drain;
use crate::pipeline::proxy;
use crate::shared::error::ProxyError;
use crate::shared::state::Client;
use crate::tls::ClientStream;
use crate::upstream::RequestBody;
use crate::upstream::UpstreamError;
use head::{Parsed, RequestHead};

/// Room made in a client's read buffer to read a request head.
const HEAD_CHUNK: usize = 2 * 1024;
/// Bytes asked of a socket per read of a body.
const READ_CHUNK: usize = 16 * 1024;

/// How a connection left the express lane.
#[derive(Debug)]
pub enum Ended {
    Closed,
    /// An answer ended it while the client may still be sending: the
    /// caller gives it a lingering close ([`crate::lanes::linger::discard`]).
    Linger(ClientStream),
    /// hyper serves the rest of the connection; `true`: no request was
    /// served on it before (only then may it be HTTP/2).
    Handoff(Rewind, bool),
}

/// Where one request goes, if it stays on the express lane's connection.
enum Lane {
    Express(Cached),
    /// A fresh memory-layer hit.
    Hit(Arc<Entry>),
    Own(Box<Request<RequestBody>>),
    /// Refused by the rate limits (429, or 400 for an ambiguous key): answered here.
    Refused(Box<ProxyError>),
}

/// What the cache makes of an express request.
enum Cached {
    Off,
    /// Not looked up.
    Bypass(Bypass),
    /// Looked up, not found: stored on the way if its answer may be.
    Miss(cached::Miss),
}

/// A request the cache let pass: how it is marked, and the key of a URL
/// remembered as uncacheable (a storable answer makes it forgotten, so the
/// next request is looked up and stored).
struct Bypass {
    cache_status: &'static [u8],
    pass_key: Option<String>,
    /// The storage policy of a pass's route.
    policy: Option<Policy>,
}

impl Bypass {
    /// A pass (a URL remembered as uncacheable): its key and its route's policy.
    fn pass(&self) -> Option<(&str, &Policy)> {
        self.pass_key.as_deref().zip(self.policy.as_ref())
    }
}

/// What the client's response head gets besides the upstream's fields.
struct Answer<'a> {
    head_request: bool,
    x_cache: Option<&'static [u8]>,
    cache_status: Option<&'static [u8]>,
    /// Keep the response's fields (a pass: is the answer storable now?).
    keep_fields: bool,
    rule_route: bool,
    /// Fields not relayed (the cache's tag headers).
    drop: &'a [HeaderName],
    /// The cache is on: `Surrogate-Control` is perfproxy's, not relayed.
    strip_surrogate: bool,
    close: bool,
    /// When the request went upstream (for `Server-Timing`).
    sent: Instant,
    request_id: &'a [u8],
}

/// Why an exchange gave no response head.
enum Failed {
    /// The client's body broke off: nothing to answer.
    Client,
    Upstream(ProxyError),
    /// A reused connection the upstream had closed: nothing was answered.
    Stale,
}

fn upstream_io(e: std::io::Error) -> Failed {
    Failed::Upstream(ProxyError::BadGateway(UpstreamError::Io(e)))
}

struct Conn {
    client: Rc<Client>,
    drain: Rc<Drain>,
    stream: ClientStream,
    /// Bytes from the client not yet used.
    buf: BytesMut,
    head: RequestHead,
    /// Buffers lent by the worker for one request.
    scratch: Scratch,
    /// The request's `X-Request-Id` (the client's or a new one), kept
    /// until answered.
    request_id: Vec<u8>,
    /// When the rate limits read the clock for this request (its recording
    /// begins then too: one clock read).
    checked_at: Option<Instant>,
    /// A request has been answered on this connection.
    served: bool,
    /// An answer of perfproxy's own ended the connection (the client may
    /// still be sending its body): a lingering close.
    own_answer_closed: bool,
    /// The deadline of the head being waited for (`header_read_timeout_ms`,
    /// idle keep-alive included): one timer for the connection's life,
    /// moved later for each head, which costs tokio an atomic store instead
    /// of a timer registered and removed per request.
    head_deadline: Pin<Box<tokio::time::Sleep>>,
    /// The deadline of the upstream's answer (`upstream_timeout_ms`), kept
    /// the same way.
    upstream_deadline: Pin<Box<tokio::time::Sleep>>,
}

/// Serves a client connection until it closes or needs hyper. `id` is its
/// number in `drain`, which wakes it when the worker stops. The connection
/// is built before the future, which holds it once: an idle keep-alive
/// connection costs its task and this state, no buffer.
pub(crate) fn serve(
    client: Rc<Client>,
    stream: ClientStream,
    drain: Rc<Drain>,
    id: u64,
) -> impl Future<Output = Ended> {
    let config = &client.worker.shared.config;
    let timeouts = (config.header_read_timeout, config.upstream_timeout);
    let mut conn = Conn {
        client,
        drain,
        stream,
        buf: BytesMut::new(),
        head: RequestHead::default(),
        scratch: Scratch::default(),
        request_id: Vec::new(),
        checked_at: None,
        served: false,
        own_answer_closed: false,
        head_deadline: Box::pin(tokio::time::sleep(timeouts.0)),
        upstream_deadline: Box::pin(tokio::time::sleep(timeouts.1)),
    };
    async move {
        std::future::poll_fn(|cx| {
            conn.drain.register(id, cx.waker());
            Poll::Ready(())
        })
        .await;
        let next = conn.serve_requests().await;
        conn.drain.unregister(id);
        match next {
            Next::Handoff => conn.handoff(),
            Next::Closed => {
                if conn.stream.is_tls() {
                    // Boxed: only a TLS connection's task holds room for it.
                    Box::pin(conn.stream.close()).await;
                }
                Ended::Closed
            }
            Next::Linger => Ended::Linger(conn.stream),
        }
    }
}

/// What becomes of a connection the express lane stops serving.
enum Next {
    /// hyper takes it.
    Handoff,
    /// The client closed, was too slow, or the worker stopped between
    /// requests; or an exchange ended whole with nothing more to read.
    Closed,
    /// An answer ended it (the client may still be sending): a lingering close.
    Linger,
}

impl Conn {
    /// Serves requests until the connection ends or is hyper's.
    async fn serve_requests(&mut self) -> Next {
        loop {
            match self.read_head().await {
                Some(Parsed::Complete) => {}
                Some(_) => return Next::Handoff,
                None => return Next::Closed,
            }
            self.checked_at = None;
            let Some(lane) = self.lane() else { return Next::Handoff };
            self.scratch = ScratchPool::with(ScratchPool::lend);
            // Each lane but the hit is boxed: an idle connection's task
            // reserves no room for a request in flight.
            let keep = match lane {
                Lane::Express(cached) => Box::pin(self.express(cached)).await,
                Lane::Hit(entry) => self.hit(entry).await,
                Lane::Own(req) => Box::pin(self.own(*req)).await,
                Lane::Refused(refusal) => Box::pin(self.refused(*refusal)).await,
            };
            let scratch = std::mem::take(&mut self.scratch);
            ScratchPool::with(|pool| pool.take_back(scratch));
            self.served = true;
            if !keep {
                // After a whole exchange, a plain close; a lingering one
                // when the client may still be sending (its body was not
                // read, or more input is waiting).
                let unread = !self.buf.is_empty() || self.stream.has_unread();
                return if self.own_answer_closed || unread { Next::Linger } else { Next::Closed };
            }
        }
    }

    fn handoff(self) -> Ended {
        Ended::Handoff(Rewind::new(self.buf.freeze(), self.stream), !self.served)
    }

    /// Reads until a head is complete (`Parsed::Complete`) or is one for
    /// hyper; `None` when the client closed or was too slow
    /// (`header_read_timeout_ms`, idle keep-alive included), or the worker
    /// is stopping and no request has begun (a partial head included).
    async fn read_head(&mut self) -> Option<Parsed> {
        let config = &self.client.worker.shared.config;
        let head_by = tokio::time::Instant::now() + config.header_read_timeout;
        let timeout = config.header_read_timeout;
        loop {
            if !self.buf.is_empty() {
                match self.head.parse(&self.buf) {
                    Parsed::Partial if self.buf.len() < config.max_header_bytes => {}
                    Parsed::Partial => return Some(Parsed::Handoff),
                    done => return Some(done),
                }
            }
            let idle = self.buf.is_empty();
            if idle {
                // Waiting for a request holds no buffer: it is borrowed from
                // the worker once the socket is readable.
                if self.buf.capacity() > 0 {
                    let (buf, parts) = (std::mem::take(&mut self.buf), self.head.give_parts());
                    ScratchPool::with(|pool| {
                        pool.take_back_buf(buf);
                        pool.take_back_head(parts);
                    });
                }
                // `poll_read_ready`: the stream's own waker slot (`readable()`
                // queues a waiter, measurably dearer per request).
                let stream = &self.stream;
                let ready = std::future::poll_fn(|cx| stream.poll_read_ready(cx));
                let drain = &self.drain;
                let stopped = std::future::poll_fn(|_| if drain.stopping() { Poll::Ready(()) } else { Poll::Pending });
                let expired = deadline(self.head_deadline.as_mut(), head_by, timeout);
                tokio::select! {
                    biased;
                    ready = ready => if ready.is_err() { return None },
                    () = stopped => return None,
                    () = expired => return None,
                }
                // Read with `read_buf`, not `try_read_buf`: a short read
                // clears the readiness, so the next wait costs no EAGAIN.
                let parts;
                (self.buf, parts) = ScratchPool::with(|pool| (pool.lend_buf(), pool.lend_head()));
                self.head.take_parts(parts);
            }
            self.buf.reserve(HEAD_CHUNK);
            let read = self.stream.read_buf(&mut self.buf);
            let drain = &self.drain;
            // No request is in progress until its head is whole: the
            // worker's stop ends an idle connection or a partial head.
            let stopped = std::future::poll_fn(|_| if drain.stopping() { Poll::Ready(()) } else { Poll::Pending });
            let expired = deadline(self.head_deadline.as_mut(), head_by, timeout);
            tokio::select! {
                biased;
                read = read => match read {
                    Ok(n) if n > 0 => {}
                    _ => return None,
                },
                () = stopped => return None,
                () = expired => return None,
            }
        }
    }

    /// A request `proxy::respond` answers (perfproxy's endpoints, the cache).
    async fn own(&mut self, req: Request<RequestBody>) -> bool {
        let head_request = self.head.method == Method::HEAD;
        let close = self.closes();
        self.buf.advance(self.head.len);
        let resp = proxy::respond(&self.client, req).await;
        let send_timeout = self.client.worker.shared.config.send_timeout;
        match reply::write(&mut self.stream, &mut self.scratch.out, resp, head_request, close, send_timeout).await {
            Ok(keep) => keep,
            Err(e) => {
                debug!(error = %e, "client connection ended mid-response");
                false
            }
        }
    }

    /// Writes an answer of perfproxy's own (an error, a refusal) with the
    /// request's `X-Request-Id`; whether the connection may go on.
    async fn write_own(
        &mut self,
        mut resp: http::Response<crate::shared::body::ProxyBody>,
        head_request: bool,
        close: bool,
    ) -> bool {
        if let Ok(id) = http::HeaderValue::from_bytes(&self.request_id) {
            resp.headers_mut().insert(crate::wire::headers::X_REQUEST_ID.clone(), id);
        }
        let (out, send_timeout) = (&mut self.scratch.out, self.client.worker.shared.config.send_timeout);
        let keep = reply::write(&mut self.stream, out, resp, head_request, close, send_timeout).await.unwrap_or(false);
        self.own_answer_closed |= !keep;
        keep
    }
}
