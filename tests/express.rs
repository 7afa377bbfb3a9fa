//! The express lane against raw bytes on both sides: pipelining, a
//! connection handed to hyper mid-stream, bodies split across reads, and
//! upstream framings a hyper upstream never sends (1xx before the answer,
//! chunked with extensions and trailers, close-delimited, nonsense, a
//! connection closed behind the pool's back). Each upstream case runs with
//! the cache off (every request on the express lane) and on (the first GET
//! of a URL goes through the cache, on hyper's client).

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_millis(700);

fn statuses(resp: &str) -> Vec<u16> {
    resp.match_indices("HTTP/1.1 ").filter_map(|(i, _)| resp[i + 9..i + 12].parse().ok()).collect()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let mut reqs = Vec::new();
    for code in [201, 202, 203, 204] {
        reqs.extend_from_slice(format!("GET /status/{code} HTTP/1.1\r\nHost: app\r\n\r\n").as_bytes());
    }
    let (resp, closed) = raw(proxy.addr, &reqs, WAIT).await;
    assert_eq!(statuses(&resp), [201, 202, 203, 204], "{resp}");
    assert!(!closed, "keep-alive connection closed");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connection_moves_to_hyper_mid_stream_and_loses_nothing() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    // Plain, then a chunked upload (hyper's), then plain again: one write.
    let reqs = b"GET /status/201 HTTP/1.1\r\nHost: app\r\n\r\n\
        POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
        GET /status/202 HTTP/1.1\r\nHost: app\r\n\r\n";
    let (resp, _) = raw(proxy.addr, reqs, WAIT).await;
    assert_eq!(statuses(&resp), [201, 200, 202], "{resp}");
    assert!(resp.contains("hello"), "{resp}");
    let echoed = up.seen().into_iter().find(|s| s.uri == "/echo").expect("upload forwarded");
    assert_eq!(echoed.body, "hello");
    proxy.shutdown().await;
}

#[tokio::test]
async fn request_bodies_split_across_reads_reach_the_upstream_whole() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let body: Vec<u8> = (0..50_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!("POST /echo HTTP/1.1\r\nHost: app\r\nContent-Length: {}\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).await.unwrap();
    for part in body.chunks(20_000) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(part).await.unwrap();
    }
    // The next request follows on the same connection.
    s.write_all(b"GET /status/202 HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
    let (resp, _) = read_until_quiet(&mut s, WAIT).await;
    assert_eq!(statuses(&resp), [200, 202]);
    let echoed = up.seen().into_iter().find(|s| s.uri == "/echo").unwrap();
    assert_eq!(echoed.body.as_ref(), &body[..]);
    let forwarded = &echoed.headers;
    assert_eq!(forwarded["x-forwarded-for"], "127.0.0.1");
    assert_eq!(forwarded["x-forwarded-host"], "app");
    assert_eq!(forwarded["via"], "1.1 perfproxy");
    proxy.shutdown().await;
}

/// An upstream that answers each request head with fixed bytes by path,
/// counting connections; `/eof` and `/quiet-close` close after answering.
async fn raw_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let answer: &[u8] = match path.as_str() {
                        "/early" => {
                            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n\
                                      HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                        }
                        "/chunked" => {
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
                                        4;note=1\r\nabcd\r\n2\r\nef\r\n0\r\nX-Sum: 6\r\n\r\n"
                        }
                        "/eof" => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
                        "/bad" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
                        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain",
                    };
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                    if path == "/eof" || path == "/quiet-close" {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns)
}

/// One request on a connection of its own (`Connection: close`).
async fn through(proxy: &Proxy, method: &str, path: &str) -> (Vec<u16>, String) {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let (resp, closed) = raw(proxy.addr, req.as_bytes(), WAIT).await;
    assert!(closed, "Connection: close not honoured: {resp}");
    (statuses(&resp), resp)
}

#[tokio::test]
async fn upstream_framings_pass_through_and_the_connection_is_reused() {
    for cache in ["false", "true"] {
        let (addr, conns) = raw_upstream().await;
        let cfg = write_config(&format!("[cache]\nenabled = {cache}\n"));
        let proxy = spawn_proxy(&format!("http://{addr}"), &["--config", &cfg]).await;
        let base = conns.load(Ordering::SeqCst);

        let (codes, resp) = through(&proxy, "GET", "/early").await;
        assert_eq!(codes, [200], "cache {cache}: the 103 is not relayed: {resp}");
        assert!(resp.ends_with("ok"), "{resp}");
        // A chunked answer ends where its last chunk says: the next request
        // on the same client connection is answered too.
        let reqs =
            b"GET /chunked HTTP/1.1\r\nHost: app\r\n\r\nGET /plain HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n";
        let (resp, _) = raw(proxy.addr, reqs, WAIT).await;
        assert_eq!(statuses(&resp), [200, 200], "cache {cache}: {resp}");
        assert!(resp.contains("abcd") && resp.contains("ef") && resp.ends_with("plain"), "{resp}");
        // Probes dial their own connections; the requests shared one.
        let used = conns.load(Ordering::SeqCst) - base;
        // Through hyper (the lane matrix), a stream returns to the pool one
        // worker turn after its exchange: a request right behind may dial.
        let hyper_only = std::env::var("PERFPROXY_EXPRESS_LANE").is_ok_and(|v| v == "false");
        let most = if hyper_only { 3 } else { 2 };
        assert!(used <= most, "cache {cache}: {used} upstream connections for 3 sequential requests");

        let (codes, resp) = through(&proxy, "GET", "/eof").await;
        assert_eq!(codes, [200]);
        assert!(resp.contains("until the end"), "cache {cache}: {resp}");
        let (codes, _) = through(&proxy, "GET", "/bad").await;
        assert_eq!(codes, [502], "cache {cache}: differing Content-Lengths from the upstream");
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_never_used() {
    let (addr, conns) = raw_upstream().await;
    let cfg = write_config("[cache]\nenabled = false\n");
    let proxy = spawn_proxy(&format!("http://{addr}"), &["--config", &cfg]).await;
    let base = conns.load(Ordering::SeqCst);
    for i in 0..20 {
        // The upstream closes after each answer, without saying so. A POST
        // is never retried: only the pool's check keeps it off a dead one.
        let (codes, resp) = through(&proxy, "POST", "/quiet-close").await;
        assert_eq!(codes, [200], "request {i}: {resp}");
    }
    assert!(conns.load(Ordering::SeqCst) - base >= 20);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_that_leaves_cancels_its_upstream_request_on_both_lanes() {
    let up = spawn_upstream().await;
    let cfg = write_config("[cache]\nenabled = false\n");
    let proxy = spawn_proxy(&up.url(), &["--config", &cfg]).await;
    // HTTP/1.1 stays on the express lane; HTTP/1.0 is handed to hyper.
    for (i, version) in ["HTTP/1.1", "HTTP/1.0"].into_iter().enumerate() {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(format!("GET /delay/2000 {version}\r\nHost: app\r\n\r\n").as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(s);
        let cancelled = || up.cancelled.load(Ordering::SeqCst) == i + 1;
        eventually(2, &format!("{version}: upstream request cancelled"), || async move { cancelled() }).await;
    }
    // Both recorded as 499, nothing left in flight.
    eventually(3, "two 499s recorded", || async {
        let doc = get(&proxy.url("/performance")).await.json();
        doc["requests"]["status"]["4xx"] == 2 && doc["requests"]["in_flight"] == 0
    })
    .await;
    proxy.shutdown().await;
}
