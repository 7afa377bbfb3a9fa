//! Slow requests and what the database was doing, against a real
//! PostgreSQL: a request made slow while another session runs `pg_sleep`
//! lists that statement (normalised: no literal left, with its wait event)
//! in `/performance` `slow_requests[]`; nothing is sampled while no request
//! is slow; with history on the slow request is written to the database
//! and read back by `/performance/history?kind=slow_requests`; a database
//! that refuses or never answers leaves slow requests with `database: []`
//! and never delays them.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::pg::*;
use support::*;

/// A fresh database with pg_stat_statements' views, migrated.
async fn watched_database() -> String {
    let url = fresh_database().await;
    connect(&url).await.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await.unwrap();
    let (code, _, err) = migrate(&url);
    assert_eq!(code, 0, "{err}");
    url
}

fn samples(metrics: &str, result: &str) -> u64 {
    let line = format!("perfproxy_database_activity_samples_total{{result=\"{result}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(line.as_str())).map_or(0, |v| v.trim().parse().unwrap())
}

async fn slow_requests(proxy: &Proxy) -> Vec<Value> {
    get(&proxy.url("/performance")).await.json()["slow_requests"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_slow_request_shows_the_statement_the_database_was_running() {
    let url = watched_database().await;
    let up = spawn_upstream().await;
    up.script_slow("/api/orders/s3cr3t-token-123", &[], "late", 1_500);
    // A short window: history's writer runs every 2 s.
    let config = write_config("[slow]\nsample_interval_ms = 100\n[alerts]\nwindow_ms = 4000\n");
    let args = ["--config", &config, "--database-url", &url, "--slow-request-threshold", "300"];
    let proxy = spawn_proxy(&up.url(), &[&args[..], &["--route-discovery", "true"]].concat()).await;

    // Fast requests only: nothing is slow, nothing is sampled. (The
    // route's prefix is learned on the way.)
    for i in 0..20 {
        get(&proxy.url(&format!("/api/orders/{i}"))).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let metrics = get(&proxy.url("/metrics")).await.text();
    assert_eq!(samples(&metrics, "ok") + samples(&metrics, "failed") + samples(&metrics, "timeout"), 0);
    assert!(slow_requests(&proxy).await.is_empty());

    // Another session sleeps in the database, with literals in its statement.
    let other = connect(&url).await;
    let sleeping = tokio::spawn(async move {
        other.simple_query("SELECT pg_sleep(4), 'literal-secret-xyz' AS note, 987654321 AS pin").await.unwrap();
    });
    let watcher = connect(&url).await;
    eventually(5, "pg_sleep running", || async {
        let rows = watcher.query("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(4)%'", &[]).await;
        rows.is_ok_and(|r| !r.is_empty())
    })
    .await;

    let started = Instant::now();
    let req = http::Request::get(proxy.url("/api/orders/s3cr3t-token-123"))
        .header("x-request-id", "req-slow-1")
        .body(Default::default())
        .unwrap();
    let answer = send(req).await;
    assert_eq!(answer.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(1_500));

    let listed = slow_requests(&proxy).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let slow = &listed[0];
    assert!(slow["route"].as_str().unwrap().starts_with("GET /api/orders/:"), "{slow}");
    assert_eq!(slow["status"], 200);
    assert_eq!(slow["request_id"], "req-slow-1");
    assert_eq!(slow["client"], "127.0.0.1");
    assert!(slow["trace_id"].is_null(), "no tracing: no trace id");
    assert!(slow["at"].as_str().unwrap().ends_with('Z'));
    let latency = slow["latency_ms"].as_f64().unwrap();
    let upstream = slow["upstream_ms"].as_f64().unwrap();
    assert!(latency >= 1_500.0 && upstream >= 1_500.0 && upstream <= latency, "{slow}");
    assert!(slow["overhead_ms"].as_f64().unwrap() < 100.0, "{slow}");
    let database = slow["database"].as_array().unwrap();
    let sleep = database
        .iter()
        .find(|b| b["query"].as_str().is_some_and(|q| q.contains("pg_sleep")))
        .unwrap_or_else(|| panic!("pg_sleep among the backends: {database:?}"));
    assert_eq!(sleep["query"], "SELECT pg_sleep($1), $2 AS note, $3 AS pin");
    assert_eq!(sleep["state"], "active");
    assert_eq!(sleep["wait_event_type"], "Timeout");
    assert_eq!(sleep["wait_event"], "PgSleep");
    assert!(sleep["running_ms"].as_f64().unwrap() >= 1_000.0, "{sleep}");
    assert!(sleep["query_id"].is_i64(), "pg_stat_statements is loaded: the server computes ids: {sleep}");
    assert!(sleep["pid"].as_i64().unwrap() > 0);
    // Longest running first; perfproxy's own connections never listed.
    let running: Vec<f64> = database.iter().map(|b| b["running_ms"].as_f64().unwrap()).collect();
    assert!(running.windows(2).all(|w| w[0] >= w[1]), "{running:?}");
    assert!(database.iter().all(|b| !b["query"].as_str().unwrap_or("").contains("pg_stat_activity")), "{database:?}");

    // No literal of the query and no path value anywhere.
    let document = get(&proxy.url("/performance")).await.text();
    let metrics = get(&proxy.url("/metrics")).await.text();
    for secret in ["literal-secret-xyz", "987654321", "s3cr3t-token-123"] {
        assert!(!document.contains(secret), "{secret} in /performance");
        assert!(!metrics.contains(secret), "{secret} in /metrics");
    }
    assert!(samples(&metrics, "ok") >= 3, "sampled every 100 ms while slow");
    assert_eq!(samples(&metrics, "failed"), 0);
    let held = &get(&proxy.url("/performance")).await.json()["memory"]["held"];
    assert_eq!(held["slow_requests"], 1);

    // Sampling stops when nothing is slow.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = samples(&get(&proxy.url("/metrics")).await.text(), "ok");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(samples(&get(&proxy.url("/metrics")).await.text(), "ok"), before);

    // History: written with the instance's id, read back, no literal stored.
    let history = proxy.url("/performance/history?kind=slow_requests");
    eventually(10, "the slow request in history", || async {
        get(&history).await.json()["slow_requests"].as_array().is_some_and(|l| !l.is_empty())
    })
    .await;
    let doc = get(&history).await.json();
    assert_eq!(doc["source"], "database");
    let row = &doc["slow_requests"][0];
    assert_eq!(
        (&row["request_id"], &row["status"], &row["route"]),
        (&slow["request_id"], &slow["status"], &slow["route"])
    );
    assert!(row["instance"].as_str().is_some_and(|i| !i.is_empty()));
    assert!(row["database"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["query"] == "SELECT pg_sleep($1), $2 AS note, $3 AS pin"));
    let stored = connect(&url)
        .await
        .query_one("SELECT string_agg(database::text, '') FROM perfproxy.slow_requests", &[])
        .await
        .unwrap();
    let stored: String = stored.get(0);
    assert!(
        stored.contains("PgSleep") && !stored.contains("literal-secret-xyz") && !stored.contains("987654321"),
        "{stored}"
    );
    let other_route = format!("{history}&route=GET%20/nothing");
    assert_eq!(get(&other_route).await.json()["slow_requests"], serde_json::json!([]));
    assert_eq!(get(&proxy.url("/performance/history?kind=everything")).await.status, 400);
    sleeping.await.unwrap();
    proxy.shutdown().await;
}

/// A database that accepts connections and never answers.
async fn silent_database() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_database_down_or_silent_leaves_slow_requests_without_evidence_and_undelayed() {
    let (silent, _task) = silent_database().await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for (addr, result) in [(refused, "failed"), (silent, "timeout")] {
        let up = spawn_upstream().await;
        up.script_slow("/slow", &[], "late", 700);
        let url = format!("postgres://postgres@{addr}/postgres");
        let config = write_config("[slow]\nsample_interval_ms = 50\n");
        let args = ["--config", &config, "--database-url", &url, "--slow-request-threshold", "100"];
        let proxy = spawn_proxy(&up.url(), &args).await;
        let started = Instant::now();
        let answer = get(&proxy.url("/slow")).await;
        let took = started.elapsed();
        assert_eq!(answer.status, 200);
        assert!(took < Duration::from_millis(700 + 250), "{result}: the request took {took:?}");
        let listed = slow_requests(&proxy).await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["database"], serde_json::json!([]), "{result}");
        assert!(listed[0]["latency_ms"].as_f64().unwrap() < 700.0 + 250.0);
        // The sample that asked while the request was slow ends in its
        // failure (at once) or its timeout (1 s).
        eventually(3, result, || async { samples(&get(&proxy.url("/metrics")).await.text(), result) >= 1 }).await;
        assert_eq!(samples(&get(&proxy.url("/metrics")).await.text(), "ok"), 0);
        proxy.shutdown().await;
    }
}
