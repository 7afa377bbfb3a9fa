//! Phases of one request written once and called by both lanes (the
//! express lane and hyper's), the first of the request path's phases to
//! leave the lanes: the start of its recording ([`begin_recording`]: route,
//! client, access-log line, trace) on either lane's view of the request
//! ([`RequestView`]), a request the rate limits refuse ([`refuse`]) and an
//! upstream exchange that gave no answer ([`upstream_failed`]). The last
//! two return the answer to write; the lane only writes it (bytes, or
//! hyper's encoder).

use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use tracing::{debug, warn};

use crate::admit::clients::Fields;
use crate::observe::metrics::Recording;
use crate::observe::trace::{self, SpanRecord};
use crate::shared::body::ProxyBody;
use crate::shared::error::ProxyError;
use crate::shared::state::Client;

/// The answer to a request the rate limits refused (a 429, or a 400 for an
/// ambiguous key), recorded; never forwarded. `had_body`: the request
/// carried a body, never read, so the answer closes the connection (RFC
/// 9112 §9.3); `grpc`: answered as a gRPC status.
pub fn refuse(refusal: ProxyError, recording: Option<Recording>, had_body: bool, grpc: bool) -> Response<ProxyBody> {
    let limited = matches!(refusal, ProxyError::RateLimited(_));
    let resp = own_answer(refusal, had_body, grpc);
    if let Some(mut r) = recording {
        r.grpc_status(resp.headers());
        r.refused(resp.status().as_u16(), limited);
    }
    resp
}

/// The answer to a request whose upstream exchange (sent at `sent`) gave
/// no response head: the upstream's share and the failure's kind
/// recorded, the cause logged, and perfproxy's own answer (502, 504, or a
/// 400 for the client's own broken body), which closes the connection when
/// the request had a body.
pub fn upstream_failed(
    e: ProxyError,
    recording: Option<&mut Recording>,
    sent: Instant,
    had_body: bool,
    grpc: bool,
) -> Response<ProxyBody> {
    let why = match e.status() {
        StatusCode::GATEWAY_TIMEOUT => Some("timeout"),
        StatusCode::BAD_GATEWAY => Some("upstream_error"),
        _ => None,
    };
    if let (Some(r), Some(why)) = (recording, why) {
        r.upstream(sent, sent.elapsed());
        r.upstream_failed(why);
    }
    match e.status() {
        StatusCode::BAD_REQUEST => debug!(error = %e, "rejected request"),
        _ => warn!(error = %e, "upstream failure"),
    }
    own_answer(e, had_body, grpc)
}

/// perfproxy's own answer for `e`, closing the connection after it when
/// the request had a body (what follows must never be read as a request).
fn own_answer(e: ProxyError, had_body: bool, grpc: bool) -> Response<ProxyBody> {
    let mut resp = if grpc { e.into_grpc_response() } else { e.into_response() };
    if crate::wire::http1::own_answer_closes(had_body) {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// What the recording phase reads of a request, from either lane's view of
/// it (the express lane's parsed head, or an `http::Request`); its fields
/// through [`Fields`] (the client rules read them too).
pub trait RequestView: Fields {
    fn method(&self) -> &Method;
    fn path(&self) -> &str;
    /// The target as sent (path and query).
    fn target(&self) -> &str;
    fn host(&self) -> &str;
    /// The client's `traceparent`, if it sent exactly one (W3C: more is none).
    fn traceparent(&self) -> Option<&[u8]>;
    /// `http` or `https`, as the forwarding headers a `trusted_peer` sent
    /// say, else as the listener (`tls`) was.
    fn scheme(&self, trusted_peer: bool, tls: bool) -> &'static str;
    /// The request body's length, when known.
    fn bytes_in(&self) -> u64;
}

/// Begins a request's recording (when monitoring, tracing or the access log
/// is on): its route (`grpc`: a gRPC call, labelled by its method path),
/// its client among the top clients, its access-log line when the log
/// samples it, and its trace (continued from the client's `traceparent`,
/// or begun). `started`: when its head was read, if the clock was read
/// then already. Dropped unanswered, the recording says 499.
pub fn begin_recording<V: RequestView>(
    client: &Client,
    view: &V,
    request_id: &[u8],
    grpc: bool,
    started: Option<Instant>,
) -> Option<Recording> {
    let worker = &client.worker;
    if !worker.records() {
        return None;
    }
    let routes = &worker.shared.routes;
    let route = routes.resolve_as(view.method(), view.path(), grpc, &mut worker.route_cache.borrow_mut());
    let started = started.unwrap_or_else(Instant::now);
    let mut recording = Recording::begin_at(worker.recorder.as_ref(), route, started, request_id);
    let asker = client.asker(view);
    recording.client(&asker, &worker.shared.top_clients.spec);
    // The client as rate limits and top clients see it: behind trusted
    // proxies, the address their `X-Forwarded-For` names.
    let client_ip = || match asker.address() {
        peer if peer == client.addr => client.ip.to_str().unwrap_or("").to_string(),
        behind => behind.to_string(),
    };
    if let Some(log) = worker.shared.access_log.as_ref().filter(|l| l.sampled()) {
        let label = routes.name(route);
        let mut entry =
            crate::observe::access_log::Entry::new(log, &client_ip(), view.method().as_str(), view.target(), label);
        entry.request_id = String::from_utf8_lossy(request_id).into_owned();
        entry.user_agent = String::from_utf8_lossy(view.field(&header::USER_AGENT).unwrap_or_default()).into_owned();
        entry.bytes_in = view.bytes_in();
        recording.log_to(log.clone(), entry);
    }
    if let Some(tracer) = &worker.shared.tracer {
        let context = tracer.begin(view.traceparent());
        recording.traced(context);
        if context.sampled {
            let mut span = SpanRecord::new(context, recording.started(), view.method().clone(), routes.name(route));
            span.path = trace::clipped(view.path(), 1024);
            span.scheme = view.scheme(client.peer.trusted, client.tls);
            span.host = trace::clipped(view.host(), 256);
            span.client = client_ip().into();
            recording.trace(tracer.clone(), span);
        }
    }
    Some(recording)
}

impl<B: http_body::Body> RequestView for http::Request<B> {
    fn method(&self) -> &Method {
        self.method()
    }

    fn path(&self) -> &str {
        self.uri().path()
    }

    fn target(&self) -> &str {
        self.uri().path_and_query().map_or("/", |pq| pq.as_str())
    }

    fn host(&self) -> &str {
        let host = self.headers().get(header::HOST).and_then(|h| h.to_str().ok());
        host.or_else(|| self.uri().authority().map(|a| a.as_str())).unwrap_or("")
    }

    fn traceparent(&self) -> Option<&[u8]> {
        let mut sent = self.headers().get_all(&trace::TRACEPARENT).iter();
        sent.next().filter(|_| sent.next().is_none()).map(HeaderValue::as_bytes)
    }

    fn scheme(&self, trusted_peer: bool, tls: bool) -> &'static str {
        trace::scheme(
            trusted_peer,
            tls,
            self.headers().get(&crate::wire::headers::X_FORWARDED_PROTO).map(HeaderValue::as_bytes),
        )
    }

    fn bytes_in(&self) -> u64 {
        self.body().size_hint().exact().unwrap_or(0)
    }
}

impl<B> Fields for http::Request<B> {
    fn forwarded_for(&self) -> impl DoubleEndedIterator<Item = &[u8]> {
        self.headers().forwarded_for()
    }

    fn any_forwarded_for(&self) -> bool {
        self.headers().any_forwarded_for()
    }

    fn field(&self, name: &http::HeaderName) -> Option<&[u8]> {
        Fields::field(self.headers(), name)
    }

    fn field_count(&self, name: &http::HeaderName) -> usize {
        self.headers().field_count(name)
    }
}
