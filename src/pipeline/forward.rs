//! The upstream exchange on `http` types, below both the request path and
//! the cache: a checked request sent on a pooled connection under
//! `upstream_timeout`, the answer's status and framing checked by the
//! rulebook, its head rewritten for the client, and compressed for it
//! when `[compression]` says so (the body as it streams). Failures become
//! [`ProxyError`]s as the client will see them.

use std::task::Poll;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use hyper::body::Incoming;

use crate::compress::{Compressor, Decision, Encoder};
use crate::shared::body::{Peeked, ProxyBody};
use crate::shared::error::ProxyError;
use crate::shared::state::Client;
use crate::upstream::RequestBody;
use crate::upstream::{Lease, UpstreamError};
use crate::wire::encoding::{self, Coding, Ranked};
use crate::wire::headers;
use crate::wire::http1;

/// How long the upstream took to answer with a head, carried in a
/// response's extensions to where it is recorded (the latency split).
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTime {
    pub sent: Instant,
    pub took: Duration,
}

/// An upstream response, its head already rewritten for the client.
pub struct Upstream {
    pub parts: http::response::Parts,
    pub body: Incoming,
    /// The body's first frame, when it had come with the head (see [`first_frame`]).
    pub first: Option<Box<Peeked>>,
    /// The pooled HTTP/1.1 connection it came on (none over h2c).
    pub lease: Option<Lease>,
    pub sent: Instant,
    /// From the request sent to the response head read.
    pub head_after: Duration,
    /// The longest wait for more of the body (`upstream_read_timeout_ms`).
    pub read_timeout: Duration,
    /// The coding perfproxy chose for a compressible answer (its cache variant).
    pub coding: Option<Coding>,
    /// The body's compressor, when it is sent compressed.
    pub encoder: Option<Box<Encoder>>,
    /// A compressed body's length as the upstream sent it, when it said
    /// (its `Content-Length` is gone: the cache's size limit reads this).
    pub identity_length: Option<u64>,
}

impl Upstream {
    /// The response as the client gets it, with `Server-Timing`.
    pub fn into_response(self) -> Response<ProxyBody> {
        let Upstream { mut parts, body, first, lease, sent, head_after, read_timeout, encoder, .. } = self;
        parts.extensions.insert(UpstreamTime { sent, took: head_after });
        parts.headers.append(headers::SERVER_TIMING.clone(), server_timing(sent));
        let body = ProxyBody::upstream(body, lease, read_timeout).after(first);
        Response::from_parts(parts, body.encoded(encoder))
    }
}

/// Sends a checked request upstream on a pooled connection, under
/// `upstream_timeout`.
pub async fn exchange(client: &Client, mut req: Request<RequestBody>) -> Result<Upstream, ProxyError> {
    let worker = &client.worker;
    let sent = Instant::now();
    let head_request = req.method() == Method::HEAD;
    let compression = &worker.shared.compression;
    let codings = compression.enabled().then(|| {
        let revalidating: Vec<HeaderValue> = req.headers().get_all(header::IF_NONE_MATCH).iter().cloned().collect();
        (compression.table().rank_request(req.method(), req.headers()), revalidating)
    });
    let timeout = deadline(&mut req, worker.shared.config.upstream_timeout);
    let (resp, lease) = time_boxed(timeout, worker.upstream.send(req)).await?;
    let head_after = sent.elapsed();
    check_status(resp.status(), false)?;
    let (mut parts, mut body) = resp.into_parts();
    let mut first = None;
    // An HTTP/2 body's end is its stream's end: no framing to check. A
    // body that ends when the upstream closes goes to the client chunked
    // (hyper frames it so; the express lane re-frames it): the client's
    // connection goes on.
    if parts.version != Version::HTTP_2 {
        // perfproxy speaks its own version to the client (RFC 9110 §6.2),
        // whatever an `HTTP/1.0` upstream said.
        parts.version = Version::HTTP_11;
        let framing = headers::response_framing(&parts.headers, head_request, parts.status.as_u16())
            .map_err(|m| ProxyError::BadGateway(m.into()))?;
        if matches!(framing, http1::Framing::Chunked | http1::Framing::Length(1..)) {
            first = first_frame(&mut body)?;
        }
        // hyper holds a head to its buffer's size only while the head is
        // incomplete in it: one read can bring more.
        let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>().map_or(0, |r| r.as_bytes().len());
        let reason = reason.max(parts.status.canonical_reason().map_or(0, str::len));
        if headers::head_len(reason, &parts.headers) > worker.upstream.max_response_head() {
            return Err(ProxyError::BadGateway(http1::Malformed("head too large").into()));
        }
    }
    headers::prepare_response(&mut parts.headers, parts.status.as_u16());
    let read_timeout = worker.shared.config.upstream_read_timeout;
    let (coding, encoder, identity_length) = match codings {
        Some((codings, revalidating)) => {
            // The body's length when known: its `Content-Length`, or an HTTP/2 body already ended.
            let length = crate::cache::policy::content_length(&parts.headers).or(body.size_hint().exact());
            let (coding, encoder) = compress(compression, (&codings, &revalidating), &mut parts, length);
            let identity_length = length.filter(|_| encoder.is_some());
            (coding, encoder, identity_length)
        }
        None => (None, None, None),
    };
    Ok(Upstream { parts, body, first, lease, sent, head_after, read_timeout, coding, encoder, identity_length })
}

/// A body's first frame (or error) if it came with the head
/// (hyper's connection task decodes what it read with the head before
/// handing the head over): a malformed first chunk is then a `502`, as on
/// the express lane, where the head waits for the bytes read with it; one
/// that comes later cuts the answer off (its head has gone).
fn first_frame(body: &mut Incoming) -> Result<Option<Box<Peeked>>, ProxyError> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(body).poll_frame(&mut cx) {
        Poll::Ready(Some(Err(e))) if malformed(&e) => Err(ProxyError::BadGateway(http1::MALFORMED_CHUNKS.into())),
        Poll::Ready(Some(Err(e))) => Ok(Some(Box::new(Peeked::Ended(e)))),
        Poll::Ready(Some(Ok(frame))) => Ok(Some(Box::new(Peeked::Frame(frame)))),
        _ => Ok(None),
    }
}

/// Whether hyper's body error is a malformed chunk (not an early end).
fn malformed(e: &hyper::Error) -> bool {
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    io.is_some_and(|io| matches!(io.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData))
}

/// Decides whether an answer is compressed for a client that takes
/// `codings`, and marks its head: `Vary: Accept-Encoding` on any
/// compressible answer, the coding's fields on a compressed one; a `304`
/// to a client revalidating a compressed copy (its `If-None-Match`,
/// `revalidating`, holds the weak form) carries the weak `ETag` it holds.
fn compress(
    compression: &Compressor,
    (codings, revalidating): (&Ranked, &[HeaderValue]),
    parts: &mut http::response::Parts,
    length: Option<u64>,
) -> (Option<Coding>, Option<Box<Encoder>>) {
    let table = compression.table();
    let etag = parts.headers.get(header::ETAG);
    if parts.status == StatusCode::NOT_MODIFIED && etag.is_some_and(|e| encoding::holds_weak_form(revalidating, e)) {
        encoding::weaken_etag(&mut parts.headers);
    }
    let decided = table.decide(codings, parts.status.as_u16(), &parts.headers, length);
    let Decision::Negotiated(coding) = decided else { return (None, None) };
    match compression.encoder(coding, length) {
        Some(encoder) => {
            encoding::mark_compressed(&mut parts.headers, coding);
            (Some(coding), Some(encoder))
        }
        None => {
            encoding::add_vary(&mut parts.headers);
            (Some(Coding::Identity), None)
        }
    }
}

/// How long the upstream has to answer: `upstream_timeout`, or a gRPC
/// call's shorter `grpc-timeout`. A longer one is lowered to the cap, so the
/// server gives up when perfproxy does.
/// Sent more than once, the shortest counts, and one value goes on (servers
/// differ on which of several they read).
fn deadline(req: &mut Request<RequestBody>, cap: Duration) -> Duration {
    let name = crate::wire::grpc::GRPC_TIMEOUT;
    if !crate::wire::grpc::is_grpc(req.headers()) || !req.headers().contains_key(name) {
        return cap;
    }
    let asked = req.headers().get_all(name).iter().map(crate::wire::grpc::timeout).collect::<Vec<_>>();
    let shortest = asked.iter().flatten().min().copied().filter(|t| *t <= cap);
    match shortest {
        Some(t) if asked.len() == 1 && asked[0].is_some() => t,
        Some(t) => {
            req.headers_mut().insert(name, crate::wire::grpc::timeout_value(t));
            t
        }
        None => {
            req.headers_mut().insert(name, crate::wire::grpc::timeout_value(cap));
            cap
        }
    }
}

/// An upstream exchange under `upstream_timeout`, its failures as the
/// client will see them: the client's own broken body is a 400, anything
/// else from the upstream a 502, no answer in time a 504.
pub(crate) async fn time_boxed<T>(
    timeout: Duration,
    exchange: impl std::future::Future<Output = Result<T, UpstreamError>>,
) -> Result<T, ProxyError> {
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(UpstreamError::Exchange(e))) if e.is_user() => Err(ProxyError::ClientBody(e)),
        Ok(Err(e)) => Err(ProxyError::BadGateway(e)),
        Err(_) => Err(ProxyError::GatewayTimeout(timeout)),
    }
}

/// hyper takes any three digits; the rulebook takes 100–599, and a `101`
/// only to a forwarded WebSocket upgrade (`upgrade_sent`).
pub(crate) fn check_status(status: StatusCode, upgrade_sent: bool) -> Result<(), ProxyError> {
    http1::check_status(status.as_u16(), upgrade_sent).map_err(|m| ProxyError::BadGateway(m.into()))
}

pub(crate) fn server_timing(sent: Instant) -> HeaderValue {
    HeaderValue::from_bytes(headers::ServerTiming::since(sent).as_bytes())
        .expect("digits and ascii are a valid header value")
}
