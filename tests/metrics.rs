//! Per-route metrics, `/performance` and `/metrics` (SPEC §3, §4).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;

async fn perf(url: &str) -> Value {
    get(url).await.json()
}

fn route<'a>(doc: &'a Value, label: &str) -> &'a Value {
    doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == label)
        .unwrap_or_else(|| panic!("no route {label} in {doc}"))
}

#[tokio::test]
async fn a_known_mix_is_counted_exactly_by_route() {
    let up = spawn_upstream().await;
    let config = write_config("[[routes]]\npattern = \"GET /api/users/:id\"\n");
    let proxy = spawn_proxy(&up.url(), &["--config", &config, "--slow-request-threshold", "150"]).await;
    for i in 0..10 {
        assert_eq!(get(&proxy.url(&format!("/api/users/user-{i}?x={i}"))).await.status, 200);
    }
    for code in [500, 503, 500, 502, 500, 404, 404, 404] {
        assert_eq!(get(&proxy.url(&format!("/status/{code}"))).await.status, code);
    }
    let delays = (0..4).map(|_| {
        let url = proxy.url("/delay/200");
        tokio::spawn(async move { get(&url).await.status })
    });
    for d in delays {
        assert_eq!(d.await.unwrap(), 200);
    }
    // perfproxy's own endpoints are not traffic.
    for _ in 0..5 {
        get(&proxy.url("/health/live")).await;
        get(&proxy.url("/metrics")).await;
    }
    let url = proxy.url("/performance");
    eventually(3, "22 requests counted", || async { perf(&url).await["requests"]["total"] == 22 }).await;
    let doc = perf(&url).await;
    let r = &doc["requests"];
    assert_eq!(r["total"], 22);
    assert_eq!(r["errors"], 5);
    assert_eq!(r["success"], 17);
    assert_eq!(r["status"]["2xx"], 14);
    assert_eq!(r["status"]["4xx"], 3);
    assert_eq!(r["status"]["5xx"], 5);
    assert!((r["error_rate"].as_f64().unwrap() - 5.0 / 22.0).abs() < 1e-9);
    assert_eq!(r["slow"], 4);
    assert_eq!(r["in_flight"], 0);
    assert_eq!(r["recent"]["total"], 22, "recent window holds them too");
    assert_eq!(doc["window_seconds"], 60);

    let routes: Vec<&str> = doc["routes"].as_array().unwrap().iter().map(|r| r["route"].as_str().unwrap()).collect();
    assert_eq!(routes, ["GET /api/users/:id", "GET /status/:id", "GET /delay/:id"], "sorted by count");
    let users = route(&doc, "GET /api/users/:id");
    assert_eq!((users["count"].as_u64(), users["errors"].as_u64()), (Some(10), Some(0)));
    let status = route(&doc, "GET /status/:id");
    assert_eq!((status["count"].as_u64(), status["errors"].as_u64()), (Some(8), Some(5)));
    assert_eq!(status["status"]["4xx"], 3);
    let delay = route(&doc, "GET /delay/:id");
    assert_eq!(delay["slow"], 4);
    // Percentiles match the upstream's 200 ms within histogram precision (and a little overhead).
    for q in ["p50", "p95", "p99", "max"] {
        let v = delay["latency_ms"][q].as_f64().unwrap();
        assert!((198.0..260.0).contains(&v), "{q} = {v}");
    }
    assert_eq!(delay["recent"]["total"], 4);

    let narrowed = perf(&proxy.url("/performance?route=GET%20%2Fdelay%2F%3Aid")).await;
    assert_eq!(narrowed["routes"].as_array().unwrap().len(), 1);
    assert_eq!(narrowed["routes"][0]["route"], "GET /delay/:id");
    assert_eq!(narrowed["requests"]["total"], 22, "totals stay whole");
    let none = perf(&proxy.url("/performance?route=GET%20%2Fnowhere")).await;
    assert_eq!(none["routes"].as_array().unwrap().len(), 0);

    for section in ["cache", "database", "memory", "system", "alerts"] {
        assert!(!doc[section].is_null(), "{section} missing");
    }
    assert_eq!(doc["database"]["configured"], false);
    assert!(doc["memory"]["rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(doc["system"]["pid"], std::process::id());
    assert!(doc["generated_at"].as_str().unwrap().ends_with('Z'));
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_proxys_own_502_and_504_are_errors_of_their_route() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = spawn_proxy(&dead, &[]).await;
    for _ in 0..3 {
        assert_eq!(get(&proxy.url("/api/orders/42")).await.status, 502);
    }
    let url = proxy.url("/performance");
    eventually(3, "3 requests", || async { perf(&url).await["requests"]["total"] == 3 }).await;
    let doc = perf(&url).await;
    let r = route(&doc, "GET /api/orders/:id");
    assert_eq!((r["errors"].as_u64(), r["status"]["5xx"].as_u64()), (Some(3), Some(3)));
    assert_eq!(r["error_rate"], 1.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn metrics_agree_with_performance_and_pass_promtool() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    for i in 0..7 {
        get(&proxy.url(&format!("/items/{i}"))).await;
    }
    get(&proxy.url("/status/503")).await;
    let url = proxy.url("/performance");
    eventually(3, "8 requests", || async { perf(&url).await["requests"]["total"] == 8 }).await;
    let text = get(&proxy.url("/metrics")).await;
    assert_eq!(text.status, 200);
    assert!(text.headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let body = text.text();
    let sum = |prefix: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(sum("perfproxy_requests_total{"), 8.0);
    assert_eq!(sum("perfproxy_request_errors_total{"), 1.0);
    assert_eq!(sum("perfproxy_request_duration_seconds_count{"), 8.0);
    assert!(
        body.contains(r#"perfproxy_request_duration_seconds_bucket{route="GET /items/:id",le="+Inf"} 7"#),
        "{body}"
    );
    assert!(body.contains("perfproxy_requests_in_flight 0"));
    // OpenTelemetry's semantic-convention histogram: its boundaries, its labels.
    let semconv = r#"http_server_request_duration_seconds_bucket{http_request_method="GET",http_route="/items/:id",http_response_status_code="200","#;
    assert!(body.contains(&format!(r#"{semconv}le="10"}} 7"#)), "{body}");
    assert!(body.contains(&format!(r#"{semconv}le="0.075"}}"#)), "the semantic conventions' boundaries: {body}");
    assert!(
        body.contains(r#"http_server_request_duration_seconds_count{http_request_method="GET",http_route="/status/:id",http_response_status_code="503"} 1"#),
        "{body}"
    );
    assert!(body.contains(r#"perfproxy_health_check_up{check="upstream"} 1"#), "{body}");

    // promtool is installed by scripts/test.sh; a missing one is a failure, not a skip.
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn monitoring_off_is_a_pure_proxy() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &["--performance-monitoring-enabled", "false"]).await;
    for _ in 0..5 {
        assert_eq!(get(&proxy.url("/a/1")).await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let doc = perf(&proxy.url("/performance")).await;
    assert_eq!(doc["requests"]["total"], 0);
    assert_eq!(doc["routes"].as_array().unwrap().len(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn endpoints_move_with_config_and_answer_on_the_admin_listener() {
    let up = spawn_upstream().await;
    let config = write_config(
        "[endpoints]\nperformance = \"/_pp/perf\"\nhealth = \"/_pp/health\"\nmetrics = \"/_pp/metrics\"\n",
    );
    let proxy = spawn_proxy(&up.url(), &["--config", &config, "--admin-listen", "127.0.0.1:0"]).await;
    assert!(get(&proxy.url("/_pp/perf")).await.json()["requests"].is_object());
    assert_eq!(get(&proxy.url("/_pp/health/live")).await.status, 200);
    // The default path now belongs to the backend.
    assert_eq!(get(&proxy.url("/performance")).await.text(), "ok");
    let admin = proxy.admin.unwrap();
    assert!(get(&format!("http://{admin}/_pp/perf")).await.json()["routes"].is_array());
    assert!(get(&format!("http://{admin}/_pp/metrics")).await.text().contains("perfproxy_build_info"));
    assert_eq!(get(&format!("http://{admin}/performance")).await.status, 404);
    let post = send(http::Request::post(proxy.url("/_pp/perf")).body(Default::default()).unwrap()).await;
    assert_eq!(post.status, 405);
    proxy.shutdown().await;
}

/// The real binary in front of `upstream`, quiet; it and its base URL.
async fn start_quiet(upstream: &str, extra: &[&str]) -> (std::process::Child, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let child = Command::new(binary())
        .args(["--listen", &listen, "--upstream", upstream])
        .args(extra)
        .env("PERFPROXY_ROUTE_DISCOVERY", "false") // the plain labels these tests assert
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://{listen}");
    wait_ready(&format!("{base}/health/live"), 10).await;
    (child, base)
}

/// GETs every URL, 50 at a time; each must answer 200.
async fn get_all(urls: impl Iterator<Item = String>) {
    let c = client();
    let mut pending = Vec::new();
    for url in urls {
        let c = c.clone();
        pending.push(tokio::spawn(async move { c.get(url.parse().unwrap()).await.map(|r| r.status()) }));
        if pending.len() == 50 {
            for p in pending.drain(..) {
                assert_eq!(p.await.unwrap().unwrap(), 200);
            }
        }
    }
    for p in pending {
        assert_eq!(p.await.unwrap().unwrap(), 200);
    }
}

#[tokio::test]
async fn a_thousand_routes_fit_the_memory_budget_and_more_fold_into_other() {
    let up = spawn_upstream().await;
    let (mut child, base) = start_quiet(&up.url(), &[]).await;
    get_all((0..1010).map(|i| format!("{base}/route-{i}/items"))).await;
    let perf_url = format!("{base}/performance");
    eventually(3, "1010 requests", || async { perf(&perf_url).await["requests"]["total"] == 1010 }).await;
    let doc = perf(&perf_url).await;
    let routes = doc["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1001, "1000 labels plus GET OTHER");
    assert_eq!(route(&doc, "GET OTHER")["count"], 10);
    let rss = doc["memory"]["rss_bytes"].as_u64().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(rss < 64 << 20, "RSS {} MiB with 1000 routes", rss >> 20);
    println!("RSS with 1000 routes: {:.1} MiB", rss as f64 / 1048576.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_routes_fit_the_memory_budget() {
    let up = spawn_upstream().await;
    let cfg = write_config("max_routes = 10000\n");
    let (mut child, base) = start_quiet(&up.url(), &["--config", &cfg]).await;
    let perf_url = format!("{base}/performance");
    // What the routes cost is measured from the process at rest: a debug
    // binary's own resident code grows with every crate linked in (TLS
    // added 3.6 MiB of it), which is not what this bounds.
    let idle = perf(&perf_url).await["memory"]["rss_bytes"].as_u64().unwrap();
    get_all((0..10_000).map(|i| format!("{base}/items-{i}/x"))).await;
    eventually(5, "10000 requests", || async { perf(&perf_url).await["requests"]["total"] == 10_000 }).await;
    // Read it a few times: reads share the routes' histograms, never copy them.
    for _ in 0..3 {
        perf(&perf_url).await;
    }
    let doc = perf(&perf_url).await;
    assert_eq!(doc["routes"].as_array().unwrap().len(), 10_000);
    let rss = doc["memory"]["rss_bytes"].as_u64().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let grown = rss.saturating_sub(idle);
    println!(
        "RSS with 10 000 routes: {:.1} MiB, {:.1} MiB over the idle process",
        rss as f64 / 1048576.0,
        grown as f64 / 1048576.0
    );
    // 39.5 MiB measured before and after TLS (61.7 − 22.2, 65.3 − 25.7).
    assert!(grown < 42 << 20, "10 000 routes grew RSS by {} MiB", grown >> 20);
}
