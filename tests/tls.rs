//! TLS at both ends, with certificates made at test time: HTTP/1.1 and
//! HTTP/2 over the TLS listener through the same routes, cache and metrics;
//! client certificates; live reloads (SIGHUP, a rename into place) that
//! leave open connections alone; bad files at start (exit 2) and on reload
//! (old kept); an https upstream verified, resumed, and refused under the
//! wrong CA; `tls_expiry`.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::tls::{self, Ca, Leaf};
use support::*;

/// Files for a TLS listener: certificate and key written to `dir`.
fn listener_files(dir: &std::path::Path, leaf: &Leaf) -> (String, String) {
    (tls::write(dir, "cert.pem", &leaf.cert_pem), tls::write(dir, "key.pem", &leaf.key_pem))
}

fn tls_config(cert: &str, key: &str, more: &str) -> String {
    write_config(&format!("[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n{more}\n"))
}

async fn metrics_text(proxy: &Proxy) -> String {
    get(&proxy.url("/metrics")).await.text()
}

fn sample(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn http1_and_http2_over_tls_share_the_routes_cache_and_metrics() {
    over_tls_through_one_lane("true").await;
}

#[tokio::test]
async fn over_tls_the_hyper_lane_behaves_as_the_express_lane() {
    over_tls_through_one_lane("false").await;
}

/// HTTP/1.1 and HTTP/2 over the TLS listener, with `--express-lane` as given.
async fn over_tls_through_one_lane(express: &str) {
    let up = spawn_upstream().await;
    let dir = tls::temp_dir();
    let ca = Ca::new("perfproxy test CA");
    let leaf = ca.leaf("localhost", &["localhost", "127.0.0.1"], 90);
    let (cert, key) = listener_files(&dir, &leaf);
    let cfg = tls_config(&cert, &key, "[[cache.rules]]\npattern = \"GET /tls-cached/*\"\n");
    let args = ["--tls-listen", "127.0.0.1:0", "--config", &cfg, "--express-lane", express];
    let proxy = spawn_proxy(&up.url(), &args).await;
    let tls_addr = proxy.tls.unwrap();

    // HTTP/1.1 (ALPN http/1.1), two requests on one connection.
    let stream = tls::connect(tls_addr, tls::client_config(&ca, &[b"http/1.1"], None), "localhost").await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut h1 = tls::H1::over(stream).await;
    for _ in 0..2 {
        let got = h1.get("/api/items/7").await.unwrap();
        assert_eq!(got.status, 200, "{}", got.body);
        assert!(got.headers.contains_key("x-request-id"));
    }
    let a = h1.get("/tls-cached/a").await.unwrap();
    let b = h1.get("/tls-cached/a").await.unwrap();
    assert_eq!((a.headers["x-cache"].to_str().unwrap(), b.headers["x-cache"].to_str().unwrap()), ("MISS", "HIT"));
    assert_eq!(a.body, b.body);

    // HTTP/2 by ALPN.
    let stream = tls::connect(tls_addr, tls::client_config(&ca, &[&b"h2"[..], &b"http/1.1"[..]], None), "localhost")
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let got = tls::h2_get(stream, "/api/items/8").await;
    assert_eq!(got.status, 200, "{}", got.body);
    // A client offering no ALPN at all gets HTTP/1.1.
    let stream = tls::connect(tls_addr, tls::client_config(&ca, &[], None), "localhost").await.unwrap();
    assert_eq!(tls::H1::over(stream).await.get("/api/items/9").await.unwrap().status, 200);

    // The upstream saw https for each, http for the plain listener.
    assert_eq!(get(&proxy.url("/api/items/10")).await.status, 200);
    let seen = up.seen();
    let proto = |uri: &str| {
        let s = seen.iter().find(|s| s.uri == uri).unwrap_or_else(|| panic!("{uri} reached the upstream"));
        s.headers["x-forwarded-proto"].to_str().unwrap().to_string()
    };
    assert_eq!(proto("/api/items/7"), "https");
    assert_eq!(proto("/api/items/8"), "https");
    assert_eq!(proto("/api/items/9"), "https");
    assert_eq!(proto("/api/items/10"), "http");
    assert_eq!(seen.iter().filter(|s| s.uri == "/tls-cached/a").count(), 1, "the second was a hit");

    // One route for all lanes, handshakes counted, the certificate reported.
    let url = proxy.url("/performance");
    eventually(3, "7 requests", || async { get(&url).await.json()["requests"]["total"] == 7 }).await;
    let metrics = metrics_text(&proxy).await;
    let route = r#"perfproxy_requests_total{route="GET /api/items/:id",class="2xx"}"#;
    assert_eq!(sample(&metrics, route), 5.0, "{metrics}");
    assert_eq!(sample(&metrics, r#"perfproxy_tls_handshakes_total{result="ok"}"#), 3.0);
    assert_eq!(sample(&metrics, "perfproxy_tls_handshake_duration_seconds_count"), 3.0);
    let perf = get(&proxy.url("/performance")).await.json();
    let tls_doc = &perf["tls"];
    assert_eq!(tls_doc["listen"], "127.0.0.1:0", "as configured");
    assert_eq!(tls_doc["certificates"][0]["not_after_unix"], leaf.not_after);
    assert_eq!(tls_doc["certificates"][0]["subject"], "CN=localhost");
    assert!(tls_doc["certificates"][0]["days_left"].as_f64().unwrap() > 89.0);
    assert_eq!(tls_doc["handshakes"]["ok"], 3);

    // Plain HTTP to the TLS port: no answer of the app's, nothing upstream, counted.
    let (answer, _) = raw(tls_addr, b"GET /api/items/11 HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(2)).await;
    assert!(!answer.contains("HTTP/1.1"), "{answer}");
    assert!(up.seen().iter().all(|s| s.uri != "/api/items/11"));
    eventually(2, "counted as malformed", || async { get(&url).await.json()["tls"]["handshakes"]["malformed"] == 1 })
        .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_certificate_is_required_and_checked() {
    let up = spawn_upstream().await;
    let dir = tls::temp_dir();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let strangers = Ca::new("some other CA");
    let (cert, key) = listener_files(&dir, &ca.leaf("localhost", &["localhost"], 30));
    let client_ca = tls::write(&dir, "clients.pem", &clients.pem);
    let cfg = tls_config(&cert, &key, &format!("client_ca_file = {client_ca:?}\nmin_version = \"1.3\""));
    let proxy = spawn_proxy(&up.url(), &["--tls-listen", "127.0.0.1:0", "--config", &cfg]).await;
    let addr = proxy.tls.unwrap();

    // Over TLS 1.3 the client's handshake ends before the server's check:
    // the refusal shows on the first exchange.
    let refused = |identity: Option<Leaf>| {
        let config = tls::client_config(&ca, &[b"http/1.1"], identity.as_ref());
        async move {
            match tls::connect(addr, config, "localhost").await {
                Err(_) => true,
                Ok(stream) => tls::H1::over(stream).await.get("/api/x").await.is_err(),
            }
        }
    };
    assert!(refused(None).await, "no certificate");
    assert!(refused(Some(strangers.leaf("mallory", &["mallory"], 30))).await, "a certificate of another CA");
    let good = tls::client_config(&ca, &[b"http/1.1"], Some(&clients.leaf("alice", &["alice"], 30)));
    let stream = tls::connect(addr, good, "localhost").await.unwrap();
    assert_eq!(tls::H1::over(stream).await.get("/api/x").await.unwrap().status, 200);
    assert_eq!(up.seen().iter().filter(|s| s.uri == "/api/x").count(), 1, "refused clients never reach the upstream");

    let metrics = metrics_text(&proxy).await;
    assert_eq!(sample(&metrics, r#"perfproxy_tls_handshakes_total{result="client_certificate"}"#), 2.0, "{metrics}");
    assert_eq!(sample(&metrics, r#"perfproxy_tls_handshakes_total{result="ok"}"#), 1.0);

    // TLS 1.2 is refused under min_version = "1.3".
    let mut old = (*tls::client_config(&ca, &[], None)).clone();
    old = rustls::ClientConfig::builder_with_provider(old.crypto_provider().clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    assert!(tls::connect(addr, Arc::new(old), "localhost").await.is_err());
    eventually(2, "counted as incompatible", || async {
        sample(&metrics_text(&proxy).await, r#"perfproxy_tls_handshakes_total{result="incompatible"}"#) == 1.0
    })
    .await;
    proxy.shutdown().await;
}

/// The real binary with a TLS listener; its stderr goes to `log`.
fn start_tls_binary(upstream: &str, port: u16, tls_port: u16, config: &str, log: &std::path::Path) -> Child {
    let (listen, tls_listen) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{tls_port}"));
    Child(
        std::process::Command::new(binary())
            .args(["--listen", &listen, "--tls-listen", &tls_listen, "--upstream", upstream, "--config", config])
            .env("RUST_LOG", "info")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test]
async fn certificates_reload_on_sighup_and_on_a_rename_and_open_connections_keep_theirs() {
    let up = spawn_upstream().await;
    let dir = tls::temp_dir();
    let ca = Ca::new("reload CA");
    let first = ca.leaf("localhost", &["localhost"], 30);
    let (cert, key) = listener_files(&dir, &first);
    let cfg = tls_config(&cert, &key, "");
    let (port, tls_port) = (free_port(), free_port());
    let log = dir.join("perfproxy.log");
    let child = start_tls_binary(&up.url(), port, tls_port, &cfg, &log);
    wait_ready(&format!("http://127.0.0.1:{port}/health/ready"), 10).await;
    let addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let client = tls::client_config(&ca, &[b"http/1.1"], None);
    let presented = || async { tls::peer_not_after(&tls::connect(addr, client.clone(), "localhost").await.unwrap()) };

    let open = tls::connect(addr, client.clone(), "localhost").await.unwrap();
    assert_eq!(tls::peer_not_after(&open), first.not_after);
    let mut open = tls::H1::over(open).await;
    assert_eq!(open.get("/api/a").await.unwrap().status, 200);

    // Renamed into place, key first then certificate (as cert-manager writes a
    // secret): new connections get the new one.
    let second = ca.leaf("localhost", &["localhost"], 60);
    tls::rename_into_place(&key, &second.key_pem);
    tls::rename_into_place(&cert, &second.cert_pem);
    eventually(6, "the renamed certificate is served", || async { presented().await == second.not_after }).await;
    assert_eq!(open.get("/api/b").await.unwrap().status, 200, "the open connection keeps going");

    // SIGHUP: read at once (well before the file watcher's second look).
    let third = ca.leaf("localhost", &["localhost"], 75);
    std::fs::write(&key, &third.key_pem).unwrap();
    std::fs::write(&cert, &third.cert_pem).unwrap();
    signal(&child, "-HUP");
    eventually(1, "SIGHUP reloads", || async { presented().await == third.not_after }).await;

    // A bad key on reload: the certificate in use stays, and the log says why.
    tls::rename_into_place(&key, "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n");
    signal(&child, "-HUP");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(presented().await, third.not_after, "the old certificate stays");
    assert_eq!(open.get("/api/c").await.unwrap().status, 200);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("TLS reload failed: keeping the previous certificate") && text.contains("key.pem"), "{text}");
    let perf = get(&format!("http://127.0.0.1:{port}/performance")).await.json();
    assert_eq!(perf["tls"]["certificates"][0]["not_after_unix"], third.not_after);

    // The rest of a SIGHUP reload does not wait on the TLS files.
    std::fs::write(&cfg, format!("[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n[alerts]\nerror_rate = 0.2\n"))
        .unwrap();
    signal(&child, "-HUP");
    let url = format!("http://127.0.0.1:{port}/performance");
    eventually(3, "the new threshold applies", || async { get(&url).await.json()["thresholds"]["error_rate"] == 0.2 })
        .await;
    assert_eq!(presented().await, third.not_after);
    signal(&child, "-TERM");
    assert_eq!(exit_code(child).await, Some(0));
}

#[tokio::test]
async fn bad_files_at_start_exit_2_naming_the_key_and_the_file() {
    let dir = tls::temp_dir();
    let ca = Ca::new("start CA");
    let leaf = ca.leaf("localhost", &["localhost"], 30);
    let other = ca.leaf("other", &["other"], 30);
    let (cert, key) = listener_files(&dir, &leaf);
    let garbage = tls::write(&dir, "garbage.pem", "not a pem file\n");
    let mismatched = tls::write(&dir, "other-key.pem", &other.key_pem);
    let cases = [
        (tls_config(&cert, &garbage, ""), "tls.key_file", "garbage.pem"),
        (tls_config(&cert, &mismatched, ""), "tls.key_file", "other-key.pem"),
        (tls_config(&garbage, &key, ""), "tls.cert_file", "garbage.pem"),
        (tls_config(&cert, "/nonexistent/key.pem", ""), "tls.key_file", "/nonexistent/key.pem"),
        (tls_config(&cert, &key, "min_version = \"1.1\""), "tls.min_version", "1.1"),
        (write_config("[tls]\n"), "tls.cert_file", "required with tls_listen"),
        (
            write_config("[upstream_tls]\nca_file = \"/nonexistent/ca.pem\"\n"),
            "upstream_tls.ca_file",
            "/nonexistent/ca.pem",
        ),
    ];
    for (i, (cfg, key_name, file)) in cases.iter().enumerate() {
        let (upstream, listen) = match key_name.starts_with("upstream_tls") {
            true => ("https://localhost:1", "--listen"),
            false => ("http://127.0.0.1:1", "--tls-listen"),
        };
        let out = std::process::Command::new(binary())
            .args([listen, "127.0.0.1:0", "--upstream", upstream, "--config", cfg])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {stderr}");
        assert!(stderr.contains(key_name) && stderr.contains(file), "case {i}: {stderr}");
    }
}

/// An HTTPS upstream with `leaf`; it closes each connection after one
/// answer when `close` (so every request needs a new handshake). Counts
/// its handshakes.
async fn spawn_tls_upstream(leaf: &Leaf, close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    spawn_tls_upstream_with(leaf, close, None).await
}

/// [`spawn_tls_upstream`] asking for a client certificate signed by
/// `client_ca` when given; it speaks HTTP/2 to a client that agrees on `h2`.
async fn spawn_tls_upstream_with(leaf: &Leaf, close: bool, client_ca: Option<&Ca>) -> (SocketAddr, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes()).map(Result::unwrap);
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider)
                .build()
                .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain.collect(), key).unwrap();
    config.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| async move {
                    let proto = req.headers().get("x-forwarded-proto").cloned();
                    let text =
                        if req.version() == http::Version::HTTP_2 { "secure answer over h2" } else { "secure answer" };
                    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
                    if let Some(p) = proto {
                        resp.headers_mut().insert("x-seen-proto", p);
                    }
                    if close && !h2 {
                        resp.headers_mut().insert("connection", "close".parse().unwrap());
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                });
                if h2 {
                    let exec = hyper_util::rt::TokioExecutor::new();
                    let _ = hyper::server::conn::http2::Builder::new(exec)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                } else {
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                }
            });
        }
    });
    (addr, handshakes)
}

#[tokio::test]
async fn an_https_upstream_is_verified_and_resumed_and_a_wrong_ca_is_refused() {
    let dir = tls::temp_dir();
    let ca = Ca::new("upstream CA");
    let (addr, handshakes) = spawn_tls_upstream(&ca.leaf("backend.internal", &["backend.internal"], 30), true).await;
    let ca_file = tls::write(&dir, "upstream-ca.pem", &ca.pem);
    let upstream = format!("https://127.0.0.1:{}", addr.port());
    let cfg = write_config(&format!(
        "[upstream_tls]\nca_file = {ca_file:?}\nserver_name = \"backend.internal\"\n[health]\ninterval_ms = 60000\n"
    ));
    let proxy = spawn_proxy(&upstream, &["--config", &cfg]).await;
    for i in 0..4 {
        let a = get(&proxy.url(&format!("/secure/{i}"))).await;
        assert_eq!((a.status, a.text().as_str()), (200, "secure answer"));
    }
    // Each answer closed its connection: four handshakes, the later ones
    // resumed (the first may be too: the health probe at start shares the
    // session cache, and its handshake is not counted here).
    let metrics = metrics_text(&proxy).await;
    let resumed = sample(&metrics, r#"perfproxy_tls_upstream_handshakes_total{result="resumed"}"#);
    let full = sample(&metrics, r#"perfproxy_tls_upstream_handshakes_total{result="full"}"#);
    assert!(handshakes.load(Ordering::SeqCst) >= 4);
    assert!(resumed >= 3.0 && full + resumed == 4.0, "full {full}, resumed {resumed}\n{metrics}");
    let perf = get(&proxy.url("/performance")).await.json();
    assert_eq!(perf["tls"]["upstream"]["server_name"], "backend.internal");
    proxy.shutdown().await;

    // The same upstream under a CA perfproxy was not given: 502, and the log says why.
    let wrong = Ca::new("not the upstream's CA");
    let wrong_file = tls::write(&dir, "wrong-ca.pem", &wrong.pem);
    let cfg = write_config(&format!(
        "[upstream_tls]\nca_file = {wrong_file:?}\nserver_name = \"backend.internal\"\n[health]\ninterval_ms = 60000\n"
    ));
    let (port, log) = (free_port(), dir.join("wrong-ca.log"));
    let listen = format!("127.0.0.1:{port}");
    let child = Child(
        std::process::Command::new(binary())
            .args(["--listen", &listen, "--upstream", &upstream, "--config", &cfg])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("http://{listen}/health/live"), 10).await;
    let before = handshakes.load(Ordering::SeqCst);
    let a = get(&format!("http://{listen}/secure/x")).await;
    assert_eq!(a.status, 502);
    assert!(a.text().contains("TLS"), "{}", a.text());
    assert_eq!(handshakes.load(Ordering::SeqCst), before, "no handshake completed");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("TLS handshake with the upstream failed") && text.contains("UnknownIssuer"), "{text}");
    drop(child);
}

#[tokio::test]
async fn a_certificate_near_its_end_raises_tls_expiry() {
    let up = spawn_upstream().await;
    let dir = tls::temp_dir();
    let ca = Ca::new("expiry CA");
    let (cert, key) = listener_files(&dir, &ca.leaf("soon.example", &["soon.example"], 2));
    let cfg = tls_config(&cert, &key, "[alerts]\ninterval_ms = 100\n");
    let proxy = spawn_proxy(&up.url(), &["--tls-listen", "127.0.0.1:0", "--config", &cfg]).await;
    let mut alert = serde_json::Value::Null;
    for _ in 0..60 {
        let perf = get(&proxy.url("/performance")).await.json();
        if let Some(a) = perf["alerts"].as_array().unwrap().iter().find(|a| a["rule"] == "tls_expiry") {
            alert = a.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(alert["severity"], "critical", "{alert}");
    assert!(alert["message"].as_str().unwrap().contains("expires in 2.0 days"), "{alert}");
    proxy.shutdown().await;
}

/// The test upstream behind perfproxy with a TLS listener (a certificate
/// for localhost from a CA of its own), and a client configuration trusting it.
async fn behind_tls_listener() -> (Upstream, Proxy, Arc<rustls::ClientConfig>) {
    let up = spawn_upstream().await;
    let dir = tls::temp_dir();
    let ca = Ca::new("listener CA");
    let (cert, key) = listener_files(&dir, &ca.leaf("localhost", &["localhost"], 30));
    let cfg = tls_config(&cert, &key, "");
    let proxy = spawn_proxy(&up.url(), &["--tls-listen", "127.0.0.1:0", "--config", &cfg]).await;
    (up, proxy, tls::client_config(&ca, &[b"http/1.1"], None))
}

#[tokio::test]
async fn answers_over_tls_are_flushed_whole_and_closed_with_close_notify() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_up, proxy, config) = behind_tls_listener().await;
    let addr = proxy.tls.unwrap();

    // A client that reads nothing until the whole answer was written: the
    // socket's buffers fill, rustls holds the rest, and only a flush sends
    // its last records (the connection stays open: no close flushes it).
    let mut stream = tls::connect(addr, config.clone(), "localhost").await.unwrap();
    stream.write_all(b"GET /big/4000000 HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut got = Vec::new();
    let whole = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = vec![0u8; 64 * 1024];
        while !got.ends_with(b"\r\n0\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(whole.is_ok(), "the answer's end never came: {} bytes", got.len());
    let text = String::from_utf8_lossy(&got);
    assert_eq!(decode_chunked(text.split_once("\r\n\r\n").unwrap().1).len(), 4_000_000);

    // A close-delimited end is a close_notify, not a cut TCP stream.
    let mut stream = tls::connect(addr, config.clone(), "localhost").await.unwrap();
    stream.write_all(b"GET /big/300000 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await;
    assert!(matches!(read, Ok(Ok(_))), "{read:?} after {} bytes", got.len());
    let text = String::from_utf8_lossy(&got);
    assert_eq!(decode_chunked(text.split_once("\r\n\r\n").unwrap().1).len(), 300_000);
    proxy.shutdown().await;
}

/// The payload of a chunked body.
fn decode_chunked(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = body.split_once("\r\n") else { return out };
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
}

#[tokio::test]
async fn a_tls_client_that_leaves_cancels_its_upstream_request_and_a_stop_ends_handshakes() {
    use tokio::io::AsyncWriteExt;
    let (up, proxy, config) = behind_tls_listener().await;
    let addr = proxy.tls.unwrap();

    // A clean TLS close (close_notify, then the FIN) while the upstream
    // thinks: the upstream request is dropped, as over plain TCP.
    let mut stream = tls::connect(addr, config.clone(), "localhost").await.unwrap();
    stream.write_all(b"GET /delay/3000 HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.shutdown().await.unwrap();
    eventually(2, "the upstream request was cancelled", || async { up.cancelled.load(Ordering::SeqCst) == 1 }).await;

    // A connection that never finishes its handshake does not hold the stop.
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = std::time::Instant::now();
    proxy.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(3), "shutdown took {:?}", t.elapsed());
}

#[tokio::test]
async fn an_https_upstream_gets_a_client_certificate_and_http2_by_alpn() {
    let dir = tls::temp_dir();
    let ca = Ca::new("mtls upstream CA");
    let clients = Ca::new("perfproxy's client CA");
    let (addr, _) = spawn_tls_upstream_with(&ca.leaf("localhost", &["localhost"], 30), false, Some(&clients)).await;
    let upstream = format!("https://localhost:{}", addr.port());
    let ca_file = tls::write(&dir, "ca.pem", &ca.pem);
    let me = clients.leaf("perfproxy", &["perfproxy"], 30);
    let (cert, key) = (tls::write(&dir, "client.pem", &me.cert_pem), tls::write(&dir, "client-key.pem", &me.key_pem));
    let health = "[health]\ninterval_ms = 60000\n";

    // Without a client certificate the upstream refuses: 502.
    let cfg = write_config(&format!("[upstream_tls]\nca_file = {ca_file:?}\n{health}"));
    let proxy = spawn_proxy(&upstream, &["--config", &cfg]).await;
    assert_eq!(get(&proxy.url("/m")).await.status, 502);
    proxy.shutdown().await;

    // With one, HTTP/1.1 and (upstream_protocol = "h2c": HTTP/2 over TLS) h2.
    let tls_keys =
        format!("[upstream_tls]\nca_file = {ca_file:?}\nclient_cert_file = {cert:?}\nclient_key_file = {key:?}\n");
    let cfg = write_config(&format!("{tls_keys}{health}"));
    let proxy = spawn_proxy(&upstream, &["--config", &cfg]).await;
    let a = get(&proxy.url("/m")).await;
    assert_eq!((a.status, a.text().as_str()), (200, "secure answer"));
    // The client certificate is reported, and watched for its end.
    let perf = get(&proxy.url("/performance")).await.json();
    assert_eq!(perf["tls"]["upstream"]["client_certificates"][0]["not_after_unix"], me.not_after);
    assert_eq!(perf["tls"]["upstream"]["client_certificates"][0]["subject"], "CN=perfproxy");
    let metrics = metrics_text(&proxy).await;
    let line = format!("perfproxy_tls_client_certificate_not_after_seconds{{file={cert:?},subject=\"CN=perfproxy\"}}");
    assert_eq!(sample(&metrics, &line), me.not_after as f64, "{metrics}");
    proxy.shutdown().await;
    let soon = clients.leaf("perfproxy", &["perfproxy"], 1);
    let (soon_cert, soon_key) =
        (tls::write(&dir, "soon.pem", &soon.cert_pem), tls::write(&dir, "soon-key.pem", &soon.key_pem));
    let cfg = write_config(&format!(
        "[upstream_tls]\nca_file = {ca_file:?}\nclient_cert_file = {soon_cert:?}\nclient_key_file = {soon_key:?}\n{health}[alerts]\ninterval_ms = 100\n"
    ));
    let proxy = spawn_proxy(&upstream, &["--config", &cfg]).await;
    let url = proxy.url("/performance");
    eventually(5, "tls_expiry for the client certificate", || async {
        let perf = get(&url).await.json();
        perf["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "tls_expiry" && a["subject"] == soon_cert.as_str() && a["severity"] == "critical")
    })
    .await;
    proxy.shutdown().await;
    let cfg = write_config(&format!("upstream_protocol = \"h2c\"\n{tls_keys}{health}"));
    let proxy = spawn_proxy(&upstream, &["--config", &cfg]).await;
    let a = get(&proxy.url("/m")).await;
    assert_eq!((a.status, a.text().as_str()), (200, "secure answer over h2"));
    proxy.shutdown().await;
}
