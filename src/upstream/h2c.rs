//! The worker's HTTP/2 (h2c, prior knowledge) connection to the upstream:
//! one multiplexed connection shared by every request of the worker that
//! goes over h2c, dialled on first use and again once it has closed. hyper
//! keeps the streams apart; the connection task runs on the worker.

use std::cell::RefCell;

use http::header::{HeaderValue, HOST, TE};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Mutex;
use tracing::debug;

use super::LocalExec;
use super::RequestBody;
use super::UpstreamError;
use crate::settings::UpstreamAddr;

/// A stream's flow-control window to the upstream (HTTP/2's default).
const STREAM_WINDOW: u32 = 65_535;
/// The connection's: HTTP/2's largest (RFC 9113 §6.9.1).
const CONNECTION_WINDOW: u32 = (1 << 31) - 1;

/// One worker's h2c connection to the upstream.
#[derive(Debug)]
pub struct H2cClient {
    addr: UpstreamAddr,
    tls: Option<std::sync::Arc<crate::tls::UpstreamTls>>,
    /// The live connection; the lock is held only while one is dialled, so
    /// a burst of first requests shares one dial.
    sender: Mutex<Option<SendRequest<RequestBody>>>,
    /// The last sender seen open, for requests that need no lock.
    ready: RefCell<Option<SendRequest<RequestBody>>>,
}

impl H2cClient {
    pub fn new(addr: UpstreamAddr, tls: Option<std::sync::Arc<crate::tls::UpstreamTls>>) -> H2cClient {
        H2cClient { addr, tls, sender: Mutex::new(None), ready: RefCell::new(None) }
    }

    /// A sender on an open connection, dialled if there is none.
    pub async fn sender(&self) -> Result<SendRequest<RequestBody>, UpstreamError> {
        if let Some(s) = self.ready.borrow().as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let mut held = self.sender.lock().await;
        if let Some(s) = held.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let sender = self.dial().await?;
        *held = Some(sender.clone());
        *self.ready.borrow_mut() = Some(sender.clone());
        Ok(sender)
    }

    async fn dial(&self) -> Result<SendRequest<RequestBody>, UpstreamError> {
        let stream = super::connect(&self.addr, self.tls.as_deref(), true).await?;
        // The connection's window is as large as HTTP/2 allows, a stream's
        // the protocol's default: a client that stops reading its stream
        // holds 64 KiB of the shared connection's window (and of perfproxy's
        // memory), never all of it.
        let (sender, conn) = http2::Builder::new(LocalExec)
            .timer(TokioTimer::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Handshake)?;
        tokio::task::spawn_local(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        });
        Ok(sender)
    }

    /// Sends a request prepared for HTTP/1.1 (origin-form target, `Host`)
    /// as an HTTP/2 one: the authority from `Host`, gRPC's `te: trailers`.
    pub async fn send(&self, mut req: Request<RequestBody>) -> Result<Response<Incoming>, UpstreamError> {
        let authority = req
            .headers_mut()
            .remove(HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .unwrap_or_else(|| self.addr.authority.clone());
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = Uri::from_parts(parts).map_err(|_| crate::wire::http1::Malformed("request target"))?;
        *req.version_mut() = Version::HTTP_2;
        if crate::wire::grpc::is_grpc(req.headers()) {
            req.headers_mut().insert(TE, HeaderValue::from_static("trailers"));
        }
        let mut retried = false;
        loop {
            let mut sender = self.sender().await?;
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                // Never sent (the connection was going away: a GOAWAY, or
                // the server's connection age): once more, on a new one.
                Err(mut e) if !retried => match e.take_message() {
                    Some(unsent) => {
                        debug!(error = %e.error(), "upstream HTTP/2 connection going away: retrying on a new one");
                        self.forget();
                        (req, retried) = (unsent, true);
                    }
                    None => return Err(UpstreamError::Exchange(e.into_error())),
                },
                Err(e) => return Err(UpstreamError::Exchange(e.into_error())),
            }
        }
    }

    /// Stops handing out the current connection (it is going away); the
    /// next request dials a new one.
    fn forget(&self) {
        *self.ready.borrow_mut() = None;
        if let Ok(mut held) = self.sender.try_lock() {
            *held = None;
        }
    }
}
