//! Figures never leave the range seen: every percentile lies between the
//! recorded minimum and maximum (a histogram bucket's top is brought down
//! to the maximum), and a part (`upstream_ms`, `overhead_ms`) never exceeds
//! its whole (`latency_ms`), in `/performance`, `/metrics` and the cluster
//! merge.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

/// `min ≤ p50 ≤ p90 ≤ p95 ≤ p99 ≤ max` in one `{min, p50, …, max}` object.
fn ordered(what: &str, f: &Value) -> f64 {
    let v = |k: &str| f[k].as_f64().unwrap_or_else(|| panic!("{what}.{k} missing: {f}"));
    let chain = [v("min"), v("p50"), v("p90"), v("p95"), v("p99"), v("max")];
    assert!(chain.windows(2).all(|w| w[0] <= w[1]), "{what} out of order (min…max): {f}");
    v("max")
}

/// Every figure set in a `/performance` document: totals, recent, routes.
fn check_document(doc: &Value) -> usize {
    let mut sets = vec![("requests".to_string(), &doc["requests"]), ("recent".into(), &doc["requests"]["recent"])];
    for r in doc["routes"].as_array().unwrap() {
        let label = r["route"].as_str().unwrap().to_string();
        sets.push((label.clone(), r));
        sets.push((format!("{label} recent"), &r["recent"]));
    }
    let mut parts = 0;
    for (what, f) in &sets {
        if f["latency_ms"]["max"].as_f64() == Some(0.0) {
            continue; // nothing in it
        }
        let whole = ordered(&format!("{what} latency_ms"), &f["latency_ms"]);
        for part in ["upstream_ms", "overhead_ms"] {
            if f[part].is_object() {
                let max = ordered(&format!("{what} {part}"), &f[part]);
                assert!(max <= whole, "{what}: {part}.max {max} above latency_ms.max {whole}: {f}");
                parts += 1;
            }
        }
    }
    for slot in doc["requests"]["slots"].as_array().unwrap() {
        let (p50, p95, p99) = (slot["p50_ms"].as_f64(), slot["p95_ms"].as_f64(), slot["p99_ms"].as_f64());
        assert!(p50 <= p95 && p95 <= p99, "slot out of order: {slot}");
    }
    parts
}

/// `name{route="…"}` sample values from an exposition, by `le` when present.
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let le = head.split("le=\"").nth(1).and_then(|t| t.split('"').next()).unwrap_or("").to_string();
            Some((le, value.parse().ok()?))
        })
        .collect()
}

/// Requests of several latencies, all through the upstream (so the parts
/// count the same requests as the whole), then a few cache hits.
async fn traffic(proxy: &Proxy, up: &Upstream) {
    for ms in [1, 7, 33, 101, 151, 101, 7] {
        assert_eq!(get(&proxy.url(&format!("/delay/{ms}"))).await.status, 200);
    }
    up.script_slow("/slowly-cached", &[("cache-control", "max-age=60")], "kept", 57);
    for _ in 0..4 {
        get(&proxy.url("/slowly-cached")).await;
    }
}

#[tokio::test]
async fn percentiles_stay_within_min_and_max_and_parts_within_their_whole() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    traffic(&proxy, &up).await;
    tokio::time::sleep(Duration::from_millis(120)).await; // samples merge every ~50 ms
    let doc = get(&proxy.url("/performance")).await.json();
    assert_eq!(doc["requests"]["total"], 11, "{doc}");
    assert!(check_document(&doc) >= 4, "parts checked: {doc}");
    // One request of ~57 ms upstream: its route's percentiles are that
    // request, not the top of the histogram bucket it fell in.
    let route = doc["routes"].as_array().unwrap().iter().find(|r| r["route"] == "GET /slowly-cached").unwrap();
    let l = &route["latency_ms"];
    assert_eq!(l["p99"], l["max"], "{route}");
    assert_eq!(route["upstream_ms"]["p50"], route["upstream_ms"]["max"], "one upstream request: {route}");

    // /metrics: the upstream's share of the /delay requests (all of which
    // went upstream) is at most their whole, bucket by bucket and in sum.
    let metrics = get(&proxy.url("/metrics")).await.text();
    let route = "route=\"GET /delay/:id\"";
    let lines: String = metrics.lines().filter(|l| l.contains(route)).collect::<Vec<_>>().join("\n");
    let whole = samples(&lines, "perfproxy_request_duration_seconds_bucket");
    let part = samples(&lines, "perfproxy_upstream_duration_seconds_bucket");
    assert!(!whole.is_empty() && whole.len() == part.len(), "{lines}");
    for ((le, w), (_, p)) in whole.iter().zip(&part) {
        assert!(p >= w, "le={le}: {p} upstream shares at most le but only {w} requests:\n{lines}");
    }
    let sum = |n: &str| samples(&lines, n).first().map(|s| s.1).unwrap();
    assert!(sum("perfproxy_upstream_duration_seconds_sum") <= sum("perfproxy_request_duration_seconds_sum"));
    assert!(sum("perfproxy_proxy_overhead_seconds_sum") <= sum("perfproxy_request_duration_seconds_sum"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_merge_keeps_percentiles_within_the_range_seen() {
    let up = spawn_upstream().await;
    let (_redis, proxies) = spawn_cluster(&up.url(), &["a", "b"]).await;
    for p in &proxies {
        traffic(p, &up).await;
    }
    let mut merged = Value::Null;
    for _ in 0..100 {
        merged = get(&proxies[0].url("/performance?scope=cluster")).await.json();
        if merged["requests"]["total"] == 22 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(merged["scope"], "cluster", "{merged}");
    assert_eq!(merged["requests"]["total"], 22, "{merged}");
    assert!(check_document(&merged) >= 4, "{merged}");
    let own: Vec<f64> = {
        let mut v = Vec::new();
        for p in &proxies {
            v.push(get(&p.url("/performance")).await.json()["requests"]["latency_ms"]["max"].as_f64().unwrap());
        }
        v
    };
    let max = merged["requests"]["latency_ms"]["max"].as_f64().unwrap();
    assert_eq!(max, own.iter().copied().fold(0.0, f64::max), "the merged max is the largest seen");
    for p in proxies {
        p.shutdown().await;
    }
}
