//! The upstream connections of one worker: one pool of streams (plain TCP,
//! or TLS for an `https://` upstream: [`UpstreamStream`])
//! (no lock, no atomics on the request path), kept LIFO and closed once idle
//! longer than `upstream_idle_timeout_ms` (so perfproxy gives up a
//! connection before a backend's own keep-alive timeout races a request onto
//! it: Node closes after 5 s). A new one is dialled (`TCP_NODELAY`) when none
//! is idle. Before reuse a stream is checked without a system call: the
//! reactor already knows whether the upstream closed it.
//!
//! The express lane writes and reads the streams itself. The hyper path
//! ([`UpstreamPool::send`]) borrows one for an exchange: a
//! `hyper::client::conn::http1` handshake on it, and the stream back in the
//! pool once the response body has been read to its end ([`Lease`]). A
//! request the upstream never saw because it closed an idle connection is
//! retried on the next one.
//!
//! Requests that go over HTTP/2 (`upstream_protocol`: every one with `h2c`,
//! gRPC with `auto`) share the worker's one multiplexed h2c connection
//! instead ([`h2c`]; HTTP/2 over TLS with ALPN `h2` to an `https://` upstream).
//!
//! Every connection is made by [`connect`]: TCP (`TCP_NODELAY`), then the
//! TLS handshake when the upstream is `https://` (a session resumed from
//! the shared cache when one is kept, see [`UpstreamTls`]).

mod h2c;
mod request_body;

pub use request_body::RequestBody;

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::debug;

use crate::settings::{UpstreamAddr, UpstreamProtocol};
use crate::tls::{UpstreamStream, UpstreamTls};

/// Spawns HTTP/2 tasks (streams, connections) on the worker's `LocalSet`.
#[derive(Debug, Clone, Copy)]
pub struct LocalExec;

impl<F: std::future::Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// How many idle connections one worker keeps.
const MAX_IDLE_PER_WORKER: usize = 512;

/// Why the upstream gave no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to upstream: {0}")]
    Connect(#[source] io::Error),
    /// The TLS handshake failed: the upstream's certificate was not
    /// verified, or no protocol was agreed.
    #[error("TLS with the upstream: {0}")]
    Tls(#[source] io::Error),
    #[error("upstream handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("upstream exchange: {0}")]
    Exchange(#[source] hyper::Error),
    #[error("upstream exchange: {0}")]
    Io(#[source] io::Error),
    #[error(transparent)]
    Malformed(#[from] crate::wire::http1::Malformed),
}

/// One worker's connections to the upstream.
#[derive(Debug)]
pub struct UpstreamPool {
    addr: UpstreamAddr,
    /// Idle connections, newest last, with the time each became idle.
    idle: RefCell<Vec<(UpstreamStream, Instant)>>,
    idle_timeout: Duration,
    /// Streams released by hyper exchanges whose connection task has yet to
    /// hand them back (it runs on the next turn of the worker).
    returning: Cell<usize>,
    protocol: UpstreamProtocol,
    h2c: h2c::H2cClient,
    tls: Option<Arc<UpstreamTls>>,
    /// The largest response head read (`max_header_bytes`): a longer one
    /// is a malformed answer, on both lanes.
    max_response_head: usize,
}

/// A connection on loan to one hyper exchange; [`Lease::release`] says its
/// response was read to the end, and the stream goes back to the pool.
#[derive(Debug)]
pub struct Lease {
    pool: Rc<UpstreamPool>,
    sender: SendRequest<RequestBody>,
    released: Rc<Cell<bool>>,
}

impl Lease {
    /// The response was read to its end: the stream may carry another request.
    pub fn release(self) {
        if !self.sender.is_closed() {
            self.released.set(true);
            self.pool.returning.set(self.pool.returning.get() + 1);
        }
        // Dropping the sender ends hyper's connection task, which hands the
        // stream back.
    }
}

impl UpstreamPool {
    pub fn new(
        addr: UpstreamAddr,
        tls: Option<Arc<UpstreamTls>>,
        idle_timeout: Duration,
        protocol: UpstreamProtocol,
        max_response_head: usize,
    ) -> Rc<UpstreamPool> {
        Rc::new(UpstreamPool {
            max_response_head,
            h2c: h2c::H2cClient::new(addr.clone(), tls.clone()),
            tls,
            addr,
            idle: RefCell::new(Vec::new()),
            idle_timeout,
            returning: Cell::new(0),
            protocol,
        })
    }

    /// The largest response head read (`max_header_bytes`).
    pub fn max_response_head(&self) -> usize {
        self.max_response_head
    }

    /// hyper's HTTP/1 client, reading heads up to [`Self::max_response_head`]
    /// (hyper's read buffer holds at most that much while a head is parsed).
    fn http1(&self) -> http1::Builder {
        let mut b = http1::Builder::new();
        // hyper refuses a buffer under 8 KiB; the setting's floor is 8 KiB too.
        b.max_buf_size(self.max_response_head.max(8192));
        b
    }

    /// Whether `req` goes over h2c (`grpc`: it is a gRPC call).
    pub fn h2c_for(&self, grpc: bool) -> bool {
        self.protocol.h2c_for(grpc)
    }

    /// Idle connections held now.
    pub fn idle_len(&self) -> usize {
        self.idle.borrow().len()
    }

    /// An idle connection the upstream has not closed, if there is one.
    pub fn take(&self) -> Option<UpstreamStream> {
        let mut idle = self.idle.borrow_mut();
        while let Some((mut stream, since)) = idle.pop() {
            if since.elapsed() >= self.idle_timeout {
                // The newest is too old: so are all below it. Close them.
                idle.clear();
                return None;
            }
            if stream.is_open() {
                return Some(stream);
            }
        }
        None
    }

    /// An idle connection (`true`: reused), else a new one. A stream on its
    /// way back from a hyper exchange is waited for (one turn of the worker)
    /// rather than dialling another.
    pub async fn checkout(&self) -> Result<(UpstreamStream, bool), UpstreamError> {
        if let Some(s) = self.take() {
            return Ok((s, true));
        }
        if self.returning.get() > 0 {
            tokio::task::yield_now().await;
            if let Some(s) = self.take() {
                return Ok((s, true));
            }
        }
        // Boxed: dialling is a large state machine every checkout would
        // otherwise reserve room for.
        Ok((Box::pin(self.dial()).await?, false))
    }

    /// A new connection.
    async fn dial(&self) -> Result<UpstreamStream, UpstreamError> {
        connect(&self.addr, self.tls.as_deref(), false).await
    }

    /// Keeps a connection whose last response was read to its end.
    pub fn give_back(&self, stream: UpstreamStream) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < MAX_IDLE_PER_WORKER {
            idle.push((stream, Instant::now()));
        }
    }

    /// hyper's client on `stream`; the stream returns to the pool when the
    /// exchange is over, if its lease was released.
    async fn handshake(
        self: &Rc<Self>,
        stream: UpstreamStream,
    ) -> Result<(SendRequest<RequestBody>, Rc<Cell<bool>>), UpstreamError> {
        let (sender, conn) = self.http1().handshake(TokioIo::new(stream)).await.map_err(UpstreamError::Handshake)?;
        let released = Rc::new(Cell::new(false));
        let (pool, done) = (self.clone(), released.clone());
        tokio::task::spawn_local(async move {
            let ended = conn.without_shutdown().await;
            if done.get() {
                pool.returning.set(pool.returning.get() - 1);
            }
            match ended {
                Ok(parts) if done.get() && parts.read_buf.is_empty() => pool.give_back(parts.io.into_inner()),
                Ok(_) => {}
                Err(e) => debug!(error = %e, "upstream connection ended"),
            }
        });
        Ok((sender, released))
    }

    /// Sends `req` on an idle connection (or a new one) and returns the
    /// response head with the lease of its connection (none over h2c: the
    /// connection is shared).
    pub async fn send(
        self: &Rc<Self>,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<Lease>), UpstreamError> {
        if self.h2c_for(crate::wire::grpc::is_grpc(req.headers())) {
            return Ok((self.h2c.send(req).await?, None));
        }
        loop {
            let (stream, reused) = self.checkout().await?;
            let (mut sender, released) = self.handshake(stream).await?;
            // A bodiless request the rulebook may replay, on a reused
            // connection: kept, in case the upstream closed it as it went
            // (as the express lane does: `Failed::Stale`).
            let again =
                (reused && crate::wire::http1::replayable(req.method()) && http_body::Body::is_end_stream(req.body()))
                    .then(|| head_copy(&req));
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Some(Lease { pool: self.clone(), sender, released }))),
                Err(mut e) => match (e.take_message(), again) {
                    // Never written: the connection was closing. Try the next one.
                    (Some(unsent), _) if reused => req = unsent,
                    // Written, and the connection closed or reset with no answer.
                    (None, Some(copy)) if closed_under(e.error()) => {
                        debug!("upstream closed a reused connection before answering: retrying");
                        req = copy;
                    }
                    _ => return Err(UpstreamError::Exchange(e.into_error())),
                },
            }
        }
    }

    /// Sends an upgrade handshake on a dedicated connection that can be
    /// taken over as a tunnel; it never returns to the pool.
    pub async fn send_upgrade(&self, req: Request<RequestBody>) -> Result<Response<Incoming>, UpstreamError> {
        let stream = self.dial().await?;
        let (mut sender, conn) =
            self.http1().handshake(TokioIo::new(stream)).await.map_err(UpstreamError::Handshake)?;
        tokio::task::spawn_local(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(error = %e, "upstream connection (upgradable) ended");
            }
        });
        sender.send_request(req).await.map_err(UpstreamError::Exchange)
    }
}

/// Whether hyper's error says the connection ended under a request
/// without a complete answer: closed (`IncompleteMessage`), or reset or
/// broken (an upstream closing a keep-alive connection with the request
/// unread resets it), as the express lane's `Failed::Stale`.
fn closed_under(e: &hyper::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    e.is_incomplete_message()
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| matches!(io.kind(), ConnectionReset | BrokenPipe | ConnectionAborted))
}

/// A bodiless request's head, to send again.
fn head_copy(req: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// A new connection to `addr`: TCP (`TCP_NODELAY`), then TLS when `tls` is
/// given (ALPN `h2` when `h2`, else `http/1.1`).
pub(crate) async fn connect(
    addr: &UpstreamAddr,
    tls: Option<&UpstreamTls>,
    h2: bool,
) -> Result<UpstreamStream, UpstreamError> {
    let stream = TcpStream::connect((addr.host.as_str(), addr.port)).await.map_err(UpstreamError::Connect)?;
    stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
    match tls {
        None => Ok(UpstreamStream::Plain(stream)),
        Some(tls) => Ok(UpstreamStream::Tls(Box::new(tls.connect(stream, h2).await.map_err(UpstreamError::Tls)?))),
    }
}
