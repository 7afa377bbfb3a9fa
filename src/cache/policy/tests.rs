//! Unit tests of `policy`.

use super::*;
use http::HeaderValue;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn policy(rule_ttl: Option<u64>) -> Policy {
    Policy {
        origin_directives: true,
        rule_ttl: rule_ttl.map(Duration::from_secs),
        stale_if_error: Duration::from_secs(60),
    }
}

#[test]
fn parses_directives_with_quotes_and_bad_numbers() {
    let d = Directives::parse(&headers(&[
        ("cache-control", "Max-Age=60, no-cache=\"Set-Cookie, X\", foo=bar"),
        ("cache-control", "s-maxage=abc, max-age=30"),
    ]));
    assert_eq!(d.max_age, Some(30));
    assert_eq!(d.s_maxage, Some(0));
    let huge = Directives::parse(&headers(&[("cache-control", "max-age=18446744073709551615")]));
    assert_eq!(huge.max_age, Some(1 << 31));
    assert!(d.no_cache && !d.no_store);
}

#[test]
fn storable_only_with_freshness_or_a_rule() {
    let now = SystemTime::now();
    let ok = |req: &[(&'static str, &str)], resp: &[(&'static str, &str)], rule: Option<u64>| {
        lifetime(&policy(rule), &headers(req), StatusCode::OK, &headers(resp), now)
    };
    assert_eq!(ok(&[], &[("cache-control", "max-age=10")], None).unwrap().fresh, Duration::from_secs(10));
    assert_eq!(ok(&[], &[("cache-control", "s-maxage=5, max-age=10")], None).unwrap().fresh.as_secs(), 5);
    assert!(ok(&[], &[], None).is_none(), "no heuristic freshness");
    assert_eq!(ok(&[], &[], Some(7)).unwrap().fresh.as_secs(), 7);
    assert!(ok(&[], &[("cache-control", "max-age=10, private")], Some(7)).is_none());
    assert!(ok(&[], &[("cache-control", "no-store")], Some(7)).is_none());
    assert!(ok(&[], &[("set-cookie", "a=b")], Some(7)).is_none());
    assert!(ok(&[], &[("vary", "Accept, *")], Some(7)).is_none());
    assert!(ok(&[("authorization", "x")], &[("cache-control", "max-age=10")], None).is_none());
    assert!(ok(&[("authorization", "x")], &[("cache-control", "public, max-age=10")], None).is_some());
    assert!(ok(&[("authorization", "x")], &[("cache-control", "s-maxage=10")], None).is_some());
    let revalidated = [("cache-control", "max-age=10, must-revalidate")];
    assert!(ok(&[("authorization", "x")], &revalidated, None).is_none(), "only public or s-maxage");
    assert!(ok(&[], &[("cache-control", "no-cache")], None).is_none(), "no validator, nothing to revalidate");
    let nc = ok(&[], &[("cache-control", "no-cache, max-age=60"), ("etag", "\"a\"")], None).unwrap();
    assert!(nc.fresh.is_zero() && nc.must_revalidate);
    assert!(ok(&[], &[("expires", "0")], None).is_none(), "invalid Expires is already stale");
    let date = httpdate::fmt_http_date(now);
    let later = httpdate::fmt_http_date(now + Duration::from_secs(100));
    let e = ok(&[], &[("date", &date), ("expires", &later)], None).unwrap();
    assert_eq!(e.fresh.as_secs(), 100);
    let mut nd = policy(Some(3));
    nd.origin_directives = false;
    let l = lifetime(&nd, &HeaderMap::new(), StatusCode::OK, &headers(&[("cache-control", "max-age=99")]), now);
    assert_eq!(l.unwrap().fresh.as_secs(), 3, "origin directives off: the rule decides");
    let no_cache = headers(&[("cache-control", "no-cache"), ("etag", "\"a\"")]);
    let l = lifetime(&nd, &HeaderMap::new(), StatusCode::OK, &no_cache, now).unwrap();
    assert!(l.fresh.is_zero(), "a rule's route: no-cache still means revalidate on each use");
    nd.rule_ttl = None;
    let l = lifetime(&nd, &HeaderMap::new(), StatusCode::OK, &no_cache, now);
    assert!(l.is_none(), "origin directives off and no rule: no-cache stores nothing");
    assert!(lifetime(&policy(Some(3)), &HeaderMap::new(), StatusCode::CREATED, &HeaderMap::new(), now).is_none());
    let sc = ok(&[], &[("cache-control", "max-age=5"), ("surrogate-control", "max-age=50")], None).unwrap();
    assert_eq!(sc.fresh.as_secs(), 50, "Surrogate-Control wins for a reverse proxy");
    assert!(ok(&[], &[("cache-control", "max-age=5"), ("surrogate-control", "no-store")], None).is_none());
    // Targeted directives (Edge Architecture 1.0): perfproxy's win, another device's are ignored.
    let fresh = |sc: &str| {
        ok(&[], &[("cache-control", "max-age=5"), ("surrogate-control", sc)], None).map(|l| l.fresh.as_secs())
    };
    assert!(
        SURROGATE_CAPABILITY_VALUE.starts_with(&format!("{SURROGATE_DEVICE}=")),
        "announced as the device it answers to"
    );
    assert_eq!(fresh("max-age=60;perfproxy"), Some(60));
    assert_eq!(fresh("max-age=60;PerfProxy, max-age=10"), Some(60), "targeted before untargeted");
    assert_eq!(fresh("max-age=10, max-age=60;perfproxy"), Some(60), "in any order");
    assert_eq!(fresh("max-age=60;other"), Some(5), "another device's: Cache-Control decides");
    assert_eq!(fresh("no-store;other"), Some(5));
    assert_eq!(fresh("no-store;perfproxy"), None);
    // perfproxy's set replaces the untargeted one whole (as RFC 9213's targeted fields do).
    assert_eq!(fresh("no-store, max-age=60;perfproxy"), Some(60));
    assert_eq!(fresh("max-age=60, no-store;perfproxy"), None);
    assert_eq!(fresh("max-age=60;perfproxy;other"), Some(5), "the last `;` names the device");
    assert_eq!(fresh("max-age=60;my+cdn"), Some(5), "any token names a device");
    assert_eq!(fresh("no-store, content=\"ESI/1.0\";perfproxy"), None, "only what is read makes a targeted set");
    assert_eq!(fresh("max-age=60 ; perfproxy"), Some(60));
    assert_eq!(fresh("max-age=60;"), None, "an empty target: one malformed max-age, stale at once, not kept");
    assert_eq!(fresh("x=\"a;b\", max-age=60"), Some(60), "a `;` in quotes names no device");
    // `no-store` and `private` are never stored, whatever Surrogate-Control says.
    for cc in ["no-store", "private"] {
        assert!(ok(&[], &[("cache-control", cc), ("surrogate-control", "max-age=50")], None).is_none(), "{cc}");
    }
}

#[test]
fn initial_age_takes_the_larger_of_apparent_and_corrected() {
    let now = SystemTime::now();
    let date = httpdate::fmt_http_date(now - Duration::from_secs(30));
    let h = headers(&[("date", &date), ("age", "10")]);
    let age = initial_age(&h, now - Duration::from_secs(1), now);
    assert!((29..=31).contains(&age.as_secs()), "{age:?}");
    let h = headers(&[("age", "100")]);
    assert_eq!(initial_age(&h, now, now).as_secs(), 100);
    let h = headers(&[("age", "18446744073709551615")]);
    assert_eq!(initial_age(&h, now, now).as_secs(), 1 << 31, "no overflow");
    let lists = [&[("age", "0, 0")][..], &[("age", "0,7200")], &[("age", "3600, 3600")], &[("age", "0"), ("age", "0")]];
    for bad in [&[("age", "1.5")][..], &[("age", "-1")], &[("age", "7200;x=1")]].into_iter().chain(lists) {
        assert_eq!(initial_age(&headers(bad), now, now), INVALID_AGE, "{bad:?}");
    }
}
