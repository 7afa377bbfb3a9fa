//! The hyper lane's codec: a client connection served by hyper
//! ([`serve`]: HTTP/2 when it starts with the preface, else HTTP/1.1) and
//! hyper's service for it ([`service`]). Each request runs the pipeline's
//! [`respond`](crate::pipeline::proxy::respond) (or the cache's purge), and
//! counts in progress for the drain until its answer's body is sent.
//!
//! An idle HTTP/1.1 keep-alive connection is *parked*: once hyper waits
//! for a new head with nothing of one read (see `linger::ClientIo`), its
//! connection is closed without shutting the socket, which waits for its
//! next request holding no buffer; hyper takes it up again then. hyper
//! keeps 16 KB of buffers in a connection for as long as it lives.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::lanes::drain::{Drain, Drainable};
use crate::lanes::express::Rewind;
use crate::lanes::linger::{Activity, ClientIo, InFlight};
use crate::lanes::stream_clock::Tracked;
use crate::pipeline::proxy::respond;
use crate::shared::body::ProxyBody;
use crate::shared::state::Client;
use crate::upstream::RequestBody;

/// The two servers a worker's hyper connections use.
pub(crate) struct Servers {
    pub(crate) http1: http1::Builder,
    pub(crate) http2: hyper::server::conn::http2::Builder<crate::lanes::stream_clock::StreamExec>,
}

/// hyper serves the connection (`first`: no request was served on it yet,
/// so it may be HTTP/2) until it ends.
pub(crate) async fn serve(client: Rc<Client>, io: Rewind, first: bool, servers: &Servers, drain: &Rc<Drain>, id: u64) {
    let config = &client.worker.shared.config;
    // HTTP/2 only from a connection's first bytes; a client silent (or
    // halfway through a preface) for header_read_timeout, or when the
    // worker stops, is closed.
    let (mut io, h2) = match first {
        true => {
            let sniffed = crate::lanes::http2::sniff(io, config.header_read_timeout, drain.stopped(id)).await;
            drain.unregister(id);
            match sniffed {
                Some(sniffed) => sniffed,
                None => return,
            }
        }
        false => (io, false),
    };
    if h2 {
        let activity = Activity::new(true);
        let (io, returned) = ClientIo::new(io, activity.clone(), config.send_timeout);
        let failed = crate::lanes::http2::serve(client, io, activity, &servers.http2, drain, id).await;
        return linger_if(failed, returned).await;
    }
    // After a park: when the next head must be whole (one
    // `header_read_timeout_ms` for the idle wait and the head, as hyper's
    // own timer and the express lane count it).
    let mut head_by: Option<tokio::time::Instant> = None;
    loop {
        let activity = Activity::new(false);
        // Closed by perfproxy first, the socket comes back for a lingering
        // close; parked, it comes back to wait for its next request.
        let (client_io, returned) = ClientIo::parking(io, activity.clone(), config.send_timeout);
        let service = service(client.clone(), activity.clone());
        let conn = servers.http1.serve_connection(TokioIo::new(client_io), service).with_upgrades();
        let mut serving = Drainable::new(conn, drain.clone(), id, activity.clone());
        // hyper's connection holds the socket: it is dropped as soon as it
        // ends (`serving.await` consumes it), so the socket comes back.
        let ended = match head_by {
            None => serving.await,
            Some(by) => {
                let late = async {
                    tokio::time::sleep_until(by).await;
                    if activity.ever_busy() {
                        std::future::pending::<()>().await;
                    }
                };
                let ended = tokio::select! {
                    biased;
                    ended = &mut serving => ended,
                    // No head whole in time: closed, as an idle connection.
                    () = late => return,
                };
                drop(serving);
                ended
            }
        };
        if let Err(e) = &ended {
            debug!(error = %e, peer = %client.addr, "client connection ended");
        }
        if !activity.parked() {
            return linger_if(ended.is_err(), returned).await;
        }
        let Ok(parked) = returned.await else { return };
        let by = tokio::time::Instant::now() + config.header_read_timeout;
        head_by = Some(by);
        // Its next request, within the idle timeout, unless the worker stops.
        let waited = tokio::select! {
            biased;
            () = drain.stopped(id) => false,
            ready = tokio::time::timeout_at(by, parked.readable()) => matches!(ready, Ok(Ok(()))),
        };
        drain.unregister(id);
        if !waited {
            return;
        }
        io = parked;
    }
}

/// Back when hyper dropped it (not when it became a tunnel): a lingering
/// close after hyper's own error answers (a 400, 431) or with input waiting.
async fn linger_if(failed: bool, mut returned: tokio::sync::oneshot::Receiver<Rewind>) {
    if let Ok(io) = returned.try_recv() {
        if failed || io.has_unread() {
            Box::pin(crate::lanes::linger::discard(io)).await;
        }
    }
}

/// hyper's service for one client connection: each request runs [`handle`],
/// counted in `activity` (for the drain) until its answer's body is sent.
pub fn service(
    client: Rc<Client>,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<Request<Incoming>, Response = Response<Tracked<ProxyBody>>, Error = Infallible> {
    // Boxed: hyper keeps room for one request's future in every connection,
    // idle or not; a box is 16 bytes there, `handle`'s future itself about
    // 8 KB. (One allocation per request on this lane; the express lane,
    // which serves nearly all HTTP/1.1, does not come here.)
    hyper::service::service_fn(move |req: Request<Incoming>| {
        // An upgrade's connection becomes a tunnel: never parked.
        let upgrade = req.headers().contains_key(header::UPGRADE) || req.method() == http::Method::CONNECT;
        activity.last_request_bodiless(hyper::body::Body::is_end_stream(req.body()) && !upgrade);
        Box::pin(handle(client.clone(), req, activity.enter()))
    })
}

/// hyper's service function: never fails, every error is a response; the
/// request counts in progress (`in_flight`) until its answer's body is sent.
async fn handle(
    client: Rc<Client>,
    mut req: Request<Incoming>,
    in_flight: InFlight,
) -> Result<Response<Tracked<ProxyBody>>, Infallible> {
    let paths = &client.worker.shared.admin_paths;
    let mut resp = if req.uri().path() == paths.purge && paths.owns(paths.purge.as_str(), client.admin_only) {
        let request_id = crate::pipeline::proxy::request_id(req.headers_mut());
        let mut resp = crate::pipeline::purge::answer(&client, req).await;
        resp.headers_mut().insert(crate::wire::headers::X_REQUEST_ID.clone(), request_id);
        resp
    } else {
        respond(&client, req.map(RequestBody::Client)).await
    };
    if client.worker.shared.draining() {
        // After SIGTERM every response closes its connection (hyper then closes it).
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp.map(|body| Tracked::new(body, in_flight)))
}
