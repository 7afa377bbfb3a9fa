//! What the cache's answers carry, on whichever lane serves them (the
//! express lane writes hits from an entry's bytes; `PERFPROXY_EXPRESS_LANE=
//! false` runs the same tests through hyper): per-request fields made anew
//! for each answer, `HEAD` from a stored `GET`, perfproxy's own fields never
//! relayed, bodies the express lane cannot copy (chunked) still stored.

mod support;

use std::time::{Duration, SystemTime};

use support::raw::{spawn_raw_upstream, RawAnswer};
use support::*;

fn answer(head: &str, body: &str) -> RawAnswer {
    RawAnswer::Bytes(format!("{head}\r\n\r\n{body}").into_bytes())
}

/// The value of `name` in a raw response, lower-cased name.
fn field<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn get(proxy: &Proxy, method: &str, path: &str) -> String {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
    raw(proxy.addr, req.as_bytes(), Duration::from_millis(500)).await.0
}

#[tokio::test]
async fn per_request_fields_are_made_anew_for_each_hit() {
    let up = spawn_raw_upstream().await;
    let dated = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(5));
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nCache-Control: max-age=60\r\nDate: {dated}\r\n\
         X-Cache: UPSTREAM\r\nCache-Status: other; hit\r\nServer-Timing: app;dur=3\r\nX-Kept: yes"
    );
    up.answer("/fields", answer(&head, "body"));
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let miss = get(&proxy, "GET", "/fields").await;
    assert_eq!(field(&miss, "x-cache"), Some("MISS"), "{miss}");
    // The upstream's own cache entry goes on, perfproxy's after it (RFC 9211 §2).
    assert_eq!(head_field(&miss, "cache-status"), ["other; hit", "perfproxy; fwd=uri-miss; stored"], "{miss}");
    assert_eq!(head_field(&miss, "x-cache"), ["MISS"], "{miss}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let hit = get(&proxy, "GET", "/fields").await;
    assert!(hit.starts_with("HTTP/1.1 200 OK\r\n") && hit.ends_with("\r\n\r\nbody"), "{hit}");
    assert_eq!(field(&hit, "x-cache"), Some("HIT"), "{hit}");
    assert_eq!(hit.matches("x-cache").count() + hit.matches("X-Cache").count(), 1, "{hit}");
    let status = head_field(&hit, "cache-status");
    assert!(status.len() == 1 && status[0].starts_with("perfproxy; hit; ttl="), "never from the entry: {hit}");
    assert_eq!(field(&hit, "server-timing"), Some("cache;desc=HIT"), "{hit}");
    assert_eq!(field(&hit, "x-kept"), Some("yes"));
    let date = httpdate::parse_http_date(field(&hit, "date").expect("a Date")).unwrap();
    let off = SystemTime::now().duration_since(date).unwrap_or_default();
    assert!(off < Duration::from_secs(2), "the hit's Date is its own, not the stored {dated}: {hit}");
    assert!(field(&hit, "age").unwrap().parse::<u64>().unwrap() >= 5, "Age counts from the origin's Date: {hit}");
    assert_eq!(hit.matches("\r\ndate:").count() + hit.matches("\r\nDate:").count(), 1, "{hit}");
    assert_eq!(up.seen().len(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn head_is_answered_from_a_stored_get() {
    let up = spawn_raw_upstream().await;
    up.answer("/page", answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: max-age=60", "hello"));
    let proxy = spawn_proxy(&up.url(), &[]).await;
    assert!(get(&proxy, "GET", "/page").await.ends_with("hello"));
    let head = get(&proxy, "HEAD", "/page").await;
    assert_eq!(field(&head, "x-cache"), Some("HIT"), "{head}");
    assert_eq!(field(&head, "content-length"), Some("5"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "no body after a HEAD's head: {head:?}");
    assert_eq!(up.seen().len(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn chunked_and_tagged_answers_are_stored_and_served_clean() {
    let up = spawn_raw_upstream().await;
    up.answer(
        "/chunked",
        answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=60\r\n\
             Surrogate-Control: max-age=60\r\nSurrogate-Key: t1 t2",
            "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        ),
    );
    let proxy = spawn_proxy(&up.url(), &["--admin-token", "tok"]).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let a = get(&proxy, "GET", "/chunked").await;
        assert!(field(&a, "surrogate-control").is_none() && field(&a, "surrogate-key").is_none(), "{a}");
        answers.push(a);
    }
    let last = answers.last().unwrap();
    assert_eq!(field(last, "x-cache"), Some("HIT"), "stored by the third request: {answers:?}");
    assert!(last.ends_with("\r\n\r\nabcde"), "{last}");
    // The express lane leaves a chunked body to the general path, which
    // stores the next miss: two requests upstream at most.
    assert!(up.seen().len() <= 2, "{}", up.seen().len());
    // The tags came with the entry: a purge by tag drops it.
    let purge = "POST /cache/purge HTTP/1.1\r\nHost: app\r\nAuthorization: Bearer tok\r\n\
                 Content-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"tags\":[\"t2\"]}";
    let purged = raw(proxy.addr, purge.as_bytes(), Duration::from_millis(500)).await.0;
    assert!(purged.starts_with("HTTP/1.1 200"), "{purged}");
    assert_eq!(field(&get(&proxy, "GET", "/chunked").await, "x-cache"), Some("MISS"));
    proxy.shutdown().await;
}

async fn get_with(proxy: &Proxy, path: &str, extra: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: app\r\n{extra}Connection: close\r\n\r\n");
    raw(proxy.addr, req.as_bytes(), Duration::from_millis(500)).await.0
}

/// Found by review: each of these once differed between the lanes or broke a rule.
#[tokio::test]
async fn review_regressions_vary_private_age_refresh_and_via() {
    let up = spawn_raw_upstream().await;
    let counted = |head: &str| answer(head, "body");
    up.answer(
        "/vary",
        counted("HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nVary: Accept-Encoding\r\nContent-Length: 4"),
    );
    up.answer(
        "/private",
        counted(
            "HTTP/1.1 200 OK\r\nCache-Control: private, no-store\r\nSurrogate-Control: max-age=60\r\nContent-Length: 4",
        ),
    );
    up.answer("/aged", counted("HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nAge: 3600\r\nContent-Length: 4"));
    up.answer("/via", counted("HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 4"));
    let proxy = spawn_proxy(&up.url(), &[]).await;

    // 94 fields and Accept-Encoding: stored under the values it really had.
    let fillers: String = (0..94).map(|i| format!("F{i}: x\r\n")).collect();
    get_with(&proxy, "/vary", &format!("Accept-Encoding: gzip\r\n{fillers}")).await;
    let victim = get_with(&proxy, "/vary", "").await;
    assert_eq!(field(&victim, "x-cache"), Some("MISS"), "another variant: {victim}");

    for _ in 0..2 {
        let p = get_with(&proxy, "/private", "").await;
        assert_ne!(field(&p, "x-cache"), Some("HIT"), "private/no-store never stored: {p}");
        assert_eq!(field(&p, "surrogate-control"), None, "perfproxy's directive, never relayed (a bypass too): {p}");
    }

    // An upstream Age past the freshness lifetime: stale on arrival.
    get_with(&proxy, "/aged", "").await;
    let again = get_with(&proxy, "/aged", "").await;
    assert_eq!(field(&again, "x-cache"), Some("MISS"), "{again}");

    get_with(&proxy, "/via", "").await;
    let hit = get_with(&proxy, "/via", "").await;
    assert_eq!(field(&hit, "x-cache"), Some("HIT"), "{hit}");
    assert_eq!(field(&hit, "via"), Some("1.1 perfproxy"), "{hit}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_refreshing_304_never_stores_per_request_fields() {
    let up = spawn_raw_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    up.answer(
        "/rv",
        answer("HTTP/1.1 200 OK\r\nCache-Control: max-age=1\r\nETag: \"e1\"\r\nContent-Length: 4", "body"),
    );
    get_with(&proxy, "/rv", "").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    up.answer(
        "/rv",
        RawAnswer::Bytes(
            b"HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=60\r\nETag: \"e1\"\r\nX-Request-Id: upstream-id\r\n\
              X-Cache: HIT from cdn\r\nCache-Status: cdn; hit\r\nSurrogate-Control: max-age=60\r\n\r\n"
                .to_vec(),
        ),
    );
    get_with(&proxy, "/rv", "").await;
    let hit = get_with(&proxy, "/rv", "X-Request-Id: client-id\r\n").await;
    assert!(hit.ends_with("\r\n\r\nbody"), "{hit}");
    let lower = hit.to_lowercase();
    assert_eq!(lower.matches("\r\nx-cache:").count(), 1, "{hit}");
    assert_eq!(lower.matches("\r\ncache-status:").count(), 1, "{hit}");
    assert_eq!(lower.matches("\r\nx-request-id:").count(), 1, "{hit}");
    assert_eq!(field(&hit, "x-request-id"), Some("client-id"), "{hit}");
    assert!(!lower.contains("surrogate-control") && !lower.contains("from cdn"), "{hit}");
    proxy.shutdown().await;
}

/// Edge Architecture 1.0 targeting: perfproxy announces itself upstream on
/// the requests whose answer it may store (a client's capabilities never
/// pass, from a trusted peer neither), honours `Surrogate-Control`
/// directives targeted at it and ignores those for another device.
#[tokio::test]
async fn surrogate_control_targeted_at_perfproxy() {
    let ours = "perfproxy=\"Surrogate/1.0\"";
    let capabilities = |s: &support::raw::RawSeen| -> Vec<String> {
        let named = s.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("surrogate-capability"));
        named.map(|(_, v)| v.clone()).collect()
    };
    // 127.0.0.1 is trusted by default; an empty list trusts no one.
    let untrusting = write_config("trusted_proxies = []\n");
    for args in [vec![], vec!["--config", untrusting.as_str()]] {
        let up = spawn_raw_upstream().await;
        let head = |cc: &str, sc: &str| {
            let head =
                format!("HTTP/1.1 200 OK\r\nCache-Control: {cc}\r\nSurrogate-Control: {sc}\r\nContent-Length: 4");
            answer(&head, "body")
        };
        up.answer("/ours", head("max-age=0", "max-age=60;perfproxy"));
        up.answer("/replaced", head("max-age=0", "no-store, max-age=60;perfproxy"));
        up.answer("/theirs", head("max-age=0", "max-age=60;cdn"));
        up.answer("/refused", head("max-age=60", "max-age=60;cdn, no-store;perfproxy"));
        // Varying on perfproxy's own field: the same on every request it sends.
        up.answer("/varied", head("max-age=60\r\nVary: Surrogate-Capability", "max-age=60;cdn"));
        let proxy = spawn_proxy(&up.url(), &args).await;
        // A client claiming capabilities in perfproxy's name.
        let claim = "Surrogate-Capability: perfproxy=\"Surrogate/1.0 ESI/1.0\"\r\n";
        for path in ["/ours", "/replaced", "/theirs", "/refused", "/varied"] {
            let first = get_with(&proxy, path, claim).await;
            assert!(field(&first, "surrogate-control").is_none(), "{first}");
            let second = get_with(&proxy, path, claim).await;
            let stored = ["/ours", "/replaced", "/varied"].contains(&path);
            assert_eq!(field(&second, "x-cache") == Some("HIT"), stored, "{args:?} {path}: {second}");
        }
        // A revalidating `no-cache` request (the general path on either lane) carries it too.
        let revalidated = get_with(&proxy, "/ours", &format!("{claim}Cache-Control: no-cache\r\n")).await;
        assert!(revalidated.starts_with("HTTP/1.1 200"), "{revalidated}");
        let seen = up.seen();
        assert_eq!(seen.len(), 8, "one request each for the stored, two each for the others, the no-cache one");
        for (i, s) in seen.iter().enumerate() {
            // A URL remembered as uncacheable (its second request) goes without.
            let pass =
                (s.target == "/theirs" || s.target == "/refused") && seen[..i].iter().any(|b| b.target == s.target);
            let expected: &[&str] = if pass { &[] } else { &[ours] };
            assert_eq!(capabilities(s), expected, "{args:?}: {} {}", s.method, s.target);
        }
        // Requests the cache does not look up carry none.
        let range = get_with(&proxy, "/theirs", &format!("{claim}Range: bytes=0-1\r\n")).await;
        assert!(range.starts_with("HTTP/1.1 200"), "{range}");
        let post =
            format!("POST /theirs HTTP/1.1\r\nHost: app\r\n{claim}Content-Length: 0\r\nConnection: close\r\n\r\n");
        raw(proxy.addr, post.as_bytes(), Duration::from_millis(500)).await;
        let seen = up.seen();
        assert_eq!(seen.len(), 10);
        assert!(seen[8..].iter().all(|s| capabilities(s).is_empty()), "{:?}", &seen[8..]);
        proxy.shutdown().await;
    }
}

/// Found by an attack from outside: a revalidation `304` that brought a
/// `Set-Cookie` (a session rotated by the origin) was dropped, with the
/// rest of its fields: the client got the stored answer alone. It gets the
/// updated answer, its cookie included (RFC 9111 §4.3.4); the cookie is
/// never stored, so the next request revalidates again and gets its own.
#[tokio::test]
async fn a_revalidation_304_with_set_cookie_reaches_its_client_and_is_not_stored() {
    let up = spawn_raw_upstream().await;
    up.answer(
        "/rotate",
        answer("HTTP/1.1 200 OK\r\nCache-Control: max-age=1\r\nETag: \"s1\"\r\nContent-Length: 4", "page"),
    );
    let proxy = spawn_proxy(&up.url(), &[]).await;
    assert!(get(&proxy, "GET", "/rotate").await.starts_with("HTTP/1.1 200"));
    let hit = get(&proxy, "GET", "/rotate").await;
    assert_eq!(field(&hit, "x-cache"), Some("HIT"), "{hit}");
    up.answer(
        "/rotate",
        answer("HTTP/1.1 304 Not Modified\r\nETag: \"s1\"\r\nCache-Control: max-age=1\r\nSet-Cookie: sid=2", ""),
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for round in 0..2 {
        let revalidated = get(&proxy, "GET", "/rotate").await;
        assert!(revalidated.starts_with("HTTP/1.1 200"), "{round}: {revalidated}");
        assert!(revalidated.ends_with("\r\n\r\npage"), "{round}: the stored body: {revalidated}");
        assert_eq!(field(&revalidated, "set-cookie"), Some("sid=2"), "{round}: {revalidated}");
    }
    let conditional =
        up.seen().iter().filter(|s| s.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("if-none-match"))).count();
    assert_eq!(conditional, 2, "the cookie was not stored: each request revalidated");
    proxy.shutdown().await;
}

/// A revalidation `304` that names another `ETag` refreshes the stored
/// response's other fields and its freshness, and keeps its `ETag` and
/// body: what the conformance suite requires of a shared cache
/// (`304-etag-update-response-ETag`; tried: refetching instead, RFC 9111
/// §4.3.4's stricter reading, fails it).
#[tokio::test]
async fn a_revalidation_304_naming_another_etag_keeps_the_stored_one() {
    let up = spawn_raw_upstream().await;
    up.answer(
        "/moved-on",
        answer("HTTP/1.1 200 OK\r\nCache-Control: max-age=1\r\nETag: \"one\"\r\nX-V: 1\r\nContent-Length: 3", "one"),
    );
    let proxy = spawn_proxy(&up.url(), &[]).await;
    assert!(get(&proxy, "GET", "/moved-on").await.ends_with("\r\n\r\none"));
    let not_modified =
        b"HTTP/1.1 304 Not Modified\r\nETag: \"two\"\r\nX-V: 2\r\nCache-Control: max-age=60\r\n\r\n".to_vec();
    up.answer(
        "/moved-on",
        RawAnswer::IfNoneMatch(not_modified, b"HTTP/1.1 500 Nope\r\nContent-Length: 0\r\n\r\n".to_vec()),
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for round in 0..2 {
        let again = get(&proxy, "GET", "/moved-on").await;
        assert!(again.starts_with("HTTP/1.1 200") && again.ends_with("\r\n\r\none"), "{round}: {again}");
        assert_eq!(field(&again, "etag"), Some("\"one\""), "{round}: {again}");
        assert_eq!(field(&again, "x-v"), Some("2"), "{round}: {again}");
    }
    assert_eq!(up.seen().len(), 2, "stored, revalidated, then fresh");
    proxy.shutdown().await;
}
