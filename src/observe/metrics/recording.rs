//! One request being recorded ([`Recording`]): what the request path
//! learns of a request as it goes (its status, the upstream's share, its
//! client, a gRPC call's status and messages, its trace and access-log line),
//! turned into one [`Sample`] for its worker's [`Recorder`] when it drops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{semconv, Called, Recorder};
use crate::wire::routes::RouteId;

/// What a request whose client left before its answer is recorded as
/// (nginx's "client closed request").
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// One request being recorded, from its head to the end of its response.
/// Its sample is taken when this drops: with the status it was answered
/// with, or 499 if it never was (its client left first). Its access-log
/// line and its spans (when sampled) are sent then too.
#[derive(Debug)]
pub struct Recording {
    /// `None` with monitoring off (the request may still be traced or logged).
    recorder: Option<std::rc::Rc<Recorder>>,
    route: RouteId,
    started: Instant,
    status: u16,
    upstream: Option<Duration>,
    overhead: Duration,
    /// Its access-log line, when it is logged.
    access: Option<Box<(Arc<crate::observe::access_log::AccessLog>, crate::observe::access_log::Entry)>>,
    /// Its trace, when tracing is on (boxed: tracing off costs a pointer).
    trace: Option<Box<Traced>>,
    /// Its client among the top clients (monitoring on).
    client: Option<crate::admit::clients::Key>,
    limited: bool,
    /// A gRPC call's status and message counts (boxed: HTTP costs a pointer).
    grpc: Option<Box<GrpcCall>>,
    /// Its slot among its worker's requests in flight (its id and client,
    /// should it turn out slow).
    slot: u32,
}

/// What a recording learns of a gRPC call as it goes.
#[derive(Debug)]
struct GrpcCall {
    code: Option<crate::wire::grpc::Code>,
    /// `grpc.error_codes`, bit per code.
    error_codes: u32,
    /// The client's messages, counted by its request body.
    request: std::rc::Rc<std::cell::Cell<crate::wire::grpc::MessageCount>>,
    response: crate::wire::grpc::MessageCount,
    /// Its `grpc-timeout`: a client that leaves once it has passed saw
    /// `DEADLINE_EXCEEDED`, not a cancellation.
    deadline: Option<Duration>,
    /// The client left before the end of the response (a cancelled call).
    left: bool,
}

/// A request's trace, and its spans' record when it is sampled.
#[derive(Debug)]
struct Traced {
    context: crate::observe::trace::TraceContext,
    span: Option<(Arc<crate::observe::trace::Tracer>, crate::observe::trace::SpanRecord)>,
}

pub(super) fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

impl Recording {
    /// The status the client is being answered with.
    pub fn answered(&mut self, status: u16) {
        self.status = status;
    }

    /// The request went upstream at `sent`; its response head (or its
    /// failure) came `took` later.
    pub fn upstream(&mut self, sent: Instant, took: Duration) {
        self.upstream = Some(took);
        if let Some((_, span)) = self.trace.as_mut().and_then(|t| t.span.as_mut()) {
            span.upstream = Some((sent.saturating_duration_since(span.started), took));
        }
    }

    /// The upstream's share as [`Recording::upstream`], and perfproxy's
    /// own: what passed before `sent` (no clock read here).
    pub fn split(&mut self, sent: Instant, took: Duration) {
        self.upstream(sent, took);
        self.overhead = sent.saturating_duration_since(self.started);
    }

    /// The upstream's body stalled past `upstream_read_timeout_ms` after its
    /// head was relayed: the client's connection is closed and the request
    /// counts as an error of its route (a 504, as in the access log).
    pub fn upstream_stalled(&mut self) {
        self.status = 504;
        self.upstream_failed("timeout");
    }

    /// The upstream gave no answer (`why`: the span's `error.type`).
    pub fn upstream_failed(&mut self, why: &'static str) {
        if let Some((_, span)) = self.trace.as_mut().and_then(|t| t.span.as_mut()) {
            span.upstream_error = Some(why);
        }
    }

    /// A request for `route` (its `X-Request-Id`: `request_id`) has been
    /// read at `started`. With `recorder` (monitoring on) it is counted;
    /// without, only traced or logged.
    pub fn begin_at(
        recorder: Option<&std::rc::Rc<Recorder>>,
        route: RouteId,
        started: Instant,
        request_id: &[u8],
    ) -> Recording {
        let slot = recorder.map_or(u32::MAX, |r| r.began(started, request_id));
        Recording {
            recorder: recorder.cloned(),
            route,
            started,
            status: CLIENT_CLOSED_REQUEST,
            upstream: None,
            overhead: Duration::ZERO,
            access: None,
            trace: None,
            client: None,
            limited: false,
            grpc: None,
            slot,
        }
    }

    /// Counts the request under its client as `spec` names it, for the top
    /// clients (with monitoring on; the client is not asked otherwise).
    pub fn client<F: crate::admit::clients::Fields>(
        &mut self,
        asker: &crate::admit::clients::Asker<F>,
        spec: &crate::admit::clients::KeySpec,
    ) {
        if let Some(r) = &self.recorder {
            let who = asker.who(spec);
            let address = match who {
                Some(crate::admit::clients::Who::Address(ip)) => ip,
                _ => asker.address(),
            };
            r.requests.borrow_mut().client(self.slot, address);
            if let Some(who) = who {
                self.client = Some(r.clients.borrow_mut().note(&who, self.route, self.started));
            }
        }
    }

    /// The rate limits refused the request with `status` (`limited`: over a
    /// limit, not a 400 for an ambiguous key); its answer is ready.
    pub fn refused(&mut self, status: u16, limited: bool) {
        self.limited = limited;
        self.status = status;
        self.head_ready();
    }

    /// When the request head was read.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Logs this request to `log` when it ends (status, times and the
    /// body's bytes filled in then).
    pub fn log_to(
        &mut self,
        log: Arc<crate::observe::access_log::AccessLog>,
        entry: crate::observe::access_log::Entry,
    ) {
        self.access = Some(Box::new((log, entry)));
    }

    /// The request's trace (for the access log and the upstream).
    pub fn traced(&mut self, context: crate::observe::trace::TraceContext) {
        if let Some(a) = &mut self.access {
            a.1.trace_id = Some(crate::observe::trace::trace_id_hex(context.trace_id));
        }
        self.trace = Some(Box::new(Traced { context, span: None }));
    }

    /// The `traceparent` the upstream gets, when tracing is on.
    pub fn traceparent(&self) -> Option<[u8; 55]> {
        self.trace.as_ref().map(|t| t.context.traceparent())
    }

    /// Exports this request's spans when it ends (after [`Recording::traced`],
    /// its trace sampled).
    pub fn trace(&mut self, tracer: Arc<crate::observe::trace::Tracer>, span: crate::observe::trace::SpanRecord) {
        if let Some(t) = &mut self.trace {
            t.span = Some((tracer, span));
        }
    }

    /// Whether the cache's outcome is wanted (the request is logged or traced).
    pub fn wants_outcome(&self) -> bool {
        self.access.is_some() || self.trace.as_ref().is_some_and(|t| t.span.is_some())
    }

    /// `n` more body bytes sent to the client (for the access log).
    pub fn sent(&mut self, n: usize) {
        if let Some(a) = &mut self.access {
            a.1.bytes_out += n as u64;
        }
    }

    /// The cache's outcome, once known (for the access log and the span).
    pub fn cache(&mut self, outcome: &'static str) {
        if let Some(a) = &mut self.access {
            a.1.cache = outcome;
        }
        if let Some((_, span)) = self.trace.as_mut().and_then(|t| t.span.as_mut()) {
            span.cache = outcome;
        }
    }

    /// The cache asked Redis (for the span).
    pub fn redis(&mut self, lookup: crate::cache::RedisLookup) {
        if let Some((_, span)) = self.trace.as_mut().and_then(|t| t.span.as_mut()) {
            let from = lookup.sent.saturating_duration_since(span.started);
            span.redis = Some((from, lookup.took, lookup.outcome));
        }
    }

    /// The request is a gRPC call (`error_codes`: `grpc.error_codes` as
    /// bits); the returned count is its request body's to keep.
    pub fn grpc_call(
        &mut self,
        error_codes: u32,
        deadline: Option<Duration>,
    ) -> std::rc::Rc<std::cell::Cell<crate::wire::grpc::MessageCount>> {
        let request = std::rc::Rc::default();
        let response = Default::default();
        let request_count = std::rc::Rc::clone(&request);
        let call = GrpcCall { code: None, error_codes, request: request_count, response, deadline, left: false };
        self.grpc = Some(Box::new(call));
        request
    }

    /// A `grpc-status` seen in the response's head (Trailers-Only) or trailers.
    pub fn grpc_status(&mut self, headers: &http::HeaderMap) {
        if let Some(call) = &mut self.grpc {
            if let Some(code) = crate::wire::grpc::status_in(headers) {
                call.code.get_or_insert(code);
            }
        }
    }

    /// The client left before the response ended (its body was dropped
    /// unfinished): a gRPC call it cancelled, or whose deadline it gave up on.
    pub fn client_left(&mut self) {
        if let Some(call) = &mut self.grpc {
            call.left = true;
        }
    }

    /// Response body bytes of a gRPC call, for its message count.
    pub fn grpc_data(&mut self, data: &[u8]) {
        if let Some(call) = &mut self.grpc {
            call.response.feed(data);
        }
    }

    /// The response head is ready to be written: perfproxy's own time is
    /// what has passed since the request head was read, less the upstream's
    /// share (what follows is the body's transfer, the client's pace).
    pub fn head_ready(&mut self) {
        let so_far = self.started.elapsed();
        self.overhead = so_far.saturating_sub(self.upstream.unwrap_or_default());
    }
}

impl Recording {
    /// It was slow: queued to be kept with what the database was doing
    /// meanwhile (attached off the request path).
    #[cold]
    fn slow(&self, duration: Duration) {
        let Some(r) = &self.recorder else { return };
        let (request_id, client) = {
            let requests = r.requests.borrow();
            let (id, client) = requests.who(self.slot);
            (String::from_utf8_lossy(id).into_owned(), client)
        };
        let trace =
            self.trace.as_ref().map(|t| (crate::observe::trace::trace_id_hex(t.context.trace_id), t.context.sampled));
        r.metrics.slow.ended(crate::observe::slow::Ended {
            route: self.route,
            status: self.status,
            started: self.started,
            duration,
            upstream: self.upstream,
            overhead: self.overhead,
            trace,
            request_id,
            client,
        });
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let split = (self.upstream.map(micros), micros(self.overhead));
        let duration = self.started.elapsed();
        let slow = self
            .recorder
            .as_ref()
            .is_some_and(|r| duration.as_micros() > u128::from(r.metrics.slow_micros.load(Ordering::Relaxed)));
        if slow {
            self.slow(duration);
        }
        if let Some(access) = self.access.take() {
            let (log, mut entry) = *access;
            (entry.status, entry.duration, entry.upstream) = (self.status, duration, self.upstream);
            log.log(entry, slow);
        }
        let exemplar = self.trace.take().and_then(|t| t.span).map(|(tracer, mut record)| {
            (record.status, record.duration) = (self.status, duration);
            let unix_ms = (record.start + duration).duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let exemplar = semconv::Exemplar {
                route: self.route,
                status: self.status,
                micros: micros(duration),
                trace_id: record.context.trace_id.to_bytes(),
                span_id: record.context.server.to_bytes(),
                unix_ms: unix_ms.as_millis() as u64,
            };
            tracer.finish(Box::new(record));
            exemplar
        });
        if let Some(r) = &self.recorder {
            if let Some(key) = self.client.filter(|_| self.status >= 500) {
                r.clients.borrow_mut().error(key);
            }
            let grpc = self.grpc.take().map(|g| {
                // No status at all: the client saw its call cancelled (it
                // left) or fail (the stream broke off).
                // The client's clock started before perfproxy's: within 10 %.
                let expired = g.deadline.is_some_and(|d| duration >= d.mul_f64(0.9));
                let code = match g.code {
                    Some(code) => code,
                    None if (g.left || self.status == 499) && expired => crate::wire::grpc::Code::DeadlineExceeded,
                    None if g.left => crate::wire::grpc::Code::Cancelled,
                    None => crate::wire::grpc::Code::without_status(self.status),
                } as u8;
                let messages = g.request.get().messages + g.response.messages;
                Called {
                    code,
                    error: g.error_codes & (1 << code) != 0,
                    messages: messages.min(u64::from(u32::MAX)) as u32,
                }
            });
            r.finish(self.slot, self.route, (self.status, self.limited, grpc), self.started, split, exemplar);
        }
    }
}
