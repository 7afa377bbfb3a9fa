//! The hyper lane parks an idle HTTP/1.1 keep-alive connection (hyper's
//! buffers let go while it waits for its next request) and takes it up
//! again: nothing a client sends is lost across a park, pipelined or split
//! heads included, and the idle timeout and the drain still end it.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_millis(500);

async fn hyper_lane(extra: &str) -> (Upstream, Proxy) {
    let up = spawn_upstream().await;
    let config = write_config(&format!("express_lane = false\n{extra}"));
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    (up, proxy)
}

fn answers(text: &str) -> usize {
    text.matches("HTTP/1.1 200").count()
}

#[tokio::test]
async fn a_parked_connection_serves_its_next_requests() {
    let (up, proxy) = hyper_lane("").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let get = b"GET /a HTTP/1.1\r\nHost: app\r\n\r\n";
    for round in 0..3 {
        s.write_all(get).await.unwrap();
        let (resp, closed) = read_until_quiet(&mut s, WAIT).await;
        assert_eq!(answers(&resp), 1, "round {round}: {resp}");
        assert!(!closed, "round {round}: the connection stays open");
        // Idle long enough to be parked.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(up.seen().len(), 3);
    proxy.shutdown().await;
}

#[tokio::test]
async fn pipelined_and_split_heads_are_not_lost_across_a_park() {
    let (up, proxy) = hyper_lane("").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let get = b"GET /p HTTP/1.1\r\nHost: app\r\n\r\n";
    // Two whole requests and the start of a third in one write.
    s.write_all(&[&get[..], &get[..], b"GET /p HTTP/1.1\r\nHo"].concat()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"st: app\r\n\r\n").await.unwrap();
    let (resp, closed) = read_until_quiet(&mut s, WAIT).await;
    assert_eq!(answers(&resp), 3, "{resp}");
    assert!(!closed);
    // A head split across writes after a park.
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(b"GET /p HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"Host: app\r\n\r\n").await.unwrap();
    let (resp, _) = read_until_quiet(&mut s, WAIT).await;
    assert_eq!(answers(&resp), 1, "{resp}");
    assert_eq!(up.seen().len(), 4);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_request_with_a_body_then_idle_then_another() {
    let (up, proxy) = hyper_lane("").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST /b HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello").await.unwrap();
    let (resp, _) = read_until_quiet(&mut s, WAIT).await;
    assert_eq!(answers(&resp), 1, "{resp}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(b"GET /b HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
    let (resp, _) = read_until_quiet(&mut s, WAIT).await;
    assert_eq!(answers(&resp), 1, "{resp}");
    assert_eq!(up.seen().len(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_parked_connection_is_closed_after_the_idle_timeout() {
    let (_up, proxy) = hyper_lane("header_read_timeout_ms = 400\n").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /t HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let (resp, closed) = read_until_quiet(&mut s, Duration::from_secs(3)).await;
    assert_eq!(answers(&resp), 1, "{resp}");
    assert!(closed, "closed when idle past header_read_timeout_ms");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(350) && took < Duration::from_millis(2500), "{took:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_parked_connection_gets_one_timeout_for_the_idle_wait_and_the_head() {
    let (up, proxy) = hyper_lane("header_read_timeout_ms = 1000\n").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /s0 HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
    let (resp, _) = read_until_quiet(&mut s, Duration::from_millis(100)).await;
    assert_eq!(answers(&resp), 1, "{resp}");
    // Idle (parked), then a head begun and finished past the one timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.write_all(b"G").await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _ = s.write_all(b"ET /s1 HTTP/1.1\r\nHost: app\r\n\r\n").await;
    let (resp, closed) = read_until_quiet(&mut s, Duration::from_millis(500)).await;
    assert_eq!(answers(&resp), 0, "{resp}");
    assert!(closed, "closed once the head was not whole in time");
    assert_eq!(up.seen().len(), 1);
    proxy.shutdown().await;
}
