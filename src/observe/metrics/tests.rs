//! The aggregate's counts, percentiles and window, from samples.

use super::*;

fn test_tally() -> crate::admit::clients::top::Tally {
    crate::admit::clients::top::TopClients::new(10, crate::admit::clients::KeySpec::Client, Duration::from_secs(60))
        .tally()
}

#[test]
fn counts_and_percentiles_come_from_histograms() {
    let m = Metrics::new(true, Duration::from_millis(100), Duration::from_secs(60));
    let r = m.recorder(test_tally());
    let a = RouteId(0);
    let b = RouteId(3);
    for i in 1..=100u32 {
        let s = Sample {
            route: a,
            micros: i * 1000,
            status: if i % 10 == 0 { 503 } else { 200 },
            at_secs: 0,
            upstream_micros: Some(400),
            overhead_micros: 20,
            limited: false,
            grpc: None,
        };
        lock(&r.shard.samples).samples.push(s);
    }
    lock(&r.shard.samples).samples.push(Sample {
        route: b,
        micros: 5,
        status: 404,
        at_secs: 0,
        upstream_micros: None,
        overhead_micros: 0,
        limited: false,
        grpc: None,
    });
    let snap = m.snapshot(None);
    assert_eq!(snap.total.all.count, 101);
    assert_eq!(snap.total.all.errors, 10);
    assert_eq!(snap.routes.len(), 2);
    let ra = &snap.routes[0].1.all;
    assert_eq!((ra.count, ra.errors, ra.status[2], ra.status[5]), (100, 10, 90, 10));
    let p50 = ra.hist.value_at_quantile(0.5) as f64;
    assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.01, "p50 {p50}");
    assert!(ra.hist.value_at_quantile(0.99) >= 98_000);
    assert_eq!(ra.max_micros, 100_000);
    assert_eq!(ra.slow, 0, "100 ms is not slower than 100 ms");
    let only_b = m.snapshot(Some(b));
    assert_eq!(only_b.routes.len(), 1);
    assert_eq!(only_b.routes[0].1.all.status[4], 1);
}

#[test]
fn recent_window_forgets_old_slots() {
    let m = Metrics::new(true, Duration::from_secs(2), Duration::from_secs(60));
    let r = m.recorder(test_tally());
    lock(&r.shard.samples).samples.push(Sample {
        route: RouteId(0),
        micros: 10,
        status: 200,
        at_secs: 0,
        upstream_micros: None,
        overhead_micros: 0,
        limited: false,
        grpc: None,
    });
    lock(&r.shard.samples).samples.push(Sample {
        route: RouteId(0),
        micros: 10,
        status: 500,
        at_secs: 125,
        upstream_micros: None,
        overhead_micros: 0,
        limited: false,
        grpc: None,
    });
    m.flush();
    let agg = lock(&m.aggregate);
    // At second 125 (epoch 12) the window covers epochs 7..=12.
    let recent = agg.total.recent(12);
    assert_eq!((recent.count, recent.errors), (1, 1));
    assert_eq!(agg.total.all.count, 2);
    let later = agg.total.recent(30);
    assert_eq!(later.count, 0);
}
