//! The latency split on both lanes (run again with
//! `PERFPROXY_EXPRESS_LANE=false`): against an upstream that answers after a
//! known delay, `upstream_ms` is that delay and `overhead_ms` is perfproxy's
//! own time, under a millisecond for a plain request; a cache hit has no
//! upstream share. Both are on `/metrics` as histograms per route.

mod support;

use support::*;

#[tokio::test]
async fn upstream_and_overhead_shares_per_route_and_in_total() {
    let up = spawn_upstream().await;
    up.script_slow("/slow/a", &[], "slow", 80);
    up.script("/cached", 200, &[("cache-control", "max-age=60")], "cached");
    let proxy = spawn_proxy(&up.url(), &[]).await;
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/slow/a")).await.status, 200);
    }
    for _ in 0..5 {
        get(&proxy.url("/cached")).await;
    }
    // Workers publish their samples every 50 ms.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let perf = get(&proxy.url("/performance")).await.json();
    let route = |name: &str| {
        perf["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: {perf}"))
    };
    let slow = route("GET /slow/a");
    let up_p50 = slow["upstream_ms"]["p50"].as_f64().unwrap();
    assert!((78.0..95.0).contains(&up_p50), "upstream p50 is the 80 ms delay: {slow}");
    let over = slow["overhead_ms"]["p50"].as_f64().unwrap();
    assert!(over < 1.0, "perfproxy's own time under 1 ms: {slow}");
    assert!(slow["latency_ms"]["p50"].as_f64().unwrap() >= up_p50, "{slow}");
    // 1 miss then 4 hits: the upstream share counts the miss only.
    let cached = route("GET /cached");
    assert!(cached["upstream_ms"]["p50"].as_f64().is_some(), "{cached}");
    assert!(perf["requests"]["upstream_ms"]["p99"].as_f64().unwrap() >= 78.0, "{perf}");
    assert!(perf["requests"]["overhead_ms"]["p50"].as_f64().unwrap() < 1.0, "{perf}");

    let metrics = get(&proxy.url("/metrics")).await.text();
    assert!(metrics.contains(r#"perfproxy_upstream_duration_seconds_count{route="GET /slow/a"} 10"#), "{metrics}");
    assert!(metrics.contains(r#"perfproxy_upstream_duration_seconds_count{route="GET /cached"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"perfproxy_proxy_overhead_seconds_count{route="GET /cached"} 5"#), "{metrics}");
    // Nearly every one under 1 ms (a debug build on a busy 2-core machine
    // can stall one).
    let under_1ms = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"perfproxy_proxy_overhead_seconds_bucket{route="GET /slow/a",le="0.001"} "#))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(under_1ms >= 8, "{under_1ms} of 10 under 1 ms: {metrics}");
    proxy.shutdown().await;
}
