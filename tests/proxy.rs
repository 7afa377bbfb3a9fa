//! Forwarding (SPEC §2): headers both ways, bodies streamed both ways,
//! connection reuse, 502/504, WebSocket tunnelling.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Full};
use support::*;

#[tokio::test]
async fn forwards_with_forwarding_headers_and_without_hop_by_hop() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let req = Request::post(proxy.url("/echo?b=2&a=1"))
        .header("host", "shop.example")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("keep-alive", "timeout=3")
        .header("te", "trailers")
        .header("proxy-connection", "keep-alive")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-custom", "kept")
        .body(Full::new(Bytes::from_static(b"hello upstream")))
        .unwrap();
    let a = send(req).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "hello upstream");
    assert_eq!(a.headers["via"], "1.1 perfproxy");
    assert!(a.headers["server-timing"].to_str().unwrap().starts_with("upstream;dur="), "{:?}", a.headers);

    let seen = up.seen();
    let s = &seen[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.uri, "/echo?b=2&a=1");
    assert_eq!(s.headers["host"], "shop.example");
    assert_eq!(s.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(s.headers["x-forwarded-proto"], "http");
    assert_eq!(s.headers["x-forwarded-host"], "shop.example");
    assert_eq!(s.headers["via"], "1.1 perfproxy");
    assert_eq!(s.headers["x-custom"], "kept");
    assert_eq!(s.headers["content-length"], "14");
    for gone in ["connection", "x-drop-me", "keep-alive", "te", "proxy-connection", "transfer-encoding"] {
        assert!(!s.headers.contains_key(gone), "{gone} reached the upstream");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn response_hop_by_hop_headers_are_removed() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let a = get(&proxy.url("/hop")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["x-kept"], "yes");
    for gone in ["x-internal", "keep-alive", "proxy-connection"] {
        assert!(!a.headers.contains_key(gone), "{gone} reached the client");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &["--config", "/dev/null"]).await;
    for i in 0..50 {
        let a = get(&proxy.url(&format!("/n/{i}"))).await;
        assert_eq!(a.status, 200);
    }
    // One connection per worker at most (sequential requests; workers = cores).
    let workers = std::thread::available_parallelism().unwrap().get();
    let conns = up.connections.load(Ordering::SeqCst);
    assert!(conns <= workers, "{conns} upstream connections for 50 sequential requests");
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_closing_connections_costs_no_request() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    for _ in 0..30 {
        let a = get(&proxy.url("/close")).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert!(!a.headers.contains_key("connection"), "upstream's Connection leaked");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn refused_upstream_is_a_fast_502_with_json() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = spawn_proxy(&dead, &[]).await;
    let t = Instant::now();
    let a = get(&proxy.url("/anything")).await;
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    assert_eq!(a.status, 502);
    let j = a.json();
    assert_eq!(j["error"], "bad_gateway");
    assert!(j["detail"].is_string());
    assert!(!a.text().contains("127.0.0.1"), "internal detail leaked: {}", a.text());
    proxy.shutdown().await;
}

#[tokio::test]
async fn slow_upstream_is_a_504_at_the_timeout_and_the_request_is_dropped() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config("upstream_timeout_ms = 300\n")]).await;
    let t = Instant::now();
    let a = get(&proxy.url("/delay/3000")).await;
    let took = t.elapsed();
    assert_eq!(a.status, 504);
    assert_eq!(a.json()["error"], "gateway_timeout");
    assert!(took >= Duration::from_millis(290) && took < Duration::from_millis(1500), "took {took:?}");
    // The upstream saw its request abandoned rather than left running.
    for _ in 0..40 {
        if up.cancelled.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(up.cancelled.load(Ordering::SeqCst), 1);
    // And the proxy still serves.
    assert_eq!(get(&proxy.url("/ok")).await.status, 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn response_bodies_stream_without_buffering() {
    let up = spawn_upstream().await;
    let (feed, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    *up.stream_feed.lock().unwrap() = Some(rx);
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let resp = client().get(proxy.url("/stream").parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    feed.send(Bytes::from_static(b"first")).await.unwrap();
    // The first chunk arrives while the upstream's body is still open.
    let frame = tokio::time::timeout(Duration::from_secs(2), body.frame()).await.expect("first chunk streamed");
    assert_eq!(frame.unwrap().unwrap().into_data().unwrap(), "first");
    feed.send(Bytes::from_static(b"second")).await.unwrap();
    drop(feed);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
    proxy.shutdown().await;
}

#[tokio::test]
async fn request_bodies_stream_without_buffering() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    // The client sends one chunk and keeps its body open; the upstream
    // answers from that first chunk. A proxy that buffered whole bodies would
    // never deliver the request, and this would time out.
    let (tx, body) = futures_channel_body();
    let req = Request::post(proxy.url("/first")).body(body).unwrap();
    let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let pending = tokio::spawn(async move { c.request(req).await });
    tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"chunk-one")))).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(3), pending)
        .await
        .expect("answered before the body ended")
        .unwrap()
        .unwrap();
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got, "chunk-one");
    drop(tx);
    proxy.shutdown().await;
}

#[tokio::test]
async fn large_upload_arrives_whole() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let (tx, body) = futures_channel_body();
    let req = Request::post(proxy.url("/sink")).body(body).unwrap();
    let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let pending = tokio::spawn(async move { c.request(req).await });
    let total = 200u64 * 1024 * 1024;
    let chunk = Bytes::from(vec![7u8; 1024 * 1024]);
    for _ in 0..200 {
        tx.send(Ok(hyper::body::Frame::data(chunk.clone()))).await.unwrap();
    }
    drop(tx);
    let resp = pending.await.unwrap().unwrap();
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&got), total.to_string());
    proxy.shutdown().await;
}

type Chunk = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>;
fn futures_channel_body() -> (tokio::sync::mpsc::Sender<Chunk>, http_body_util::StreamBody<tokio_stream_like::Recv>) {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    (tx, http_body_util::StreamBody::new(tokio_stream_like::Recv(rx)))
}

mod tokio_stream_like {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    pub struct Recv(pub tokio::sync::mpsc::Receiver<super::Chunk>);
    impl futures_util::Stream for Recv {
        type Item = super::Chunk;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
}

#[tokio::test]
async fn websocket_is_tunnelled() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr)).await.expect("handshake through the proxy");
    assert_eq!(resp.status(), 101);
    use tokio_tungstenite::tungstenite::Message;
    for i in 0..20 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(2), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), format!("ping {i}"));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo.into_data().to_vec(), vec![0u8, 1, 2, 255]);
    ws.close(None).await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test]
async fn own_liveness_endpoint_answers_without_the_upstream() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = spawn_proxy(&dead, &["--admin-listen", "127.0.0.1:0"]).await;
    let a = get(&proxy.url("/health/live")).await;
    assert_eq!(a.status, 200);
    let admin = proxy.admin.unwrap();
    assert_eq!(get(&format!("http://{admin}/health/live")).await.status, 200);
    // The admin listener never proxies.
    assert_eq!(get(&format!("http://{admin}/api/users/1")).await.status, 404);
    proxy.shutdown().await;
}

#[tokio::test]
async fn idle_upstream_connections_are_not_reused_past_the_idle_timeout() {
    let up = spawn_upstream().await;
    let cfg = write_config("upstream_idle_timeout_ms = 300\n");
    let proxy = spawn_proxy(&up.url(), &["--config", &cfg]).await;
    let conns = || up.connections.load(std::sync::atomic::Ordering::SeqCst);
    // The health prober dials its own connections: let its first probe pass
    // (the next is 5 s away), then count ours as differences.
    eventually(5, "first health probe", || async { !up.probes().is_empty() }).await;
    get(&proxy.url("/a")).await;
    let after_first = conns();
    get(&proxy.url("/a")).await;
    assert_eq!(conns(), after_first, "reused while fresh");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = conns();
    get(&proxy.url("/a")).await;
    assert_eq!(conns(), before + 1, "a connection idle past the timeout is replaced, not reused");
    proxy.shutdown().await;
}
