//! Regressions for the HTTP/1 rulebook, written as a raw-socket client and a
//! raw-socket upstream, each run on both lanes (express and hyper) with the
//! cache on and off: an early answer never lets a body through as a
//! request, and an invalid upstream status is a 502 that harms nothing.

mod support;

use std::time::Duration;

use support::raw::{ok, spawn_raw_upstream, RawAnswer};
use support::{read_until_quiet, spawn_proxy};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Every combination of lane and cache.
const SETUPS: [[&str; 4]; 4] = [
    ["--express-lane", "true", "--config", ""],
    ["--express-lane", "false", "--config", ""],
    ["--express-lane", "true", "--config", "nocache"],
    ["--express-lane", "false", "--config", "nocache"],
];

fn args(setup: &[&'static str; 4], extra: &str) -> Vec<String> {
    let cache = if setup[3] == "nocache" { "[cache]\nenabled = false\n" } else { "" };
    let file = support::write_config(&format!("shutdown_grace_ms = 1000\n{extra}\n{cache}"));
    vec![setup[0].into(), setup[1].into(), "--config".into(), file]
}

#[tokio::test]
async fn a_body_after_an_early_504_never_reaches_the_upstream_as_a_request() {
    for setup in &SETUPS {
        let up = spawn_raw_upstream().await;
        up.answer("/x", RawAnswer::Hang);
        let a = args(setup, "upstream_timeout_ms = 400");
        let proxy = spawn_proxy(&up.url(), &a.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: abc\r\n\r\n";
        assert_eq!(smuggled.len(), 37);
        s.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 37\r\n\r\n").await.unwrap();
        let (first, _) = read_until_quiet(&mut s, Duration::from_millis(1500)).await;
        assert!(first.starts_with("HTTP/1.1 504"), "{setup:?}: {first}");
        let _ = s.write_all(smuggled).await;
        let (rest, _) = read_until_quiet(&mut s, Duration::from_millis(800)).await;
        assert!(!rest.contains("HTTP/1.1 200"), "{setup:?}: an answer to the body came back: {rest}");
        let seen = up.seen();
        assert!(seen.iter().all(|r| r.target != "/smuggled"), "{setup:?}: smuggled: {seen:?}");
        drop(s);
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn an_early_upstream_answer_closes_a_connection_whose_body_is_unread() {
    for setup in &SETUPS {
        let up = spawn_raw_upstream().await;
        up.answer("/early", RawAnswer::Early(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n".to_vec()));
        let a = args(setup, "");
        let proxy = spawn_proxy(&up.url(), &a.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: 37\r\n\r\n").await.unwrap();
        let (first, _) = read_until_quiet(&mut s, Duration::from_millis(800)).await;
        let _ = s.write_all(b"GET /smuggled HTTP/1.1\r\nHost: abc\r\n\r\n").await;
        let (rest, _) = read_until_quiet(&mut s, Duration::from_millis(800)).await;
        let seen = up.seen();
        assert!(seen.iter().all(|r| r.target != "/smuggled"), "{setup:?}: smuggled: {seen:?} {first} {rest}");
        assert!(!rest.contains("HTTP/1.1 200"), "{setup:?}: {rest}");
        drop(s);
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn statuses_outside_100_to_599_are_a_502_and_the_proxy_goes_on() {
    for setup in &SETUPS {
        let up = spawn_raw_upstream().await;
        for (path, status) in [("/s099", "099"), ("/s000", "000"), ("/s600", "600"), ("/s999", "999")] {
            let answer = format!("HTTP/1.1 {status} Weird\r\nContent-Length: 2\r\n\r\nhi");
            up.answer(path, RawAnswer::Bytes(answer.into_bytes()));
        }
        up.answer("/fine", ok("fine"));
        let a = args(setup, "");
        let proxy = spawn_proxy(&up.url(), &a.iter().map(String::as_str).collect::<Vec<_>>()).await;
        for path in ["/s099", "/s000", "/s600", "/s999"] {
            for method in ["GET", "POST", "DELETE"] {
                let req =
                    format!("{method} {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let (resp, _) = support::raw(proxy.addr, req.as_bytes(), Duration::from_millis(600)).await;
                assert!(resp.starts_with("HTTP/1.1 502"), "{setup:?} {method} {path}: {resp}");
            }
        }
        let fine = support::get(&proxy.url("/fine")).await;
        assert_eq!((fine.status, fine.text()), (200, "fine".to_string()), "{setup:?}");
        let perf = support::get(&proxy.url("/performance")).await.json();
        assert_eq!(perf["requests"]["in_flight"], 0, "{setup:?}: a request left counted in flight");
        proxy.shutdown().await;
    }
}
