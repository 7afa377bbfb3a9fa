//! HTTP/2 (h2c, prior knowledge) on the proxy listener: served beside
//! HTTP/1.1 on the same port, through the same request path (cache,
//! metrics, forwarding headers); and its own attacks bounded, each sent with
//! a raw frame writer: too many streams, an oversized header list, a
//! CONTINUATION flood and rapid reset (CVE-2023-44487). None reaches the
//! upstream beyond the limits, and the proxy serves the next client.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::h2raw::{self, frame, Frame};
use support::*;
use tokio::io::AsyncWriteExt;

/// An HTTP/2 client connection (prior knowledge) to `addr`.
async fn h2_client(addr: std::net::SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    url: &str,
) -> (u16, http::HeaderMap, String) {
    let req = http::Request::get(url).body(Full::default()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status.as_u16(), parts.headers, String::from_utf8_lossy(&body).into_owned())
}

/// A fresh HTTP/1.1 and HTTP/2 request both answered: the proxy is fine.
async fn still_serves(proxy: &Proxy) {
    assert_eq!(get(&proxy.url("/after")).await.status, 200, "HTTP/1.1 after the attack");
    let mut h2 = h2_client(proxy.addr).await;
    assert_eq!(h2_get(&mut h2, &proxy.url("/after")).await.0, 200, "HTTP/2 after the attack");
}

fn count(frames: &[Frame], kind: u8, code: u32) -> usize {
    frames.iter().filter(|f| f.kind == kind && f.error_code() == Some(code)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_and_http_1_1_share_the_port_and_the_request_path() {
    let up = spawn_upstream().await;
    up.script("/cached", 200, &[("cache-control", "max-age=60")], "stored");
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let mut h2 = h2_client(proxy.addr).await;
    let (status, headers, _) = h2_get(&mut h2, &proxy.url("/api/items/7?x=1")).await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("x-request-id") && headers.contains_key("server-timing"), "{headers:?}");
    assert!(!headers.contains_key("connection"), "no connection-specific fields in HTTP/2: {headers:?}");
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.uri, "/api/items/7?x=1");
    assert_eq!(seen.headers["host"], proxy.addr.to_string(), ":authority becomes Host");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");

    // A body, streamed.
    let req = http::Request::post(proxy.url("/echo")).body(Full::new(Bytes::from_static(b"posted over h2"))).unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 200);
    assert_eq!(&up.seen().pop().unwrap().body[..], b"posted over h2");

    // The cache answers HTTP/2 as it answers HTTP/1.1 (stored by one, hit by the other).
    assert_eq!(get(&proxy.url("/cached")).await.status, 200);
    let (status, headers, body) = h2_get(&mut h2, &proxy.url("/cached")).await;
    assert_eq!((status, body.as_str(), headers["x-cache"].to_str().unwrap()), (200, "stored", "HIT"));
    assert_eq!(up.hits("/cached"), 1);

    // curl, as users run it.
    let out = std::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
        .arg(proxy.url("/api/curl"))
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");

    // HTTP/1.1 on the same port, meanwhile.
    assert_eq!(get(&proxy.url("/api/items/8")).await.status, 200);
    let url = proxy.url("/performance");
    eventually(5, "HTTP/2 requests are recorded", || async {
        let perf = get(&url).await.json();
        perf["requests"]["total"].as_u64() >= Some(5)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_header_read_timeout() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config("header_read_timeout_ms = 500\n")]).await;
    // A client that sends the preface and then no request; it answers the
    // PING of the graceful GOAWAY, as every HTTP/2 client library does.
    let started = Instant::now();
    let mut s = h2raw::connect(proxy.addr).await;
    let (mut frames, mut closed) = (Vec::new(), false);
    while !closed && started.elapsed() < Duration::from_secs(5) {
        let (more, ended) = h2raw::read_frames(&mut s, Duration::from_millis(200)).await;
        for ping in more.iter().filter(|f| f.kind == 6 && f.flags == 0) {
            let _ = s.write_all(&frame(6, 1, 0, &ping.payload)).await;
        }
        frames.extend(more);
        closed = ended;
    }
    assert!(closed, "closed: {frames:?}");
    assert!(frames.iter().any(|f| f.kind == h2raw::GOAWAY), "{frames:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // A connection that is silent from the start is closed as an HTTP/1.1 one is.
    let (_, closed) = raw(proxy.addr, b"", Duration::from_secs(3)).await;
    assert!(closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preface_after_an_http_1_1_request_is_not_taken_for_http2() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /first HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let (first, _) = read_until_quiet(&mut s, Duration::from_millis(300)).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend(frame(h2raw::SETTINGS, 0, 0, &[]));
    h2.extend(frame(h2raw::HEADERS, h2raw::END_HEADERS | h2raw::END_STREAM, 1, &h2raw::request("GET", "/second", &[])));
    s.write_all(&h2).await.unwrap();
    let (after, _) = read_until_quiet(&mut s, Duration::from_millis(500)).await;
    assert!(!after.as_bytes().starts_with(&[0, 0]), "answered as HTTP/2: {after:?}");
    assert_eq!(up.hits("/second"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_max_concurrent_streams_are_refused() {
    let up = spawn_upstream().await;
    up.script_slow("/slow", &[], "late", 1500);
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config("[http2]\nmax_concurrent_streams = 10\n")]).await;
    let mut s = h2raw::connect(proxy.addr).await;
    let mut out = Vec::new();
    for i in 0..30u32 {
        out.extend(frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            1 + 2 * i,
            &h2raw::request("GET", "/slow", &[]),
        ));
    }
    s.write_all(&out).await.unwrap();
    let (frames, _) = h2raw::read_frames(&mut s, Duration::from_millis(2500)).await;
    // REFUSED_STREAM (0x7): never processed, safe for the client to retry.
    let refused = count(&frames, h2raw::RST_STREAM, 0x7);
    let answered = frames.iter().filter(|f| f.kind == h2raw::HEADERS).count();
    assert_eq!((refused, answered), (20, 10), "{frames:?}");
    assert_eq!(up.hits("/slow"), 10, "refused streams never reach the upstream");
    still_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_list_never_reaches_the_upstream() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let mut s = h2raw::connect(proxy.addr).await;
    let big = "a".repeat(70_000);
    let block = h2raw::request("GET", "/big", &[("x-big", &big)]);
    // The block split at the default maximum frame size, 16 384.
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
    for (i, c) in chunks.iter().enumerate() {
        let kind = if i == 0 { h2raw::HEADERS } else { h2raw::CONTINUATION };
        let flags = if i + 1 == chunks.len() { h2raw::END_HEADERS | h2raw::END_STREAM } else { 0 };
        out.extend(frame(kind, flags, 1, c));
    }
    let _ = s.write_all(&out).await;
    let (frames, closed) = h2raw::read_frames(&mut s, Duration::from_millis(1000)).await;
    // 431 Request Header Fields Too Large (a literal `:status`), then the stream reset.
    // h2 writes it as `:status` (static name 8) with the Huffman-coded value "431".
    let status_431 = [0x48, 0x83, 0x69, 0x90, 0xff];
    let answered_431 = frames.iter().any(|f| f.kind == h2raw::HEADERS && f.stream == 1 && f.payload == status_431);
    let reset = frames.iter().any(|f| f.kind == h2raw::RST_STREAM && f.stream == 1);
    assert!(answered_431 && reset && !closed, "431, the stream reset, the connection kept: {frames:?}");
    assert_eq!(up.hits("/big"), 0);
    still_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off_at_the_header_list_limit() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let mut s = h2raw::connect(proxy.addr).await;
    // An endless header block: HEADERS without END_HEADERS, then tiny
    // CONTINUATION frames (each a valid field), 40 MB of them if all were read.
    let mut out = frame(h2raw::HEADERS, h2raw::END_STREAM, 1, &h2raw::request("GET", "/flood", &[]));
    let piece = frame(h2raw::CONTINUATION, 0, 1, &h2raw::block(&[("x-flood", "0123456789")]));
    let started = Instant::now();
    let mut written = 0usize;
    let mut batch = Vec::new();
    for _ in 0..1000 {
        batch.extend_from_slice(&piece);
    }
    while written < 40 << 20 {
        match tokio::time::timeout(Duration::from_secs(2), s.write_all(if written == 0 { &out } else { &batch })).await
        {
            Ok(Ok(())) => written += if written == 0 { out.len() } else { batch.len() },
            // Closed on us, or no longer read: either ends the flood.
            _ => break,
        }
        if written == out.len() {
            out.clear();
        }
    }
    assert!(written < 40 << 20, "the flood was read to the end ({written} bytes)");
    eprintln!("continuation flood: cut off after {written} bytes written");
    let (frames, closed) = h2raw::read_frames(&mut s, Duration::from_millis(1000)).await;
    assert!(closed || frames.iter().any(|f| f.kind == h2raw::GOAWAY), "{frames:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(up.hits("/flood"), 0);
    still_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_a_goaway_and_few_requests_reach_the_upstream() {
    let up = spawn_upstream().await;
    up.script_slow("/slow", &[], "late", 200);
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let mut s = h2raw::connect(proxy.addr).await;
    // 5 000 streams, each opened and cancelled (RST_STREAM CANCEL, 0x8) at once.
    let mut out = Vec::new();
    for i in 0..5000u32 {
        let id = 1 + 2 * i;
        out.extend(frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            id,
            &h2raw::request("GET", "/slow", &[]),
        ));
        out.extend(frame(h2raw::RST_STREAM, 0, id, &0x8u32.to_be_bytes()));
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(&out)).await;
    let (frames, _) = h2raw::read_frames(&mut s, Duration::from_millis(1000)).await;
    // ENHANCE_YOUR_CALM (0xb).
    assert_eq!(
        count(&frames, h2raw::GOAWAY, 0xb),
        1,
        "{:?}",
        frames.iter().filter(|f| f.kind == h2raw::GOAWAY).collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reached = up.hits("/slow");
    eprintln!("rapid reset: {reached} of 5000 streams reached the upstream");
    assert!(reached < 200, "{reached} of 5000 reset streams reached the upstream");
    still_serves(&proxy).await;
}

/// Found by an attack from outside: streams reset only after they were
/// forwarded (100 at a time, cancelled 100 ms later, again and again) were
/// never counted, so one connection kept thousands of requests at the
/// upstream past its 100-stream limit. A connection whose client cancels
/// most of its streams in progress, past 100, gets a GOAWAY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cancelled_after_they_were_forwarded_get_a_goaway() {
    let up = spawn_upstream().await;
    up.script_slow("/slow-cancel", &[], "late", 5_000);
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let mut s = h2raw::connect(proxy.addr).await;
    let mut frames = Vec::new();
    for round in 0..10u32 {
        let ids: Vec<u32> = (0..100).map(|i| 1 + 2 * (round * 100 + i)).collect();
        let mut out = Vec::new();
        for &id in &ids {
            let fields = h2raw::request("GET", "/slow-cancel", &[]);
            out.extend(frame(h2raw::HEADERS, h2raw::END_HEADERS | h2raw::END_STREAM, id, &fields));
        }
        if s.write_all(&out).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let resets: Vec<u8> =
            ids.iter().flat_map(|&id| frame(h2raw::RST_STREAM, 0, id, &0x8u32.to_be_bytes())).collect();
        if s.write_all(&resets).await.is_err() {
            break;
        }
        let (got, closed) = h2raw::read_frames(&mut s, Duration::from_millis(100)).await;
        frames.extend(got);
        if closed || frames.iter().any(|f| f.kind == h2raw::GOAWAY) {
            break;
        }
    }
    assert!(frames.iter().any(|f| f.kind == h2raw::GOAWAY), "a GOAWAY: {frames:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reached = up.hits("/slow-cancel");
    eprintln!("cancel after forwarding: {reached} streams reached the upstream");
    assert!(reached <= 250, "{reached} cancelled streams reached the upstream");
    drop(s);
    still_serves(&proxy).await;
}
