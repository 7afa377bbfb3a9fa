//! `[compression]` end to end: zstd, Brotli and gzip answers decoding to
//! the upstream's bytes on both lanes and HTTP/2; the client's q-values;
//! every exclusion (no-transform, Range/206, HEAD, 204, 304, already
//! encoded, small, other types); `Vary` and weak `ETag`s; a stream reaching
//! the client chunk by chunk; each coding stored as its own cache variant,
//! hit and purged together, in memory and in the real Redis.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;

const REDIS: &str = "redis://127.0.0.1:6379/3";
const ON: &str = "[compression]\nenabled = true\n";

/// A JSON document of about `items` × 40 bytes, the same each time.
fn json(items: usize) -> String {
    let list: Vec<String> =
        (0..items).map(|i| format!("{{\"id\":{i},\"name\":\"item {i}\",\"ok\":{}}}", i % 3 == 0)).collect();
    format!("[{}]", list.join(","))
}

fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).map(|_| ()),
        "br" => brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out).map(|_| ()),
        "zstd" => zstd::stream::read::Decoder::new(bytes).and_then(|mut d| d.read_to_end(&mut out)).map(|_| ()),
        "" => {
            out.extend_from_slice(bytes);
            Ok(())
        }
        other => panic!("unexpected coding {other}"),
    }
    .unwrap_or_else(|e| panic!("{coding} does not decode: {e}"));
    out
}

async fn call(proxy: &Proxy, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::builder().method(method).uri(proxy.url(path));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::default()).unwrap()).await
}

async fn accepting(proxy: &Proxy, path: &str, ae: &str) -> Answer {
    call(proxy, "GET", path, &[("accept-encoding", ae)]).await
}

fn field<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.headers.get(name).map_or("", |v| v.to_str().unwrap())
}

fn varies_on_encoding(a: &Answer) -> bool {
    a.headers.get_all("vary").iter().any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("accept-encoding"))
}

async fn compression_doc(proxy: &Proxy) -> serde_json::Value {
    get(&proxy.url("/performance")).await.json()["compression"].clone()
}

#[tokio::test]
async fn each_algorithm_decodes_to_the_upstreams_bytes_on_both_lanes_and_http2() {
    let up = spawn_upstream().await;
    let body = json(600);
    up.script("/c/doc", 200, &[("content-type", "application/json"), ("cache-control", "no-store")], &body);
    let config = write_config(ON);
    for express in ["true", "false"] {
        let proxy = spawn_proxy(&up.url(), &["--config", &config, "--express-lane", express]).await;
        for coding in ["gzip", "br", "zstd"] {
            let a = accepting(&proxy, "/c/doc", coding).await;
            assert_eq!((a.status, field(&a, "content-encoding")), (200, coding), "express {express}");
            assert!(varies_on_encoding(&a));
            assert!(a.headers.get("content-length").is_none(), "sent as it is made");
            assert_eq!(decode(coding, &a.body), body.as_bytes(), "{coding}, express {express}");
            assert!(a.body.len() * 4 < body.len(), "{coding}: {} of {} bytes", a.body.len(), body.len());
        }
        let plain = get(&proxy.url("/c/doc")).await;
        assert_eq!((field(&plain, "content-encoding"), plain.text()), ("", body.clone()), "no Accept-Encoding");
        assert!(varies_on_encoding(&plain), "a compressible answer varies, compressed or not");
        // HTTP/2 (prior knowledge) takes the same path.
        let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let (mut h2, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let req =
            Request::get(proxy.url("/c/doc")).header("accept-encoding", "br").body(Full::<Bytes>::default()).unwrap();
        let resp = h2.send_request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.headers()["content-encoding"], "br");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(decode("br", &bytes), body.as_bytes());
        let doc = compression_doc(&proxy).await;
        assert_eq!(doc["enabled"], true);
        assert_eq!(doc["algorithms"], serde_json::json!(["zstd", "br", "gzip"]));
        assert_eq!(doc["gzip"]["responses"], 1, "{doc}");
        assert_eq!(doc["br"]["responses"], 2, "{doc}");
        assert_eq!(doc["gzip"]["bytes_in"], body.len(), "{doc}");
        assert!(doc["zstd"]["bytes_out"].as_u64().unwrap() < body.len() as u64 / 4, "{doc}");
        let metrics = get(&proxy.url("/metrics")).await.text();
        let line = format!("perfproxy_compression_bytes_total{{algorithm=\"gzip\",direction=\"in\"}} {}", body.len());
        assert!(metrics.contains(&line), "{line} not in /metrics");
        assert!(metrics.contains("perfproxy_compression_responses_total{algorithm=\"br\"} 2"));
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn off_by_default() {
    let up = spawn_upstream().await;
    let body = json(200);
    up.script("/c/off", 200, &[("content-type", "application/json")], &body);
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let a = accepting(&proxy, "/c/off", "gzip, br, zstd").await;
    assert_eq!((field(&a, "content-encoding"), a.text()), ("", body));
    assert!(!varies_on_encoding(&a));
    assert_eq!(compression_doc(&proxy).await["enabled"], false);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_clients_q_values_then_the_configured_order_pick_the_coding() {
    let up = spawn_upstream().await;
    let body = json(200);
    up.script("/c/q", 200, &[("content-type", "text/plain"), ("cache-control", "no-store")], &body);
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config(ON)]).await;
    for (ae, want) in [
        ("gzip, br, zstd", "zstd"),
        ("gzip, br", "br"),
        ("gzip;q=1.0, br;q=0.8", "gzip"),
        ("br;q=0.5, zstd;q=0.6, gzip;q=0.1", "zstd"),
        ("GZIP", "gzip"),
        ("*", "zstd"),
        ("zstd;q=0, *;q=0.3", "br"),
        ("gzip;q=0", ""),
        ("identity", ""),
        ("deflate, compress", ""),
        ("gzip;q=0.4, identity;q=0.9", ""),
        ("*;q=0", ""),
    ] {
        let a = accepting(&proxy, "/c/q", ae).await;
        assert_eq!(field(&a, "content-encoding"), want, "Accept-Encoding: {ae}");
        assert_eq!(decode(want, &a.body), body.as_bytes(), "{ae}");
    }
    // The operator's order breaks ties.
    let gzip_first = write_config("[compression]\nenabled = true\nalgorithms = [\"gzip\", \"br\"]\n");
    let other = spawn_proxy(&up.url(), &["--config", &gzip_first]).await;
    assert_eq!(field(&accepting(&other, "/c/q", "br, gzip, zstd").await, "content-encoding"), "gzip");
    assert_eq!(field(&accepting(&other, "/c/q", "zstd").await, "content-encoding"), "", "zstd not in use");
    proxy.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn what_is_never_compressed() {
    let up = spawn_upstream().await;
    let big = json(300);
    let etag = "\"v1\"";
    up.script("/c/keep", 200, &[("content-type", "text/html"), ("cache-control", "no-transform")], &big);
    up.script("/c/range", 206, &[("content-type", "text/plain"), ("content-range", "bytes 0-9/100")], &big);
    up.script("/c/full", 200, &[("content-type", "text/plain"), ("accept-ranges", "bytes")], &big);
    up.script("/c/none", 204, &[("content-type", "text/plain")], "");
    up.script("/c/tagged", 200, &[("content-type", "text/plain"), ("etag", etag), ("cache-control", "no-store")], &big);
    up.script("/c/encoded", 200, &[("content-type", "text/plain"), ("content-encoding", "br")], "not really br");
    up.script("/c/small", 200, &[("content-type", "text/plain")], "tiny");
    up.script("/c/png", 200, &[("content-type", "image/png")], &big);
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config(ON)]).await;
    let ae = ("accept-encoding", "gzip, br");

    let a = call(&proxy, "GET", "/c/keep", &[ae]).await;
    assert_eq!((field(&a, "content-encoding"), a.text()), ("", big.clone()), "no-transform");
    assert!(!varies_on_encoding(&a));
    let a = call(&proxy, "GET", "/c/range", &[ae, ("range", "bytes=0-9")]).await;
    assert_eq!((a.status, field(&a, "content-encoding")), (206, ""), "206");
    let a = call(&proxy, "GET", "/c/full", &[ae, ("range", "bytes=0-9")]).await;
    assert_eq!((a.status, field(&a, "content-encoding"), a.text()), (200, "", big.clone()), "a Range request");
    let a = call(&proxy, "GET", "/c/full", &[ae]).await;
    assert_eq!(field(&a, "content-encoding"), "br");
    assert!(a.headers.get("accept-ranges").is_none(), "no byte ranges of a coding made on the fly");
    let a = call(&proxy, "HEAD", "/c/full", &[ae]).await;
    assert_eq!((a.status, field(&a, "content-encoding")), (200, ""), "HEAD");
    assert_eq!(field(&a, "content-length"), big.len().to_string(), "HEAD says the identity length");
    let a = call(&proxy, "GET", "/c/none", &[ae]).await;
    assert_eq!((a.status, field(&a, "content-encoding"), a.body.len()), (204, "", 0), "204");
    let a = call(&proxy, "GET", "/c/tagged", &[ae, ("if-none-match", etag)]).await;
    assert_eq!((a.status, field(&a, "content-encoding")), (304, ""), "304");
    assert_eq!(field(&a, "etag"), etag, "the client revalidates the identity copy: its strong validator");
    let a = call(&proxy, "GET", "/c/tagged", &[ae, ("if-none-match", "W/\"v1\"")]).await;
    assert_eq!(
        (a.status, field(&a, "etag")),
        (304, "W/\"v1\""),
        "a compressed copy revalidated: the weak one it holds"
    );
    let a = call(&proxy, "GET", "/c/encoded", &[("accept-encoding", "gzip")]).await;
    assert_eq!((field(&a, "content-encoding"), a.text().as_str()), ("br", "not really br"), "already encoded");
    let a = call(&proxy, "GET", "/c/small", &[ae]).await;
    assert_eq!((field(&a, "content-encoding"), a.text().as_str()), ("", "tiny"), "under min_bytes");
    assert!(!varies_on_encoding(&a));
    let a = call(&proxy, "GET", "/c/png", &[ae]).await;
    assert_eq!((field(&a, "content-encoding"), a.text()), ("", big.clone()), "a type not listed");
    // A strong ETag becomes weak on a compressed answer, stays strong on identity.
    let a = call(&proxy, "GET", "/c/tagged", &[ae]).await;
    assert_eq!((field(&a, "content-encoding"), field(&a, "etag")), ("br", "W/\"v1\""));
    let a = call(&proxy, "GET", "/c/tagged", &[]).await;
    assert_eq!((field(&a, "content-encoding"), field(&a, "etag")), ("", etag));
    assert!(varies_on_encoding(&a));
    // min_bytes is the operator's.
    let zero = write_config("[compression]\nenabled = true\nmin_bytes = 0\ncontent_types = [\"*/*\"]\n");
    let everything = spawn_proxy(&up.url(), &["--config", &zero]).await;
    let a = call(&everything, "GET", "/c/small", &[("accept-encoding", "gzip")]).await;
    assert_eq!((field(&a, "content-encoding"), decode("gzip", &a.body)), ("gzip", b"tiny".to_vec()));
    let a = call(&everything, "GET", "/c/png", &[("accept-encoding", "gzip")]).await;
    assert_eq!(field(&a, "content-encoding"), "gzip", "*/*");
    proxy.shutdown().await;
    everything.shutdown().await;
}

#[tokio::test]
async fn an_upstream_vary_is_kept_beside_accept_encoding() {
    let up = spawn_upstream().await;
    let body = json(100);
    up.script(
        "/c/vary",
        200,
        &[("content-type", "text/plain"), ("vary", "Origin"), ("cache-control", "max-age=60")],
        &body,
    );
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config(ON)]).await;
    for _ in 0..2 {
        let a = call(&proxy, "GET", "/c/vary", &[("accept-encoding", "gzip"), ("origin", "https://a.example")]).await;
        let vary: Vec<&str> = a.headers.get_all("vary").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(vary, ["Origin", "Accept-Encoding"]);
        assert_eq!(decode("gzip", &a.body), body.as_bytes());
    }
    let other = call(&proxy, "GET", "/c/vary", &[("accept-encoding", "gzip"), ("origin", "https://b.example")]).await;
    assert_eq!(field(&other, "x-cache"), "MISS", "another Origin is another variant");
    assert_eq!(up.hits("/c/vary"), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_streamed_answer_reaches_the_client_chunk_by_chunk_compressed() {
    for express in ["true", "false"] {
        let up = spawn_upstream().await;
        let (feed, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        *up.stream_feed.lock().unwrap() = Some(rx);
        let config = write_config("[compression]\nenabled = true\nmin_bytes = 0\n");
        let proxy = spawn_proxy(&up.url(), &["--config", &config, "--express-lane", express]).await;
        let req = Request::get(proxy.url("/events")).header("accept-encoding", "gzip").body(Full::default()).unwrap();
        let resp = client().request(req).await.unwrap();
        assert_eq!(resp.headers()["content-encoding"], "gzip");
        let mut body = resp.into_body();
        let mut decoded = flate2::write::GzDecoder::new(Vec::new());
        for event in ["data: one\n\n", "data: two\n\n", "data: three\n\n"] {
            feed.send(Bytes::from_static(event.as_bytes())).await.unwrap();
            // The event arrives, decodable, while the upstream's body is still open.
            let want = decoded.get_ref().len() + event.len();
            while decoded.get_ref().len() < want {
                let frame = tokio::time::timeout(Duration::from_secs(3), body.frame())
                    .await
                    .unwrap_or_else(|_| panic!("{event:?} held back (express {express})"))
                    .expect("the body goes on")
                    .unwrap();
                if let Ok(data) = frame.into_data() {
                    decoded.write_all(&data).unwrap();
                    decoded.flush().unwrap();
                }
            }
            assert!(decoded.get_ref().ends_with(event.as_bytes()), "express {express}");
        }
        drop(feed);
        let rest = body.collect().await.unwrap().to_bytes();
        decoded.write_all(&rest).unwrap();
        let all = decoded.finish().unwrap();
        assert_eq!(all, b"data: one\n\ndata: two\n\ndata: three\n\n");
        proxy.shutdown().await;
    }
}

/// Drops what earlier runs left in Redis under `prefix`.
async fn clean_redis(prefix: &str) {
    let mut c = redis::Client::open(REDIS).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("ZRANGEBYLEX")
        .arg("perfproxy:index")
        .arg(format!("[{prefix}"))
        .arg(format!("[{prefix}\u{ff}"))
        .query_async(&mut c)
        .await
        .unwrap();
    for k in keys {
        let _: () = redis::cmd("DEL").arg(format!("perfproxy:obj:{k}")).query_async(&mut c).await.unwrap();
        let _: () = redis::cmd("ZREM").arg("perfproxy:index").arg(&k).query_async(&mut c).await.unwrap();
    }
}

/// The variants Redis holds for `path` on the test host.
async fn redis_variants(proxy: &Proxy, path: &str) -> usize {
    let mut c = redis::Client::open(REDIS).unwrap().get_multiplexed_async_connection().await.unwrap();
    let key = format!("perfproxy:obj:{path} {}", proxy.addr);
    redis::cmd("HLEN").arg(key).query_async(&mut c).await.unwrap()
}

#[tokio::test]
async fn each_coding_is_a_cache_variant_hit_and_purged_together_in_memory_and_redis() {
    clean_redis("/cv/").await;
    let up = spawn_upstream().await;
    let body = json(600);
    up.script(
        "/cv/doc",
        200,
        &[("content-type", "application/json"), ("cache-control", "max-age=60"), ("etag", "\"d1\"")],
        &body,
    );
    let config = write_config("[compression]\nenabled = true\n[cache]\nredis_timeout_ms = 2000\n");
    let args = ["--config", config.as_str(), "--redis-url", REDIS, "--admin-token", "tok"];
    let a = spawn_proxy(&up.url(), &args).await;
    eventually(5, "redis connected", || async {
        get(&a.url("/performance")).await.json()["cache"]["backend"] == "redis"
    })
    .await;
    let codings = [("gzip", "gzip"), ("br", "br"), ("zstd", "zstd"), ("identity", "")];
    for (ae, _) in codings {
        let miss = accepting(&a, "/cv/doc", ae).await;
        assert_eq!(field(&miss, "x-cache"), "MISS", "{ae}");
    }
    assert_eq!(up.hits("/cv/doc"), 4, "one miss per coding");
    for (ae, coding) in codings {
        let hit = accepting(&a, "/cv/doc", ae).await;
        assert_eq!((field(&hit, "x-cache"), field(&hit, "content-encoding")), ("HIT", coding), "{ae}");
        assert_eq!(decode(coding, &hit.body), body.as_bytes(), "{ae}");
        let etag = if coding.is_empty() { "\"d1\"" } else { "W/\"d1\"" };
        assert_eq!(field(&hit, "etag"), etag);
        assert!(varies_on_encoding(&hit));
        assert_eq!(field(&hit, "content-length"), hit.body.len().to_string(), "a stored coding has its length");
    }
    // A client that takes several gets the best stored one; one that takes
    // a coding not stored gets a stored one it takes (no miss).
    let both = accepting(&a, "/cv/doc", "gzip, br").await;
    assert_eq!((field(&both, "x-cache"), field(&both, "content-encoding")), ("HIT", "br"));
    let conditional = call(&a, "GET", "/cv/doc", &[("accept-encoding", "gzip"), ("if-none-match", "W/\"d1\"")]).await;
    assert_eq!(conditional.status, 304, "a weak validator matches the stored coding");
    assert_eq!(up.hits("/cv/doc"), 4, "hits never go upstream");
    // (Documents are rebuilt at most every 50 ms.)
    tokio::time::sleep(Duration::from_millis(100)).await;
    let doc = compression_doc(&a).await;
    let made = |c: &str| doc[c]["responses"].as_u64();
    assert_eq!((made("gzip"), made("br"), made("zstd")), (Some(1), Some(1), Some(1)), "a hit never compresses: {doc}");
    // The general path finds the same variants.
    let general = spawn_proxy(&up.url(), &[&args[..], &["--express-lane", "false"]].concat()).await;
    eventually(5, "variants reach redis", || async { redis_variants(&a, "/cv/doc").await == 4 }).await;
    // Another instance (its memory empty) is answered from Redis, each coding.
    let b = spawn_proxy(&up.url(), &args).await;
    eventually(5, "b connected", || async { get(&b.url("/performance")).await.json()["cache"]["backend"] == "redis" })
        .await;
    for (ae, coding) in codings {
        let hit = call(&b, "GET", "/cv/doc", &[("accept-encoding", ae), ("host", &a.addr.to_string())]).await;
        assert_eq!((field(&hit, "x-cache"), field(&hit, "content-encoding")), ("HIT", coding), "from redis: {ae}");
        assert_eq!(decode(coding, &hit.body), body.as_bytes());
        let again = call(&general, "GET", "/cv/doc", &[("accept-encoding", ae), ("host", &a.addr.to_string())]).await;
        assert_eq!((field(&again, "x-cache"), field(&again, "content-encoding")), ("HIT", coding), "general: {ae}");
    }
    assert_eq!(up.hits("/cv/doc"), 4);
    // One purge drops every coding from both layers, on every instance.
    let purge = Request::post(a.url("/cache/purge"))
        .header("authorization", "Bearer tok")
        .body(Full::new(Bytes::from_static(br#"{"pattern":"/cv/*"}"#)))
        .unwrap();
    assert_eq!(send(purge).await.status, 200);
    assert_eq!(redis_variants(&a, "/cv/doc").await, 0, "gone from redis");
    // Each check below asks for a coding no other one stores again.
    for ae in ["gzip", "zstd", "identity"] {
        assert_eq!(field(&accepting(&a, "/cv/doc", ae).await, "x-cache"), "MISS", "purged: {ae}");
    }
    eventually(5, "b dropped its copies", || async {
        let r = call(&b, "GET", "/cv/doc", &[("accept-encoding", "br"), ("host", &a.addr.to_string())]).await;
        field(&r, "x-cache") == "MISS"
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
    general.shutdown().await;
}

#[tokio::test]
async fn a_request_with_a_body_is_counted_once_by_the_rate_limits() {
    let up = spawn_upstream().await;
    let config = write_config(
        "[compression]\nenabled = true\n[[rate_limits]]\npattern = \"POST /echo\"\nkey = \"global\"\nrps = 0.001\nburst = 3\n",
    );
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    let c = client();
    let mut statuses = Vec::new();
    for i in 0..4 {
        let req = Request::post(proxy.url("/echo")).body(Full::new(Bytes::from(format!("body {i}")))).unwrap();
        let resp = c.request(req).await.unwrap();
        statuses.push(resp.status().as_u16());
        let _ = resp.into_body().collect().await;
    }
    assert_eq!(statuses, [200, 200, 200, 429], "each POST takes one token of three");
    assert_eq!(up.hits("/echo"), 3);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_cache_size_limit_reads_the_upstreams_length_not_the_compressed_one() {
    let up = spawn_upstream().await;
    let big = json(8000);
    assert!(big.len() > 200_000);
    up.script("/c/big", 200, &[("content-type", "application/json"), ("cache-control", "max-age=60")], &big);
    let config = write_config("[compression]\nenabled = true\n[cache]\nmax_object_bytes = 100000\n");
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    // Uncacheable (as without compression), so remembered as such: a bypass next.
    for want in ["MISS", "BYPASS"] {
        let a = accepting(&proxy, "/c/big", "gzip").await;
        assert!(a.body.len() < 100_000, "compressed it fits, {} bytes", a.body.len());
        assert_eq!(field(&a, "x-cache"), want);
        assert!(decode("gzip", &a.body) == big.as_bytes(), "decodes to the upstream's bytes");
    }
    assert_eq!(up.hits("/c/big"), 2, "over max_object_bytes as sent: never stored");
    proxy.shutdown().await;
}
