//! `X-Request-Id` on every request, on both lanes (run again with
//! `PERFPROXY_EXPRESS_LANE=false`): the client's is kept, else perfproxy
//! makes one; it goes upstream once and comes back, on proxied answers,
//! cache hits (never the stored one) and perfproxy's own errors.

mod support;

use std::time::Duration;

use support::raw::{ok, spawn_raw_upstream, RawAnswer};
use support::*;

async fn get(proxy: &Proxy, path: &str, extra: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: app\r\n{extra}Connection: close\r\n\r\n");
    raw(proxy.addr, req.as_bytes(), Duration::from_millis(500)).await.0
}

fn sent_ids(up: &support::raw::RawUpstream, target: &str) -> Vec<Vec<String>> {
    up.seen()
        .iter()
        .filter(|s| s.target == target)
        .map(|s| {
            s.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("x-request-id")).map(|(_, v)| v.clone()).collect()
        })
        .collect()
}

#[tokio::test]
async fn every_request_carries_one_id_upstream_and_back() {
    let up = spawn_raw_upstream().await;
    // An upstream that answers with an id of its own: replaced by the request's.
    up.answer(
        "/echo",
        RawAnswer::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-Id: upstream-made\r\n\r\nok".to_vec()),
    );
    let proxy = spawn_proxy(&up.url(), &[]).await;

    let fresh = get(&proxy, "/echo", "").await;
    let ids = head_field(&fresh, "x-request-id");
    assert_eq!(ids.len(), 1, "{fresh}");
    assert!(ids[0].len() == 32 && ids[0].bytes().all(|b| b.is_ascii_hexdigit()), "{fresh}");
    assert_eq!(sent_ids(&up, "/echo"), vec![vec![ids[0].to_string()]], "the same id went upstream, once");

    let kept = get(&proxy, "/echo?2", "X-Request-Id: client-abc-123\r\n").await;
    assert_eq!(head_field(&kept, "x-request-id"), ["client-abc-123"], "{kept}");
    assert_eq!(sent_ids(&up, "/echo?2"), vec![vec!["client-abc-123".to_string()]]);

    let empty = get(&proxy, "/echo?4", "X-Request-Id:\r\n").await;
    let made = head_field(&empty, "x-request-id");
    assert!(made.len() == 1 && made[0].len() == 32, "an empty id is none: {empty}");
    assert_eq!(sent_ids(&up, "/echo?4"), vec![vec![made[0].to_string()]], "one id upstream, the new one");

    let other = get(&proxy, "/echo?3", "").await;
    assert_ne!(head_field(&other, "x-request-id"), ids, "a new id per request");
    proxy.shutdown().await;
}

#[tokio::test]
async fn hits_and_errors_carry_the_requests_id() {
    let up = spawn_raw_upstream().await;
    up.answer(
        "/cached",
        RawAnswer::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: max-age=60\r\n\r\nok".to_vec()),
    );
    up.answer("/broken", RawAnswer::BytesThenClose(b"HTTP/1.1 099 Weird\r\n\r\n".to_vec()));
    up.answer("/fine", ok("fine"));
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let miss = get(&proxy, "/cached", "X-Request-Id: first\r\n").await;
    assert_eq!(head_field(&miss, "x-request-id"), ["first"], "{miss}");
    let hit = get(&proxy, "/cached", "X-Request-Id: second\r\n").await;
    assert_eq!(head_field(&hit, "x-cache"), ["HIT"], "{hit}");
    assert_eq!(head_field(&hit, "x-request-id"), ["second"], "never the stored one: {hit}");
    let hit = get(&proxy, "/cached", "").await;
    assert_eq!(head_field(&hit, "x-request-id").len(), 1, "{hit}");
    assert_ne!(head_field(&hit, "x-request-id"), ["first"], "{hit}");

    let bad = get(&proxy, "/broken", "X-Request-Id: failing-one\r\n").await;
    assert!(bad.starts_with("HTTP/1.1 502"), "{bad}");
    assert_eq!(head_field(&bad, "x-request-id"), ["failing-one"], "{bad}");
    let own = get(&proxy, "/health/live", "").await;
    assert_eq!(head_field(&own, "x-request-id").len(), 1, "perfproxy's own answers too: {own}");
    proxy.shutdown().await;
}

/// Found by an attack from outside: `Connection` naming `X-Request-Id` or
/// `Host` removed them from the forwarded request (an upstream request with
/// no id, or with no `Host` and an empty `X-Forwarded-Host`). Both are meant
/// for every recipient: they go upstream whatever `Connection` names, while
/// the other fields it names still go.
#[tokio::test]
async fn connection_cannot_name_away_the_id_or_the_host() {
    let up = spawn_raw_upstream().await;
    up.answer("/named", ok("fine"));
    up.answer("/named?2", ok("fine"));
    let proxy = spawn_proxy(&up.url(), &[]).await;

    let answer =
        get(&proxy, "/named", "X-Request-Id: keep-me-1\r\nX-Drop: yes\r\nConnection: X-Request-Id, host, x-drop\r\n")
            .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(head_field(&answer, "x-request-id"), ["keep-me-1"], "{answer}");
    assert_eq!(sent_ids(&up, "/named"), vec![vec!["keep-me-1".to_string()]], "the id went upstream, once");
    let seen = up.seen().into_iter().find(|s| s.target == "/named").expect("the request went upstream");
    let field = |name: &str| -> Vec<String> {
        seen.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).collect()
    };
    assert_eq!(field("host"), ["app"], "{:?}", seen.headers);
    assert_eq!(field("x-forwarded-host"), ["app"], "{:?}", seen.headers);
    assert!(field("x-drop").is_empty(), "a field Connection names still goes: {:?}", seen.headers);

    // Without an id of the client's, perfproxy's own goes upstream.
    let answer = get(&proxy, "/named?2", "Connection: x-request-id\r\n").await;
    let made = head_field(&answer, "x-request-id");
    assert_eq!(made.len(), 1, "{answer}");
    assert_eq!(sent_ids(&up, "/named?2"), vec![vec![made[0].to_string()]]);
    proxy.shutdown().await;
}

/// The cache's purge answers (refused or done) carry the id too: the
/// client's when usable, else one perfproxy made (they carried none).
#[tokio::test]
async fn purge_answers_carry_the_request_id() {
    let up = spawn_raw_upstream().await;
    let proxy = spawn_proxy(&up.url(), &["--admin-token", "s3cret"]).await;
    let purge = |auth: &str, id: &str| {
        let body = r#"{"pattern":"/x/*"}"#;
        format!(
            "POST /cache/purge HTTP/1.1\r\nHost: app\r\n{auth}{id}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    for (auth, status) in
        [("", 401), ("Authorization: Bearer wrong\r\n", 403), ("Authorization: Bearer s3cret\r\n", 200)]
    {
        let req = purge(auth, "X-Request-Id: op-7\r\n");
        let (resp, _) = raw(proxy.addr, req.as_bytes(), Duration::from_millis(500)).await;
        assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{resp}");
        assert_eq!(head_field(&resp, "x-request-id"), ["op-7"], "{resp}");
        let (resp, _) = raw(proxy.addr, purge(auth, "").as_bytes(), Duration::from_millis(500)).await;
        let made = head_field(&resp, "x-request-id");
        assert!(made.len() == 1 && made[0].len() == 32, "{resp}");
    }
    let get = get(&proxy, "/cache/purge", "X-Request-Id: op-8\r\n").await;
    assert!(get.starts_with("HTTP/1.1 405"), "{get}");
    assert_eq!(head_field(&get, "x-request-id"), ["op-8"], "{get}");
    proxy.shutdown().await;
}
