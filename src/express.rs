//! The express lane: HTTP/1.1 proxying at the byte level for the requests
//! that make up nearly all traffic. A client connection starts here. Each
//! request head is parsed in place ([`head`]), rewritten into the upstream's
//! head without building a `HeaderMap`, and sent on a pooled upstream socket
//! ([`UpstreamPool`](crate::upstream::UpstreamPool)); the response head is rewritten the same way ([`response`])
//! and the body passes through as bytes, its end found from its framing
//! ([`framing`]). Four lanes per request:
//! - **express**: plain requests to the upstream (cache bypasses and the
//!   cache's plain misses too, stored on the way: [`cached`]);
//! - **hit**: a fresh memory-layer hit, written from its entry's bytes;
//! - **own**: perfproxy's endpoints and the cache's other lookups, answered
//!   by [`proxy::respond`] and written by [`reply`];
//! - **handoff**: anything unusual (upgrades, chunked or `Expect` request
//!   bodies, malformed or oversized heads, HTTP/1.0, purges): hyper takes the
//!   connection from there, the bytes already read replayed ([`Rewind`]).
//!
//! The semantics match the hyper path (tests run against both): same
//! header rules, same errors (502/504 as [`ProxyError`]), same metrics.

mod cached;
mod exchange;
mod framing;
mod head;
mod record;
mod reply;
mod response;
mod rewind;
mod scratch;

use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use http::header::HeaderName;
use http::{Method, Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

pub use rewind::Rewind;
pub use scratch::{Scratch, ScratchPool};

use crate::body::RequestBody;
use crate::cache::answer::Outcome;
use crate::cache::entry::Entry;
use crate::cache::policy::Policy;
use crate::cache::{key, Counters};
use crate::drain::Drain;
use crate::error::ProxyError;
use crate::http1;
use crate::metrics::Recording;
use crate::proxy;
use crate::state::Client;
use crate::upstream::UpstreamError;
use exchange::Exchange;
use framing::Framing;
use head::{Parsed, RequestHead};

/// Room made in a client's read buffer to read a request head.
const HEAD_CHUNK: usize = 2 * 1024;
/// Bytes asked of a socket per read of a body.
const READ_CHUNK: usize = 16 * 1024;
/// The largest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Resolves when the client closes its connection (EOF or reset). Bytes it
/// sends meanwhile (a pipelined request) end the watch.
async fn client_gone(stream: &TcpStream) {
    match stream.peek(&mut [0u8; 1]).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// How a connection left the express lane.
#[derive(Debug)]
pub enum Ended {
    Closed,
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
    stream: TcpStream,
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
}

/// Serves a client connection until it closes or needs hyper. `id` is its
/// number in `drain`, which wakes it when the worker stops.
pub(crate) async fn serve(client: Rc<Client>, stream: TcpStream, drain: Rc<Drain>, id: u64) -> Ended {
    std::future::poll_fn(|cx| {
        drain.register(id, cx.waker());
        Poll::Ready(())
    })
    .await;
    let ended = serve_requests(client, stream, drain.clone()).await;
    drain.unregister(id);
    ended
}

async fn serve_requests(client: Rc<Client>, stream: TcpStream, drain: Rc<Drain>) -> Ended {
    let mut conn = Conn {
        client,
        drain,
        stream,
        buf: BytesMut::new(),
        head: RequestHead::default(),
        scratch: Scratch::default(),
        request_id: Vec::with_capacity(32),
        checked_at: None,
        served: false,
    };
    loop {
        match conn.read_head().await {
            Some(Parsed::Complete) => {}
            Some(_) => return conn.handoff(),
            None => return Ended::Closed,
        }
        conn.checked_at = None;
        let Some(lane) = conn.lane() else { return conn.handoff() };
        let worker = conn.client.worker.clone();
        conn.scratch = worker.express_scratch.lend();
        let keep = match lane {
            Lane::Express(cached) => conn.express(cached).await,
            Lane::Hit(entry) => conn.hit(entry).await,
            // Boxed: the general path (cache, Redis) is a large state machine
            // no idle connection should reserve room for.
            Lane::Own(req) => Box::pin(conn.own(*req)).await,
            Lane::Refused(refusal) => Box::pin(conn.refused(*refusal)).await,
        };
        worker.express_scratch.take_back(std::mem::take(&mut conn.scratch));
        conn.served = true;
        if !keep {
            let _ = conn.stream.shutdown().await;
            return Ended::Closed;
        }
    }
}

impl Conn {
    fn handoff(self) -> Ended {
        Ended::Handoff(Rewind::new(self.buf.freeze(), self.stream), !self.served)
    }

    /// Reads until a head is complete (`Parsed::Complete`) or is one for
    /// hyper; `None` when the client closed or was too slow
    /// (`header_read_timeout_ms`, idle keep-alive included), or the worker
    /// is stopping and no request has begun.
    async fn read_head(&mut self) -> Option<Parsed> {
        let config = &self.client.worker.shared.config;
        let deadline = tokio::time::Instant::now() + config.header_read_timeout;
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
                let pool = &self.client.worker.express_scratch;
                if self.buf.capacity() > 0 {
                    pool.take_back_buf(std::mem::take(&mut self.buf));
                    pool.take_back_head(self.head.give_parts());
                }
                // `poll_read_ready`: the stream's own waker slot (`readable()`
                // queues a waiter, measurably dearer per request).
                let stream = &self.stream;
                let ready = tokio::time::timeout_at(deadline, std::future::poll_fn(|cx| stream.poll_read_ready(cx)));
                let drain = &self.drain;
                let stopped = std::future::poll_fn(|_| if drain.stopping() { Poll::Ready(()) } else { Poll::Pending });
                tokio::select! {
                    biased;
                    ready = ready => if !matches!(ready, Ok(Ok(()))) { return None },
                    () = stopped => return None,
                }
                // Read with `read_buf`, not `try_read_buf`: a short read
                // clears the readiness, so the next wait costs no EAGAIN.
                self.buf = pool.lend_buf();
                self.head.take_parts(pool.lend_head());
            }
            self.buf.reserve(HEAD_CHUNK);
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf));
            let drain = &self.drain;
            // A readiness that proved spurious leaves an idle connection
            // waiting here: the worker's stop still ends it.
            let stopped =
                std::future::poll_fn(|_| if idle && drain.stopping() { Poll::Ready(()) } else { Poll::Pending });
            tokio::select! {
                biased;
                read = read => match read {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return None,
                },
                () = stopped => return None,
            }
        }
    }

    /// `None`: hyper takes the connection.
    fn lane(&mut self) -> Option<Lane> {
        let worker = &self.client.worker;
        let shared = &worker.shared;
        let (head, buf) = (&self.head, &self.buf[..]);
        let path = head.path();
        if shared.admin_paths.owns(path, self.client.admin_only) {
            if path == shared.admin_paths.purge || head.content_length > 0 {
                return None;
            }
            return head.to_request(buf).map(|r| Lane::Own(Box::new(r)));
        }
        if let Some(limits) = worker.limits() {
            let fields = head.fields(buf);
            let asker = self.client.asker(&fields);
            let now = Instant::now();
            self.checked_at = Some(now);
            let instances = || shared.cluster.live_instances();
            if let Err(refusal) = limits.check(&head.method, path, &asker, now, instances) {
                return Some(Lane::Refused(Box::new(refusal)));
            }
        }
        let rules = shared.cache.rules();
        if !rules.enabled {
            return Some(Lane::Express(Cached::Off));
        }
        let (mut pass_key, mut policy) = (None, None);
        if http1::consults_cache(&head.method, head.range) {
            let forwarded = head.forwarded(buf, self.client.peer.trusted);
            let key = key::primary(head.host(), path, head.query(), &rules.ignore_query, forwarded);
            if !worker.cache_passes.borrow().active(&key) {
                return match cached::lookup(worker, &rules, key, path, &head.method, head.lookup_fields) {
                    cached::Lookup::Hit(entry) => Some(Lane::Hit(entry)),
                    cached::Lookup::Miss(miss) => Some(Lane::Express(Cached::Miss(miss))),
                    cached::Lookup::General => head.to_request(buf).map(|mut r| {
                        // Counted by the rate limits above: not again on the general path.
                        r.extensions_mut().insert(crate::limits::Counted);
                        Lane::Own(Box::new(r))
                    }),
                };
            }
            pass_key = Some(key);
            policy = Some(rules.policy(path));
        }
        Counters::add(&worker.cache_counters.bypasses, 1);
        let method = !http1::consults_cache(&head.method, false);
        let cache_status: &[u8] = if method { b"perfproxy; fwd=method" } else { b"perfproxy; fwd=bypass" };
        Some(Lane::Express(Cached::Bypass(Bypass { cache_status, pass_key, policy })))
    }

    /// A request `proxy::respond` answers (perfproxy's endpoints, the cache).
    async fn own(&mut self, req: Request<RequestBody>) -> bool {
        let head_request = self.head.method == Method::HEAD;
        let close = self.closes();
        self.buf.advance(self.head.len);
        let resp = proxy::respond(&self.client, req).await;
        match reply::write(&mut self.stream, &mut self.scratch.out, resp, head_request, close).await {
            Ok(keep) => keep,
            Err(e) => {
                debug!(error = %e, "client connection ended mid-response");
                false
            }
        }
    }

    /// A request straight to the upstream and its response back, recorded
    /// (and stored, a miss whose answer may be).
    async fn express(&mut self, cached: Cached) -> bool {
        let worker = self.client.worker.clone();
        let new_id = self.set_request_id();
        // Dropped unanswered (the client left first), the recording says 499.
        let mut recording = self.begin_recording();
        let head = &self.head;
        let cache_on = !matches!(cached, Cached::Off);
        let written =
            (cache_on && http1::is_unsafe(&head.method)).then(|| (head.host().to_string(), head.path().to_string()));
        let (x_cache, cache_status) = match &cached {
            Cached::Off => (None, None),
            Cached::Bypass(b) => (Some(Outcome::Bypass.as_str().as_bytes()), Some(b.cache_status)),
            Cached::Miss(_) => (Some(Outcome::Miss.as_str().as_bytes()), None),
        };
        let (pass, mut miss) = match cached {
            Cached::Bypass(b) => (b.pass_key.zip(b.policy), None),
            Cached::Miss(m) => (None, Some(m)),
            Cached::Off => (None, None),
        };
        let head_request = head.method == Method::HEAD;
        let replayable = http1::replayable(&head.method);
        let close = self.closes();

        self.scratch.upstream_out.clear();
        let (head, buf) = (&self.head, &self.buf[..]);
        let peer = (self.client.ip.as_bytes(), self.client.peer.trusted);
        let traceparent = recording.as_ref().and_then(Recording::traceparent);
        let (new_id, traceparent) = (new_id.as_ref().map(|id| &id[..]), traceparent.as_ref().map(|t| &t[..]));
        head.write_upstream(buf, peer, new_id, traceparent, &mut self.scratch.upstream_out);
        if let Some(r) = recording.as_mut().filter(|r| r.wants_outcome()) {
            r.cache(x_cache.map_or("", crate::access_log::cache_outcome));
        }
        let body_here = (buf.len() - head.len).min(usize::try_from(head.content_length).unwrap_or(usize::MAX));
        self.scratch.upstream_out.extend_from_slice(&buf[head.len..head.len + body_here]);
        let body_left = head.content_length - body_here as u64;
        self.buf.advance(self.head.len + body_here);

        let keep_fields = pass.is_some() || miss.is_some();
        let rule_route = pass.as_ref().is_some_and(|(_, p)| p.rule_ttl.is_some());
        // The cache's tag headers never reach the client (unless kept).
        let rules = x_cache.is_some().then(|| worker.shared.cache.rules_now());
        let unrelayed = rules.as_deref().filter(|r| !r.keep_tag_headers).map_or(&[][..], |r| &r.tag_headers[..]);
        let answer = Answer {
            head_request,
            x_cache,
            cache_status,
            keep_fields,
            rule_route,
            drop: unrelayed,
            // With the cache on, `Surrogate-Control` is perfproxy's, never relayed.
            strip_surrogate: x_cache.is_some(),
            close,
            sent: Instant::now(),
            request_id: &self.request_id,
        };
        let timeout = worker.shared.config.upstream_timeout;
        let sent = answer.sent;
        let exchange =
            Exchange { worker: &worker, client: &self.stream, buf: &mut self.buf, scratch: &mut self.scratch };
        let exchanged = tokio::time::timeout(timeout, exchange.run(body_left, replayable && body_left == 0, &answer));
        // A client that leaves before its answer: the upstream request is
        // dropped (its connection closed), as hyper and nginx do.
        let outcome = tokio::select! {
            biased;
            exchanged = exchanged => exchanged,
            () = client_gone(&self.stream), if body_left == 0 => {
                debug!("client closed its connection before the answer");
                return false;
            }
        };
        // An answer of our own to a request with a body: what follows it
        // must never be read as a request (RFC 9112 §9.3).
        let close_on_failure = close || http1::own_answer_closes(head.content_length > 0);
        if !matches!(outcome, Ok(Ok(_))) {
            if miss.is_some() {
                Counters::add(&worker.cache_counters.misses, 1);
            }
            // The upstream's share: to its failure.
            if let Some(r) = &mut recording {
                r.upstream(sent, sent.elapsed());
                match &outcome {
                    Err(_) => r.upstream_failed("timeout"),
                    Ok(Err(Failed::Upstream(e))) if e.status() == StatusCode::GATEWAY_TIMEOUT => {
                        r.upstream_failed("timeout")
                    }
                    Ok(Err(Failed::Upstream(_) | Failed::Stale)) => r.upstream_failed("upstream_error"),
                    _ => {}
                }
            }
        }
        let (mut up, resp, took) = match outcome {
            Ok(Ok(v)) => v,
            Ok(Err(Failed::Client)) => {
                if let Some(r) = &mut recording {
                    r.answered(400);
                }
                return false;
            }
            Ok(Err(Failed::Stale)) => {
                let e = UpstreamError::Io(std::io::ErrorKind::ConnectionReset.into());
                return Box::pin(self.fail(ProxyError::BadGateway(e), recording, head_request, close_on_failure)).await;
            }
            Ok(Err(Failed::Upstream(e))) => {
                return Box::pin(self.fail(e, recording, head_request, close_on_failure)).await
            }
            Err(_) => {
                let e = ProxyError::GatewayTimeout(timeout);
                return Box::pin(self.fail(e, recording, head_request, close_on_failure)).await;
            }
        };
        if let Some((host, path)) = written {
            let h = resp.fields_map(&self.scratch.up_buf);
            if let Ok(status) = StatusCode::from_u16(resp.status) {
                // Boxed, as the failures: rare paths reserve no room in the connection's task.
                Box::pin(crate::cache::serve::invalidate_after_write(&self.client, &host, &path, status, &h)).await;
            }
        }
        if let (Some((key, policy)), Ok(status), true) = (pass, StatusCode::from_u16(resp.status), resp.looked_at) {
            let h = resp.fields_map(&self.scratch.up_buf);
            crate::cache::serve::forget_pass_if_storable(&worker, &key, &policy, status, &h);
        }
        let mut fill = miss.take().and_then(|m| {
            cached::after_head(
                &worker,
                m,
                &resp,
                (&self.scratch.up_buf, &self.scratch.upstream_out),
                &mut self.scratch.out,
            )
        });
        self.scratch.up_buf.advance(resp.len);
        if let Some(r) = &mut recording {
            r.answered(resp.status);
            // Before the upstream, and the head's rewrite: perfproxy's share.
            r.split(sent, took);
        }
        let relayed = self.relay(&mut up, resp.framing, &mut fill).await;
        if let (Some(r), Ok(n)) = (&mut recording, &relayed) {
            r.sent(*n);
        }
        drop(recording);
        match relayed {
            Ok(_) => {
                if let Some(fill) = fill {
                    fill.finish();
                }
                if resp.reusable && self.scratch.up_buf.is_empty() {
                    worker.upstream.give_back(up);
                }
                !close && resp.framing != Framing::Close
            }
            Err(e) => {
                debug!(error = %e, "response cut off");
                false
            }
        }
    }

    /// No response head from the upstream: the error's answer, recorded.
    async fn fail(&mut self, e: ProxyError, mut recording: Option<Recording>, head_request: bool, close: bool) -> bool {
        warn!(error = %e, "upstream failure");
        if let Some(r) = &mut recording {
            r.head_ready();
        }
        let resp = e.into_response();
        if let Some(mut r) = recording {
            r.answered(resp.status().as_u16());
        }
        self.write_own(resp, head_request, close).await
    }

    /// Writes an answer of perfproxy's own (an error, a refusal) with the
    /// request's `X-Request-Id`; whether the connection may go on.
    async fn write_own(
        &mut self,
        mut resp: http::Response<crate::body::ProxyBody>,
        head_request: bool,
        close: bool,
    ) -> bool {
        if let Ok(id) = http::HeaderValue::from_bytes(&self.request_id) {
            resp.headers_mut().insert(crate::headers::X_REQUEST_ID.clone(), id);
        }
        reply::write(&mut self.stream, &mut self.scratch.out, resp, head_request, close).await.unwrap_or(false)
    }
}
