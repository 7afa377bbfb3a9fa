//! An upstream's chunked body on both lanes (the express lane, and every
//! request through hyper with `--express-lane false`), from a raw upstream:
//! trailer fields are read but not relayed and the answer is stored; a
//! first chunk that is malformed is a `502`, a later one cuts the answer
//! off; an upstream that closes after the head cuts it off the same way;
//! `Transfer-Encoding` and a request's `Content-Length` are written as
//! hyper writes them.

mod support;

use std::time::Duration;

use support::raw::{spawn_raw_upstream, RawAnswer, RawUpstream};
use support::*;

const LANES: [&str; 2] = ["true", "false"];
const WAIT: Duration = Duration::from_millis(600);

fn status_of(resp: &str) -> u16 {
    resp.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

async fn proxy_on(up: &RawUpstream, lane: &str) -> Proxy {
    spawn_proxy(&up.url(), &["--express-lane", lane]).await
}

async fn get(proxy: &Proxy, path: &str) -> (String, bool) {
    raw(proxy.addr, format!("GET {path} HTTP/1.1\r\nHost: app\r\n\r\n").as_bytes(), WAIT).await
}

/// nginx (`proxy_pass_trailers off`) and Envoy drop an HTTP/1.1 upstream's
/// trailer fields; hyper's lane did, the express lane relayed them. Neither
/// does now, and the answer is stored and recorded as answered (hyper's
/// lane neither stored it, though it said `stored`, nor recorded it as
/// answered: its server drops a body after its trailers).
#[tokio::test]
async fn trailer_fields_are_dropped_and_the_answer_stored_on_both_lanes() {
    let head = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTrailer: X-Sum\r\nTransfer-Encoding:  CHUNKED\r\n\r\n";
    for lane in LANES {
        let up = spawn_raw_upstream().await;
        let body = "5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\nX-Other: 2\r\n\r\n";
        up.answer("/t", RawAnswer::Bytes(format!("{head}{body}").into_bytes()));
        let proxy = proxy_on(&up, lane).await;
        let (resp, closed) = get(&proxy, "/t").await;
        assert!(!closed, "lane {lane}: {resp}");
        assert_eq!(status_of(&resp), 200, "lane {lane}: {resp}");
        assert!(resp.ends_with("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "lane {lane}: {resp:?}");
        assert!(!resp.contains("X-Sum") && !resp.contains("X-Other") && !resp.contains("railer"), "{resp:?}");
        let lower = resp.to_ascii_lowercase();
        assert_eq!(lower.matches("transfer-encoding").count(), 1, "lane {lane}: {resp:?}");
        assert!(resp.contains("transfer-encoding: chunked\r\n"), "written as hyper writes it, lane {lane}: {resp:?}");
        assert!(resp.contains("fwd=uri-miss; stored"), "lane {lane}: {resp}");
        let (hit, _) = get(&proxy, "/t").await;
        assert!(hit.contains("x-cache: HIT") && hit.ends_with("hello world"), "lane {lane}: {hit}");
        assert_eq!(up.seen().len(), 1, "lane {lane}");
        let doc = support::get(&proxy.url("/performance")).await.json();
        assert_eq!(doc["requests"]["status"]["2xx"], 2, "lane {lane}: {}", doc["requests"]);
        assert_eq!(doc["requests"]["status"]["4xx"], 0, "lane {lane}: not a client that left: {}", doc["requests"]);
        proxy.shutdown().await;
    }
}

/// A chunked body whose first bytes are not chunked framing, read with the
/// head: a `502` on both lanes (the express lane closed with nothing sent,
/// hyper's sent the head and closed). Malformed after good data: the head
/// and that data go, then the connection is closed, on both lanes (the
/// express lane sent nothing at all when both came in one read).
#[tokio::test]
async fn a_malformed_first_chunk_is_a_502_a_later_one_cuts_the_answer_off() {
    let head = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n";
    for lane in LANES {
        let up = spawn_raw_upstream().await;
        up.answer("/size", RawAnswer::BytesThenClose(format!("{head}zz\r\nhello\r\n0\r\n\r\n").into_bytes()));
        up.answer("/trailer", RawAnswer::BytesThenClose(format!("{head}0\r\nnot a field\r\n\r\n").into_bytes()));
        up.answer("/second", RawAnswer::BytesThenClose(format!("{head}5\r\nhello\r\nzz\r\n").into_bytes()));
        let proxy = proxy_on(&up, lane).await;
        for path in ["/size", "/trailer"] {
            for round in 0..2 {
                let (resp, closed) = get(&proxy, path).await;
                assert_eq!(status_of(&resp), 502, "lane {lane}, {path}, round {round}: {resp}");
                assert!(resp.contains("bad_gateway") && !closed, "lane {lane}, {path}: {resp}");
            }
        }
        for round in 0..2 {
            let (resp, closed) = get(&proxy, "/second").await;
            assert_eq!(status_of(&resp), 200, "lane {lane}, round {round}: {resp}");
            assert!(closed && resp.ends_with("5\r\nhello\r\n"), "lane {lane}, round {round}: {resp:?}");
            assert!(!resp.contains("x-cache: HIT"), "never stored: {resp}");
        }
        assert_eq!(up.seen().len(), 6, "lane {lane}: nothing stored, every request went upstream");
        proxy.shutdown().await;
    }
}

/// An upstream that closes right after a head announcing a body: the head
/// goes and the client connection is closed, on both lanes (hyper's lane
/// sent nothing when the close came with the head).
#[tokio::test]
async fn an_upstream_closing_after_the_head_cuts_the_answer_off_on_both_lanes() {
    for lane in LANES {
        let up = spawn_raw_upstream().await;
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        up.answer("/chunked", RawAnswer::BytesThenClose(chunked.as_bytes().to_vec()));
        let sized = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        up.answer("/sized", RawAnswer::BytesThenClose(sized.as_bytes().to_vec()));
        let proxy = proxy_on(&up, lane).await;
        for path in ["/chunked", "/sized"] {
            let (resp, closed) = get(&proxy, path).await;
            assert_eq!(status_of(&resp), 200, "lane {lane}, {path}: {resp:?}");
            assert!(closed, "lane {lane}, {path}: {resp:?}");
        }
        proxy.shutdown().await;
    }
}

/// A request's `Content-Length` with leading zeros reaches the upstream
/// without them on both lanes (the express lane copied it as it came).
#[tokio::test]
async fn a_request_length_with_leading_zeros_reaches_the_upstream_without_them() {
    for lane in LANES {
        let up = spawn_raw_upstream().await;
        let proxy = proxy_on(&up, lane).await;
        let req =
            b"POST /p HTTP/1.1\r\nHost: app\r\nContent-Length: 003\r\n\r\nabcGET /q HTTP/1.1\r\nHost: app\r\n\r\n";
        let (resp, _) = raw(proxy.addr, req, WAIT).await;
        assert_eq!(resp.matches("HTTP/1.1 200").count(), 2, "lane {lane}: {resp}");
        let seen = up.seen();
        let post = seen.iter().find(|s| s.target == "/p").expect("the POST went upstream");
        let lengths: Vec<&str> = post
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| &v[..])
            .collect();
        assert_eq!((lengths, &post.body[..]), (vec!["3"], &b"abc"[..]), "lane {lane}");
        assert!(seen.iter().any(|s| s.target == "/q"), "lane {lane}: the next request went on");
        proxy.shutdown().await;
    }
}

/// Chunked bodies as hyper reads them, on both lanes (found by an attack
/// from outside: the express lane's reader took some hyper's refused and
/// refused some it took): whitespace after a size ends it (`5 5` is no
/// size: it was relayed as it came), leading zeros are a size, more than
/// 100 trailer fields are refused; a `Transfer-Encoding` whose last element
/// is empty, or in an `HTTP/1.0` answer, is a 502 (hyper's client read the
/// first as close-delimited and relayed the chunks' framing as content).
#[tokio::test]
async fn chunked_bodies_are_read_alike_on_both_lanes() {
    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let fields = "X-A: b\r\n".repeat(101);
    let cases = [
        ("/space", format!("{head}5 5\r\nhello\r\n0\r\n\r\n"), 502),
        ("/zeros", format!("{head}0000000000000005\r\nhello\r\n0\r\n\r\n"), 200),
        ("/fields", format!("{head}0\r\n{fields}\r\n"), 502),
        (
            "/empty-element",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, \r\n\r\n5\r\nhello\r\n0\r\n\r\n".into(),
            502,
        ),
        ("/http10", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".into(), 502),
    ];
    for lane in LANES {
        let up = spawn_raw_upstream().await;
        for (path, bytes, _) in &cases {
            up.answer(path, RawAnswer::BytesThenClose(bytes.clone().into_bytes()));
        }
        let proxy = proxy_on(&up, lane).await;
        for (path, _, status) in &cases {
            let (resp, _) = get(&proxy, path).await;
            assert_eq!(status_of(&resp), *status, "lane {lane}, {path}: {resp:?}");
            if *status == 200 {
                assert!(resp.ends_with("5\r\nhello\r\n0\r\n\r\n"), "lane {lane}, {path}: {resp:?}");
            }
        }
        proxy.shutdown().await;
    }
}

/// An HTTP/2 client gets an upstream's trailers without the fields a
/// trailer may not carry: with a `Connection` among them its stream was
/// reset after the data (HTTP/2 refuses connection fields), though the
/// answer was stored whole.
#[tokio::test]
async fn an_http2_client_gets_whole_answers_whatever_trailers_the_upstream_sent() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let up = spawn_raw_upstream().await;
    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let trailers = "Connection: close\r\nContent-Length: 5\r\nHost: evil\r\nX-Sum: 5\r\n";
    up.answer("/t", RawAnswer::Bytes(format!("{head}5\r\nhello\r\n0\r\n{trailers}\r\n").into_bytes()));
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(proxy.url("/t")).body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.expect("the stream ends, not reset");
    let got = collected.trailers().cloned().expect("trailers");
    assert_eq!(got.get("x-sum").map(|v| v.to_str().unwrap()), Some("5"), "{got:?}");
    for never in ["connection", "content-length", "host"] {
        assert!(!got.contains_key(never), "{never}: {got:?}");
    }
    assert_eq!(&collected.to_bytes()[..], b"hello");
    proxy.shutdown().await;
}
