//! The cluster view with a private Redis: three instances under different
//! loads publish to it; `/performance?scope=cluster` sums their counters
//! and merges their histograms (the cluster p99 is the p99 of all samples,
//! not the mean of three p99s); an instance that stops leaves the list
//! within three intervals; without Redis the view is this instance's alone.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

async fn doc(proxy: &Proxy, query: &str) -> Value {
    get(&proxy.url(&format!("/performance{query}"))).await.json()
}

fn ids(doc: &Value) -> Vec<String> {
    doc["instances"]
        .as_array()
        .map_or_else(Vec::new, |a| a.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_merge_into_one_cluster_document() {
    let up = spawn_upstream().await;
    let (_redis, mut proxies) = spawn_cluster(&up.url(), &["a", "b", "c"]).await;
    // Different loads: 60 fast, 60 medium and 30 slow requests.
    for (proxy, (n, ms)) in proxies.iter().zip([(60, 5), (60, 20), (30, 150)]) {
        // Ten at a time: the upstream and the clients share this test's
        // runtime, and 60 connections opened at once on a starved debug
        // build queue for tens of milliseconds (CI saw a 20 ms request's
        // median at 43 ms).
        let url = proxy.url(&format!("/delay/{ms}"));
        for _ in 0..n / 10 {
            let tasks: Vec<_> = (0..10)
                .map(|_| {
                    tokio::spawn({
                        let url = url.clone();
                        async move { get(&url).await.status }
                    })
                })
                .collect();
            for t in tasks {
                assert_eq!(t.await.unwrap(), 200);
            }
        }
    }
    let mut merged = Value::Null;
    for _ in 0..100 {
        merged = doc(&proxies[0], "?scope=cluster").await;
        if merged["requests"]["total"] == 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(merged["scope"], "cluster");
    assert_eq!(ids(&merged), ["a", "b", "c"]);
    let mut own_p99s = Vec::new();
    let mut sum = 0;
    for p in &proxies {
        let own = doc(p, "").await;
        sum += own["requests"]["total"].as_u64().unwrap();
        own_p99s.push(own["requests"]["latency_ms"]["p99"].as_f64().unwrap());
        assert!(own.get("scope").is_none(), "the instance document keeps its shape");
    }
    assert_eq!(merged["requests"]["total"].as_u64(), Some(sum), "the totals are the sum");
    let p99 = merged["requests"]["latency_ms"]["p99"].as_f64().unwrap();
    let p50 = merged["requests"]["latency_ms"]["p50"].as_f64().unwrap();
    let mean_of_p99s = own_p99s.iter().sum::<f64>() / 3.0;
    // Of 150 samples the slowest 30 took ~150 ms: the p99 is one of them;
    // the median is one of the 20 ms requests (above the fast ones' 5 ms,
    // well below the slow ones' 150 ms, whatever a busy machine adds).
    assert!((150.0..250.0).contains(&p99), "cluster p99 {p99} ms (mean of p99s {mean_of_p99s})");
    assert!(p99 > mean_of_p99s * 1.5, "cluster p99 {p99} is not the mean of p99s {mean_of_p99s}");
    assert!((20.0..100.0).contains(&p50), "cluster p50 {p50} ms");
    let routes = merged["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!((routes[0]["route"].as_str(), routes[0]["count"].as_u64()), (Some("GET /delay/:id"), Some(150)));
    assert_eq!(merged["requests"]["recent"]["total"], 150);
    // Narrowed to a route, as the instance document is.
    let one = doc(&proxies[1], "?scope=cluster&route=GET%20/delay/:id").await;
    assert_eq!(one["routes"].as_array().map(Vec::len), Some(1));

    // An instance that stops leaves within three intervals.
    let c = proxies.pop().unwrap();
    c.shutdown().await;
    eventually(5, "the stopped instance leaves the list", || {
        let url = proxies[0].url("/performance?scope=cluster");
        async move { ids(&get(&url).await.json()) == ["a", "b"] }
    })
    .await;
    let after = doc(&proxies[0], "?scope=cluster").await;
    assert_eq!(after["requests"]["total"], 120);
}

#[tokio::test]
async fn without_redis_the_cluster_view_is_this_instance() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    assert_eq!(get(&proxy.url("/x")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let d = doc(&proxy, "?scope=cluster").await;
    assert_eq!(d["scope"], "instance");
    assert_eq!(d["requests"]["total"], 1);
}
