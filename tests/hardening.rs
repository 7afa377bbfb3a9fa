//! Hardening (SPEC §2): unambiguous framing, smuggling shapes, head size and
//! head time limits, connection limit. Requests are written byte for byte.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_millis(700);

fn status_of(resp: &str) -> u16 {
    resp.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_and_the_connection_closed() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    // CL.TE smuggling: a front end trusting Content-Length would forward the
    // "GET /smuggled" as part of the body; one trusting chunked would see it
    // as a second request. We read chunked and close: it is neither.
    let req = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n\
5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let (resp, closed) = raw(proxy.addr, req, WAIT).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(resp.to_ascii_lowercase().contains("connection: close"), "{resp}");
    assert!(closed, "connection left open after an ambiguous request");
    let seen = up.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].body, "hello");
    assert!(!seen[0].headers.contains_key("content-length") || seen[0].headers["content-length"] == "5");
    assert!(seen.iter().all(|s| !s.uri.contains("smuggled")));
    proxy.shutdown().await;
}

#[tokio::test]
async fn differing_content_lengths_are_a_400_that_never_reaches_upstream() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    for req in [
        &b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        &b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!"[..],
    ] {
        let (resp, closed) = raw(proxy.addr, req, WAIT).await;
        assert_eq!(status_of(&resp), 400, "{resp}");
        assert!(closed);
    }
    assert!(up.seen().is_empty(), "{:?}", up.seen());
    proxy.shutdown().await;
}

#[tokio::test]
async fn transfer_encoding_not_ending_in_chunked_is_a_400() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    for te in ["gzip", "chunked, gzip", "identity", "chunked, chunked"] {
        let req = format!("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        let (resp, _) = raw(proxy.addr, req.as_bytes(), WAIT).await;
        assert_eq!(status_of(&resp), 400, "TE {te}: {resp}");
    }
    assert!(up.seen().is_empty(), "{:?}", up.seen());
    proxy.shutdown().await;
}

#[tokio::test]
async fn malformed_chunks_are_a_400_and_nothing_behind_them_is_forwarded() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let bad_bodies: [&[u8]; 3] = [
        b"zz\r\nhello\r\n0\r\n\r\n", // size not hex
        b"5\r\nhelloXX0\r\n\r\n",    // chunk not terminated by CRLF
        b"5\r\nhello\r\n0\r\n\r\n",  // well formed, control case below
    ];
    for (i, body) in bad_bodies.iter().enumerate() {
        let mut req = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(body);
        req.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
        let (resp, _) = raw(proxy.addr, &req, WAIT).await;
        let first = status_of(&resp);
        if i < 2 {
            assert!((400..500).contains(&first), "case {i}: {resp}");
        } else {
            assert_eq!(first, 200, "{resp}");
        }
    }
    // The well-formed request's follower is a real pipelined request and is
    // answered; nothing from the malformed ones got through as a request.
    let uris: Vec<String> = up.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(uris.iter().filter(|u| u.contains("smuggled")).count(), 1, "{uris:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn oversized_request_head_is_a_431() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let big = "x".repeat(80 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n");
    let (resp, _) = raw(proxy.addr, req.as_bytes(), WAIT).await;
    assert_eq!(status_of(&resp), 431, "{}", &resp[..resp.len().min(200)]);
    assert!(up.seen().is_empty());
    proxy.shutdown().await;
}

#[tokio::test]
async fn http11_without_host_is_a_400() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let (resp, _) = raw(proxy.addr, b"GET / HTTP/1.1\r\n\r\n", WAIT).await;
    assert_eq!(status_of(&resp), 400, "{resp}");
    let (resp, _) = raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", WAIT).await;
    assert_eq!(status_of(&resp), 400, "{resp}");
    // HTTP/1.0 without Host is fine: the upstream's authority is used.
    let (resp, _) = raw(proxy.addr, b"GET /ten HTTP/1.0\r\n\r\n", WAIT).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["host"], up.addr.to_string());
    proxy.shutdown().await;
}

#[tokio::test]
async fn absolute_form_target_becomes_origin_form() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let (resp, _) =
        raw(proxy.addr, b"GET http://shop.example/p?q=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n", WAIT)
            .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let seen = up.seen();
    assert_eq!(seen[0].uri, "/p?q=1");
    assert_eq!(seen[0].headers["host"], "shop.example");
    proxy.shutdown().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config("header_read_timeout_ms = 300\n")]).await;
    // Slowloris: a head that trickles in never completes.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let t = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let mut closed = false;
    for _ in 0..20 {
        if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
            closed = true;
            break;
        }
        let (_, eof) = read_until_quiet(&mut s, Duration::from_millis(100)).await;
        if eof {
            closed = true;
            break;
        }
    }
    assert!(closed, "slow client never cut off");
    assert!(t.elapsed() < Duration::from_millis(1500), "cut off only after {:?}", t.elapsed());
    // An idle keep-alive connection is closed after the same time.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let (resp, closed) = read_until_quiet(&mut s, Duration::from_millis(1500)).await;
    assert_eq!(status_of(&resp), 200);
    assert!(closed, "idle connection kept past header_read_timeout");
    assert!(up.seen().len() == 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn connections_past_the_limit_wait_for_a_slot() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config("max_connections = 2\n")]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let (resp, _) = read_until_quiet(&mut s, Duration::from_millis(300)).await;
        assert_eq!(status_of(&resp), 200);
        held.push(s);
    }
    // The third connection is not served while two are open...
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    third.write_all(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let (resp, _) = read_until_quiet(&mut third, Duration::from_millis(400)).await;
    assert_eq!(resp, "", "served past max_connections");
    // ...and is served as soon as one closes.
    drop(held.pop());
    let (resp, _) = read_until_quiet(&mut third, Duration::from_millis(500)).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    proxy.shutdown().await;
}
