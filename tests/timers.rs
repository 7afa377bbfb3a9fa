//! The express lane keeps one timer per connection for each deadline and
//! moves it lazily (not for a few milliseconds' difference), yet every
//! deadline holds exactly: a request that starts just after the previous
//! one still gets its whole `upstream_timeout_ms`, and an idle connection
//! its whole `header_read_timeout_ms`. Both lanes, the same answers.

mod support;

use std::time::{Duration, Instant};

use support::raw::{ok, spawn_raw_upstream, RawAnswer};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const LANES: [&str; 2] = ["true", "false"];

fn status_of(resp: &str) -> u16 {
    resp.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn a_request_right_after_another_gets_its_whole_upstream_timeout() {
    for lane in LANES {
        let up = spawn_raw_upstream().await;
        up.answer("/fast", ok("fast"));
        // Inside its 2 400 ms, but after the deadline the request before it
        // (250 ms earlier) had: a timer left where that one put it cuts it.
        let slow = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow".to_vec();
        up.answer("/slow", RawAnswer::Late(2250, slow));
        let config = write_config("upstream_timeout_ms = 2400\n[cache]\nenabled = false\n");
        let proxy = spawn_proxy(&up.url(), &["--express-lane", lane, "--config", &config]).await;
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"GET /fast HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
        let (resp, _) = read_until_quiet(&mut s, Duration::from_millis(40)).await;
        assert_eq!(status_of(&resp), 200, "lane {lane}: {resp}");
        tokio::time::sleep(Duration::from_millis(210)).await;
        let started = Instant::now();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
        let (resp, _) = read_until_quiet(&mut s, Duration::from_millis(3000)).await;
        assert_eq!(status_of(&resp), 200, "lane {lane} after {:?}: {resp}", started.elapsed());
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn an_idle_connection_gets_its_whole_header_read_timeout() {
    for lane in LANES {
        let up = spawn_raw_upstream().await;
        up.answer("/a", ok("a"));
        let config = write_config("header_read_timeout_ms = 2400\n");
        let proxy = spawn_proxy(&up.url(), &["--express-lane", lane, "--config", &config]).await;
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        // The first head's wait began at connect: 250 ms before this request.
        tokio::time::sleep(Duration::from_millis(250)).await;
        s.write_all(b"GET /a HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
        let (resp, _) = read_until_quiet(&mut s, Duration::from_millis(40)).await;
        assert_eq!(status_of(&resp), 200, "lane {lane}: {resp}");
        // Idle for most of the timeout (past the first wait's deadline),
        // then a request: still served.
        tokio::time::sleep(Duration::from_millis(2260)).await;
        s.write_all(b"GET /a HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
        let asked = Instant::now();
        let (resp, _) = read_until_quiet(&mut s, Duration::from_millis(300)).await;
        assert_eq!(status_of(&resp), 200, "lane {lane}: {resp}");
        // Idle past it: closed, its whole timeout after that answer.
        let (_, closed) = read_until_quiet(&mut s, Duration::from_secs(4)).await;
        assert!(closed, "lane {lane}");
        assert!(asked.elapsed() >= Duration::from_millis(2300), "lane {lane}: {:?}", asked.elapsed());
        proxy.shutdown().await;
    }
}
