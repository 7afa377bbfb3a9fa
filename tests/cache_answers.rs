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
    assert_eq!(field(&miss, "cache-status"), Some("perfproxy; fwd=uri-miss; stored"), "{miss}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let hit = get(&proxy, "GET", "/fields").await;
    assert!(hit.starts_with("HTTP/1.1 200 OK\r\n") && hit.ends_with("\r\n\r\nbody"), "{hit}");
    assert_eq!(field(&hit, "x-cache"), Some("HIT"), "{hit}");
    assert_eq!(hit.matches("x-cache").count() + hit.matches("X-Cache").count(), 1, "{hit}");
    assert!(field(&hit, "cache-status").unwrap().starts_with("perfproxy; hit; ttl="), "{hit}");
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
