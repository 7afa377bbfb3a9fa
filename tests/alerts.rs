//! Alerts (SPEC §8) through a real webhook receiver: each rule fires once and
//! resolves once; a dead webhook never slows traffic; an `https://` one is
//! verified against its CA.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn events(hook: &Upstream) -> Vec<Value> {
    hook.seen().iter().filter(|s| s.uri == "/hook").map(|s| serde_json::from_slice(&s.body).unwrap()).collect()
}

fn count(events: &[Value], rule: &str, status: &str) -> usize {
    events.iter().filter(|e| e["rule"] == rule && e["status"] == status).count()
}

#[tokio::test]
async fn rules_fire_once_and_resolve_once_through_the_webhook() {
    let up = spawn_upstream().await;
    let hook = spawn_upstream().await;
    let config = write_config(&format!(
        "[alerts]\nwindow_ms = 2000\ninterval_ms = 100\nfor_ms = 300\nkeep_firing_ms = 500\nerror_rate = 0.05\nslow_request_ms = 150\nmemory_bytes = 1000\n\
         webhook_url = \"http://{}/hook\"\n",
        hook.addr
    ));
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    for _ in 0..25 {
        get(&proxy.url("/status/500")).await;
    }
    for _ in 0..5 {
        get(&proxy.url("/delay/200")).await;
    }
    eventually(5, "three rules firing", || async {
        let e = events(&hook);
        count(&e, "error_rate", "firing") == 1
            && count(&e, "slow_requests", "firing") == 1
            && count(&e, "memory", "firing") == 1
    })
    .await;
    let perf = get(&proxy.url("/performance")).await.json();
    let alerts = perf["alerts"].as_array().unwrap();
    let rules: Vec<&str> = alerts.iter().map(|a| a["rule"].as_str().unwrap()).collect();
    for rule in ["error_rate", "slow_requests", "memory"] {
        assert!(rules.contains(&rule), "{rule} not listed: {alerts:?}");
    }
    let err = alerts.iter().find(|a| a["rule"] == "error_rate").unwrap();
    assert_eq!(err["severity"], "critical");
    assert!((err["value"].as_f64().unwrap() - 25.0 / 30.0).abs() < 1e-9, "{err}");
    assert_eq!(err["threshold"], 0.05);
    // Every alert has the same fields: a rule without a subject says `""`.
    assert_eq!(err["subject"], "", "{err}");
    assert!(err["since"].as_str().unwrap().ends_with('Z'));
    let slow = alerts.iter().find(|a| a["rule"] == "slow_requests").unwrap();
    assert_eq!(slow["subject"], "GET /delay/:id");
    let metrics = get(&proxy.url("/metrics")).await.text();
    assert!(metrics.contains(r#"perfproxy_alerts_firing{rule="error_rate"} 1"#), "{metrics}");

    // The window (6 s here) empties: error_rate and slow_requests resolve, once.
    eventually(12, "error_rate and slow_requests resolved", || async {
        let e = events(&hook);
        count(&e, "error_rate", "resolved") == 1 && count(&e, "slow_requests", "resolved") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = events(&hook);
    assert_eq!(count(&e, "error_rate", "firing"), 1, "no flapping: {e:?}");
    assert_eq!(count(&e, "slow_requests", "firing"), 1);
    assert_eq!(count(&e, "memory", "firing"), 1, "memory stays over its tiny threshold and fires once");
    assert_eq!(count(&e, "memory", "resolved"), 0);
    // Resolved by an empty window: no data, said so; never the last value
    // seen while firing.
    for rule in ["error_rate", "slow_requests"] {
        let resolved = e.iter().find(|x| x["rule"] == rule && x["status"] == "resolved").unwrap();
        assert!(resolved["value"].is_null(), "{resolved}");
        assert!(resolved["message"].as_str().unwrap().starts_with("no data on the "), "{resolved}");
    }
    let resolved = e.iter().find(|x| x["rule"] == "error_rate" && x["status"] == "resolved").unwrap();
    assert_eq!(resolved["subject"], "", "{resolved}");
    assert!(resolved["message"].as_str().unwrap().contains("error rate"));
    let perf = get(&proxy.url("/performance")).await.json();
    let rules: Vec<&str> = perf["alerts"].as_array().unwrap().iter().map(|a| a["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["memory"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_hanging_webhook_never_slows_traffic() {
    let up = spawn_upstream().await;
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let config = write_config(&format!(
        "[alerts]\ninterval_ms = 50\nfor_ms = 0\nkeep_firing_ms = 0\nmemory_bytes = 1000\nerror_rate = 0.01\nwebhook_url = \"http://{silent_addr}/hook\"\n"
    ));
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    let mut worst = Duration::ZERO;
    for i in 0..200 {
        let t = Instant::now();
        let path = if i % 2 == 0 { "/status/500" } else { "/ok" };
        get(&proxy.url(path)).await;
        worst = worst.max(t.elapsed());
    }
    assert!(worst < Duration::from_millis(500), "a request took {worst:?} while the webhook hung");
    let perf = get(&proxy.url("/performance")).await.json();
    assert!(!perf["alerts"].as_array().unwrap().is_empty(), "alerts still evaluated");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_slow_database_query_fires_slow_queries() {
    let port = std::env::var("PERFPROXY_TEST_PGSS_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(5433u16);
    let admin = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let (client, conn) =
        tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.expect("pg_stat_statements cluster runs");
    tokio::spawn(conn);
    let name = format!("pp_test_{}", fastrand::u32(..));
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{port}/{name}");
    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await.unwrap();

    let up = spawn_upstream().await;
    let hook = spawn_upstream().await;
    let config = write_config(&format!(
        "[database]\npoll_interval_ms = 200\n[alerts]\ninterval_ms = 100\nfor_ms = 0\nkeep_firing_ms = 0\nslow_query_ms = 100\nwebhook_url = \"http://{}/hook\"\n",
        hook.addr
    ));
    let proxy = spawn_proxy(&up.url(), &["--config", &config, "--database-url", &url]).await;
    eventually(5, "first poll", || async {
        get(&proxy.url("/performance")).await.json()["database"]["slow_queries_source"] == "pg_stat_statements"
    })
    .await;
    for _ in 0..2 {
        db.simple_query("SELECT pg_sleep(0.2)").await.unwrap();
    }
    eventually(5, "slow_queries fired", || async { count(&events(&hook), "slow_queries", "firing") == 1 }).await;
    let e = events(&hook);
    let fired = e.iter().find(|x| x["rule"] == "slow_queries").unwrap();
    assert!(fired["subject"].as_str().unwrap().contains("pg_sleep"), "{fired}");
    assert!(fired["value"].as_f64().unwrap() >= 200.0);
    assert_eq!(fired["threshold"], 100.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn cache_hit_rate_fires_on_misses_and_resolves_on_hits() {
    let up = spawn_upstream().await;
    up.script("/cached", 200, &[("cache-control", "max-age=60")], "cached");
    // Misses that could have been stored: an uncacheable answer is not a
    // miss and does not move the rate.
    up.script("/miss", 200, &[("cache-control", "max-age=60")], "storable");
    let hook = spawn_upstream().await;
    let config = write_config(&format!(
        "[alerts]\nwindow_ms = 3000\ninterval_ms = 100\nfor_ms = 0\nkeep_firing_ms = 0\ncache_hit_rate = 0.7\nwebhook_url = \"http://{}/hook\"\n",
        hook.addr
    ));
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    // 49 misses: below the 50 lookups the rule needs.
    for i in 0..49 {
        get(&proxy.url(&format!("/miss?n={i}"))).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(count(&events(&hook), "cache_hit_rate", "firing"), 0, "judged on too few lookups");
    for i in 49..60 {
        get(&proxy.url(&format!("/miss?n={i}"))).await;
    }
    eventually(5, "cache_hit_rate firing", || async { count(&events(&hook), "cache_hit_rate", "firing") == 1 }).await;
    let perf = get(&proxy.url("/performance")).await.json();
    let alert = perf["alerts"].as_array().unwrap().iter().find(|a| a["rule"] == "cache_hit_rate").cloned().unwrap();
    assert!(alert["value"].as_f64().unwrap() < 0.7, "{alert}");
    // Hits bring the window's rate back above the threshold.
    for _ in 0..400 {
        get(&proxy.url("/cached")).await;
    }
    eventually(5, "cache_hit_rate resolved", || async { count(&events(&hook), "cache_hit_rate", "resolved") == 1 })
        .await;
    let e = events(&hook);
    assert_eq!(count(&e, "cache_hit_rate", "firing"), 1, "fired once: {e:?}");
    let resolved = e.iter().find(|x| x["rule"] == "cache_hit_rate" && x["status"] == "resolved").unwrap();
    // The resolved event carries the value that cleared it.
    assert!(resolved["value"].as_f64().unwrap() >= 0.7, "{resolved}");
    proxy.shutdown().await;
}

/// The alert events an HTTPS receiver got (JSON bodies).
fn delivered(got: &support::tls::Received) -> Vec<Value> {
    got.lock().unwrap().iter().map(|(_, _, body)| serde_json::from_slice(body).unwrap()).collect()
}

#[tokio::test]
async fn an_https_webhook_is_verified_against_its_ca_and_gets_the_events() {
    let ca = support::tls::Ca::new("webhook test CA");
    let leaf = ca.leaf("localhost", &["localhost"], 30);
    let (port, got) = support::tls::serve_https(&leaf).await;
    let dir = support::tls::temp_dir();
    let ca_file = support::tls::write(&dir, "webhook-ca.pem", &ca.pem);
    let up = spawn_upstream().await;
    let alerts = "[alerts]\ninterval_ms = 50\nfor_ms = 0\nkeep_firing_ms = 0\nmemory_bytes = 1000\n";
    let config = write_config(&format!(
        "{alerts}webhook_url = \"https://localhost:{port}/hook\"\nwebhook_ca_file = \"{ca_file}\"\n"
    ));
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    eventually(5, "the memory alert delivered over TLS", || async {
        delivered(&got).iter().any(|e| e["rule"] == "memory" && e["status"] == "firing")
    })
    .await;
    proxy.shutdown().await;

    // Another CA's certificate is refused: nothing delivered.
    let stranger = support::tls::Ca::new("another CA");
    let (port, got) = support::tls::serve_https(&stranger.leaf("localhost", &["localhost"], 30)).await;
    let config = write_config(&format!(
        "{alerts}webhook_url = \"https://localhost:{port}/hook\"\nwebhook_ca_file = \"{ca_file}\"\n"
    ));
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(got.lock().unwrap().is_empty(), "an unverified webhook got events");
    proxy.shutdown().await;

    // A CA file that cannot be read stops the start, naming the key.
    let config = write_config(&format!(
        "{alerts}webhook_url = \"https://localhost:{port}/hook\"\nwebhook_ca_file = \"/nonexistent/ca.pem\"\n"
    ));
    let argv = ["perfproxy", "--upstream", "http://127.0.0.1:1", "--config", config.as_str()];
    match perfproxy::config::from_args(argv) {
        Err(e) => assert!(e.to_string().contains("alerts.webhook_ca_file"), "{e}"),
        Ok(_) => panic!("a CA file that does not exist was accepted"),
    }
}
