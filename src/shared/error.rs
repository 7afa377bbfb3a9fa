//! The proxy's one error type and the one place it becomes an HTTP answer,
//! with the JSON answers perfproxy makes itself ([`json`], [`json_error`]).
//! Clients get a status and a short JSON body (`{"error": ..., "detail": ...}`)
//! that never carries internal detail; the cause goes to the log, whole
//! ([`chain`](crate::redact::chain)).

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use std::time::Duration;

use crate::shared::body::ProxyBody;
use crate::upstream::UpstreamError;

impl From<crate::admit::limits::Refusal> for ProxyError {
    fn from(r: crate::admit::limits::Refusal) -> ProxyError {
        match r {
            crate::admit::limits::Refusal::Over(limited) => ProxyError::RateLimited(limited),
            crate::admit::limits::Refusal::RepeatedKey => {
                ProxyError::BadRequest("a rate-limit key header sent more than once")
            }
        }
    }
}

/// Why a request could not be proxied, by whose fault.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client sent something we will not forward (400).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The client's body broke off or was malformed while streaming (400).
    #[error("client body: {0}")]
    ClientBody(hyper::Error),
    /// The upstream refused, reset or spoke nonsense (502).
    #[error("bad gateway: {0}")]
    BadGateway(#[from] UpstreamError),
    /// The upstream did not answer within `upstream_timeout` (504).
    #[error("upstream did not answer within {0:?}")]
    GatewayTimeout(Duration),
    /// A rate limit refused the request before it was forwarded (429).
    #[error("rate limited by {:?}", .0.policy)]
    RateLimited(Box<crate::admit::limits::Limited>),
}

impl ProxyError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ProxyError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The client-facing answer: status, JSON body, no internals.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let (code, detail): (&str, String) = match &self {
            ProxyError::BadRequest(why) => ("bad_request", (*why).to_string()),
            ProxyError::ClientBody(_) => ("bad_request", "the request body was malformed or cut off".into()),
            ProxyError::BadGateway(e) => ("bad_gateway", upstream_failure(e).into()),
            ProxyError::GatewayTimeout(t) => {
                ("gateway_timeout", format!("the upstream did not answer within {} ms", t.as_millis()))
            }
            ProxyError::RateLimited(l) => return rate_limited(l),
        };
        let mut resp = json_error(status, code, &detail);
        if status == StatusCode::BAD_REQUEST {
            // The connection's framing can no longer be trusted.
            resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// What a client is told of an upstream failure: which kind, never its
/// internals. An answer that is not valid HTTP/1.1 (perfproxy's checks, or
/// hyper's parser: a head too large or with too many fields) says so, on
/// both lanes alike.
fn upstream_failure(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Connect(_) => "the upstream refused the connection",
        UpstreamError::Tls(_) => "the upstream's TLS certificate could not be verified, or TLS failed",
        UpstreamError::Malformed(_) => NOT_HTTP,
        UpstreamError::Exchange(h) | UpstreamError::Handshake(h)
            if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() =>
        {
            NOT_HTTP
        }
        _ => "the upstream closed or reset the connection",
    }
}

const NOT_HTTP: &str = "the upstream's answer was not valid HTTP, or its head was over the limits";

impl ProxyError {
    /// The answer to a gRPC call: a gRPC status (Trailers-Only), not an
    /// HTTP error, as gRPC clients read failures. No answer in time is
    /// `DEADLINE_EXCEEDED`, any other upstream failure `UNAVAILABLE`, a
    /// rate limit `RESOURCE_EXHAUSTED`, a request perfproxy refused
    /// `INTERNAL` (the gRPC mapping of HTTP 400).
    pub fn into_grpc_response(self) -> Response<ProxyBody> {
        use crate::wire::grpc::Code;
        match self {
            ProxyError::BadRequest(why) => answer(Code::Internal, why),
            ProxyError::ClientBody(_) => answer(Code::Internal, "the request body was malformed or cut off"),
            ProxyError::BadGateway(e) => answer(Code::Unavailable, upstream_failure(&e)),
            ProxyError::GatewayTimeout(t) => {
                answer(Code::DeadlineExceeded, &format!("the upstream did not answer within {} ms", t.as_millis()))
            }
            ProxyError::RateLimited(l) => {
                let mut resp = answer(Code::ResourceExhausted, &format!("over the rate limit {}", l.policy));
                rate_limit_fields(resp.headers_mut(), &l);
                resp
            }
        }
    }
}

/// `429` with `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit`
/// fields (draft-ietf-httpapi-ratelimit-headers: quota `q` per window `w`
/// seconds; `r` remaining, `t` seconds until a request passes).
fn rate_limited(l: &crate::admit::limits::Limited) -> Response<ProxyBody> {
    let detail = format!("over the rate limit {:?}: retry in {} s", l.policy, l.retry_after_secs);
    let body = serde_json::json!({
        "error": "rate_limited",
        "detail": detail,
        "retry_after_seconds": l.retry_after_secs,
    });
    let mut resp = json(StatusCode::TOO_MANY_REQUESTS, body.to_string());
    rate_limit_fields(resp.headers_mut(), l);
    resp
}

/// `Retry-After`, `RateLimit-Policy` and `RateLimit` of a refusal (HTTP's
/// 429 and gRPC's `RESOURCE_EXHAUSTED` alike).
fn rate_limit_fields(h: &mut http::HeaderMap, l: &crate::admit::limits::Limited) {
    let value = |text: String| HeaderValue::try_from(text).expect("a policy name is printable ASCII without quotes");
    h.insert(RETRY_AFTER, HeaderValue::from(l.retry_after_secs));
    h.insert("ratelimit-policy", value(format!("\"{}\";q={};w={}", l.policy, l.quota, l.window_secs)));
    h.insert("ratelimit", value(format!("\"{}\";r=0;t={}", l.policy, l.retry_after_secs)));
}

/// A JSON answer of perfproxy's own (never stored by anyone: `no-store`).
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `{"error": code, "detail": detail}` with `status`.
pub fn json_error(status: StatusCode, code: &str, detail: &str) -> Response<ProxyBody> {
    json(status, serde_json::json!({ "error": code, "detail": detail }).to_string())
}

/// A gRPC answer of perfproxy's own: Trailers-Only, HTTP 200, the status in
/// the one header block.
fn answer(code: crate::wire::grpc::Code, message: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(code as u16));
    let message =
        HeaderValue::try_from(crate::wire::grpc::percent_encoded(message)).expect("encoded to printable ASCII");
    h.insert("grpc-message", message);
    resp
}
