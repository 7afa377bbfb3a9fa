//! The hyper lane's codec: hyper's service for one client connection
//! (HTTP/1.1 or HTTP/2). Each request runs the pipeline's
//! [`respond`](crate::pipeline::proxy::respond) (or the cache's purge), and
//! counts in progress for the drain until its answer's body is sent.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use crate::lanes::linger::{Activity, InFlight, Tracked};
use crate::pipeline::proxy::respond;
use crate::shared::body::ProxyBody;
use crate::shared::state::Client;
use crate::upstream::RequestBody;

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
    hyper::service::service_fn(move |req| Box::pin(handle(client.clone(), req, activity.enter())))
}

/// hyper's service function: never fails, every error is a response; the
/// request counts in progress (`in_flight`) until its answer's body is sent.
async fn handle(
    client: Rc<Client>,
    req: Request<Incoming>,
    in_flight: InFlight,
) -> Result<Response<Tracked<ProxyBody>>, Infallible> {
    let paths = &client.worker.shared.admin_paths;
    let mut resp = if req.uri().path() == paths.purge && paths.owns(paths.purge.as_str(), client.admin_only) {
        crate::pipeline::purge::answer(&client, req).await
    } else {
        respond(&client, req.map(RequestBody::Client)).await
    };
    if client.worker.shared.draining() {
        // After SIGTERM every response closes its connection (hyper then closes it).
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp.map(|body| Tracked::new(body, in_flight)))
}
