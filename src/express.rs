//! The express lane: HTTP/1.1 proxying at the byte level for the requests
//! that make up nearly all traffic. A client connection starts here. Each
//! request head is parsed in place ([`head`]), rewritten into the upstream's
//! head without building a `HeaderMap`, and sent on a pooled upstream socket
//! ([`UpstreamPool`](crate::upstream::UpstreamPool)); the response head is rewritten the same way ([`response`])
//! and the body passes through as bytes, its end found from its framing
//! ([`framing`]). Three lanes per request:
//! - **express**: plain requests to the upstream (and cache bypasses);
//! - **own**: perfproxy's endpoints and cache lookups, answered by
//!   [`proxy::respond`] and written by [`reply`];
//! - **handoff**: anything unusual (upgrades, chunked or `Expect` request
//!   bodies, malformed or oversized heads, HTTP/1.0, purges): hyper takes the
//!   connection from there, the bytes already read replayed ([`Rewind`]).
//!
//! The semantics match the hyper path (tests run against both): same
//! header rules, same errors (502/504 as [`ProxyError`]), same metrics.

mod framing;
mod head;
mod reply;
mod response;
mod rewind;

use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

pub use response::Malformed;
pub use rewind::Rewind;

use crate::body::RequestBody;
use crate::cache::{key, policy, Counters};
use crate::error::ProxyError;
use crate::headers::ServerTiming;
use crate::proxy;
use crate::server::Drain;
use crate::state::Client;
use crate::upstream::UpstreamError;
use framing::{Chunks, Framing};
use head::{Parsed, RequestHead};
use response::{Additions, ResponseHead};

/// Bytes asked of a socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// The largest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How a connection left the express lane.
#[derive(Debug)]
pub enum Ended {
    Closed,
    /// hyper serves the rest of the connection.
    Handoff(Rewind),
}

/// Where one request goes.
enum Lane {
    Express { x_cache: Option<&'static [u8]> },
    Own(Box<Request<RequestBody>>),
    Handoff,
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
    /// The upstream request, kept until answered (a stale connection retries it).
    upstream_out: Vec<u8>,
    /// Bytes from the upstream not yet used.
    up_buf: BytesMut,
    /// What the client is sent next.
    out: Vec<u8>,
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
        buf: BytesMut::with_capacity(4096),
        head: RequestHead::default(),
        upstream_out: Vec::with_capacity(1024),
        up_buf: BytesMut::new(),
        out: Vec::with_capacity(2048),
    };
    loop {
        match conn.read_head().await {
            Some(Parsed::Complete) => {}
            Some(_) => return conn.handoff(),
            None => return Ended::Closed,
        }
        let keep = match conn.lane() {
            Lane::Express { x_cache } => conn.express(x_cache).await,
            Lane::Own(req) => conn.own(*req).await,
            Lane::Handoff => return conn.handoff(),
        };
        if !keep {
            let _ = conn.stream.shutdown().await;
            return Ended::Closed;
        }
    }
}

impl Conn {
    fn handoff(self) -> Ended {
        Ended::Handoff(Rewind::new(self.buf.freeze(), self.stream))
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
            self.buf.reserve(READ_CHUNK);
            let idle = self.buf.is_empty();
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf));
            let drain = &self.drain;
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

    fn lane(&mut self) -> Lane {
        let worker = &self.client.worker;
        let shared = &worker.shared;
        let (head, buf) = (&self.head, &self.buf[..]);
        let path = head.path(buf);
        if shared.admin_paths.owns(path) {
            if path == shared.admin_paths.purge || head.content_length > 0 {
                return Lane::Handoff;
            }
            return head.to_request(buf).map_or(Lane::Handoff, |r| Lane::Own(Box::new(r)));
        }
        let rules = shared.cache.rules();
        if !rules.enabled {
            return Lane::Express { x_cache: None };
        }
        let lookup = matches!(head.method, Method::GET | Method::HEAD) && !head.range;
        if lookup {
            let key = key::primary(head.host(buf), path, head.query(buf), &rules.ignore_query);
            if !worker.cache_passes.borrow().active(&key) {
                return head.to_request(buf).map_or(Lane::Handoff, |r| Lane::Own(Box::new(r)));
            }
        }
        Counters::add(&worker.cache_counters.bypasses, 1);
        Lane::Express { x_cache: Some(b"BYPASS") }
    }

    /// A request `proxy::respond` answers (perfproxy's endpoints, the cache).
    async fn own(&mut self, req: Request<RequestBody>) -> bool {
        let head_request = self.head.method == Method::HEAD;
        let close = self.head.close || self.drain.stopping();
        self.buf.advance(self.head.len);
        let resp = proxy::respond(&self.client, req).await;
        match reply::write(&mut self.stream, &mut self.out, resp, head_request, close).await {
            Ok(keep) => keep,
            Err(e) => {
                debug!(error = %e, "client connection ended mid-response");
                false
            }
        }
    }

    /// A request straight to the upstream and its response back, recorded.
    async fn express(&mut self, x_cache: Option<&'static [u8]>) -> bool {
        let worker = self.client.worker.clone();
        let (head, buf) = (&self.head, &self.buf[..]);
        let recording = worker.recorder.as_ref().map(|r| {
            let started = r.begin();
            let route =
                worker.shared.routes.resolve(&head.method, head.path(buf), &mut worker.route_cache.borrow_mut());
            (r, route, started)
        });
        let written = (x_cache.is_some() && policy::is_unsafe(&head.method))
            .then(|| (head.host(buf).to_string(), head.path(buf).to_string()));
        let head_request = head.method == Method::HEAD;
        let replayable =
            matches!(head.method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS);
        let close = head.close || self.drain.stopping();

        self.upstream_out.clear();
        head.write_upstream(buf, self.client.ip.as_bytes(), &mut self.upstream_out);
        let body_here = (buf.len() - head.len).min(usize::try_from(head.content_length).unwrap_or(usize::MAX));
        self.upstream_out.extend_from_slice(&buf[head.len..head.len + body_here]);
        let body_left = head.content_length - body_here as u64;
        self.buf.advance(self.head.len + body_here);

        let sent = Instant::now();
        let add = |timing: &ServerTiming, date: &[u8; 29], out: &mut Vec<u8>, up: &[u8]| {
            let add = Additions { head_request, server_timing: timing.as_bytes(), date, x_cache, close };
            response::parse(up, &add, out)
        };
        let timeout = worker.shared.config.upstream_timeout;
        let exchanged =
            tokio::time::timeout(timeout, self.exchange(body_left, replayable && body_left == 0, sent, add));
        let (mut up, resp) = match exchanged.await {
            Ok(Ok(v)) => v,
            Ok(Err(Failed::Client)) => {
                if let Some((r, route, started)) = recording {
                    r.finish(route, 400, started);
                }
                return false;
            }
            Ok(Err(Failed::Stale)) => {
                let e = UpstreamError::Io(std::io::ErrorKind::ConnectionReset.into());
                return self.fail(ProxyError::BadGateway(e), recording, head_request, close).await;
            }
            Ok(Err(Failed::Upstream(e))) => return self.fail(e, recording, head_request, close).await,
            Err(_) => return self.fail(ProxyError::GatewayTimeout(timeout), recording, head_request, close).await,
        };
        if let Some((host, path)) = written.filter(|_| (200..400).contains(&resp.status)) {
            let mut h = HeaderMap::new();
            for (name, at) in &resp.locations {
                if let Ok(v) = HeaderValue::from_bytes(&self.up_buf[at.clone()]) {
                    h.append(HeaderName::from_static(name), v);
                }
            }
            crate::cache::serve::invalidate_after_write(&self.client, &host, &path, &h).await;
        }
        self.up_buf.advance(resp.len);
        let relayed = self.relay(&mut up, resp.framing).await;
        if let Some((r, route, started)) = recording {
            r.finish(route, resp.status, started);
        }
        match relayed {
            Ok(()) => {
                if resp.reusable && self.up_buf.is_empty() {
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

    /// Sends the request (a stale pooled connection: the next one, or a new
    /// one) and reads the response head; the client's head is in `out`.
    async fn exchange(
        &mut self,
        body_left: u64,
        replayable: bool,
        sent: Instant,
        parse: impl Fn(&ServerTiming, &[u8; 29], &mut Vec<u8>, &[u8]) -> Result<response::Parsed, response::Malformed>,
    ) -> Result<(TcpStream, ResponseHead), Failed> {
        let worker = self.client.worker.clone();
        loop {
            let (mut up, reused) = worker.upstream.checkout().await.map_err(|e| Failed::Upstream(e.into()))?;
            match self.send(&mut up, body_left, sent, &parse).await {
                Ok(head) => return Ok((up, head)),
                Err(Failed::Stale) if reused && replayable => debug!("upstream closed a pooled connection: retrying"),
                Err(e) => return Err(e),
            }
        }
    }

    async fn send(
        &mut self,
        up: &mut TcpStream,
        mut body_left: u64,
        sent: Instant,
        parse: &impl Fn(&ServerTiming, &[u8; 29], &mut Vec<u8>, &[u8]) -> Result<response::Parsed, response::Malformed>,
    ) -> Result<ResponseHead, Failed> {
        up.write_all(&self.upstream_out).await.map_err(|_| Failed::Stale)?;
        while body_left > 0 {
            if self.buf.is_empty() {
                self.buf.reserve(READ_CHUNK);
                if self.stream.read_buf(&mut self.buf).await.map_err(|_| Failed::Client)? == 0 {
                    return Err(Failed::Client);
                }
            }
            let n = self.buf.len().min(usize::try_from(body_left).unwrap_or(usize::MAX));
            up.write_all(&self.buf[..n]).await.map_err(upstream_io)?;
            self.buf.advance(n);
            body_left -= n as u64;
        }
        self.up_buf.clear();
        loop {
            self.up_buf.reserve(READ_CHUNK);
            match up.read_buf(&mut self.up_buf).await {
                Ok(0) | Err(_) if self.up_buf.is_empty() => return Err(Failed::Stale),
                Ok(0) => return Err(upstream_io(std::io::ErrorKind::UnexpectedEof.into())),
                Err(e) => return Err(upstream_io(e)),
                Ok(_) => {}
            }
            loop {
                self.out.clear();
                let timing = ServerTiming::since(sent);
                match parse(&timing, &reply::date(), &mut self.out, &self.up_buf) {
                    Ok(response::Parsed::Complete(head)) => return Ok(head),
                    Ok(response::Parsed::Interim(n)) => self.up_buf.advance(n),
                    Ok(response::Parsed::Partial) if self.up_buf.len() < MAX_RESPONSE_HEAD => break,
                    Ok(response::Parsed::Partial) => {
                        return Err(Failed::Upstream(
                            UpstreamError::Malformed(response::Malformed("head too large")).into(),
                        ))
                    }
                    Err(m) => return Err(Failed::Upstream(UpstreamError::Malformed(m).into())),
                }
            }
        }
    }

    /// The response head in `out`, then the body as it arrives, to its end.
    async fn relay(&mut self, up: &mut TcpStream, framing: Framing) -> std::io::Result<()> {
        let mut chunks = Chunks::default();
        let mut left = if let Framing::Length(n) = framing { n } else { 0 };
        let mut head_sent = false;
        loop {
            let (take, done) = match framing {
                Framing::Empty => (0, true),
                Framing::Length(_) => {
                    let n = left.min(self.up_buf.len() as u64);
                    left -= n;
                    (n as usize, left == 0)
                }
                Framing::Chunked => chunks.scan(&self.up_buf).map_err(std::io::Error::other)?,
                Framing::Close => (self.up_buf.len(), false),
            };
            if head_sent {
                self.stream.write_all(&self.up_buf[..take]).await?;
            } else {
                self.out.extend_from_slice(&self.up_buf[..take]);
                self.stream.write_all(&self.out).await?;
                head_sent = true;
            }
            self.up_buf.advance(take);
            if done {
                return Ok(());
            }
            self.up_buf.clear();
            self.up_buf.reserve(READ_CHUNK);
            if up.read_buf(&mut self.up_buf).await? == 0 {
                return match framing {
                    Framing::Close => Ok(()),
                    _ => Err(std::io::ErrorKind::UnexpectedEof.into()),
                };
            }
        }
    }

    /// No response head from the upstream: the error's answer, recorded.
    async fn fail(
        &mut self,
        e: ProxyError,
        recording: Option<(&Rc<crate::metrics::Recorder>, crate::routes::RouteId, Instant)>,
        head_request: bool,
        close: bool,
    ) -> bool {
        warn!(error = %e, "upstream failure");
        let resp = e.into_response();
        if let Some((r, route, started)) = recording {
            r.finish(route, resp.status().as_u16(), started);
        }
        reply::write(&mut self.stream, &mut self.out, resp, head_request, close).await.unwrap_or(false)
    }
}
