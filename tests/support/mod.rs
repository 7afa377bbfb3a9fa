//! Test support: a real upstream on an ephemeral port that records what it
//! receives, perfproxy in-process (or as its real binary) in front of it, and
//! a raw-socket client for byte-exact requests.
#![allow(dead_code)]

pub mod h2raw;
pub mod otlp;
pub mod pg;
pub mod raw;
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The test upstream and what it has seen.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Requests whose handler was dropped before it answered (client went away).
    pub cancelled: Arc<AtomicUsize>,
    /// Feeds `/stream`: each message becomes one body chunk; dropping ends the body.
    pub stream_feed: Arc<Mutex<Option<mpsc::Receiver<Bytes>>>>,
    /// Scripted answers by path (see [`Upstream::script`]).
    pub scripts: Arc<Mutex<HashMap<String, Scripted>>>,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Upstream {
    /// Requests received, perfproxy's own health probes left out.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| !is_probe(s)).cloned().collect()
    }
    /// perfproxy's health probes received.
    pub fn probes(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| is_probe(s)).cloned().collect()
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Stops listening and drops every open connection, like a crash.
    pub fn kill(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// A scripted answer: status, headers, body, and a delay before answering.
/// A request whose `If-None-Match` matches the scripted `etag` (or whose
/// `If-Modified-Since` equals its `last-modified`) gets `304`.
#[derive(Debug, Clone, Default)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay_ms: u64,
}

impl Upstream {
    /// Makes `path` answer `status` with `headers` and `body` from now on.
    pub fn script(&self, path: &str, status: u16, headers: &[(&str, &str)], body: &str) {
        self.script_after(path, status, headers, body, 0);
    }
    /// As [`Upstream::script`] with status 200, answering after `delay_ms`.
    pub fn script_slow(&self, path: &str, headers: &[(&str, &str)], body: &str, delay_ms: u64) {
        self.script_after(path, 200, headers, body, delay_ms);
    }
    fn script_after(&self, path: &str, status: u16, headers: &[(&str, &str)], body: &str, delay_ms: u64) {
        let s = Scripted {
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.to_string(),
            delay_ms,
        };
        self.scripts.lock().unwrap().insert(path.to_string(), s);
    }
    /// Requests received for `path` (any query).
    pub fn hits(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.uri.split('?').next() == Some(path)).count()
    }
}

fn scripted(s: &Scripted, req: &HeaderMap) -> Response<BoxBody> {
    let header = |name: &str| s.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let inm = req.get("if-none-match").and_then(|v| v.to_str().ok());
    let ims = req.get("if-modified-since").and_then(|v| v.to_str().ok());
    // If-None-Match compares weakly (RFC 9110 §13.1.2), as servers do.
    let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag_matches = inm.zip(header("etag")).is_some_and(|(inm, etag)| inm.split(',').any(|t| weak(t) == weak(etag)));
    let not_modified = etag_matches || (ims.is_some() && ims == header("last-modified"));
    let mut r = if not_modified { full(304, "") } else { full(s.status, s.body.clone()) };
    for (k, v) in &s.headers {
        r.headers_mut().append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    r
}

fn is_probe(s: &Seen) -> bool {
    s.headers.get("user-agent").is_some_and(|v| v == "perfproxy-health")
}

struct CancelGuard(Arc<AtomicUsize>, bool);
impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn full(status: u16, body: impl Into<Bytes>) -> Response<BoxBody> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

async fn upstream_handle(up: Upstream, req: Request<Incoming>) -> Result<Response<BoxBody>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/ws" {
        return Ok(websocket(req));
    }
    if path == "/sink" {
        // Counts a (possibly huge) body without keeping it.
        let mut body = req.into_body();
        let mut n: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => return Ok(full(400, "broken body")),
            }
        }
        return Ok(full(200, n.to_string()));
    }
    if path == "/first" {
        // Answers with the first chunk of the body, leaving the rest unread.
        let mut body = req.into_body();
        let first = match body.frame().await {
            Some(Ok(f)) => f.into_data().unwrap_or_default(),
            _ => Bytes::new(),
        };
        return Ok(full(200, first));
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::from_static(b"<broken body>"),
    };
    up.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let mut guard = CancelGuard(up.cancelled.clone(), false);
    let script = up.scripts.lock().unwrap().get(&path).cloned();
    if let Some(s) = script {
        tokio::time::sleep(Duration::from_millis(s.delay_ms)).await;
        guard.1 = true;
        return Ok(scripted(&s, &parts.headers));
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let resp = match segs.as_slice() {
        ["delay", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            full(200, format!("slept {ms}"))
        }
        ["status", code] => full(code.parse().unwrap(), format!("status {code}")),
        ["echo"] => full(200, body),
        ["hop"] => {
            let mut r = full(200, "hop");
            let h = r.headers_mut();
            h.insert("connection", "x-internal".parse().unwrap());
            h.insert("x-internal", "secret".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("proxy-connection", "keep-alive".parse().unwrap());
            h.insert("x-kept", "yes".parse().unwrap());
            r
        }
        ["close"] => {
            let mut r = full(200, "closing");
            r.headers_mut().insert("connection", "close".parse().unwrap());
            r
        }
        ["big", n] => {
            let total: usize = n.parse().unwrap();
            let chunk = Bytes::from(vec![b'z'; 64 * 1024]);
            let stream = futures_util::stream::unfold(0usize, move |sent| {
                let chunk = chunk.clone();
                async move {
                    if sent >= total {
                        return None;
                    }
                    let len = chunk.len().min(total - sent);
                    Some((Ok::<_, Infallible>(Frame::data(chunk.slice(..len))), sent + len))
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        // `/events`: the same, as server-sent events.
        ["stream"] | ["events"] => {
            let rx = up.stream_feed.lock().unwrap().take().expect("stream feed set by the test");
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            if segs[0] == "events" {
                r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
            }
            r
        }
        _ => full(200, "ok"),
    };
    guard.1 = true;
    Ok(resp)
}

fn websocket(mut req: Request<Incoming>) -> Response<BoxBody> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let key = req.headers().get("sec-websocket-key").cloned().expect("client sends a key");
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = on_upgrade.await.expect("upgrade completes");
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    let mut r = full(101, "");
    let h = r.headers_mut();
    h.insert("connection", "upgrade".parse().unwrap());
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("sec-websocket-accept", derive_accept_key(key.as_bytes()).parse().unwrap());
    r
}

/// Starts the test upstream on 127.0.0.1:0.
pub async fn spawn_upstream() -> Upstream {
    spawn_upstream_on("127.0.0.1:0".parse().unwrap()).await
}

/// Starts the test upstream on `addr` (e.g. again on a killed one's port).
pub async fn spawn_upstream_on(addr: SocketAddr) -> Upstream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let listener = socket.listen(128).unwrap();
    let up = Upstream {
        addr: listener.local_addr().unwrap(),
        connections: Arc::default(),
        seen: Arc::default(),
        cancelled: Arc::default(),
        stream_feed: Arc::default(),
        scripts: Arc::default(),
        tasks: Arc::default(),
    };
    let state = up.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { break };
            state.connections.fetch_add(1, Ordering::SeqCst);
            let st = state.clone();
            let conn = tokio::spawn(async move {
                let svc = service_fn(move |req| upstream_handle(st.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
            state.tasks.lock().unwrap().push(conn.abort_handle());
        }
    });
    up.tasks.lock().unwrap().push(accept.abort_handle());
    up
}

/// Polls `check` every 50 ms until it returns true, or panics after `secs`.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..secs * 20 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within {secs} s: {what}");
}

/// perfproxy running in this process.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    /// `--tls-listen`'s address.
    pub tls: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Proxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
    /// Stops it the way SIGTERM does and waits until it has drained.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts perfproxy in-process on 127.0.0.1:0 with these extra arguments
/// (route discovery off unless they say `--route-discovery`).
pub async fn spawn_proxy(upstream: &str, args: &[&str]) -> Proxy {
    let mut argv = vec!["perfproxy", "--listen", "127.0.0.1:0", "--upstream", upstream];
    // Labels as the plain normalisation makes them, from the first request
    // (the suites assert exact labels); tests of route discovery turn it on.
    if !args.contains(&"--route-discovery") {
        argv.extend_from_slice(&["--route-discovery", "false"]);
    }
    argv.extend_from_slice(args);
    let config = match perfproxy::config::from_args(argv) {
        Ok(inv) => inv.config,
        Err(e) => panic!("bad test config: {e}"),
    };
    let listeners = perfproxy::runtime::server::Listeners::bind(&config).unwrap();
    let addr = listeners.proxy.local_addr().unwrap();
    let admin = listeners.admin.as_ref().map(|l| l.local_addr().unwrap());
    let tls = listeners.tls.as_ref().map(|l| l.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(perfproxy::runtime::server::run(listeners, config, async move {
        let _ = rx.await;
        perfproxy::runtime::server::Stop::Term
    }));
    Proxy { addr, admin, tls, stop: Some(tx), task: Some(task) }
}

/// A pooled HTTP/1.1 client for ordinary requests.
pub fn client() -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// A simple response, body collected.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends one request and collects the answer.
pub async fn send(req: Request<Full<Bytes>>) -> Answer {
    let resp = client().request(req).await.expect("request answered");
    let (parts, body) = resp.into_parts();
    Answer { status: parts.status.as_u16(), headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
}

pub async fn get(url: &str) -> Answer {
    send(Request::get(url).body(Full::default()).unwrap()).await
}

/// The values of a field in a raw response's head, in order.
pub fn head_field<'a>(resp: &'a str, name: &str) -> Vec<&'a str> {
    let head = resp.split("\r\n\r\n").next().unwrap_or("");
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// Writes raw bytes on a fresh connection and reads until the peer closes
/// or `wait` passes without data. Returns what was read and whether the
/// peer closed.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_until_quiet(&mut s, wait).await
}

pub async fn read_until_quiet(s: &mut TcpStream, wait: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// Writes a config file for one test and returns its path.
pub fn write_config(text: &str) -> String {
    let path = std::env::temp_dir().join(format!("perfproxy-test-{}.toml", fastrand::u64(..)));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// Path of the built binary.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_perfproxy")
}

/// A free port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `url` answers 200, or panics after `secs`.
pub async fn wait_ready(url: &str, secs: u64) {
    for _ in 0..secs * 20 {
        if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_millis(500), client().get(url.parse().unwrap())).await
        {
            if resp.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never became ready");
}

/// perfproxy's real binary, killed (and reaped) when dropped.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real binary on 127.0.0.1:`port` in front of `upstream`, quiet, with
/// no `DATABASE_URL`/`REDIS_URL` from the test's environment.
pub fn start_binary(upstream: &str, port: u16, extra: &[&str]) -> Child {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--listen", listen.as_str(), "--upstream", upstream];
    args.extend_from_slice(extra);
    Child(
        std::process::Command::new(binary())
            .args(&args)
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Sends `sig` (`-TERM`, `-INT`) to the child.
pub fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &child.0.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig}");
}

/// Waits for the child to exit; its exit code.
pub async fn exit_code(child: Child) -> Option<i32> {
    tokio::task::spawn_blocking(move || {
        let mut child = child;
        let code = child.0.wait().unwrap().code();
        std::mem::forget(child);
        code
    })
    .await
    .unwrap()
}

/// A private redis-server on `port`, killed when dropped.
pub struct Redis(pub std::process::Child);

impl Redis {
    pub fn start(port: u16) -> Redis {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        Redis(child)
    }
    /// Sends a signal (`STOP`, `CONT`) to the server.
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").args([&format!("-{sig}"), &self.0.id().to_string()]).status();
        assert!(ok.unwrap().success(), "kill -{sig}");
    }
}

/// A private Redis and one perfproxy per id publishing to it every 200 ms
/// (`[cluster] instance = id`), all in front of `upstream`.
pub async fn spawn_cluster(upstream: &str, ids: &[&str]) -> (Redis, Vec<Proxy>) {
    let port = free_port();
    let redis = Redis::start(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let redis_url = format!("redis://127.0.0.1:{port}");
    let mut proxies = Vec::new();
    for id in ids {
        let cfg = write_config(&format!("[cluster]\npublish_ms = 200\ninstance = \"{id}\"\n"));
        proxies.push(spawn_proxy(upstream, &["--config", &cfg, "--redis-url", &redis_url]).await);
    }
    (redis, proxies)
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts every case of `batch` on both lanes at once (the express lane's
/// proxy at `lanes.0`, hyper's at `lanes.1`); each case with what `run`
/// got from each lane, in the batch's order, to be awaited one by one.
pub fn on_both_lanes<C, R, F, Fut>(
    batch: &[C],
    lanes: (SocketAddr, SocketAddr),
    run: F,
) -> Vec<tokio::task::JoinHandle<(C, R, R)>>
where
    C: Clone + Send + 'static,
    R: Send + 'static,
    F: Fn(SocketAddr, C) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = R> + Send,
{
    batch
        .iter()
        .cloned()
        .map(|case| {
            tokio::spawn(async move {
                let (on_express, on_hyper) = tokio::join!(run(lanes.0, case.clone()), run(lanes.1, case.clone()));
                (case, on_express, on_hyper)
            })
        })
        .collect()
}
