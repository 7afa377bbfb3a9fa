//! Where spans go: the exporter's thread, which batches span records
//! (as the [`Setup`] resolved in `setup` says), turns them into the SDK's
//! `SpanData` (a server span and its `upstream` and `cache.redis`
//! children) and exports them with `opentelemetry-otlp` over OTLP/HTTP
//! protobuf. The thread has its own single-threaded runtime for the
//! exporter's hyper client: a slow collector stalls only it, and the queue
//! in front of it drops and counts.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use opentelemetry_sdk::Resource;
use tracing::{info, warn};

use super::{Counts, Message, Setup, SpanRecord, Tracer};

/// Where the upstream client spans point (`server.address`, `server.port`).
#[derive(Debug, Clone)]
pub struct Peer {
    pub host: String,
    pub port: u16,
}

/// Starts the exporter's thread and returns the tracer that feeds it.
pub fn start(setup: &Setup, upstream: Peer) -> Result<Arc<Tracer>, String> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary);
    if let Some(e) = &setup.endpoint {
        builder = builder.with_endpoint(e.clone());
    }
    let mut exporter = builder.build().map_err(|e| e.to_string())?;
    let resource = Resource::builder()
        .with_service_name(setup.service_name.clone())
        .with_attribute(KeyValue::new("service.version", crate::system::VERSION))
        .build();
    exporter.set_resource(&resource);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let (queue, rx) = std::sync::mpsc::sync_channel(setup.queue);
    let counts = Arc::new(Counts::default());
    let worker = Worker {
        exporter,
        runtime,
        counts: counts.clone(),
        scope: InstrumentationScope::builder("perfproxy").with_version(crate::system::VERSION).build(),
        upstream,
        batch: setup.batch,
        delay: setup.delay,
        last_warning: None,
    };
    std::thread::Builder::new()
        .name("perfproxy-otlp".into())
        .spawn(move || worker.run(rx))
        .map_err(|e| e.to_string())?;
    info!(service = %setup.service_name, sampler = ?setup.sampler, "tracing: exporting spans over OTLP/HTTP");
    Ok(Arc::new(Tracer {
        sampler: setup.sampler.clone(),
        propagator: opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        queue,
        counts,
    }))
}

struct Worker {
    exporter: opentelemetry_otlp::SpanExporter,
    runtime: tokio::runtime::Runtime,
    counts: Arc<Counts>,
    scope: InstrumentationScope,
    upstream: Peer,
    batch: usize,
    delay: Duration,
    last_warning: Option<Instant>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Message>) {
        let mut records: Vec<SpanRecord> = Vec::new();
        let mut due = Instant::now() + self.delay;
        loop {
            let wait = due.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Message::Span(r)) => {
                    records.push(*r);
                    if records.len() >= self.batch {
                        self.export(&mut records);
                        due = Instant::now() + self.delay;
                    }
                }
                Ok(Message::Flush(done)) => {
                    self.export(&mut records);
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.export(&mut records);
                    due = Instant::now() + self.delay;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.export(&mut records);
                    return;
                }
            }
        }
    }

    fn export(&mut self, records: &mut Vec<SpanRecord>) {
        if records.is_empty() {
            return;
        }
        let spans: Vec<SpanData> = records.drain(..).flat_map(|r| spans(&r, &self.scope, &self.upstream)).collect();
        let n = spans.len() as u64;
        match self.runtime.block_on(self.exporter.export(spans)) {
            Ok(()) => {
                self.counts.exported.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                self.counts.dropped.fetch_add(n, Ordering::Relaxed);
                // One warning a minute at most: a collector that is down
                // should not flood the log.
                if self.last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    self.last_warning = Some(Instant::now());
                    warn!(error = %e, spans = n, "tracing: export failed, spans dropped");
                }
            }
        }
    }
}

fn context(r: &SpanRecord, span: SpanId) -> SpanContext {
    SpanContext::new(r.context.trace_id, span, TraceFlags::SAMPLED, false, TraceState::default())
}

fn span_data(r: &SpanRecord, scope: &InstrumentationScope, id: SpanId, kind: SpanKind) -> SpanData {
    SpanData {
        span_context: context(r, id),
        parent_span_id: r.context.server,
        parent_span_is_remote: false,
        span_kind: kind,
        name: "".into(),
        start_time: r.start,
        end_time: r.start,
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope.clone(),
    }
}

/// A record's spans: the server span, then its children.
/// The methods the semantic conventions know; others are `_OTHER`.
const KNOWN_METHODS: [&str; 10] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"];

fn spans(r: &SpanRecord, scope: &InstrumentationScope, upstream: &Peer) -> Vec<SpanData> {
    let original = r.method.as_str();
    let known = KNOWN_METHODS.contains(&original);
    // A client's made-up method names no span (their number is the client's to choose).
    let method = if known { original.to_string() } else { "_OTHER".to_string() };
    let span_method = if known { original } else { "HTTP" };
    let (_, template) = r.route.split_once(' ').unwrap_or(("", &r.route));
    let template = template.starts_with('/').then(|| template.to_string());
    let mut server = span_data(r, scope, r.context.server, SpanKind::Server);
    server.name = match &template {
        Some(t) => format!("{span_method} {t}").into(),
        None => span_method.to_string().into(),
    };
    server.parent_span_id = r.context.parent.unwrap_or(SpanId::INVALID);
    server.parent_span_is_remote = r.context.parent.is_some();
    server.end_time = r.start + r.duration;
    let (host, port) = split_host(&r.host);
    let mut attrs = vec![
        KeyValue::new("http.request.method", method.clone()),
        KeyValue::new("http.response.status_code", i64::from(r.status)),
        KeyValue::new("url.path", r.path.to_string()),
        KeyValue::new("url.scheme", r.scheme),
        KeyValue::new("server.address", host.to_string()),
        KeyValue::new("client.address", r.client.to_string()),
    ];
    if let Some(t) = template {
        attrs.push(KeyValue::new("http.route", t));
    }
    if !known {
        attrs.push(KeyValue::new("http.request.method_original", original.to_string()));
    }
    if let Some(p) = port {
        attrs.push(KeyValue::new("server.port", i64::from(p)));
    }
    if !r.cache.is_empty() {
        attrs.push(KeyValue::new("perfproxy.cache", r.cache));
    }
    if r.status >= 500 {
        attrs.push(KeyValue::new("error.type", r.status.to_string()));
        server.status = Status::error("");
    }
    server.attributes = attrs;
    let mut out = vec![server];
    if let Some((from, took)) = r.upstream {
        let mut up = span_data(r, scope, r.context.upstream, SpanKind::Client);
        up.name = "upstream".into();
        (up.start_time, up.end_time) = (r.start + from, r.start + from + took);
        up.attributes = vec![
            KeyValue::new("http.request.method", method.clone()),
            KeyValue::new("server.address", upstream.host.clone()),
            KeyValue::new("server.port", i64::from(upstream.port)),
            KeyValue::new("url.path", r.path.to_string()),
        ];
        match r.upstream_error {
            // No answer: the status is perfproxy's own, not the upstream's.
            Some(why) => {
                up.attributes.push(KeyValue::new("error.type", why));
                up.status = Status::error("");
            }
            None => {
                up.attributes.push(KeyValue::new("http.response.status_code", i64::from(r.status)));
                if r.status >= 500 {
                    up.attributes.push(KeyValue::new("error.type", r.status.to_string()));
                    up.status = Status::error("");
                }
            }
        }
        out.push(up);
    }
    if let Some((from, took, outcome)) = r.redis {
        let id = SpanId::from_bytes(crate::wire::http1::random_u64().max(1).to_be_bytes());
        let mut redis = span_data(r, scope, id, SpanKind::Client);
        redis.name = "cache.redis".into();
        (redis.start_time, redis.end_time) = (r.start + from, r.start + from + took);
        redis.attributes = vec![
            KeyValue::new("db.system.name", "redis"),
            KeyValue::new("db.operation.name", "GET"),
            KeyValue::new("perfproxy.cache.lookup", outcome),
        ];
        if outcome == "error" {
            redis.status = Status::error("");
            redis.attributes.push(KeyValue::new("error.type", "redis"));
        }
        out.push(redis);
    }
    out
}

/// `Host` as `server.address` and `server.port`.
fn split_host(host: &str) -> (&str, Option<u16>) {
    match host.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h.trim_start_matches('[').trim_end_matches(']'), p.parse().ok())
        }
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_into_address_and_port() {
        assert_eq!(split_host("example.com:8080"), ("example.com", Some(8080)));
        assert_eq!(split_host("example.com"), ("example.com", None));
        assert_eq!(split_host("[::1]:80"), ("::1", Some(80)));
    }
}
