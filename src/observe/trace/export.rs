//! Where spans go: the settings (`[tracing]` under the standard `OTEL_*`
//! variables, which win), and the exporter's thread, which batches span
//! records, turns them into the SDK's `SpanData` (a server span and its
//! `upstream` and `cache.redis` children) and exports them with
//! `opentelemetry-otlp` over OTLP/HTTP protobuf. The thread has its own
//! single-threaded runtime for the exporter's hyper client: a slow
//! collector stalls only it, and the queue in front of it drops and counts.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SpanData, SpanEvents, SpanExporter, SpanLinks};
use opentelemetry_sdk::Resource;
use tracing::{info, warn};

use super::{Counts, Message, SpanRecord, Tracer};
use crate::settings::{ConfigError, TracingSettings};

/// Tracing as configured: on when an endpoint is named, here or by the
/// environment, and `OTEL_SDK_DISABLED` is not `true`.
#[derive(Debug, Clone)]
pub struct Setup {
    /// `[tracing] endpoint` as the traces URL (`/v1/traces` appended), when
    /// no `OTEL_EXPORTER_OTLP_*ENDPOINT` variable names one (the exporter
    /// reads those itself).
    pub endpoint: Option<String>,
    pub service_name: String,
    pub sampler: Sampler,
    /// Records queued for export at most (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub queue: usize,
    /// How long records wait for a batch (`OTEL_BSP_SCHEDULE_DELAY`).
    pub delay: Duration,
    /// Records per export at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub batch: usize,
}

const ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// An `http://` URL with a host and a valid port, no query: this build
/// exports without TLS (send to a collector or agent beside perfproxy).
fn http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = value.parse::<http::Uri>().is_ok_and(|u| {
        u.scheme_str() == Some("http")
            && u.host().is_some_and(|h| !h.is_empty())
            && u.authority().is_some_and(|a| {
                // `Authority::port` reads an out-of-range port as none: check the text.
                let after_host = a.as_str().rsplit_once(']').map_or(a.as_str(), |(_, rest)| rest);
                after_host.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_ok_and(|p| p > 0))
            })
            && u.query().is_none()
    });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("{value:?}"),
            "an http:// URL with a host, no query (no TLS: use a local collector)",
        ))
    }
}

fn ratio(key: &str, value: &str) -> Result<f64, ConfigError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| ConfigError::new(key, format!("{value:?}"), "a number from 0 to 1"))
}

/// A variable's count, else the file's (`file`: its key and value), else `default`.
fn count(
    key: &str,
    value: Option<String>,
    file: (&str, Option<u64>),
    default: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(v) = value else {
        return match file.1 {
            Some(n) if !(1..=max).contains(&n) => {
                Err(ConfigError::new(file.0, n, format!("a whole number from 1 to {max}")))
            }
            Some(n) => Ok(n),
            None => Ok(default),
        };
    };
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ConfigError::new(key, format!("{v:?}"), format!("a whole number from 1 to {max}")))
}

impl Setup {
    /// Resolves `[tracing]` and the environment (`var` reads a variable);
    /// `None`: tracing is off.
    pub fn resolve(t: &TracingSettings, var: impl Fn(&str) -> Option<String>) -> Result<Option<Setup>, ConfigError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if let Some(e) = &t.endpoint {
            http_url("tracing.endpoint", e)?;
        }
        if let Some(r) = t.sample_ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err(ConfigError::new("tracing.sample_ratio", r, "a number from 0 to 1"));
            }
        }
        let mut from_env = false;
        for name in ENDPOINT_VARS {
            if let Some(v) = var(name) {
                http_url(name, &v)?;
                from_env = true;
            }
        }
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if !from_env && t.endpoint.is_none() {
            return Ok(None);
        }
        let endpoint =
            if from_env { None } else { t.endpoint.as_ref().map(|e| format!("{}/v1/traces", e.trim_end_matches('/'))) };
        if t.service_name.as_deref() == Some("") {
            return Err(ConfigError::new("tracing.service_name", "\"\"", "a non-empty name"));
        }
        // The environment before the file: the variable, then the resource
        // attributes' `service.name`, then the key.
        let service_name = var("OTEL_SERVICE_NAME")
            .or_else(|| {
                let attrs = var("OTEL_RESOURCE_ATTRIBUTES")?;
                attrs.split(',').find_map(|kv| kv.trim().strip_prefix("service.name=").map(str::to_string))
            })
            .or_else(|| t.service_name.clone())
            .unwrap_or_else(|| "perfproxy".to_string());
        // A ratio: the variable's argument, else the file's.
        let arg = match var("OTEL_TRACES_SAMPLER_ARG") {
            Some(a) => Some(ratio("OTEL_TRACES_SAMPLER_ARG", &a)?),
            None => t.sample_ratio,
        };
        let sampler = match var("OTEL_TRACES_SAMPLER") {
            Some(name) => sampler(&name, arg)?,
            None => Sampler::ParentBased(Box::new(arg.map_or(Sampler::AlwaysOn, Sampler::TraceIdRatioBased))),
        };
        Ok(Some(Setup {
            endpoint,
            service_name,
            sampler,
            queue: count(
                "OTEL_BSP_MAX_QUEUE_SIZE",
                var("OTEL_BSP_MAX_QUEUE_SIZE"),
                ("tracing.queue_size", t.queue_size),
                2048,
                1 << 20,
            )? as usize,
            delay: Duration::from_millis(count(
                "OTEL_BSP_SCHEDULE_DELAY",
                var("OTEL_BSP_SCHEDULE_DELAY"),
                ("tracing.batch_delay_ms", t.batch_delay_ms),
                5000,
                3_600_000,
            )?),
            batch: count(
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
                ("", None),
                512,
                1 << 20,
            )? as usize,
        }))
    }
}

/// `OTEL_TRACES_SAMPLER` and its ratio (default 1), as the specification names them.
fn sampler(name: &str, arg: Option<f64>) -> Result<Sampler, ConfigError> {
    let ratio = arg.unwrap_or(1.0);
    Ok(match name.trim() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio),
        "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
        other => {
            return Err(ConfigError::new(
                "OTEL_TRACES_SAMPLER",
                format!("{other:?}"),
                "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or \
                 parentbased_traceidratio",
            ))
        }
    })
}

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
    use std::collections::HashMap;

    fn resolve(file: TracingSettings, env: &[(&str, &str)]) -> Result<Option<Setup>, ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Setup::resolve(&file, |k| env.get(k).cloned())
    }

    #[test]
    fn off_without_an_endpoint_and_when_disabled() {
        assert!(resolve(TracingSettings::default(), &[]).expect("valid").is_none());
        let file = TracingSettings { endpoint: Some("http://collector:4318".into()), ..Default::default() };
        let on = resolve(file.clone(), &[]).expect("valid").expect("on");
        assert_eq!(on.endpoint.as_deref(), Some("http://collector:4318/v1/traces"));
        assert_eq!(on.service_name, "perfproxy");
        assert!(resolve(file, &[("OTEL_SDK_DISABLED", "TRUE")]).expect("valid").is_none());
    }

    #[test]
    fn the_environment_wins_and_bad_values_are_named() {
        let file = TracingSettings {
            endpoint: Some("http://file:4318/".into()),
            service_name: Some("from-file".into()),
            sample_ratio: Some(0.5),
            ..Default::default()
        };
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ];
        let s = resolve(file.clone(), &env).expect("valid").expect("on");
        assert_eq!(s.endpoint, None, "the exporter reads the variable itself");
        assert_eq!(s.service_name, "from-env");
        assert!(matches!(s.sampler, Sampler::TraceIdRatioBased(r) if r == 0.01));
        let s = resolve(file.clone(), &[]).expect("valid").expect("on");
        assert_eq!((s.endpoint.as_deref(), s.service_name.as_str()), (Some("http://file:4318/v1/traces"), "from-file"));
        let named = |env: &[(&str, &str)]| resolve(file.clone(), env).expect_err("invalid").key;
        assert_eq!(named(&[("OTEL_TRACES_SAMPLER", "sometimes")]), "OTEL_TRACES_SAMPLER");
        assert_eq!(
            named(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "2")]),
            "OTEL_TRACES_SAMPLER_ARG"
        );
        assert_eq!(named(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]), "OTEL_EXPORTER_OTLP_ENDPOINT");
        assert_eq!(named(&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")]), "OTEL_BSP_MAX_QUEUE_SIZE");
        let bad = TracingSettings { sample_ratio: Some(1.5), ..Default::default() };
        assert_eq!(resolve(bad, &[]).expect_err("invalid").key, "tracing.sample_ratio");
        for endpoint in ["ftp://x", "https://collector:4318", "http://h:99999", "http://h/otlp?x=1", "collector"] {
            let bad = TracingSettings { endpoint: Some(endpoint.into()), ..Default::default() };
            assert_eq!(resolve(bad, &[]).expect_err(endpoint).key, "tracing.endpoint");
        }
        // The environment wins over the file, argument by argument.
        let ratio = TracingSettings { sample_ratio: Some(0.0), ..file.clone() };
        let s = resolve(ratio.clone(), &[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")]).expect("valid");
        assert!(format!("{:?}", s.expect("on").sampler).contains("TraceIdRatioBased(0.0)"), "the file's ratio");
        let s = resolve(ratio, &[("OTEL_TRACES_SAMPLER_ARG", "0.5")]).expect("valid");
        assert!(format!("{:?}", s.expect("on").sampler).contains("TraceIdRatioBased(0.5)"), "the variable's ratio");
        let s = resolve(file.clone(), &[("OTEL_RESOURCE_ATTRIBUTES", "service.name=attrs")]).expect("valid");
        assert_eq!(s.expect("on").service_name, "attrs", "the environment's resource attributes beat the file");
        let attrs = [("OTEL_RESOURCE_ATTRIBUTES", "team=core, service.name=checkout"), ENDPOINT_ENV];
        let s = resolve(TracingSettings::default(), &attrs).expect("valid").expect("on");
        assert_eq!(s.service_name, "checkout");
    }

    const ENDPOINT_ENV: (&str, &str) = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces");

    #[test]
    fn hosts_split_into_address_and_port() {
        assert_eq!(split_host("example.com:8080"), ("example.com", Some(8080)));
        assert_eq!(split_host("example.com"), ("example.com", None));
        assert_eq!(split_host("[::1]:80"), ("::1", Some(80)));
    }
}
