//! The upstream connection pool of one worker. Each worker thread owns its
//! pool (no lock, no atomics on the request path): idle HTTP/1.1 connections
//! kept LIFO and closed once idle longer than `upstream_idle_timeout_ms` (so
//! perfproxy gives up a connection before a backend's own keep-alive timeout
//! races a request onto it: Node closes after 5 s), a new one dialled (with
//! `TCP_NODELAY`) when none is idle, and a
//! connection handed back by the response body once it has been read to the
//! end ([`Lease`]). A request the upstream never saw because it closed an
//! idle connection is retried once on a fresh one.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use crate::body::RequestBody;
use crate::config::UpstreamAddr;

/// How many idle connections one worker keeps.
const MAX_IDLE_PER_WORKER: usize = 512;

/// Why the upstream gave no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to upstream: {0}")]
    Connect(#[source] std::io::Error),
    #[error("upstream handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("upstream exchange: {0}")]
    Exchange(#[source] hyper::Error),
}

/// One worker's connections to the upstream.
#[derive(Debug)]
pub struct UpstreamPool {
    addr: UpstreamAddr,
    /// Idle connections, newest last, with the time each became idle.
    idle: RefCell<Vec<(SendRequest<RequestBody>, Instant)>>,
    idle_timeout: Duration,
}

/// A connection on loan to one exchange; [`Lease::release`] returns it.
#[derive(Debug)]
pub struct Lease {
    pool: Rc<UpstreamPool>,
    sender: SendRequest<RequestBody>,
}

impl Lease {
    /// Returns the connection to its pool, if it can carry another request.
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = self.pool.idle.borrow_mut();
        if idle.len() < MAX_IDLE_PER_WORKER {
            idle.push((self.sender, Instant::now()));
        }
    }
}

impl UpstreamPool {
    pub fn new(addr: UpstreamAddr, idle_timeout: Duration) -> Rc<UpstreamPool> {
        Rc::new(UpstreamPool { addr, idle: RefCell::new(Vec::new()), idle_timeout })
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }

    fn take_idle(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle.borrow_mut();
        while let Some((sender, since)) = idle.pop() {
            if since.elapsed() >= self.idle_timeout {
                // The newest is too old: so are all below it. Close them.
                idle.clear();
                return None;
            }
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    async fn dial(&self, upgrades: bool) -> Result<SendRequest<RequestBody>, UpstreamError> {
        let stream =
            TcpStream::connect((self.addr.host.as_str(), self.addr.port)).await.map_err(UpstreamError::Connect)?;
        stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
        let (sender, conn) =
            http1::Builder::new().handshake(TokioIo::new(stream)).await.map_err(UpstreamError::Handshake)?;
        if upgrades {
            tokio::task::spawn_local(async move {
                if let Err(e) = conn.with_upgrades().await {
                    debug!(error = %e, "upstream connection (upgradable) ended");
                }
            });
        } else {
            tokio::task::spawn_local(async move {
                if let Err(e) = conn.await {
                    debug!(error = %e, "upstream connection ended");
                }
            });
        }
        Ok(sender)
    }

    /// Sends `req` on an idle connection (or a new one) and returns the
    /// response head with the lease of its connection.
    pub async fn send(
        self: &Rc<Self>,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        while let Some(mut sender) = self.take_idle() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lease { pool: self.clone(), sender })),
                Err(mut e) => match e.take_message() {
                    // Never written: the connection was closing. Try the next one.
                    Some(unsent) => req = unsent,
                    None => return Err(UpstreamError::Exchange(e.into_error())),
                },
            }
        }
        let mut sender = self.dial(false).await?;
        let resp = sender.send_request(req).await.map_err(UpstreamError::Exchange)?;
        Ok((resp, Lease { pool: self.clone(), sender }))
    }

    /// Sends an upgrade handshake on a dedicated connection that can be
    /// taken over as a tunnel; it never returns to the pool.
    pub async fn send_upgrade(&self, req: Request<RequestBody>) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = self.dial(true).await?;
        sender.send_request(req).await.map_err(UpstreamError::Exchange)
    }
}
