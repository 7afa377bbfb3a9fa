//! `/performance` `memory.held` and `/metrics` `perfproxy_held_entries`:
//! the sizes a long run watches (`bench/soak.sh`) follow the structures
//! they name, up and down: the memory layer and its path and tag index in
//! step, hit-for-pass keys, route labels, open connections.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;
use tokio::io::AsyncWriteExt;

async fn held(proxy: &Proxy) -> serde_json::Value {
    get(&proxy.url("/performance")).await.json()["memory"]["held"].clone()
}

async fn held_is(proxy: &Proxy, name: &str, want: u64) -> bool {
    held(proxy).await[name].as_u64() == Some(want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_sizes_follow_the_cache_its_index_and_the_workers() {
    let up = spawn_upstream().await;
    for i in 0..20 {
        let tags = if i % 2 == 0 { "even all" } else { "all" };
        up.script(&format!("/held/c/{i}"), 200, &[("cache-control", "max-age=60"), ("surrogate-key", tags)], "body");
        up.script(&format!("/held/u/{i}"), 200, &[("cache-control", "private")], "private");
    }
    let config = write_config("workers = 1\n");
    let proxy = spawn_proxy(&up.url(), &["--config", &config, "--admin-token", "tok"]).await;
    let start = held(&proxy).await;
    for name in ["cache_entries", "cache_index_keys", "hit_for_pass", "route_labels", "connections", "history_queue"] {
        assert!(start[name].is_u64(), "{name} missing: {start}");
    }
    assert_eq!(start["cache_entries"], 0);

    for i in 0..20 {
        assert_eq!(get(&proxy.url(&format!("/held/c/{i}"))).await.status, 200);
        assert_eq!(get(&proxy.url(&format!("/held/u/{i}"))).await.status, 200);
    }
    eventually(5, "20 entries, indexed by path and tag", || async {
        let h = held(&proxy).await;
        h["cache_entries"] == 20
            && h["cache_index_keys"] == 20
            && h["cache_index_paths"] == 20
            && h["cache_tags"] == 2
            && h["cache_tagged_keys"] == 20
    })
    .await;
    eventually(3, "20 hit-for-pass keys, 20 storable", || async {
        let h = held(&proxy).await;
        h["hit_for_pass"] == 20 && h["storable_keys"] == 20
    })
    .await;
    let labels = held(&proxy).await["route_labels"].as_u64().unwrap();
    assert!(labels >= 2, "GET /held/c/:id and GET /held/u/:id at least: {labels}");

    // A write drops its path from the memory layer and the index alike.
    let post = Request::post(proxy.url("/held/c/3")).body(Full::new(Bytes::from_static(b"x"))).unwrap();
    assert_eq!(send(post).await.status, 200);
    eventually(3, "19 entries after a write", || async {
        let h = held(&proxy).await;
        h["cache_entries"] == 19 && h["cache_index_keys"] == 19 && h["cache_tagged_keys"] == 19
    })
    .await;
    // A tag purge: the ten even entries go, and the tag with them.
    let purge = Request::post(proxy.url("/cache/purge"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer tok")
        .body(Full::new(Bytes::from_static(br#"{"tags": ["even"]}"#)))
        .unwrap();
    assert_eq!(send(purge).await.status, 200);
    eventually(3, "9 entries and one tag after purging a tag", || async {
        let h = held(&proxy).await;
        h["cache_entries"] == 9 && h["cache_index_keys"] == 9 && h["cache_tags"] == 1 && h["cache_tagged_keys"] == 9
    })
    .await;

    // Open connections, up and down again.
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"GET /held/u/1 HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        open.push(s);
    }
    eventually(4, "5 more connections open", || async { held(&proxy).await["connections"].as_u64().unwrap() >= 5 })
        .await;
    drop(open);
    eventually(4, "the 5 closed", || async { held(&proxy).await["connections"].as_u64().unwrap() <= 2 }).await;

    let metrics = get(&proxy.url("/metrics")).await.text();
    assert!(metrics.contains("perfproxy_held_entries{structure=\"cache_entries\"} 9"), "{metrics}");
    assert!(held_is(&proxy, "cache_flights", 0).await, "no miss in flight once all answered");
    proxy.shutdown().await;
}
