//! History in a real PostgreSQL, with the real binary: rollups written at
//! shutdown survive a restart and `/performance/history` merges them;
//! retention deletes old rows; without the schema history turns itself off
//! with one warning; without a database the total's last minutes come from
//! memory; and a database outage across a minute boundary fails no request
//! and loses no rollup (they wait in the queue and are written when it is
//! back).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::NoTls;

/// A running binary and what it has logged so far: its stderr is read as
/// it comes (a pipe nobody reads fills and blocks the logging process: a
/// database outage logs a warning per failed connection).
struct Running {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

fn start(upstream: &str, port: u16, db: Option<&str>, extra: &[&str]) -> Running {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--listen", listen.as_str(), "--upstream", upstream];
    if let Some(db) = db {
        args.extend_from_slice(&["--database-url", db]);
    }
    args.extend_from_slice(extra);
    let mut child = Command::new(binary())
        .args(&args)
        .env("PERFPROXY_ROUTE_DISCOVERY", "false") // the plain labels these tests assert
        .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "warn,perfproxy::observe::history=debug".into()))
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .stdout(Stdio::null())
        .stderr(if std::env::var("TEST_LOG").is_ok() { Stdio::inherit() } else { Stdio::piped() })
        .spawn()
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn({
        let log = log.clone();
        move || {
            use std::io::Read;
            let Some(stderr) = stderr.as_mut() else { return };
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                log.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }
    });
    Running { child: Child(child), log, reader }
}

/// SIGTERM, then the exit code and what it logged.
async fn stop(running: Running) -> (Option<i32>, String) {
    tokio::task::spawn_blocking(move || {
        let Running { child, log, reader } = running;
        signal(&child, "-TERM");
        let mut child = child;
        let code = child.0.wait().unwrap().code();
        reader.join().unwrap();
        let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
        (code, text)
    })
    .await
    .unwrap()
}

async fn fresh_database(migrated: bool) -> String {
    let (client, conn) = tokio_postgres::connect("postgres://postgres@127.0.0.1:5432/postgres", NoTls)
        .await
        .expect("PostgreSQL runs on 5432 (scripts/services.sh)");
    tokio::spawn(conn);
    let name = format!("pp_hist_{}", fastrand::u32(..));
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    if migrated {
        let out = Command::new(binary()).args(["migrate", "--database-url", &url]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    url
}

async fn db(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

async fn traffic(port: u16, path: &str, n: usize) {
    for _ in 0..n {
        assert_eq!(get(&format!("http://127.0.0.1:{port}{path}")).await.status, 200);
    }
}

#[tokio::test]
async fn rollups_survive_a_restart_and_merge_per_step() {
    let up = spawn_upstream().await;
    let url = fresh_database(true).await;
    let client = db(&url).await;
    // A row past the retention: deleted at start.
    client
        .execute(
            "INSERT INTO perfproxy.route_minutes (minute, route, instance, requests) \
             VALUES (now() - interval '30 days', 'GET /old', 'gone', 1)",
            &[],
        )
        .await
        .unwrap();
    let port = free_port();
    let cfg = write_config("[history]\nretention_days = 7\n[cluster]\ninstance = \"first\"\n");
    let child = start(&up.url(), port, Some(&url), &["--config", &cfg]);
    wait_ready(&format!("http://127.0.0.1:{port}/health/live"), 10).await;
    traffic(port, "/api/items/1", 15).await;
    traffic(port, "/delay/30", 5).await;
    let (code, log) = stop(child).await;
    assert_eq!(code, Some(0), "{log}");
    let rows = client
        .query(
            "SELECT route, instance, sum(requests)::int8, bool_and(histogram IS NOT NULL) \
             FROM perfproxy.route_minutes GROUP BY route, instance ORDER BY route",
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, String, i64, bool)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(
        rows,
        [
            ("*".to_string(), "first".to_string(), 20, true),
            ("GET /api/items/:id".to_string(), "first".to_string(), 15, true),
            ("GET /delay/:id".to_string(), "first".to_string(), 5, true),
        ],
        "every request rolled up (the shutdown wrote the current minute); the 30-day-old row is gone"
    );

    // A second instance, after the restart: history still answers, merged.
    let cfg = write_config("[cluster]\ninstance = \"second\"\n");
    let child = start(&up.url(), port, Some(&url), &["--config", &cfg]);
    wait_ready(&format!("http://127.0.0.1:{port}/health/live"), 10).await;
    traffic(port, "/delay/30", 5).await;
    let (code, _) = stop(child).await;
    assert_eq!(code, Some(0));
    let child = start(&up.url(), port, Some(&url), &[]);
    wait_ready(&format!("http://127.0.0.1:{port}/health/live"), 10).await;
    let base = format!("http://127.0.0.1:{port}/performance/history");
    let total = get(&format!("{base}?step=1h")).await;
    assert_eq!(total.status, 200, "{}", total.text());
    let doc = total.json();
    assert_eq!(
        (doc["route"].as_str(), doc["step_seconds"].as_u64(), doc["source"].as_str()),
        (Some("*"), Some(3600), Some("database"))
    );
    let count: u64 = doc["points"].as_array().unwrap().iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert_eq!(count, 25, "both instances' minutes: {doc}");
    let slow = get(&format!("{base}?route=GET%20/delay/:id&step=1h")).await.json();
    let points = slow["points"].as_array().unwrap();
    let n: u64 = points.iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert_eq!(n, 10, "{slow}");
    let p50 = points.iter().map(|p| p["p50"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!((30.0..60.0).contains(&p50), "p50 from the merged histograms: {slow}");
    let bad = get(&format!("{base}?from=yesterday")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("from"), "{}", bad.text());
    drop(child);
}

#[tokio::test]
async fn without_the_schema_history_turns_itself_off_with_one_warning() {
    let up = spawn_upstream().await;
    let url = fresh_database(false).await;
    let port = free_port();
    let child = start(&up.url(), port, Some(&url), &[]);
    wait_ready(&format!("http://127.0.0.1:{port}/health/live"), 10).await;
    traffic(port, "/x", 3).await;
    let (code, log) = stop(child).await;
    assert_eq!(code, Some(0));
    assert_eq!(log.matches("run `perfproxy migrate`").count(), 1, "{log}");
}

#[tokio::test]
async fn without_a_database_the_total_comes_from_memory() {
    let up = spawn_upstream().await;
    let port = free_port();
    // 1 s window slots, so a slot completes within the test.
    let cfg = write_config("[alerts]\nwindow_ms = 6000\n");
    let _child = start(&up.url(), port, None, &["--config", &cfg]);
    wait_ready(&format!("http://127.0.0.1:{port}/health/live"), 10).await;
    traffic(port, "/x", 10).await;
    let base = format!("http://127.0.0.1:{port}/performance/history");
    let mut doc = serde_json::Value::Null;
    for _ in 0..150 {
        doc = get(&base).await.json();
        if doc["points"].as_array().is_some_and(|p| !p.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((doc["source"].as_str(), doc["step_seconds"].as_u64()), (Some("memory"), Some(1)), "{doc}");
    let n: u64 = doc["points"].as_array().unwrap().iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert!((1..=10).contains(&n), "{doc}");
    let route = get(&format!("{base}?route=GET%20/x")).await;
    assert_eq!(route.status, 404, "per-route history needs the database: {}", route.text());
}

/// A TCP relay to PostgreSQL that can be cut (a database outage as the
/// proxy sees it) and restored.
struct Relay {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

async fn relay(to: u16) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = up.clone();
    tokio::spawn(async move {
        while let Ok((mut a, _)) = listener.accept().await {
            if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                continue; // dropped: the connection closes at once
            }
            let flag = flag.clone();
            tokio::spawn(async move {
                let Ok(mut b) = TcpStream::connect(("127.0.0.1", to)).await else { return };
                let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
                let cut = async {
                    while flag.load(std::sync::atomic::Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                };
                tokio::select! { _ = copy => {}, () = cut => {} }
            });
        }
    });
    Relay { port, up }
}

#[tokio::test]
async fn a_database_outage_across_a_minute_fails_no_request_and_loses_no_rollup() {
    let up = spawn_upstream().await;
    let url = fresh_database(true).await;
    let name = url.rsplit('/').next().unwrap().to_string();
    let relay = relay(5432).await;
    let via_relay = format!("postgres://postgres@127.0.0.1:{}/{name}", relay.port);
    let port = free_port();
    // A 2 s window ticks the writer every second, so a tick meets each
    // minute's boundary: the rollup must still be queued on time.
    let cfg = write_config("[cluster]\ninstance = \"outage\"\n[alerts]\nwindow_ms = 2000\n");
    let child = start(&up.url(), port, Some(&via_relay), &["--config", &cfg]);
    wait_ready(&format!("http://127.0.0.1:{port}/health/live"), 10).await;
    // Cut the database, then keep traffic going across the next minute boundary.
    // Not in a minute's last seconds: the outage's minute must see traffic.
    let epoch = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    if epoch() % 60 >= 50 {
        tokio::time::sleep(Duration::from_secs(61 - epoch() % 60)).await;
    }
    relay.up.store(false, std::sync::atomic::Ordering::SeqCst);
    let secs = epoch();
    let boundary = Duration::from_secs(60 - secs % 60 + 2);
    let until = tokio::time::Instant::now() + boundary;
    let mut sent = 0;
    while tokio::time::Instant::now() < until {
        traffic(port, "/during", 1).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Back: the queued rollup is written at the next tick.
    relay.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let client = db(&url).await;
    // Within seconds, not at the next minute's rollup.
    let mut written = (0i64, 0i64);
    for _ in 0..250 {
        let row = client
            .query_one(
                "SELECT COALESCE(sum(requests), 0)::int8, COALESCE(extract(epoch FROM min(minute)), 0)::int8 \
                 FROM perfproxy.route_minutes WHERE route = '*'",
                &[],
            )
            .await
            .unwrap();
        written = (row.get(0), row.get(1));
        if written.0 > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if written.0 == 0 {
        let (_, log) = stop(child).await;
        panic!("the rollup queued during the outage was written; the proxy logged:\n{log}");
    }
    assert_eq!(written.1 as u64, secs / 60 * 60, "the rollup carries the minute it covers");
    let metrics = get(&format!("http://127.0.0.1:{port}/metrics")).await.text();
    assert!(metrics.contains("perfproxy_history_rollups_dropped_total 0"), "nothing dropped");
    let (code, log) = stop(child).await;
    assert_eq!(code, Some(0), "{log}");
    let row = client
        .query_one("SELECT sum(requests)::int8 FROM perfproxy.route_minutes WHERE route = '*'", &[])
        .await
        .unwrap();
    let total: i64 = row.get(0);
    assert_eq!(total, sent, "every request is in a rollup");
}
