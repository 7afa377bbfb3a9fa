//! `/health`, `/health/live`, `/health/ready` (SPEC §5) against real
//! dependencies: the upstream killed and restarted, a private redis-server
//! killed and restarted, the real PostgreSQL cut off and restored.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const FAST: &str = "[health]\ninterval_ms = 100\ntimeout_ms = 300\n";

async fn health(proxy: &Proxy, path: &str) -> (u16, Value) {
    let a = get(&proxy.url(path)).await;
    (a.status, a.json())
}

async fn wait_status(proxy: &Proxy, want_code: u16, want: &str) -> Value {
    let t = Instant::now();
    loop {
        let (code, doc) = health(proxy, "/health").await;
        if code == want_code && doc["status"] == want {
            return doc;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "health never became {want} ({want_code}): {doc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_follows_the_upstream_down_and_back_up() {
    let up = spawn_upstream().await;
    let addr = up.addr;
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config(FAST)]).await;
    let doc = wait_status(&proxy, 200, "healthy").await;
    assert_eq!(doc["checks"]["upstream"]["status"], "up");
    assert_eq!(doc["checks"]["redis"]["status"], "not_configured");
    assert_eq!(doc["checks"]["database"]["status"], "not_configured");
    assert!(doc["version"].is_string() && doc["uptime_seconds"].is_u64());

    up.kill();
    let doc = wait_status(&proxy, 503, "unhealthy").await;
    assert_eq!(doc["checks"]["upstream"]["status"], "down");
    assert!(doc["checks"]["upstream"]["error"].is_string());
    let (ready, _) = health(&proxy, "/health/ready").await;
    assert_eq!(ready, 503);
    let (live, _) = health(&proxy, "/health/live").await;
    assert_eq!(live, 200, "liveness does not depend on the upstream");

    let _back = spawn_upstream_on(addr).await;
    let doc = wait_status(&proxy, 200, "healthy").await;
    assert_eq!(doc["checks"]["upstream"]["status"], "up");
    assert_eq!(health(&proxy, "/health/ready").await.0, 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_probe_storm_never_reaches_the_upstream() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(
        &up.url(),
        &["--config", &write_config("[health]\ninterval_ms = 60000\nupstream_path = \"/probe\"\n")],
    )
    .await;
    wait_status(&proxy, 200, "healthy").await;
    for _ in 0..200 {
        assert_eq!(get(&proxy.url("/health")).await.status, 200);
    }
    let probes = up.probes().iter().filter(|s| s.uri == "/probe").count();
    assert_eq!(probes, 1, "health answered from the latest probe, not by probing");
    proxy.shutdown().await;
}

#[tokio::test]
async fn redis_down_degrades_but_never_fails_traffic() {
    let up = spawn_upstream().await;
    let port = free_port();
    let redis = Redis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config(FAST), "--redis-url", &url]).await;
    let doc = wait_status(&proxy, 200, "healthy").await;
    assert_eq!(doc["checks"]["redis"]["status"], "up");

    drop(redis);
    let doc = wait_status(&proxy, 200, "degraded").await;
    assert_eq!(doc["checks"]["redis"]["status"], "down");
    assert_eq!(get(&proxy.url("/api/x")).await.status, 200, "traffic unaffected");

    let _redis = Redis::start(port);
    let doc = wait_status(&proxy, 200, "healthy").await;
    assert_eq!(doc["checks"]["redis"]["status"], "up", "reconnected by itself");
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_shared_redis_on_6379_is_checked() {
    let up = spawn_upstream().await;
    let proxy =
        spawn_proxy(&up.url(), &["--config", &write_config(FAST), "--redis-url", "redis://127.0.0.1:6379"]).await;
    let doc = wait_status(&proxy, 200, "healthy").await;
    assert_eq!(doc["checks"]["redis"]["status"], "up");
    proxy.shutdown().await;
}

/// Stops or starts the private PostgreSQL cluster (scripts/services.sh made
/// it). Test binaries run one at a time, and no other test in this one uses
/// that cluster.
fn pg_cluster(action: &str) {
    let version = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
        .unwrap();
    let ok = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "perfproxy", action])
        .status()
        .expect("pg_ctlcluster (postgresql-common) is installed")
        .success();
    assert!(ok, "pg_ctlcluster {action}");
}

#[tokio::test]
async fn database_stopped_and_started_flips_health_without_failing_traffic_or_leaking_the_password() {
    let up = spawn_upstream().await;
    let port = std::env::var("PERFPROXY_TEST_PGSS_PORT").unwrap_or_else(|_| "5433".into());
    // Trust auth ignores the password; it is there to prove it never shows.
    let url = format!("postgres://postgres:hunter2@127.0.0.1:{port}/postgres?connect_timeout=1");
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config(FAST), "--database-url", &url]).await;
    let doc = wait_status(&proxy, 200, "healthy").await;
    assert_eq!(doc["checks"]["database"]["status"], "up");
    let perf = get(&proxy.url("/performance")).await.json();
    assert_eq!(perf["database"]["configured"], true);
    assert_eq!(perf["database"]["status"], "up");
    assert_eq!(perf["database"]["pool"]["size"], 10);

    // Traffic flows the whole time the database is down and back.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, url) = (stop.clone(), proxy.url("/api/x"));
        tokio::spawn(async move {
            let (mut sent, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sent += 1;
                if get(&url).await.status != 200 {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (sent, failed)
        })
    };
    tokio::task::spawn_blocking(|| pg_cluster("stop")).await.unwrap();
    let doc = wait_status(&proxy, 503, "unhealthy").await;
    assert_eq!(doc["checks"]["database"]["status"], "down");
    let perf = get(&proxy.url("/performance")).await;
    assert_eq!(perf.json()["database"]["status"], "down");
    let health_text = get(&proxy.url("/health")).await.text();
    for text in [&perf.text(), &health_text, &get(&proxy.url("/metrics")).await.text()] {
        assert!(!text.contains("hunter2"), "password leaked: {text}");
    }
    tokio::task::spawn_blocking(|| pg_cluster("start")).await.unwrap();
    let doc = wait_status(&proxy, 200, "healthy").await;
    assert_eq!(doc["checks"]["database"]["status"], "up");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failed) = traffic.await.unwrap();
    assert!(sent > 20, "traffic ran ({sent})");
    assert_eq!(failed, 0, "{failed} of {sent} proxied requests failed while the database was down");
    proxy.shutdown().await;
}

#[tokio::test]
async fn extra_http_dependencies_are_checked_and_can_be_critical() {
    let up = spawn_upstream().await;
    let dep = spawn_upstream().await;
    let dead_port = free_port();
    let text = format!(
        "[health]\ninterval_ms = 100\ntimeout_ms = 300\ncritical = [\"upstream\", \"billing\"]\n\
         [[health.http]]\nname = \"billing\"\nurl = \"http://{}/status/204\"\n\
         [[health.http]]\nname = \"geo\"\nurl = \"http://127.0.0.1:{dead_port}/\"\n",
        dep.addr
    );
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config(&text)]).await;
    // geo is down but not critical: degraded.
    let doc = wait_status(&proxy, 200, "degraded").await;
    assert_eq!(doc["checks"]["billing"]["status"], "up");
    assert_eq!(doc["checks"]["geo"]["status"], "down");
    dep.kill();
    let doc = wait_status(&proxy, 503, "unhealthy").await;
    assert_eq!(doc["checks"]["billing"]["status"], "down");
    proxy.shutdown().await;
}

/// An `https://` dependency is probed over TLS (HTTP/2 where it offers it)
/// and verified: against its `ca_file`, a certificate from another CA is
/// the check down with the TLS error, never up; a CA file that cannot be
/// read, or one on an `http://` url, stops the start naming the key.
#[tokio::test]
async fn an_https_dependency_is_verified_against_its_ca() {
    let ca = support::tls::Ca::new("dependency test CA");
    let dir = support::tls::temp_dir();
    let ca_file = support::tls::write(&dir, "dependency-ca.pem", &ca.pem);
    let (good, got) = support::tls::serve_https(&ca.leaf("localhost", &["localhost"], 30)).await;
    let stranger = support::tls::Ca::new("another CA");
    let (bad, stranger_got) = support::tls::serve_https(&stranger.leaf("localhost", &["localhost"], 30)).await;
    let up = spawn_upstream().await;
    let text = format!(
        "{FAST}critical = [\"upstream\"]\n\
         [[health.http]]\nname = \"payments\"\nurl = \"https://localhost:{good}/v1/health\"\nca_file = \"{ca_file}\"\n\
         [[health.http]]\nname = \"impostor\"\nurl = \"https://localhost:{bad}/v1/health\"\nca_file = \"{ca_file}\"\n"
    );
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config(&text)]).await;
    let doc = wait_status(&proxy, 200, "degraded").await;
    assert_eq!(doc["checks"]["payments"]["status"], "up", "{doc}");
    assert_eq!(doc["checks"]["impostor"]["status"], "down", "{doc}");
    let error = doc["checks"]["impostor"]["error"].as_str().unwrap().to_lowercase();
    assert!(error.contains("certificate"), "the TLS error is said: {error}");
    let seen = got.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(path, version, _)| path == "/v1/health" && *version == http::Version::HTTP_2),
        "{seen:?}"
    );
    assert!(stranger_got.lock().unwrap().is_empty(), "a request reached the unverified server");
    proxy.shutdown().await;

    let load = |check: &str| {
        let config = write_config(&format!("[[health.http]]\nname = \"payments\"\n{check}"));
        let argv = ["perfproxy", "--upstream", "http://127.0.0.1:1", "--config", config.as_str()];
        perfproxy::config::from_args(argv).map(|_| ()).map_err(|e| e.to_string())
    };
    let missing = load(&format!("url = \"https://localhost:{good}/\"\nca_file = \"/nonexistent/ca.pem\"\n"));
    assert!(missing.as_ref().is_err_and(|e| e.contains("health.http[0].ca_file")), "{missing:?}");
    let plain = load(&format!("url = \"http://localhost:{good}/\"\nca_file = \"{ca_file}\"\n"));
    assert!(plain.as_ref().is_err_and(|e| e.contains("health.http[0].ca_file")), "{plain:?}");
    let ftp = load("url = \"ftp://localhost/\"\n");
    assert!(ftp.as_ref().is_err_and(|e| e.contains("health.http[0].url")), "{ftp:?}");
}
