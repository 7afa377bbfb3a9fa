//! One request, top to bottom: perfproxy's own endpoints → route label →
//! checks → upstream (pooled, time-boxed) → response headers. Upgrade
//! handshakes (WebSocket) are tunnelled. Every failure becomes a
//! [`ProxyError`] and is answered in one place.

use std::rc::Rc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::observe::metrics::Recording;
use crate::observe::trace;
use crate::pipeline::forward;
use crate::shared::body::ProxyBody;
use crate::shared::error::ProxyError;
use crate::shared::state::Client;
use crate::upstream::RequestBody;
use crate::wire::headers;

/// Answers one request: perfproxy's own endpoints, else the upstream's
/// answer (through the cache when it is on), recorded when monitoring is on.
pub async fn respond(client: &Rc<Client>, mut req: Request<RequestBody>) -> Response<ProxyBody> {
    let request_id = request_id(req.headers_mut());
    // hyper's HTTP/1.1 server sends only the trailers a `Trailer` field
    // names: a gRPC answer's status ones, for a gRPC client on HTTP/1.1.
    let grpc_over_http1 = req.version() < Version::HTTP_2 && crate::wire::grpc::is_grpc(req.headers());
    let mut resp = answer(client, req).await;
    resp.headers_mut().insert(headers::X_REQUEST_ID.clone(), request_id);
    if grpc_over_http1 && resp.status() == StatusCode::OK {
        let names = HeaderValue::from_static("grpc-status, grpc-message, grpc-status-details-bin");
        resp.headers_mut().insert(header::TRAILER, names);
    }
    resp
}

/// The request's `X-Request-Id`: the client's when usable, else a new one
/// put in its place (sent upstream once); every answer returns it.
pub fn request_id(fields: &mut http::HeaderMap) -> HeaderValue {
    let sent = fields.get_all(&headers::X_REQUEST_ID).iter().map(HeaderValue::as_bytes);
    let kept = crate::wire::http1::client_request_id(sent).is_some();
    match fields.get(&headers::X_REQUEST_ID).filter(|_| kept) {
        Some(id) => id.clone(),
        None => {
            let id = HeaderValue::from_bytes(&crate::wire::http1::new_request_id()).expect("hex digits");
            fields.insert(headers::X_REQUEST_ID.clone(), id.clone());
            id
        }
    }
}

async fn answer(client: &Rc<Client>, mut req: Request<RequestBody>) -> Response<ProxyBody> {
    let paths = &client.worker.shared.admin_paths;
    if paths.is_document(req.uri().path()) && paths.owns(req.uri().path(), client.admin_only) {
        client.worker.document_pace.turn().await;
    }
    match crate::admin::endpoints::answer(client, &req) {
        Some(crate::admin::endpoints::Reply::Now(resp)) => return resp,
        Some(crate::admin::endpoints::Reply::History) => {
            return crate::admin::history_query::answer(&client.worker.shared, req.uri().query()).await
        }
        Some(crate::admin::endpoints::Reply::Build(doc)) => {
            return crate::admin::endpoints::built(&client.worker.shared, doc).await
        }
        None => {}
    }
    let worker = &client.worker;
    let counted = req.extensions().get::<crate::admit::limits::Counted>().is_some();
    let limited = worker.limits().filter(|_| !counted).and_then(|limits| {
        let instances = || worker.shared.cluster.live_instances();
        limits
            .check(req.method(), req.uri().path(), &client.asker(req.headers()), Instant::now(), instances)
            .err()
            .map(ProxyError::from)
    });
    // Dropped unanswered (hyper drops this future when the client leaves
    // first), the recording says 499.
    let grpc = crate::wire::grpc::is_grpc(req.headers());
    let request_id = req.headers().get(&headers::X_REQUEST_ID).map_or(&[][..], HeaderValue::as_bytes);
    let mut recording = crate::pipeline::phases::begin_recording(client, &req, request_id, grpc, None);
    // The upstream gets perfproxy's `traceparent` in place of the client's.
    if let Some(traceparent) = recording.as_ref().and_then(Recording::traceparent) {
        let value = HeaderValue::from_bytes(&traceparent).expect("hex digits and dashes");
        req.headers_mut().insert(trace::TRACEPARENT.clone(), value);
    }
    let had_body = !req.body().is_end_stream();
    if let Some(recording) = recording.as_mut().filter(|_| grpc) {
        let deadline = req.headers().get(crate::wire::grpc::GRPC_TIMEOUT).and_then(crate::wire::grpc::timeout);
        let count = recording.grpc_call(worker.shared.config.protocols.grpc_errors, deadline);
        req = req.map(|body| body.counted(count));
    }
    if let Some(refusal) = limited {
        return crate::pipeline::phases::refuse(refusal, recording, had_body, grpc);
    }
    let sent = Instant::now();
    let resp = match forward(client, req).await {
        Ok(resp) => resp,
        // No response head from the upstream: its share is to the failure.
        Err(e) => crate::pipeline::phases::upstream_failed(e, recording.as_mut(), sent, had_body, grpc),
    };
    match recording {
        Some(mut recording) => {
            recording.answered(resp.status().as_u16());
            // Trailers-Only: the status is in the head.
            recording.grpc_status(resp.headers());
            if let Some(t) = resp.extensions().get::<forward::UpstreamTime>() {
                recording.upstream(t.sent, t.took);
            }
            if let Some(lookup) = resp.extensions().get::<crate::cache::RedisLookup>() {
                recording.redis(*lookup);
            }
            recording.head_ready();
            // Read only for a logged or traced request.
            if recording.wants_outcome() {
                let x_cache = resp.headers().get(&crate::pipeline::answer::X_CACHE);
                recording.cache(x_cache.map_or("", |v| crate::observe::access_log::cache_outcome(v.as_bytes())));
            }
            resp.map(|body| body.on_complete(recording))
        }
        None => resp,
    }
}

/// Checks a request and rewrites it for the upstream, in place; `upgrade` is
/// the protocol of an upgrade handshake, if it is one.
fn prepare(client: &Client, parts: &mut http::request::Parts, upgrade: Option<HeaderValue>) -> Result<(), ProxyError> {
    if parts.method == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported"));
    }
    if parts.headers.contains_key(header::TRANSFER_ENCODING) && !chunked_alone(&parts.headers) {
        // RFC 9112 §6.1: chunked is applied once, and hyper decodes nothing
        // else: `gzip, chunked` would reach the upstream as chunked with the
        // gzip's name lost, `chunked, chunked` decoded twice by some server.
        return Err(ProxyError::BadRequest("a transfer coding other than chunked, once"));
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first_host = hosts.next();
    let host_count = first_host.map_or(0, |_| 1 + hosts.count());
    if host_count > 1 {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    // RFC 9112 §3.2: `uri-host [":" port]`, nothing else (an http URI's
    // host is never empty: RFC 9110 §4.2.1).
    if first_host.is_some_and(|h| !crate::wire::http1::valid_host(h.as_bytes())) {
        return Err(ProxyError::BadRequest("invalid Host"));
    }
    if parts.uri.scheme().is_some_and(|s| !matches!(s.as_str(), "http" | "https")) {
        return Err(ProxyError::BadRequest("a target that is not an http URI"));
    }
    // RFC 9112 §3.2.3-4: authority-form is CONNECT's alone, asterisk-form OPTIONS'.
    if parts.uri.scheme().is_none() && parts.uri.authority().is_some() {
        return Err(ProxyError::BadRequest("an authority-form target (CONNECT only)"));
    }
    if parts.uri.path() == "*" && parts.method != Method::OPTIONS {
        return Err(ProxyError::BadRequest("an asterisk-form target (OPTIONS only)"));
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400, whatever
    // its target; RFC 9113 §8.3.1: an HTTP/2 one needs `:authority` or Host.
    if host_count == 0 && parts.version == Version::HTTP_11 {
        return Err(ProxyError::BadRequest("HTTP/1.1 request without Host"));
    }
    if host_count == 0 && parts.version == Version::HTTP_2 && parts.uri.authority().is_none() {
        return Err(ProxyError::BadRequest("HTTP/2 request without :authority or Host"));
    }
    // Absolute-form targets (`GET http://h/p`) become origin-form; their authority is the Host.
    if let Some(authority) = parts.uri.authority() {
        if authority.as_str().contains('@') {
            // RFC 9113 §8.3.1, RFC 9110 §4.2.4: no userinfo in a request's authority.
            return Err(ProxyError::BadRequest("userinfo in the request's authority"));
        }
        if !crate::wire::http1::valid_host(authority.as_str().as_bytes()) {
            return Err(ProxyError::BadRequest("invalid authority"));
        }
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::BadRequest("bad request target"))?;
        parts.headers.insert(header::HOST, host);
        let pq = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(pq);
    } else if host_count == 0 {
        let host = HeaderValue::from_str(client.worker.shared.config.upstream.authority.as_str())
            .expect("a validated authority is a valid header value");
        parts.headers.insert(header::HOST, host);
    }
    if parts.version == Version::HTTP_2 {
        headers::join_cookies(&mut parts.headers);
    }
    headers::prepare_request(&mut parts.headers, &client.ip, client.peer.trusted, client.tls, upgrade);
    parts.version = Version::HTTP_11;
    Ok(())
}

fn chunked_alone(headers: &http::HeaderMap) -> bool {
    crate::wire::http1::chunked_alone(headers.get_all(header::TRANSFER_ENCODING).iter().map(HeaderValue::as_bytes))
}

async fn forward(client: &Rc<Client>, req: Request<RequestBody>) -> Result<Response<ProxyBody>, ProxyError> {
    let worker = &client.worker;
    let (mut parts, body) = req.into_parts();
    // RFC 9112 §6.3: both framings → read as chunked (hyper does), drop the
    // Content-Length (prepare does), and close after responding.
    let ambiguous =
        parts.headers.contains_key(header::TRANSFER_ENCODING) && parts.headers.contains_key(header::CONTENT_LENGTH);
    let protocol = headers::upgrade_request(&parts.headers);
    let upgrade = parts.extensions.remove::<OnUpgrade>().filter(|_| protocol.is_some());
    // hyper sends no length for an empty body: a request that declared
    // `Content-Length: 0` keeps it (as the express lane relays it), or a
    // server that wants one for a POST answers `411`.
    let declared_empty = !ambiguous
        && parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| crate::wire::http1::content_length(v.as_bytes()) == Some(0));
    prepare(client, &mut parts, protocol)?;
    if declared_empty {
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    parts.extensions = http::Extensions::new();
    if crate::wire::http1::bodyless_method(&parts.method) && !body.is_end_stream() && body.size_hint().exact().is_none()
    {
        // hyper's client would send a GET/HEAD body of unknown length as no
        // body at all: frame it chunked, as the client sent it.
        parts.headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }

    if let Some(on_client_upgrade) = upgrade {
        return tunnel(client, Request::from_parts(parts, body), on_client_upgrade).await;
    }
    // gRPC is never cached (its answers are POSTs with trailers).
    let mut resp = if worker.shared.cache.rules().enabled && !crate::wire::grpc::is_grpc(&parts.headers) {
        crate::pipeline::serve::forward(client, parts, body).await?
    } else {
        forward::exchange(client, Request::from_parts(parts, body)).await?.into_response()
    };
    if ambiguous {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// Forwards an upgrade handshake; on `101` joins the two upgraded
/// connections byte for byte until either side closes.
async fn tunnel(
    client: &Client,
    req: Request<RequestBody>,
    on_client: OnUpgrade,
) -> Result<Response<ProxyBody>, ProxyError> {
    let worker = &client.worker;
    let timeout = worker.shared.config.upstream_timeout;
    let sent = Instant::now();
    let mut resp = forward::time_boxed(timeout, worker.upstream.send_upgrade(req)).await?;
    forward::check_status(resp.status(), true)?;
    let switched_to = resp.headers().get(header::UPGRADE).map(HeaderValue::as_bytes);
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && !switched_to.is_some_and(crate::wire::http1::tunnelled_upgrade)
    {
        // A WebSocket upgrade answered with another protocol (h2c): not tunnelled.
        return Err(ProxyError::BadGateway(crate::wire::http1::Malformed("101 to another protocol than asked").into()));
    }
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = resp.into_parts();
        headers::prepare_response(&mut parts.headers, parts.status.as_u16());
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        // A refused upgrade's connection was dedicated: stream, never pool.
        let read_timeout = worker.shared.config.upstream_read_timeout;
        return Ok(Response::from_parts(parts, ProxyBody::upstream(body, None, read_timeout)));
    }
    let on_upstream = hyper::upgrade::on(&mut resp);
    let protocol = resp.headers().get(header::UPGRADE).cloned();
    tokio::task::spawn_local(async move {
        match tokio::try_join!(on_client, on_upstream) {
            Ok((down, up)) => {
                let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
                match tokio::io::copy_bidirectional(&mut down, &mut up).await {
                    Ok((sent, received)) => debug!(sent, received, "tunnel closed"),
                    Err(e) => debug!(error = %e, "tunnel ended"),
                }
            }
            Err(e) => debug!(error = %e, "upgrade failed"),
        }
    });
    let (mut parts, _) = resp.into_parts();
    headers::prepare_response(&mut parts.headers, parts.status.as_u16());
    parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(p) = protocol {
        parts.headers.insert(header::UPGRADE, p);
    }
    parts.headers.append(headers::SERVER_TIMING.clone(), forward::server_timing(sent));
    Ok(Response::from_parts(parts, ProxyBody::empty()))
}
