//! Distributed tracing: W3C Trace Context in, out and through, and
//! OpenTelemetry spans for sampled requests.
//!
//! The request path does little: it parses the client's `traceparent` (the
//! SDK's `TraceContextPropagator`), asks the SDK's sampler, makes two span
//! ids and writes the `traceparent` the upstream gets. A sampled request
//! carries a [`SpanRecord`] that is filled in as it goes and handed, when
//! it ends, to a bounded queue (a full queue drops it and counts it). The
//! exporter's thread turns records into the SDK's `SpanData` and exports
//! them over OTLP/HTTP protobuf ([`export`]), so a collector that is down or
//! slow costs requests nothing.

pub mod export;
mod setup;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanId, SpanKind, TraceContextExt, TraceId};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};

pub use setup::Setup;

/// The W3C field names.
pub static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// A request's place in its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    /// The client's span, when it sent a valid `traceparent`.
    pub parent: Option<SpanId>,
    /// perfproxy's server span.
    pub server: SpanId,
    /// perfproxy's upstream client span: the upstream's parent.
    pub upstream: SpanId,
    pub sampled: bool,
}

impl TraceContext {
    /// The `traceparent` sent upstream: version 00, this trace, the upstream
    /// client span as parent, and the sampling flag.
    pub fn traceparent(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        hex(&self.trace_id.to_bytes(), &mut out[3..35]);
        hex(&self.upstream.to_bytes(), &mut out[36..52]);
        out[53..].copy_from_slice(if self.sampled { b"01" } else { b"00" });
        out
    }
}

/// Every byte's two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

fn hex(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
}

/// A trace id as 32 lowercase hex digits (exemplars, the access log).
pub fn trace_id_hex(id: TraceId) -> String {
    let mut out = [0u8; 32];
    hex(&id.to_bytes(), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// What a sampled request's spans say, filled in as it goes.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub context: TraceContext,
    pub start: SystemTime,
    /// The clock the offsets below count from.
    pub started: Instant,
    pub method: http::Method,
    /// The route label (`GET /api/users/:id`).
    pub route: Arc<str>,
    pub path: Box<str>,
    pub scheme: &'static str,
    pub host: Box<str>,
    pub client: Box<str>,
    pub status: u16,
    pub duration: Duration,
    /// The upstream exchange: from `started`, and how long to its head.
    pub upstream: Option<(Duration, Duration)>,
    /// The Redis lookup, when one was made: from `started`, how long, its outcome.
    pub redis: Option<(Duration, Duration, &'static str)>,
    /// The cache's outcome (`HIT`, `MISS`, …) or empty.
    pub cache: &'static str,
    /// The upstream gave no answer: why (`error.type` on the upstream span).
    pub upstream_error: Option<&'static str>,
}

impl SpanRecord {
    /// A request's record, begun when its head was read (`started`); the
    /// rest is filled in as it goes.
    pub fn new(context: TraceContext, started: Instant, method: http::Method, route: Arc<str>) -> SpanRecord {
        SpanRecord {
            context,
            start: SystemTime::now() - started.elapsed(),
            started,
            method,
            route,
            path: Box::default(),
            scheme: "http",
            host: Box::default(),
            client: Box::default(),
            status: 0,
            duration: Duration::ZERO,
            upstream: None,
            redis: None,
            cache: "",
            upstream_error: None,
        }
    }
}

/// `url.scheme`: `https` over perfproxy's TLS listener, or when a trusted
/// proxy says so (its `X-Forwarded-Proto`).
pub fn scheme(trusted_peer: bool, tls: bool, sent_proto: Option<&[u8]>) -> &'static str {
    match sent_proto {
        Some(p) if trusted_peer && !p.is_empty() => match p.eq_ignore_ascii_case(b"https") {
            true => "https",
            false => "http",
        },
        _ if tls => "https",
        _ => "http",
    }
}

/// Whether `v` has the W3C `traceparent` shape: `vv-<32 hex>-<16 hex>-ff`,
/// lowercase hex, version not `ff`, nothing more for version `00` (a later
/// version may add `-…`). The SDK's parser is lenient about lengths and
/// signs; ids are checked for zero by it.
fn well_formed(v: &[u8]) -> bool {
    let hex = |s: &[u8]| s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    if v.len() < 55 || !hex(&v[..2]) || &v[..2] == b"ff" {
        return false;
    }
    let dashes = v[2] == b'-' && v[35] == b'-' && v[52] == b'-';
    let rest_ok = if &v[..2] == b"00" { v.len() == 55 } else { v.len() == 55 || v[55] == b'-' };
    dashes && hex(&v[3..35]) && hex(&v[36..52]) && hex(&v[53..55]) && rest_ok
}

/// At most `max` bytes of `s`, cut at a character boundary (span attributes
/// from client input stay small while they wait for export).
pub fn clipped(s: &str, max: usize) -> Box<str> {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

/// One header's value as the propagator's carrier.
struct Carrier<'a>(&'a str);

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// Messages to the exporter's thread.
enum Message {
    Span(Box<SpanRecord>),
    /// Export what is queued, then say so.
    Flush(SyncSender<()>),
}

/// Spans exported and dropped, shared with the exporter's thread.
#[derive(Debug, Default)]
pub struct Counts {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
}

/// The process's tracer: sampler, propagator and the exporter's queue.
pub struct Tracer {
    sampler: Sampler,
    propagator: TraceContextPropagator,
    queue: SyncSender<Message>,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("sampler", &self.sampler).finish_non_exhaustive()
    }
}

fn nonzero(mut next: impl FnMut() -> u64) -> u64 {
    loop {
        let v = next();
        if v != 0 {
            return v;
        }
    }
}

impl Tracer {
    /// A request begins: its trace continued from `traceparent` (when the
    /// client sent a valid one), else a new one; sampled as the sampler says.
    pub fn begin(&self, traceparent: Option<&[u8]>) -> TraceContext {
        let random = crate::wire::http1::random_u64;
        let parent = traceparent
            .filter(|v| well_formed(v))
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(|v| self.propagator.extract_with_context(&Context::new(), &Carrier(v)))
            .filter(|cx| cx.span().span_context().is_valid());
        let remote = parent.as_ref().map(|cx| {
            let span = cx.span();
            let sc = span.span_context();
            (sc.trace_id(), sc.span_id())
        });
        let trace_id = remote.map_or_else(
            || TraceId::from_bytes(((u128::from(nonzero(random)) << 64) | u128::from(random())).to_be_bytes()),
            |(t, _)| t,
        );
        let decision = self.sampler.should_sample(parent.as_ref(), trace_id, "", &SpanKind::Server, &[], &[]).decision;
        TraceContext {
            trace_id,
            parent: remote.map(|(_, s)| s),
            server: SpanId::from_bytes(nonzero(random).to_be_bytes()),
            upstream: SpanId::from_bytes(nonzero(random).to_be_bytes()),
            sampled: decision == SamplingDecision::RecordAndSample,
        }
    }

    /// A sampled request ended: queued for export, or dropped and counted
    /// when the queue is full. Never waits.
    pub fn finish(&self, span: Box<SpanRecord>) {
        let n = span_count(&span);
        match self.queue.try_send(Message::Span(span)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts.dropped.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Spans exported, and dropped (queue full, or the export failed).
    pub fn counts(&self) -> (u64, u64) {
        (self.counts.exported.load(Ordering::Relaxed), self.counts.dropped.load(Ordering::Relaxed))
    }

    /// Exports what is queued, waiting at most `within` in all (at shutdown).
    pub fn flush(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let mut message = Message::Flush(tx);
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    message = m;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return,
            }
        }
        let _ = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// The spans a record becomes: the server span, and its children.
fn span_count(span: &SpanRecord) -> u64 {
    1 + u64::from(span.upstream.is_some()) + u64::from(span.redis.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracer(sampler: Sampler) -> (Tracer, std::sync::mpsc::Receiver<Message>) {
        let (queue, rx) = std::sync::mpsc::sync_channel(1);
        let counts = Arc::default();
        (Tracer { sampler, propagator: TraceContextPropagator::new(), queue, counts }, rx)
    }

    #[test]
    fn a_client_trace_is_continued_and_the_upstream_gets_our_span_as_parent() {
        let (t, _rx) = tracer(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)));
        let sent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = t.begin(Some(sent));
        assert_eq!(trace_id_hex(cx.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(cx.parent, Some(SpanId::from_hex("00f067aa0ba902b7").expect("hex")));
        assert!(cx.sampled, "a sampled parent is followed");
        let tp = cx.traceparent();
        let tp = std::str::from_utf8(&tp).expect("ascii");
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{tp}");
        assert!(tp.ends_with("-01"));
        assert_eq!(&tp[36..52], format!("{:016x}", u64::from_be_bytes(cx.upstream.to_bytes())));
        assert_ne!(cx.upstream, cx.server);
        let future = t.begin(Some(b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later-fields"));
        assert_eq!(future.parent, cx.parent, "a later version's extra fields are allowed");
        let unsampled = t.begin(Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
        assert!(!unsampled.sampled && unsampled.traceparent().ends_with(b"-00"));
    }

    #[test]
    fn invalid_parents_start_a_new_trace_and_the_ratio_holds() {
        let (t, _rx) = tracer(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.25))));
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-1-2-01",
            b"00-+bf92f3577b34da6a3ce929d0e0e4736-+0f067aa0ba902b7-01",
            b"0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            b"garbage",
            b"\xff\xfe",
        ] {
            let cx = t.begin(Some(bad));
            assert_eq!(cx.parent, None, "{}", String::from_utf8_lossy(bad));
            assert_ne!(trace_id_hex(cx.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        }
        let sampled = (0..20_000).filter(|_| t.begin(None).sampled).count();
        assert!((4_000..6_000).contains(&sampled), "{sampled} of 20 000 at 0.25");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (t, _rx) = tracer(Sampler::AlwaysOn);
        let mut record = SpanRecord::new(t.begin(None), Instant::now(), http::Method::GET, Arc::from("GET /x"));
        record.upstream = Some((Duration::ZERO, Duration::ZERO));
        t.finish(Box::new(record.clone()));
        t.finish(Box::new(record));
        assert_eq!(t.counts(), (0, 2), "the second record (two spans) found the queue full");
    }
}
