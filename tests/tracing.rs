//! OpenTelemetry tracing against a real OTLP/HTTP receiver (protobuf
//! decoded with the `opentelemetry-proto` types), on both lanes (run again
//! with `PERFPROXY_EXPRESS_LANE=false`): a client's trace is continued, the
//! upstream's parent is perfproxy's upstream span, the spans carry the
//! semantic-convention attributes, sampling is honoured, a Redis lookup has
//! its span, and a collector that is down or hangs fails no request.

mod support;

use std::time::Duration;

use support::otlp::{spawn_receiver, Received};
use support::raw::{spawn_raw_upstream, RawAnswer, RawUpstream};
use support::*;

fn config(receiver: &str, extra: &str) -> String {
    write_config(&format!("[tracing]\nendpoint = \"{receiver}\"\nbatch_delay_ms = 50\n{extra}"))
}

async fn get(proxy: &Proxy, path: &str, extra: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: app.test:8080\r\n{extra}Connection: close\r\n\r\n");
    raw(proxy.addr, req.as_bytes(), Duration::from_millis(500)).await.0
}

/// The values of field `name` the upstream saw on requests for `target`.
fn sent(up: &RawUpstream, target: &str, name: &str) -> Vec<String> {
    up.seen()
        .iter()
        .filter(|s| s.target == target)
        .flat_map(|s| s.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()))
        .collect()
}

async fn spans_of(rx: &support::otlp::Receiver, trace: &str, n: usize) -> Vec<Received> {
    let mut found = Vec::new();
    eventually(10, "the spans are exported", || {
        found = rx.spans().into_iter().filter(|s| s.trace_id() == trace).collect();
        let done = found.len() >= n;
        async move { done }
    })
    .await;
    found
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_client_trace_is_continued_through_the_upstream() {
    let rx = spawn_receiver().await;
    let up = spawn_raw_upstream().await;
    let proxy = spawn_proxy(&up.url(), &["--config", &config(&rx.url(), "")]).await;

    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let resp = get(&proxy, "/api/users/42?q=1", &format!("traceparent: {traceparent}\r\ntracestate: v=1\r\n")).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let to_upstream = sent(&up, "/api/users/42?q=1", "traceparent");
    assert_eq!(to_upstream.len(), 1, "one traceparent upstream: {to_upstream:?}");
    let parts: Vec<&str> = to_upstream[0].split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", CLIENT_TRACE, "01"), "{to_upstream:?}");
    assert_ne!(parts[2], CLIENT_SPAN, "the upstream's parent is perfproxy's span");
    assert_eq!(sent(&up, "/api/users/42?q=1", "tracestate"), ["v=1"], "tracestate passes through");

    let spans = spans_of(&rx, CLIENT_TRACE, 2).await;
    let server = spans.iter().find(|s| s.span.kind == 2).expect("a server span");
    let client = spans.iter().find(|s| s.span.name == "upstream").expect("an upstream span");
    assert_eq!(server.service, "perfproxy");
    assert_eq!(server.span.name, "GET /api/users/:id");
    assert_eq!(server.parent_id(), CLIENT_SPAN, "the client's span is the parent");
    assert_eq!(client.span.kind, 3, "the upstream span is a client span");
    assert_eq!(client.parent_id(), server.span_id(), "a child of the server span");
    assert_eq!(client.span_id(), parts[2], "the upstream got the upstream span as its parent");
    for (key, value) in [
        ("http.request.method", "GET"),
        ("http.route", "/api/users/:id"),
        ("http.response.status_code", "200"),
        ("url.path", "/api/users/42"),
        ("url.scheme", "http"),
        ("server.address", "app.test"),
        ("server.port", "8080"),
        ("client.address", "127.0.0.1"),
    ] {
        assert_eq!(server.attr(key).as_deref(), Some(value), "{key} on {:?}", server.span.attributes);
    }
    assert_eq!(server.attr("error.type"), None);
    assert!(server.span.end_time_unix_nano >= client.span.end_time_unix_nano);
    assert!(client.span.start_time_unix_nano >= server.span.start_time_unix_nano);
    assert_eq!(client.attr("server.address").as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn a_trace_is_started_when_none_came_and_failures_carry_their_type() {
    let rx = spawn_receiver().await;
    let up = spawn_raw_upstream().await;
    up.answer("/broken", RawAnswer::Bytes(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec()));
    let proxy = spawn_proxy(&up.url(), &["--config", &config(&rx.url(), "")]).await;

    // Two traceparents are none (W3C): a new trace, as with none at all.
    let two = format!(
        "traceparent: 00-{CLIENT_TRACE}-{CLIENT_SPAN}-01\r\ntraceparent: 00-{CLIENT_TRACE}-{CLIENT_SPAN}-01\r\n"
    );
    for (path, extra) in [("/fresh", ""), ("/broken", ""), ("/twice", two.as_str())] {
        let resp = get(&proxy, path, extra).await;
        assert!(resp.starts_with("HTTP/1.1"), "{resp}");
        let tp = sent(&up, path, "traceparent");
        assert_eq!(tp.len(), 1, "{path}: {tp:?}");
        let trace = tp[0].split('-').nth(1).expect("a trace id").to_string();
        assert!(trace.len() == 32 && trace != CLIENT_TRACE && trace != "0".repeat(32), "{path}: {trace}");
        let spans = spans_of(&rx, &trace, 2).await;
        let server = spans.iter().find(|s| s.span.kind == 2).expect("a server span");
        assert!(server.span.parent_span_id.is_empty(), "{path}: a root span");
        if path == "/broken" {
            assert_eq!(server.attr("error.type").as_deref(), Some("503"));
            assert_eq!(server.span.status.as_ref().map(|s| s.code), Some(2), "status Error");
        }
    }
}

#[tokio::test]
async fn sampling_is_honoured_and_the_access_log_names_the_trace() {
    let rx = spawn_receiver().await;
    let up = spawn_raw_upstream().await;
    let log = std::env::temp_dir().join(format!("perfproxy-trace-log-{}.jsonl", fastrand::u64(..)));
    let extra = format!("sample_ratio = 0.0\n[access_log]\nenabled = true\npath = \"{}\"\n", log.display());
    let proxy = spawn_proxy(&up.url(), &["--config", &config(&rx.url(), &extra)]).await;

    for i in 0..20 {
        get(&proxy, &format!("/unsampled/{i}"), "").await;
    }
    // A sampled parent is followed (parent-based), an unsampled one too.
    get(&proxy, "/sampled", &format!("traceparent: 00-{CLIENT_TRACE}-{CLIENT_SPAN}-01\r\n")).await;
    let other = "0af7651916cd43dd8448eb211c80319c";
    get(&proxy, "/declined", &format!("traceparent: 00-{other}-{CLIENT_SPAN}-00\r\n")).await;
    spans_of(&rx, CLIENT_TRACE, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let traces: std::collections::HashSet<String> = rx.spans().iter().map(Received::trace_id).collect();
    assert_eq!(traces.len(), 1, "only the sampled parent's trace: {traces:?}");
    for i in 0..20 {
        let tp = sent(&up, &format!("/unsampled/{i}"), "traceparent");
        assert!(tp.len() == 1 && tp[0].ends_with("-00"), "propagated, not sampled: {tp:?}");
    }
    assert!(sent(&up, "/declined", "traceparent")[0].starts_with(&format!("00-{other}-")));

    let mut lines = Vec::new();
    eventually(5, "the access log is written", || {
        lines = std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_string).collect();
        let n = lines.len();
        async move { n >= 22 }
    })
    .await;
    let sampled: serde_json::Value =
        serde_json::from_str(lines.iter().find(|l| l.contains("/sampled")).expect("logged")).expect("json");
    assert_eq!(sampled["trace_id"], CLIENT_TRACE);
    let unsampled: serde_json::Value =
        serde_json::from_str(lines.iter().find(|l| l.contains("/unsampled/3")).expect("logged")).expect("json");
    let upstream_trace = sent(&up, "/unsampled/3", "traceparent")[0].split('-').nth(1).map(str::to_string);
    assert_eq!(unsampled["trace_id"].as_str().map(str::to_string), upstream_trace, "unsampled ids are logged too");
}

#[tokio::test]
async fn a_collector_that_is_down_or_hangs_fails_no_request() {
    let up = spawn_raw_upstream().await;
    // Down: nothing listens there.
    let down = format!("http://127.0.0.1:{}", free_port());
    let proxy = spawn_proxy(&up.url(), &["--config", &config(&down, "queue_size = 8\n")]).await;
    for i in 0..100 {
        let resp = get(&proxy, &format!("/down/{i}"), "").await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    let dropped = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("perfproxy_trace_spans_dropped_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    eventually(20, "failed exports are counted as dropped", || {
        let url = proxy.url("/metrics");
        async move { dropped(&support::get(&url).await.text()) > 0.0 }
    })
    .await;

    // Hanging: the collector takes the connection and never answers.
    let rx = spawn_receiver().await;
    rx.hang();
    let proxy = spawn_proxy(&up.url(), &["--config", &config(&rx.url(), "queue_size = 8\n")]).await;
    let started = std::time::Instant::now();
    for i in 0..200 {
        let resp = get(&proxy, &format!("/hang/{i}"), "").await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "200 requests took {took:?}");
    // Counted as the figures are published (every 50 ms), not at once.
    eventually(5, "a full queue drops", || {
        let url = proxy.url("/metrics");
        async move { dropped(&support::get(&url).await.text()) > 0.0 }
    })
    .await;
}

#[tokio::test]
async fn a_redis_lookup_has_its_span() {
    let rx = spawn_receiver().await;
    let up = spawn_raw_upstream().await;
    let page = format!("/redis-span/{}", fastrand::u64(..));
    up.answer(
        &page,
        RawAnswer::Bytes(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nok".to_vec()),
    );
    let extra = "[cache]\nenabled = true\n";
    let cfg = config(&rx.url(), extra);
    let proxy = spawn_proxy(&up.url(), &["--config", &cfg, "--redis-url", "redis://127.0.0.1:6379"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = get(&proxy, &page, &format!("traceparent: 00-{CLIENT_TRACE}-{CLIENT_SPAN}-01\r\n")).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let spans = spans_of(&rx, CLIENT_TRACE, 3).await;
    let server = spans.iter().find(|s| s.span.kind == 2).expect("a server span");
    let redis = spans.iter().find(|s| s.span.name == "cache.redis").expect("a Redis lookup span");
    assert_eq!(redis.parent_id(), server.span_id());
    assert_eq!(redis.attr("db.system.name").as_deref(), Some("redis"));
    assert_eq!(redis.attr("perfproxy.cache.lookup").as_deref(), Some("miss"));
    assert_eq!(server.attr("perfproxy.cache").as_deref(), Some("MISS"));
}

#[tokio::test]
async fn monitoring_off_still_traces_and_failures_mark_the_upstream_span() {
    let rx = spawn_receiver().await;
    let up = spawn_raw_upstream().await;
    up.answer("/gone", RawAnswer::BytesThenClose(Vec::new()));
    let cfg = config(&rx.url(), "");
    let proxy = spawn_proxy(&up.url(), &["--config", &cfg, "--performance-monitoring-enabled", "false"]).await;

    get(&proxy, "/fine", &format!("traceparent: 00-{CLIENT_TRACE}-{CLIENT_SPAN}-01\r\n")).await;
    let tp = sent(&up, "/fine", "traceparent");
    assert!(
        tp.len() == 1 && tp[0].starts_with(&format!("00-{CLIENT_TRACE}-")) && !tp[0].contains(CLIENT_SPAN),
        "{tp:?}"
    );
    spans_of(&rx, CLIENT_TRACE, 2).await;

    // No answer from the upstream: the upstream span says why, with no status of its own.
    let other = "0af7651916cd43dd8448eb211c80319c";
    let resp = get(&proxy, "/gone", &format!("traceparent: 00-{other}-{CLIENT_SPAN}-01\r\n")).await;
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    let spans = spans_of(&rx, other, 2).await;
    let upstream = spans.iter().find(|s| s.span.name == "upstream").expect("an upstream span");
    assert_eq!(upstream.attr("error.type").as_deref(), Some("upstream_error"));
    assert_eq!(upstream.attr("http.response.status_code"), None);
    assert_eq!(upstream.span.status.as_ref().map(|s| s.code), Some(2));

    // A made-up method names no span.
    let raw_req = format!(
        "FOO1 /m/x HTTP/1.1\r\nHost: app\r\ntraceparent: 00-{third}-{CLIENT_SPAN}-01\r\nConnection: close\r\n\r\n",
        third = "1af7651916cd43dd8448eb211c80319c"
    );
    raw(proxy.addr, raw_req.as_bytes(), Duration::from_millis(500)).await;
    let spans = spans_of(&rx, "1af7651916cd43dd8448eb211c80319c", 1).await;
    let server = spans.iter().find(|s| s.span.kind == 2).expect("a server span");
    assert!(!server.span.name.contains("FOO1"), "{}", server.span.name);
    assert_eq!(server.attr("http.request.method").as_deref(), Some("_OTHER"));
    assert_eq!(server.attr("http.request.method_original").as_deref(), Some("FOO1"));
}

#[tokio::test]
async fn a_cached_answer_never_replays_another_requests_trace_fields() {
    let rx = spawn_receiver().await;
    let up = spawn_raw_upstream().await;
    let page = format!("/traced-page/{}", fastrand::u64(..));
    up.answer(
        &page,
        RawAnswer::Bytes(
            format!(
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\ntraceresponse: 00-{CLIENT_TRACE}-{CLIENT_SPAN}-01\r\n\
                 tracestate: up=1\r\nContent-Length: 2\r\n\r\nok"
            )
            .into_bytes(),
        ),
    );
    let cfg = config(&rx.url(), "[cache]\nenabled = true\n");
    let proxy = spawn_proxy(&up.url(), &["--config", &cfg]).await;
    let first = get(&proxy, &page, "").await;
    assert!(first.contains("traceresponse"), "the fetching request gets its own: {first}");
    let second = get(&proxy, &page, "").await;
    assert!(second.to_ascii_lowercase().contains("x-cache: hit"), "{second}");
    let lower = second.to_ascii_lowercase();
    assert!(!lower.contains("traceresponse") && !lower.contains("tracestate"), "replayed: {second}");
}
