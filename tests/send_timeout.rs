//! `send_timeout_ms`: a client that stops taking an answer is closed (an
//! HTTP/2 stream reset) once none of its bytes went out for that long, and
//! the upstream connection behind it is let go; a slow client that keeps
//! reading is never cut. Both HTTP/1.1 lanes, HTTP/2 by its socket and by
//! its flow-control window.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::h2raw::{self, frame, HEADERS, RST_STREAM};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The answer's size: far more than the sockets between client and proxy hold.
const BIG: usize = 256 << 20;
const CANCEL: u32 = 0x8;
/// A stored answer's size (`/cached`), sent to HTTP/2 clients in one piece
/// were it not cut.
const CACHED: usize = 100 * 1024;

/// An upstream answering `/big` with [`BIG`] bytes (the rest: five),
/// counting the connections whose answer could not be written to its end
/// (perfproxy let them go).
async fn big_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(AtomicUsize::new(0));
    let counted = cut.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let cut = counted.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                if head.starts_with(b"GET /cached") {
                    let head =
                        format!("HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: {CACHED}\r\n\r\n");
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&vec![b'c'; CACHED]).await;
                    let _ = s.read(&mut byte).await;
                    return;
                }
                if !head.starts_with(b"GET /big") {
                    // `/small`, and perfproxy's health probes.
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall").await;
                    let _ = s.read(&mut byte).await;
                    return;
                }
                let piece = vec![b'x'; 64 * 1024];
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
                let mut written = s.write_all(head.as_bytes()).await.is_ok();
                let mut left = BIG;
                while written && left > 0 {
                    written = s.write_all(&piece[..left.min(piece.len())]).await.is_ok();
                    left = left.saturating_sub(piece.len());
                }
                if !written {
                    cut.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (format!("http://{addr}"), cut)
}

async fn proxy_for(upstream: &str, lane: &str) -> Proxy {
    let config = write_config("send_timeout_ms = 1000\n[cache]\nenabled = false\n");
    spawn_proxy(upstream, &["--express-lane", lane, "--config", &config]).await
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_its_upstream_let_go() {
    for lane in ["true", "false"] {
        let (upstream, cut) = big_upstream().await;
        let proxy = proxy_for(&upstream, lane).await;
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
        let started = Instant::now();
        eventually(15, &format!("lane {lane}: the upstream connection let go"), || {
            let cut = cut.clone();
            async move { cut.load(Ordering::SeqCst) == 1 }
        })
        .await;
        assert!(started.elapsed() >= Duration::from_millis(900), "lane {lane}: cut before the timeout");
        // What the sockets held, then the end: never the whole answer.
        let mut got = 0usize;
        let mut chunk = vec![0u8; 1 << 16];
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => got += n,
                Err(_) => break false,
            }
        };
        assert!(ended, "lane {lane}: the client connection is closed");
        assert!(got < BIG, "lane {lane}: {got} bytes");
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_slow_client_that_keeps_reading_is_not_cut() {
    for lane in ["true", "false"] {
        let (upstream, cut) = big_upstream().await;
        let config = write_config("send_timeout_ms = 3000\n[cache]\nenabled = false\n");
        let proxy = spawn_proxy(&upstream, &["--express-lane", lane, "--config", &config]).await;
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
        // 256 KB every 200 ms for 8 s: the answer takes far longer than
        // the timeout, and perfproxy's socket (up to 4 MB queued on this
        // machine; writable again once half of it left) keeps moving.
        let mut chunk = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(8) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut taken = 0;
            while taken < chunk.len() {
                let n =
                    tokio::time::timeout(Duration::from_secs(2), s.read(&mut chunk[taken..])).await.unwrap().unwrap();
                assert!(n > 0, "lane {lane}: closed after {got} bytes");
                taken += n;
            }
            got += taken;
        }
        assert_eq!(cut.load(Ordering::SeqCst), 0, "lane {lane}: cut after {got} bytes");
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn an_http2_stream_whose_window_stays_shut_is_reset() {
    let (upstream, cut) = big_upstream().await;
    let proxy = proxy_for(&upstream, "true").await;
    // The client reads the connection (and would answer PINGs) but never
    // opens the stream's window past the first 64 KB.
    let mut s = h2raw::connect(proxy.addr).await;
    s.write_all(&frame(HEADERS, 0x5, 1, &h2raw::request("GET", "/big", &[]))).await.unwrap();
    let (frames, _) = h2raw::read_frames(&mut s, Duration::from_secs(3)).await;
    let reset = frames.iter().find(|f| f.kind == RST_STREAM && f.stream == 1);
    assert_eq!(reset.and_then(|f| f.error_code()), Some(CANCEL), "{frames:?}");
    eventually(5, "the upstream connection let go", || {
        let cut = cut.clone();
        async move { cut.load(Ordering::SeqCst) == 1 }
    })
    .await;

    // A window of 1 byte: the last piece of a small answer is watched too
    // (hyper ends its task once it handed h2 the last piece, which h2 would
    // keep, unwatched, for as long as the client answers PINGs).
    let (frames, s) = h2_with_window(proxy.addr, 1, "/small", Duration::from_secs(3)).await;
    let reset = frames.iter().find(|f| f.kind == RST_STREAM && f.stream == 1);
    assert_eq!(reset.and_then(|f| f.error_code()), Some(CANCEL), "{frames:?}");
    drop(s);

    // A window of 0 from the start: not even a small answer's first byte.
    let (frames, s) = h2_with_window(proxy.addr, 0, "/small", Duration::from_secs(3)).await;
    assert!(frames.iter().any(|f| f.kind == HEADERS && f.stream == 1), "{frames:?}");
    let reset = frames.iter().find(|f| f.kind == RST_STREAM && f.stream == 1);
    assert_eq!(reset.and_then(|f| f.error_code()), Some(CANCEL), "{frames:?}");
    drop(s);
    proxy.shutdown().await;
}

/// An HTTP/2 connection whose streams' windows start at `window`
/// (`SETTINGS_INITIAL_WINDOW_SIZE`), a GET of `path` on stream 1, and the
/// frames read until `quiet` passes without any (none read when `quiet` is zero).
async fn h2_with_window(
    addr: std::net::SocketAddr,
    window: u32,
    path: &str,
    quiet: Duration,
) -> (Vec<h2raw::Frame>, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut setting = vec![0, 4];
    setting.extend_from_slice(&window.to_be_bytes());
    hello.extend(frame(h2raw::SETTINGS, 0, 0, &setting));
    hello.extend(frame(HEADERS, 0x5, 1, &h2raw::request("GET", path, &[])));
    s.write_all(&hello).await.unwrap();
    let frames = if quiet.is_zero() { Vec::new() } else { h2raw::read_frames(&mut s, quiet).await.0 };
    (frames, s)
}

#[tokio::test]
async fn an_http2_answer_ends_once_its_data_is_out() {
    // A body that fits the window ends as before: the data, then its end
    // (an empty DATA frame with END_STREAM), no reset.
    let (upstream, _) = big_upstream().await;
    let proxy = proxy_for(&upstream, "true").await;
    let mut s = h2raw::connect(proxy.addr).await;
    s.write_all(&frame(HEADERS, 0x5, 1, &h2raw::request("GET", "/small", &[]))).await.unwrap();
    let (frames, _) = h2raw::read_frames(&mut s, Duration::from_millis(1500)).await;
    let data: Vec<u8> = frames.iter().filter(|f| f.kind == h2raw::DATA).flat_map(|f| f.payload.clone()).collect();
    assert_eq!(data, b"small");
    assert!(frames.iter().any(|f| f.kind == h2raw::DATA && f.flags & h2raw::END_STREAM != 0), "{frames:?}");
    assert!(!frames.iter().any(|f| f.kind == RST_STREAM), "{frames:?}");
    drop(s);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_slow_http2_client_gets_a_whole_stored_answer() {
    // A stored answer is one piece of data; a client whose stream window
    // is 6 000 bytes, reopened every 300 ms (20 KB/s, as one of many
    // streams sharing a slow link), needs about 5 s for it, over two send
    // timeouts: it goes in pieces of 16 KB, each of which the client takes
    // in time (a 64 KB piece would take it 3.3 s).
    let (upstream, _) = big_upstream().await;
    let config = write_config("send_timeout_ms = 2000\n");
    let proxy = spawn_proxy(&upstream, &["--config", &config]).await;
    assert_eq!(get(&proxy.url("/cached")).await.body.len(), CACHED);
    let (_, mut s) = h2_with_window(proxy.addr, 6000, "/cached", Duration::ZERO).await;
    let (mut buf, mut data, mut ended) = (Vec::new(), 0usize, false);
    let mut chunk = vec![0u8; 1 << 16];
    let started = Instant::now();
    while !ended && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), s.read(&mut chunk)).await {
            assert!(n > 0, "closed after {data} bytes");
            buf.extend_from_slice(&chunk[..n]);
        }
        let mut taken = 0u32;
        while buf.len() >= 9 {
            let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            assert_ne!(kind, RST_STREAM, "reset after {data} bytes");
            if kind == h2raw::DATA {
                data += len;
                taken += len as u32;
                ended |= flags & h2raw::END_STREAM != 0;
            }
            buf.drain(..9 + len);
        }
        if taken > 0 {
            for stream in [0, 1] {
                s.write_all(&frame(0x8, 0, stream, &taken.to_be_bytes())).await.unwrap();
            }
        }
    }
    assert!(ended, "ended: {data} bytes");
    assert_eq!(data, CACHED);
    assert!(started.elapsed() > Duration::from_secs(3), "the client was slow: {:?}", started.elapsed());
    // Closed first: a raw client answers no PING, which a drain's GOAWAY waits for.
    drop(s);
    proxy.shutdown().await;
}
