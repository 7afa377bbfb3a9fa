//! gRPC through perfproxy with a real gRPC server and client (grpcio, from
//! `tests/grpc/peer.py`): unary, server-, client-streaming and bidirectional calls
//! arrive intact with their trailers; statuses are counted per method in
//! `/performance` and `/metrics`, the configured ones as errors; a
//! `grpc-timeout` (or `upstream_timeout_ms`, when shorter) ends in
//! `DEADLINE_EXCEEDED`; a dead upstream is `UNAVAILABLE`, never an HTTP
//! error; with `upstream_protocol = "h2c"` a gRPC-only backend is ready.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/peer.py");

/// The grpcio test server (its port), killed when dropped.
struct GrpcServer {
    _process: Child,
    port: u16,
}

fn grpc_server() -> GrpcServer {
    let port = free_port();
    let mut child = Command::new("python3")
        .args([PEER, "server", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    let out = child.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
    assert_eq!(line.trim(), "serving", "the grpcio server did not start (pip install grpcio; scripts/test.sh does)");
    GrpcServer { _process: Child(child), port }
}

/// Runs the peer's client side with `args`; its stdout.
async fn peer(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || Command::new("python3").arg(PEER).args(&args).output())
        .await
        .unwrap()
        .expect("python3 runs");
    assert!(out.status.success(), "peer failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn route<'a>(perf: &'a Value, name: &str) -> &'a Value {
    perf["routes"].as_array().unwrap().iter().find(|r| r["route"] == name).unwrap_or_else(|| panic!("{name}: {perf}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_streaming_and_bidirectional_calls_pass_with_trailers_and_are_counted_per_method() {
    let server = grpc_server();
    let proxy = spawn_proxy(&format!("http://127.0.0.1:{}", server.port), &[]).await;
    let target = proxy.addr.to_string();
    let out: Value = serde_json::from_str(&peer(&["client", &target]).await).unwrap();
    assert_eq!(out["unary"], "hello", "{out}");
    assert_eq!(out["unary_code"], "OK");
    assert_eq!(out["trailers"]["x-trailer"], "kept", "trailers arrive intact: {out}");
    assert_eq!(out["fail_13"], "INTERNAL");
    assert_eq!(out["fail_5"], "NOT_FOUND");
    assert_eq!(out["deadline"], "DEADLINE_EXCEEDED");
    let count: Vec<String> = (0..5).map(|i| format!("message {i}")).collect();
    assert_eq!(out["count"], serde_json::json!(count));
    assert_eq!(out["join"], "x+y+z");
    assert_eq!(out["chat"], serde_json::json!(["A", "B", "C"]));

    let url = proxy.url("/performance");
    eventually(5, "the calls are recorded", || async {
        let perf = get(&url).await.json();
        perf["routes"].as_array().unwrap().iter().filter(|r| r["grpc_status"].is_object()).count() == 4
    })
    .await;
    let perf = get(&url).await.json();
    let unary = route(&perf, "POST /test.Echo/Unary");
    assert_eq!(
        unary["grpc_status"],
        serde_json::json!({"OK": 1, "INTERNAL": 1, "NOT_FOUND": 1, "DEADLINE_EXCEEDED": 1}),
        "{unary}"
    );
    // INTERNAL and DEADLINE_EXCEEDED are error codes by default, NOT_FOUND is not.
    assert_eq!(unary["errors"], 2, "{unary}");
    assert_eq!(unary["status"]["5xx"], 0, "every answer was HTTP 200: {unary}");
    // Four requests, one reply (the others failed).
    assert_eq!(unary["messages"], 5, "{unary}");
    let stream = route(&perf, "POST /test.Echo/Count");
    assert_eq!((stream["messages"].as_u64(), &stream["grpc_status"]), (Some(6), &serde_json::json!({"OK": 1})));
    assert_eq!(route(&perf, "POST /test.Echo/Join")["messages"], 4);
    assert_eq!(route(&perf, "POST /test.Echo/Chat")["messages"], 6);
    // Never cached: gRPC calls are POSTs with trailers.
    assert_eq!(perf["cache"]["stores"].as_u64().unwrap_or(0), 0, "{}", perf["cache"]);

    let metrics = get(&proxy.url("/metrics")).await.text();
    for line in [
        r#"perfproxy_grpc_responses_total{route="POST /test.Echo/Unary",code="INTERNAL"} 1"#,
        r#"perfproxy_grpc_responses_total{route="POST /test.Echo/Count",code="OK"} 1"#,
        r#"perfproxy_grpc_messages_total{route="POST /test.Echo/Chat"} 6"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_caps_grpc_timeout_and_a_dead_upstream_is_unavailable() {
    let server = grpc_server();
    let proxy = spawn_proxy(
        &format!("http://127.0.0.1:{}", server.port),
        &["--config", &write_config("upstream_timeout_ms = 300\n")],
    )
    .await;
    let target = proxy.addr.to_string();
    let started = Instant::now();
    // The client allows 10 s; perfproxy's cap is 300 ms.
    let out = peer(&["call", &target, "sleep:3000", "10"]).await;
    assert!(out.starts_with("DEADLINE_EXCEEDED"), "{out}");
    assert!(started.elapsed() < Duration::from_millis(2900), "answered at the cap, not the server's pace");
    assert!(peer(&["call", &target, "quick"]).await.starts_with("OK"));

    drop(server);
    let out = peer(&["call", &target, "anyone?"]).await;
    assert!(out.starts_with("UNAVAILABLE"), "a gRPC status, not an HTTP error: {out}");
    let url = proxy.url("/performance");
    eventually(5, "three calls recorded", || async {
        route(&get(&url).await.json(), "POST /test.Echo/Unary")["count"] == 3
    })
    .await;
    let perf = get(&url).await.json();
    let unary = route(&perf, "POST /test.Echo/Unary");
    assert_eq!(unary["grpc_status"], serde_json::json!({"OK": 1, "DEADLINE_EXCEEDED": 1, "UNAVAILABLE": 1}), "{unary}");
    assert_eq!(unary["errors"], 2, "{unary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_client_cancels_mid_stream_counts_as_cancelled_not_as_an_error() {
    let server = grpc_server();
    let proxy = spawn_proxy(&format!("http://127.0.0.1:{}", server.port), &[]).await;
    assert_eq!(peer(&["cancel", &proxy.addr.to_string()]).await.trim(), "cancelled");
    let url = proxy.url("/performance");
    eventually(5, "the cancelled call is recorded", || async {
        get(&url).await.json()["routes"].as_array().unwrap().iter().any(|r| r["route"] == "POST /test.Echo/Count")
    })
    .await;
    let perf = get(&url).await.json();
    let stream = route(&perf, "POST /test.Echo/Count");
    assert_eq!(stream["grpc_status"], serde_json::json!({"CANCELLED": 1}), "{stream}");
    assert_eq!(stream["errors"], 0, "{stream}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_h2c_upstream_a_grpc_only_backend_becomes_ready_and_http_goes_over_h2c() {
    let server = grpc_server();
    let config = write_config("upstream_protocol = \"h2c\"\n[health]\ninterval_ms = 200\n");
    let proxy = spawn_proxy(&format!("http://127.0.0.1:{}", server.port), &["--config", &config]).await;
    // The probe speaks HTTP/2: the gRPC server answers it (an HTTP/1.1 probe gets a protocol error).
    wait_ready(&proxy.url("/health/ready"), 10).await;
    assert!(peer(&["call", &proxy.addr.to_string(), "hello"]).await.starts_with("OK"));
    let auto = spawn_proxy(
        &format!("http://127.0.0.1:{}", server.port),
        &["--config", &write_config("[health]\ninterval_ms = 200\n")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        get(&auto.url("/health/ready")).await.status,
        503,
        "auto probes over HTTP/1.1: the gRPC-only backend is down"
    );
    assert!(peer(&["call", &auto.addr.to_string(), "hello"]).await.starts_with("OK"), "auto sends gRPC over h2c");
}

/// An HTTP/2-only (h2c) upstream that answers with the version it was asked in.
async fn h2c_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let body = format!("{:?} {}", req.version(), req.uri());
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(body),
                    )))
                });
                let exec = hyper_util::rt::TokioExecutor::new();
                let _ = hyper::server::conn::http2::Builder::new(exec)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_h2c_upstream_http_1_1_clients_are_served_over_h2c_on_both_lanes() {
    let up = h2c_upstream().await;
    let config =
        write_config("upstream_protocol = \"h2c\"\n[health]\ninterval_ms = 200\nupstream_path = \"/healthz\"\n");
    let proxy = spawn_proxy(&format!("http://{up}"), &["--config", &config]).await;
    wait_ready(&proxy.url("/health/ready"), 10).await;
    let answer = get(&proxy.url("/items?page=2")).await;
    assert_eq!((answer.status, answer.text()), (200, format!("HTTP/2.0 http://{}/items?page=2", proxy.addr)));
    // The same upstream under auto: HTTP/1.1, which it does not speak.
    let auto = spawn_proxy(&format!("http://{up}"), &[]).await;
    assert_eq!(get(&auto.url("/items")).await.status, 502);
}
