//! Unit tests of `limits`.

use super::*;

fn rule(pattern: &str, key: &str, rps: f64, burst: Option<u64>) -> Rule {
    let r = RateLimitRule { pattern: pattern.into(), key: key.into(), rps, burst, shared: false };
    Rule::compile(0, &r).expect("a valid rule")
}

#[test]
fn rules_are_checked_by_key() {
    let bad = |rps: f64, burst: Option<u64>, key: &str| {
        let r = RateLimitRule { pattern: "POST /api/*".into(), key: key.into(), rps, burst, shared: false };
        Rule::compile(2, &r).expect_err("invalid").key
    };
    assert_eq!(bad(0.0, None, "client"), "rate_limits[2].rps");
    assert_eq!(bad(f64::NAN, None, "client"), "rate_limits[2].rps");
    assert_eq!(bad(5.0, Some(0), "client"), "rate_limits[2].burst");
    assert_eq!(bad(5.0, None, "header:"), "rate_limits[2].key");
    assert_eq!(bad(0.001, Some(100_000), "client"), "rate_limits[2].burst");
    // burst 1 at 100 000 rps: a window under 1 ms.
    assert_eq!(bad(100_000.0, Some(1), "client"), "rate_limits[2].burst");
    assert_eq!(rule("/x/*", "global", 2.5, None).burst, 3);
}

#[test]
fn a_reload_keeps_each_rules_counts_once() {
    let r = rule("/api/*", "global", 5.0, None);
    let live = LiveLimits::new(&[r.clone(), r.clone()]);
    let before = live.limits.load_full();
    live.replace(&[r.clone(), r.clone(), r]);
    let after = live.limits.load_full();
    let same = |a: &Limiter, b: &Limiter| Arc::ptr_eq(&a.counts, &b.counts);
    assert!(!same(&after.limiters[0], &after.limiters[1]), "two equal rules keep two counts");
    let kept = after.limiters.iter().filter(|l| before.limiters.iter().any(|b| same(l, b))).count();
    assert_eq!(kept, 2, "the third rule starts afresh");
}

#[test]
fn paths_are_matched_as_a_backend_routes_them() {
    for (raw, seen) in [
        ("/api/x", "/api/x"),
        ("//api//x", "/api/x"),
        ("/%61pi/x", "/api/x"),
        ("/%2e%2e/api/x", "/api/x"),
        ("/b/../api/./x", "/api/x"),
        ("/api/", "/api/"),
        ("/api/x/..", "/api/"),
        ("/%2Fapi", "/%2Fapi"),
        ("/%zz/%4", "/%zz/%4"),
        ("/..", "/"),
    ] {
        assert_eq!(canonical(raw).as_deref().unwrap_or(raw), seen, "{raw}");
    }
    assert_eq!(canonical("/plain/path.txt"), None);
}

#[test]
fn the_wait_is_until_the_sliding_count_is_under_the_quota() {
    let two = Duration::from_secs(2);
    let at = |prev, curr, into| ((prev, curr, into), two);
    let wait_for = |((counts, window), quota): (((f64, f64, f64), Duration), f64)| wait_for(counts, window, quota);
    assert_eq!(wait_for((at(0.0, 99.0, 0.5), 100.0)), None);
    // 100 used in this window, half of it gone: the rest of it, then half of the next.
    let w = wait_for((at(0.0, 100.0, 0.5), 100.0)).expect("over");
    assert!((w.as_secs_f64() - 1.0).abs() < 1e-9, "{w:?}");
    // 100 last window, 50 now, a quarter in: 0.75*100+50 = 125 until the previous fades to 50.
    let w = wait_for((at(100.0, 50.0, 0.25), 100.0)).expect("over");
    assert!((w.as_secs_f64() - 0.5).abs() < 1e-9, "{w:?}");
}
