//! `cargo run --release --example demo`: perfproxy in front of a built-in
//! demo backend, with live generated traffic.
//!
//! The backend (127.0.0.1:3000, or a free port if taken; `--backend-listen
//! ADDR` puts it elsewhere, and fails in one line if that is taken) serves routes shaped
//! like a real API: `/api/users/:id` (fast, sometimes failing),
//! `/api/certificates/:id` (cacheable, with ETag), `/api/documents/search`
//! (slow, one in ten over 2 s), `/api/orders/:uuid`, `POST /api/users`.
//! perfproxy listens on 127.0.0.1:4001 (or `PERFPROXY_LISTEN`, or `--listen`);
//! any other perfproxy flag can follow `--`, e.g.
//! `cargo run --release --example demo -- --config config/perfproxy.toml`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", "application/json".parse().expect("static header"));
    r
}

async fn backend(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let _ = req.into_body().collect().await;
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let resp = match (method, segs.as_slice()) {
        (Method::GET, [""]) => json(StatusCode::OK, r#"{"service":"demo","status":"ok"}"#.into()),
        (Method::GET, ["api", "users", id]) => {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(2..30))).await;
            if fastrand::u8(..100) < 3 {
                json(StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"database timeout"}"#.into())
            } else {
                json(StatusCode::OK, format!(r#"{{"id":"{id}","name":"User {id}","plan":"pro"}}"#))
            }
        }
        (Method::POST, ["api", "users"]) => {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(10..60))).await;
            json(StatusCode::CREATED, format!(r#"{{"id":{}}}"#, fastrand::u32(1000..9999)))
        }
        (Method::GET, ["api", "certificates", id]) => {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(20..80))).await;
            let mut r = json(StatusCode::OK, format!(r#"{{"certificate":"{id}","valid":true}}"#));
            r.headers_mut().insert("cache-control", "public, max-age=30".parse().expect("static header"));
            r.headers_mut().insert("etag", format!("\"cert-{id}\"").parse().expect("ascii etag"));
            r
        }
        (Method::GET, ["api", "documents", "search"]) => {
            // One in ten over 2 s: p95 sits clearly above `slow_request_ms`, not on it.
            let ms = if fastrand::u8(..100) < 10 { fastrand::u64(2000..2600) } else { fastrand::u64(80..600) };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json(StatusCode::OK, r#"{"results":[{"id":1,"title":"Quarterly report"}]}"#.into())
        }
        (Method::GET, ["api", "orders", _]) => {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(5..40))).await;
            if fastrand::bool() {
                json(StatusCode::OK, r#"{"status":"shipped"}"#.into())
            } else {
                json(StatusCode::NOT_FOUND, r#"{"error":"no such order"}"#.into())
            }
        }
        _ => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into()),
    };
    Ok(resp)
}

/// Where the backend listens: `--backend-listen ADDR` exactly (the demo
/// exits when it cannot), else 127.0.0.1:3000, or a free port if that is taken.
async fn serve_backend(wanted: Option<String>) -> SocketAddr {
    let listener = match wanted {
        Some(addr) => match TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "demo: the backend cannot listen on {addr} ({e}); choose another address: \
                     cargo run --release --example demo -- --backend-listen 127.0.0.1:3100"
                );
                std::process::exit(1);
            }
        },
        None => match TcpListener::bind("127.0.0.1:3000").await {
            Ok(l) => l,
            Err(_) => TcpListener::bind("127.0.0.1:0").await.expect("an ephemeral port is free"),
        },
    };
    let addr = listener.local_addr().expect("bound listener has an address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(backend))
                    .await;
            });
        }
    });
    addr
}

/// One simulated client: a mix of the API's routes, forever, from its own
/// address (`X-Forwarded-For`, as an ingress in front would send it), so
/// the dashboard's top clients tell them apart; the first is the busiest.
async fn traffic(proxy: SocketAddr, n: u8) {
    let who = format!("203.0.113.{}", 10 + n);
    let pause = if n == 0 { 10..60 } else { 20..120 };
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    loop {
        let (method, path) = match fastrand::u8(..100) {
            0..=39 => (Method::GET, format!("/api/users/{}", fastrand::u32(1..500))),
            40..=64 => (Method::GET, format!("/api/certificates/{}", fastrand::u32(1..20))),
            65..=74 => (Method::GET, format!("/api/documents/search?q=report&utm_source=demo{}", fastrand::u8(..9))),
            75..=89 => (
                Method::GET,
                format!(
                    "/api/orders/{:08x}-{:04x}-4a1b-8c2d-{:012x}",
                    fastrand::u32(..),
                    fastrand::u16(..),
                    fastrand::u64(..1 << 48)
                ),
            ),
            _ => (Method::POST, "/api/users".to_string()),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{proxy}{path}"))
            .header("x-forwarded-for", &who)
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("a well-formed demo request");
        if let Ok(resp) = client.request(req).await {
            let _ = resp.into_body().collect().await;
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(pause.clone()))).await;
    }
}

/// Takes the demo's own `--backend-listen ADDR` (or `=ADDR`) out of the
/// arguments; the rest go to perfproxy.
fn backend_flag(mut args: impl Iterator<Item = String>) -> (Option<String>, Vec<String>) {
    let (mut wanted, mut rest) = (None, Vec::new());
    while let Some(a) = args.next() {
        if a == "--backend-listen" {
            match args.next() {
                Some(addr) => wanted = Some(addr),
                None => {
                    eprintln!("demo: --backend-listen needs an address, e.g. --backend-listen 127.0.0.1:3100");
                    std::process::exit(2);
                }
            }
        } else if let Some(addr) = a.strip_prefix("--backend-listen=") {
            wanted = Some(addr.to_string());
        } else {
            rest.push(a);
        }
    }
    (wanted, rest)
}

#[tokio::main]
async fn main() {
    let (wanted, rest) = backend_flag(std::env::args().skip(1));
    let backend = serve_backend(wanted).await;
    let mut args = vec!["perfproxy".to_string(), "--upstream".into(), format!("http://{backend}")];
    args.extend(rest);
    let invocation = match perfproxy::config::from_args(args) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::exit(2);
        }
    };
    perfproxy::runtime::telemetry::init(invocation.log_format);
    let config = invocation.config;
    let listeners = match perfproxy::runtime::server::Listeners::bind(&config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "demo: cannot listen on {} ({e}); choose another address: \
                 cargo run --release --example demo -- --listen 127.0.0.1:4002",
                config.listen
            );
            std::process::exit(1);
        }
    };
    let proxy = listeners.proxy.local_addr().expect("bound listener has an address");
    println!("demo backend on http://{backend}");
    println!("perfproxy on   http://{proxy}");
    println!("dashboard      http://{proxy}/performance   (JSON with curl; also /metrics, /health)");
    println!("generating traffic through perfproxy; Ctrl-C to stop");
    for n in 0..8 {
        tokio::spawn(traffic(proxy, n));
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        perfproxy::runtime::server::Stop::Interrupt
    };
    if let Err(e) = perfproxy::runtime::server::run(listeners, config, shutdown).await {
        eprintln!("demo: {e}");
    }
}
