//! Kubernetes lifecycle with the real binary: readiness follows only
//! `health.ready` (a database outage leaves every replica ready), and
//! SIGTERM makes readiness 503 at once, keeps serving new connections for
//! `shutdown_delay_ms` with `Connection: close` on every response (idle
//! keep-alive connections included), then drains and exits 0; SIGINT skips
//! the delay.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::AsyncWriteExt;

async fn status(url: &str) -> Option<u16> {
    match tokio::time::timeout(Duration::from_secs(2), client().get(url.parse().unwrap())).await {
        Ok(Ok(resp)) => Some(resp.status().as_u16()),
        _ => None,
    }
}

#[tokio::test]
async fn a_database_outage_leaves_the_replica_ready() {
    let up = spawn_upstream().await;
    let port = free_port();
    let dead_db = format!("postgres://postgres@127.0.0.1:{}/nothing", free_port());
    let cfg = write_config("[health]\ninterval_ms = 200\ntimeout_ms = 200\n");
    let _child = start_binary(&up.url(), port, &["--config", &cfg, "--database-url", &dead_db]);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/health/live"), 10).await;
    eventually(10, "the database check is down", || {
        let url = format!("{base}/health");
        async move { get(&url).await.json()["checks"]["database"]["status"] == "down" }
    })
    .await;
    let health = get(&format!("{base}/health")).await;
    assert_eq!((health.status, health.json()["status"].as_str()), (503, Some("unhealthy")), "for people");
    let ready = get(&format!("{base}/health/ready")).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["ready"], true);

    // The upstream is this replica's own: its failure does make it unready.
    up.kill();
    eventually(10, "readiness follows the upstream", || {
        let url = format!("{base}/health/ready");
        async move { status(&url).await == Some(503) }
    })
    .await;
}

#[tokio::test]
async fn sigterm_turns_unready_at_once_serves_through_the_delay_then_drains() {
    let up = spawn_upstream().await;
    let port = free_port();
    let cfg = write_config("shutdown_delay_ms = 1500\n");
    let child = start_binary(&up.url(), port, &["--config", &cfg]);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/health/ready"), 10).await;

    // An idle keep-alive connection opened before the signal.
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    idle.write_all(b"GET /x HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
    let (first, closed) = read_until_quiet(&mut idle, Duration::from_millis(300)).await;
    assert!(first.starts_with("HTTP/1.1 200") && !closed, "{first}");
    assert!(!first.to_ascii_lowercase().contains("connection: close"), "{first}");

    // Load through the delay: none of it may fail.
    let load: Vec<_> = (0..4)
        .map(|i| {
            let url = format!("{base}/load/{i}");
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, 0);
                let until = Instant::now() + Duration::from_millis(1200);
                while Instant::now() < until {
                    match status(&url).await {
                        Some(200) => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signalled = Instant::now();
    signal(&child, "-TERM");
    let mut unready_after = None;
    while signalled.elapsed() < Duration::from_secs(1) {
        if status(&format!("{base}/health/ready")).await == Some(503) {
            unready_after = Some(signalled.elapsed());
            break;
        }
    }
    let unready_after = unready_after.expect("readiness turned 503");
    assert!(unready_after < Duration::from_millis(100), "readiness 503 after {unready_after:?}");
    // New connections are still served during the delay, told to close.
    let (fresh, _) = raw(
        "127.0.0.1".parse().map(|ip| std::net::SocketAddr::new(ip, port)).unwrap(),
        b"GET /y HTTP/1.1\r\nHost: app\r\n\r\n",
        Duration::from_millis(300),
    )
    .await;
    assert!(fresh.starts_with("HTTP/1.1 200"), "{fresh}");
    assert!(fresh.to_ascii_lowercase().contains("connection: close"), "{fresh}");
    // The idle keep-alive connection is still open and its next answer closes it.
    idle.write_all(b"GET /z HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
    let (next, closed) = read_until_quiet(&mut idle, Duration::from_millis(500)).await;
    assert!(next.starts_with("HTTP/1.1 200"), "{next}");
    assert!(next.to_ascii_lowercase().contains("connection: close") && closed, "{next}");

    for task in load {
        let (ok, failed) = task.await.unwrap();
        assert!(ok > 0 && failed == 0, "{ok} ok, {failed} failed during the delay");
    }
    // After the delay: accepting stops, the process drains and exits 0.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(signalled.elapsed() < Duration::from_millis(2500));
    assert_eq!(exit_code(child).await, Some(0));
    assert!(signalled.elapsed() >= Duration::from_millis(1500), "the delay was kept");
}

#[tokio::test]
async fn sigint_skips_the_delay() {
    let up = spawn_upstream().await;
    let port = free_port();
    let cfg = write_config("shutdown_delay_ms = 5000\n");
    let child = start_binary(&up.url(), port, &["--config", &cfg]);
    wait_ready(&format!("http://127.0.0.1:{port}/health/ready"), 10).await;
    let signalled = Instant::now();
    signal(&child, "-INT");
    assert_eq!(exit_code(child).await, Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(2), "SIGINT took {:?}", signalled.elapsed());
}
