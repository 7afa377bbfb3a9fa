//! The database watch (SPEC §7) against real PostgreSQL: a private cluster
//! with pg_stat_statements preloaded (port 5433, made by scripts/services.sh)
//! and the machine's own on 5432, which lacks it.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::pg::*;
use support::*;

async fn database_section(proxy: &Proxy) -> Value {
    get(&proxy.url("/performance")).await.json()["database"].clone()
}

const FAST_POLL: &str = "[database]\npoll_interval_ms = 200\n[health]\ninterval_ms = 200\n";

#[tokio::test]
async fn migrate_applies_in_order_once() {
    let url = fresh_database().await;
    let (code, out, err) = migrate(&url);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "perfproxy: applied 001_pg_stat_statements",
            "perfproxy: applied 002_route_history",
            "perfproxy: applied 003_route_history_histograms",
            "perfproxy: applied 004_slow_requests",
            "perfproxy: applied 005_slo_minutes"
        ]
    );
    let (code, out, _) = migrate(&url);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "perfproxy: migrations up to date");
    // A database that does not exist: the server's own words, not "db error".
    let (code, _, err) = migrate("postgres://postgres@127.0.0.1:5432/perfproxy_no_such_db");
    assert_eq!(code, 1);
    assert!(err.contains("database \"perfproxy_no_such_db\" does not exist"), "{err}");
    let db = connect(&url).await;
    let versions: Vec<String> = db
        .query("SELECT version FROM perfproxy.schema_migrations ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        [
            "001_pg_stat_statements",
            "002_route_history",
            "003_route_history_histograms",
            "004_slow_requests",
            "005_slo_minutes"
        ]
    );
    let ext = db.query_opt("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'", &[]).await.unwrap();
    assert!(ext.is_some());
    let indexes: Vec<String> = db
        .query("SELECT indexdef FROM pg_indexes WHERE schemaname = 'perfproxy' AND tablename = 'route_minutes'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(indexes.iter().any(|i| i.contains("USING brin (minute)")), "{indexes:?}");
    assert!(indexes.iter().any(|i| i.contains("(route, minute, instance)")), "{indexes:?}");
    // Without a database: a configuration error.
    let out = Command::new(binary()).arg("migrate").env_remove("DATABASE_URL").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL"));
}

#[tokio::test]
async fn slow_queries_are_listed_with_their_calls_and_mean() {
    let url = fresh_database().await;
    assert_eq!(migrate(&url).0, 0);
    let up = spawn_upstream().await;
    let config = write_config(FAST_POLL);
    let proxy =
        spawn_proxy(&up.url(), &["--config", &config, "--database-url", &url, "--slow-query-threshold", "100"]).await;
    eventually(5, "first poll of pg_stat_statements", || async {
        database_section(&proxy).await["slow_queries_source"] == "pg_stat_statements"
    })
    .await;

    let db = connect(&url).await;
    for _ in 0..3 {
        db.simple_query("SELECT pg_sleep(0.25)").await.unwrap();
    }
    for i in 0..10 {
        db.query("SELECT $1::int + 1", &[&i]).await.unwrap();
    }
    eventually(5, "pg_sleep listed with 3 calls", || async {
        let d = database_section(&proxy).await;
        d["slow_queries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["query"].as_str().unwrap().contains("pg_sleep") && q["calls"] == 3)
    })
    .await;
    let d = database_section(&proxy).await;
    let slow = d["slow_queries"].as_array().unwrap();
    assert_eq!(slow.len(), 1, "only the slow one: {slow:?}");
    let mean = slow[0]["mean_ms"].as_f64().unwrap();
    assert!((250.0..400.0).contains(&mean), "mean {mean}");
    assert!(slow[0]["max_ms"].as_f64().unwrap() >= 250.0);
    assert!(slow[0]["share"].as_f64().unwrap() > 0.9);
    assert_eq!(d["pool"]["size"], 10);
    assert!(d["pool"]["idle"].as_u64().unwrap() >= 1, "the poller's connection went back to the pool: {d}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn advice_names_an_unindexed_foreign_key_until_it_is_indexed() {
    let url = fresh_database().await;
    let db = connect(&url).await;
    db.batch_execute(
        "CREATE TABLE users (id serial PRIMARY KEY);
         CREATE TABLE certificates (id serial PRIMARY KEY, user_id int NOT NULL REFERENCES users(id), issued date);",
    )
    .await
    .unwrap();
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config(FAST_POLL), "--database-url", &url]).await;
    eventually(5, "advice for certificates.user_id", || async {
        let d = database_section(&proxy).await;
        d["advice"].as_array().unwrap().iter().any(|a| {
            let a = a.as_str().unwrap();
            a.contains("public.certificates")
                && a.contains("CREATE INDEX CONCURRENTLY ON public.certificates (user_id);")
        })
    })
    .await;
    db.batch_execute("CREATE INDEX ON certificates (user_id, issued)").await.unwrap();
    eventually(5, "no advice once an index leads with user_id", || async {
        database_section(&proxy).await["advice"].as_array().unwrap().is_empty()
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn without_pg_stat_statements_the_fix_is_given_and_no_password_is_logged() {
    let up = spawn_upstream().await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let config = write_config(FAST_POLL);
    // The machine's own cluster does not preload pg_stat_statements. Trust
    // auth ignores the password, which is there to prove it never shows.
    let url = "postgres://postgres:hunter2@127.0.0.1:5432/postgres";
    let child = Command::new(binary())
        .args(["--listen", &listen, "--upstream", &up.url(), "--config", &config, "--database-url", url])
        .env("PERFPROXY_ROUTE_DISCOVERY", "false") // the plain labels these tests assert
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://{listen}");
    wait_ready(&format!("{base}/health/live"), 10).await;
    let perf = format!("{base}/performance");
    eventually(5, "source unavailable", || async {
        get(&perf).await.json()["database"]["slow_queries_source"] == "unavailable"
    })
    .await;
    let doc = get(&perf).await;
    let fix = doc.json()["database"]["slow_queries_fix"].as_str().unwrap().to_string();
    assert!(fix.contains("shared_preload_libraries") && fix.contains("CREATE EXTENSION pg_stat_statements"), "{fix}");
    assert_eq!(doc.json()["database"]["status"], "up");
    tokio::time::sleep(Duration::from_millis(300)).await;
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("pg_stat_statements unavailable"), "debug logs ran: {}", &logs[..logs.len().min(2000)]);
    assert!(!logs.contains("hunter2"), "password in the logs");
    assert!(!doc.text().contains("hunter2"));
}

#[tokio::test]
async fn advice_names_the_column_a_sequentially_scanned_table_is_filtered_on() {
    let url = fresh_database().await;
    assert_eq!(migrate(&url).0, 0);
    let db = connect(&url).await;
    db.batch_execute(
        "CREATE TABLE orders (id serial PRIMARY KEY, customer_ref text NOT NULL, total int NOT NULL);
         INSERT INTO orders (customer_ref, total) SELECT 'c' || (g % 500), g FROM generate_series(1, 20000) g;
         ANALYZE orders;",
    )
    .await
    .unwrap();
    for i in 0..25 {
        let r = format!("c{i}");
        db.query("SELECT count(*) FROM orders WHERE customer_ref = $1", &[&r]).await.unwrap();
    }
    db.batch_execute("SELECT pg_stat_force_next_flush()").await.unwrap();
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config(FAST_POLL), "--database-url", &url]).await;
    eventually(5, "seq-scan advice naming customer_ref", || async {
        let d = database_section(&proxy).await;
        d["advice"].as_array().unwrap().iter().any(|a| {
            let a = a.as_str().unwrap();
            a.contains("public.orders (20000 rows) is read mostly by sequential scans")
                && a.contains("CREATE INDEX CONCURRENTLY ON public.orders (customer_ref);")
        })
    })
    .await;
    proxy.shutdown().await;
}

/// The health probe's `SELECT 1` runs on the pool: perfproxy never holds
/// more connections than `DATABASE_POOL_SIZE`, each named `perfproxy`.
#[tokio::test]
async fn the_health_probe_holds_no_connection_beyond_the_pool() {
    let url = fresh_database().await;
    let name = url.rsplit('/').next().unwrap().to_string();
    let up = spawn_upstream().await;
    let config = write_config("[database]\npoll_interval_ms = 100\n[health]\ninterval_ms = 100\n");
    let args = ["--config", &config, "--database-url", &url, "--database-pool-size", "1"];
    let proxy = spawn_proxy(&up.url(), &args).await;
    eventually(10, "the database probed up", || async {
        get(&proxy.url("/health")).await.json()["checks"]["database"]["status"] == "up"
    })
    .await;
    let admin = connect(&url.replace(&format!("/{name}"), "/postgres")).await;
    let mut most = 0;
    for _ in 0..20 {
        let rows = admin
            .query("SELECT coalesce(application_name, '') FROM pg_stat_activity WHERE datname = $1", &[&name])
            .await
            .unwrap();
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert!(names.iter().all(|n| n == "perfproxy"), "every connection named perfproxy: {names:?}");
        most = most.max(names.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(most, 1, "one pooled connection, the probe's included");
    assert_eq!(get(&proxy.url("/health")).await.json()["checks"]["database"]["status"], "up");
    proxy.shutdown().await;
}
