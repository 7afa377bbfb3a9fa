//! `[access_log]` on both lanes (run again with `PERFPROXY_EXPRESS_LANE=
//! false`): every field of a JSON line, the text format, sampling,
//! `slow_only`, and lines dropped (and counted) rather than a request
//! blocked when the writer cannot keep up.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

fn log_config(path: &str, extra: &str) -> String {
    write_config(&format!("[access_log]\nenabled = true\npath = \"{path}\"\n{extra}"))
}

fn temp_path(name: &str) -> String {
    std::env::temp_dir().join(format!("pp-access-{name}-{}", fastrand::u64(..))).display().to_string()
}

/// The file's lines once `want` of them have been written (the writer flushes behind).
async fn lines(path: &str, want: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..50 {
        got = std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect();
        if got.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got
}

async fn call(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = http::Request::get(proxy.url(path));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Default::default()).unwrap()).await
}

#[tokio::test]
async fn json_lines_carry_every_field() {
    let up = spawn_upstream().await;
    up.script_slow("/api/items/7", &[], "seven", 30);
    up.script("/cached", 200, &[("cache-control", "max-age=60")], "cached body");
    let path = temp_path("json");
    let proxy = spawn_proxy(&up.url(), &["--config", &log_config(&path, "")]).await;
    let a = call(&proxy, "/api/items/7?secret=1", &[("user-agent", "probe/1.0"), ("x-request-id", "rid-42")]).await;
    assert_eq!(a.status, 200);
    call(&proxy, "/cached", &[]).await;
    call(&proxy, "/cached", &[]).await;
    let got = lines(&path, 3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    let first: Value = serde_json::from_str(&got[0]).expect("a JSON line");
    assert!(first["time"].as_str().unwrap().ends_with('Z'), "{first}");
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["route"], "GET /api/items/:id");
    assert_eq!(first["path"], "/api/items/7", "the query is dropped: {first}");
    assert_eq!(first["status"], 200);
    let (duration, upstream) = (first["duration_ms"].as_f64().unwrap(), first["upstream_ms"].as_f64().unwrap());
    assert!(upstream >= 29.0 && duration >= upstream, "{first}");
    assert_eq!((first["bytes_in"].as_u64(), first["bytes_out"].as_u64()), (Some(0), Some(5)), "{first}");
    assert_eq!(first["cache"], "MISS", "{first}");
    assert!(first["trace_id"].is_null(), "{first}");
    assert_eq!(first["request_id"], "rid-42");
    assert_eq!(first["user_agent"], "probe/1.0");
    let hit: Value = serde_json::from_str(&got[2]).unwrap();
    assert_eq!((hit["cache"].as_str(), hit["bytes_out"].as_u64()), (Some("HIT"), Some(11)), "{hit}");
    assert!(hit["upstream_ms"].is_null(), "a hit has no upstream share: {hit}");
    assert_eq!(hit["request_id"].as_str().unwrap().len(), 32, "a made id is logged: {hit}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn text_format_query_sampling_and_slow_only() {
    let up = spawn_upstream().await;
    up.script_slow("/slow", &[], "s", 120);
    let text = temp_path("text");
    let proxy =
        spawn_proxy(&up.url(), &["--config", &log_config(&text, "format = \"text\"\ninclude_query = true\n")]).await;
    call(&proxy, "/plain?a=1", &[("user-agent", "ua")]).await;
    let got = lines(&text, 1).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].contains(" 127.0.0.1 \"GET /plain?a=1\" 200 "), "{}", got[0]);
    assert!(got[0].ends_with(" \"ua\""), "{}", got[0]);
    proxy.shutdown().await;

    let none = temp_path("none");
    let proxy = spawn_proxy(&up.url(), &["--config", &log_config(&none, "sample = 0.0\n")]).await;
    for _ in 0..20 {
        call(&proxy, "/plain", &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(lines(&none, 0).await.is_empty(), "sample = 0 logs nothing");
    proxy.shutdown().await;

    let half = temp_path("half");
    let proxy = spawn_proxy(&up.url(), &["--config", &log_config(&half, "sample = 0.5\n")]).await;
    for _ in 0..200 {
        call(&proxy, "/plain", &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = lines(&half, 60).await.len();
    assert!((60..=140).contains(&n), "about half of 200 logged: {n}");
    proxy.shutdown().await;

    let slow = temp_path("slow");
    let file = write_config(&format!(
        "[alerts]\nslow_request_ms = 100\n[access_log]\nenabled = true\npath = \"{slow}\"\nslow_only = true\n"
    ));
    let proxy = spawn_proxy(&up.url(), &["--config", &file]).await;
    call(&proxy, "/plain", &[]).await;
    call(&proxy, "/slow", &[]).await;
    lines(&slow, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = lines(&slow, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("\"path\":\"/slow\""), "{got:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_stuck_writer_drops_lines_and_never_blocks_a_request() {
    let up = spawn_upstream().await;
    // A FIFO nobody reads: the writer waits forever to open it.
    let fifo = temp_path("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let proxy = spawn_proxy(&up.url(), &["--config", &log_config(&fifo, "buffer_lines = 10\n")]).await;
    let started = std::time::Instant::now();
    for _ in 0..60 {
        assert_eq!(call(&proxy, "/plain", &[]).await.status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(10), "requests were not held up");
    let metrics = get(&proxy.url("/metrics")).await.text();
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("perfproxy_access_log_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the dropped counter");
    assert!(dropped >= 49, "60 lines, 10 queued at most (one more in the writer's hand): {dropped}");
    proxy.shutdown().await;
    let _ = std::fs::remove_file(&fifo);
}

/// The client a line names is the one rate limits and top clients see:
/// behind a trusted proxy (loopback is, by default), the rightmost
/// `X-Forwarded-For` entry that is not one; the lines named the peer.
#[tokio::test]
async fn the_client_behind_trusted_proxies_is_the_one_logged() {
    let up = spawn_upstream().await;
    let path = temp_path("forwarded");
    let cfg = log_config(&path, "format = \"json\"\n");
    let proxy = spawn_proxy(&up.url(), &["--config", &cfg]).await;
    call(&proxy, "/a", &[("x-forwarded-for", "203.0.113.9, 10.0.0.2")]).await;
    call(&proxy, "/b", &[]).await;
    let got = lines(&path, 2).await;
    let clients: Vec<Value> =
        got.iter().map(|l| serde_json::from_str::<Value>(l).expect("a JSON line")["client"].clone()).collect();
    assert_eq!(clients, ["203.0.113.9", "127.0.0.1"], "{got:?}");
    proxy.shutdown().await;
}
