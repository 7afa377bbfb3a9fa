//! The two-layer cache (SPEC §6) against a real upstream and a real Redis:
//! the shared one on 6379 (database 3, paths unique per test) and private
//! redis-servers for faults.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;

const REDIS: &str = "redis://127.0.0.1:6379/3";

async fn call(proxy: &Proxy, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::builder().method(method).uri(proxy.url(path));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::default()).unwrap()).await
}

async fn fetch(proxy: &Proxy, path: &str) -> Answer {
    call(proxy, "GET", path, &[]).await
}

fn x_cache(a: &Answer) -> &str {
    a.headers.get("x-cache").map_or("-", |v| v.to_str().unwrap())
}

fn age(a: &Answer) -> u64 {
    a.headers["age"].to_str().unwrap().parse().unwrap()
}

async fn cache_doc(proxy: &Proxy) -> serde_json::Value {
    fetch(proxy, "/performance").await.json()["cache"].clone()
}

async fn redis_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// The keys Redis' index holds under `prefix`.
async fn indexed(prefix: &str) -> Vec<String> {
    redis::cmd("ZRANGEBYLEX")
        .arg("perfproxy:index")
        .arg(format!("[{prefix}"))
        .arg(format!("[{prefix}\u{ff}"))
        .query_async(&mut redis_conn().await)
        .await
        .unwrap()
}

/// Drops what earlier runs left in Redis under `prefix` (entries live 60 s).
async fn clean_redis(prefix: &str) {
    let mut c = redis_conn().await;
    for k in indexed(prefix).await {
        let _: () = redis::cmd("DEL").arg(format!("perfproxy:obj:{k}")).query_async(&mut c).await.unwrap();
        let _: () = redis::cmd("ZREM").arg("perfproxy:index").arg(&k).query_async(&mut c).await.unwrap();
    }
}

/// Two perfproxy instances sharing the test Redis (token `tok`), both
/// connected and listening for each other's invalidations.
async fn two_instances_on_redis(up: &Upstream) -> (Proxy, Proxy) {
    let slow_ok = write_config("[cache]\nredis_timeout_ms = 2000\n");
    let args = ["--redis-url", REDIS, "--admin-token", "tok", "--config", &slow_ok];
    let a = spawn_proxy(&up.url(), &args).await;
    let b = spawn_proxy(&up.url(), &args).await;
    eventually(5, "both connected to redis", || async {
        cache_doc(&a).await["backend"] == "redis" && cache_doc(&b).await["backend"] == "redis"
    })
    .await;
    (a, b)
}

async fn purge(proxy: &Proxy, auth: Option<&str>, body: &'static str) -> Answer {
    let mut b = Request::post(proxy.url("/cache/purge"));
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    send(b.body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap()).await
}

#[tokio::test]
async fn hits_misses_head_and_headers() {
    let up = spawn_upstream().await;
    up.script("/t-hit/a", 200, &[("cache-control", "max-age=60"), ("content-type", "text/plain")], "hello");
    let proxy = spawn_proxy(&up.url(), &[]).await;

    let first = fetch(&proxy, "/t-hit/a").await;
    assert_eq!((first.status, x_cache(&first), first.text().as_str()), (200, "MISS", "hello"));
    let second = fetch(&proxy, "/t-hit/a").await;
    assert_eq!((second.status, x_cache(&second), second.text().as_str()), (200, "HIT", "hello"));
    // Date has whole seconds, so the apparent age on arrival is up to 1 s.
    assert!(age(&second) <= 1, "{:?}", second.headers["age"]);
    assert_eq!(second.headers["content-type"], "text/plain");
    assert!(second.headers.get_all("server-timing").iter().any(|v| v == "cache;desc=HIT"));
    let head = call(&proxy, "HEAD", "/t-hit/a", &[]).await;
    assert_eq!((head.status, x_cache(&head), head.body.len()), (200, "HIT", 0));
    assert_eq!(head.headers["content-length"], "5", "HEAD answered from the stored GET");
    assert_eq!(up.hits("/t-hit/a"), 1);

    // Age grows with residence.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = age(&fetch(&proxy, "/t-hit/a").await);
    assert!((1..=2).contains(&later), "age {later}");

    // Unsafe methods and Range bypass the cache.
    let post = call(&proxy, "POST", "/t-hit/other", &[]).await;
    assert_eq!(x_cache(&post), "BYPASS");
    let range = call(&proxy, "GET", "/t-hit/a", &[("range", "bytes=0-1")]).await;
    assert_eq!(x_cache(&range), "BYPASS");

    let c = cache_doc(&proxy).await;
    assert_eq!(c["enabled"], true);
    assert_eq!(c["backend"], "memory", "no REDIS_URL");
    assert_eq!((c["hits"].as_u64(), c["misses"].as_u64(), c["stores"].as_u64()), (Some(3), Some(1), Some(1)));
    assert_eq!(c["bypasses"], 2);
    assert!(c["memory_bytes"].as_u64().unwrap() > 0);
    let metrics = fetch(&proxy, "/metrics").await.text();
    assert!(metrics.contains("perfproxy_cache_hits_total 3"), "{metrics}");
    assert!(metrics.contains("perfproxy_cache_misses_total 1"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn never_stored() {
    let up = spawn_upstream().await;
    type Case = (&'static str, u16, Vec<(&'static str, &'static str)>);
    let cases: [Case; 9] = [
        ("/t-never/no-store", 200, vec![("cache-control", "max-age=60, no-store")]),
        ("/t-never/private", 200, vec![("cache-control", "private, max-age=60")]),
        ("/t-never/cookie", 200, vec![("cache-control", "max-age=60"), ("set-cookie", "s=1")]),
        ("/t-never/vary-star", 200, vec![("cache-control", "max-age=60"), ("vary", "*")]),
        ("/t-never/status-500", 500, vec![("cache-control", "max-age=60")]),
        ("/t-never/status-201", 201, vec![("cache-control", "max-age=60")]),
        ("/t-never/no-freshness", 200, vec![]),
        ("/t-never/heuristic", 200, vec![("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")]),
        ("/t-never/too-big", 200, vec![("cache-control", "max-age=60")]),
    ];
    for (path, status, headers) in &cases {
        let body = if path.ends_with("too-big") { "x".repeat(2000) } else { "body".into() };
        up.script(path, *status, headers, &body);
    }
    up.script("/t-never/auth", 200, &[("cache-control", "max-age=60")], "secret");
    up.script("/t-never/auth-public", 200, &[("cache-control", "public, max-age=60")], "shared");
    let cfg = write_config("[cache]\nmax_object_bytes = 1000\n");
    let proxy = spawn_proxy(&up.url(), &["--config", &cfg]).await;
    for (path, status, _) in &cases {
        let a = fetch(&proxy, path).await;
        assert_eq!((a.status, x_cache(&a)), (*status, "MISS"), "{path}");
        // Known uncacheable now (hit-for-miss): passed, counted as a bypass.
        let expected = if *status >= 500 { "MISS" } else { "BYPASS" };
        let a = fetch(&proxy, path).await;
        assert_eq!((a.status, x_cache(&a)), (*status, expected), "{path}");
        assert_eq!(up.hits(path), 2, "{path} was stored");
    }
    for _ in 0..2 {
        call(&proxy, "GET", "/t-never/auth", &[("authorization", "Bearer a")]).await;
        call(&proxy, "GET", "/t-never/auth-public", &[("authorization", "Bearer a")]).await;
    }
    assert_eq!(up.hits("/t-never/auth"), 2, "an Authorization answer is not shared");
    assert_eq!(up.hits("/t-never/auth-public"), 1, "unless it says public");

    // A body cut short by the upstream is never stored.
    let cut = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cut_addr = cut.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = cut.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 100\r\n\r\n";
                let _ = s.write_all(format!("{head}only half").as_bytes()).await;
            });
        }
    });
    let proxy2 = spawn_proxy(&format!("http://{cut_addr}"), &[]).await;
    for _ in 0..2 {
        let r = client().get(proxy2.url("/t-never/cut").parse().unwrap()).await.unwrap();
        assert_eq!(r.headers()["x-cache"], "MISS");
        let _ = http_body_util::BodyExt::collect(r.into_body()).await;
    }
    assert_eq!(cache_doc(&proxy2).await["stores"], 0);
    proxy.shutdown().await;
    proxy2.shutdown().await;
}

#[tokio::test]
async fn rules_cache_without_headers_and_ttl_expires() {
    let up = spawn_upstream().await;
    up.script("/t-rule/items/1", 200, &[], "one");
    // 3 s: room for a starved debug build between the two fetches.
    let cfg = write_config("[[cache.rules]]\npattern = \"GET /t-rule/items/:id\"\nttl_ms = 3000\n");
    let proxy = spawn_proxy(&up.url(), &["--config", &cfg]).await;
    assert_eq!(x_cache(&fetch(&proxy, "/t-rule/items/1").await), "MISS");
    assert_eq!(x_cache(&fetch(&proxy, "/t-rule/items/1").await), "HIT");
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(x_cache(&fetch(&proxy, "/t-rule/items/1").await), "MISS", "the rule's ttl is over");
    assert_eq!(up.hits("/t-rule/items/1"), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn vary_variants_and_query_normalisation() {
    let up = spawn_upstream().await;
    up.script("/t-vary/page", 200, &[("cache-control", "max-age=60"), ("vary", "Accept-Language")], "page");
    up.script("/t-vary/q", 200, &[("cache-control", "max-age=60")], "q");
    let proxy = spawn_proxy(&up.url(), &["--config", &write_config("[cache]\nignore_query = [\"utm_*\"]\n")]).await;
    for lang in ["en", "fr", "en", "fr"] {
        call(&proxy, "GET", "/t-vary/page", &[("accept-language", lang)]).await;
    }
    let none = call(&proxy, "GET", "/t-vary/page", &[]).await;
    assert_eq!(x_cache(&none), "MISS", "no Accept-Language is a variant of its own");
    let fr = call(&proxy, "GET", "/t-vary/page", &[("accept-language", "fr")]).await;
    assert_eq!(x_cache(&fr), "HIT");
    assert_eq!(up.hits("/t-vary/page"), 3, "en, fr and none: three variants");

    assert_eq!(x_cache(&fetch(&proxy, "/t-vary/q?b=2&a=1").await), "MISS");
    assert_eq!(x_cache(&fetch(&proxy, "/t-vary/q?a=1&b=2&utm_source=mail").await), "HIT");
    assert_eq!(x_cache(&fetch(&proxy, "/t-vary/q?a=1&b=3").await), "MISS");
    assert_eq!(up.hits("/t-vary/q"), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn accept_language_variants_ignore_case_and_follow_content_language() {
    let up = spawn_upstream().await;
    let vary = [("cache-control", "max-age=60"), ("vary", "Accept-Language")];
    up.script("/t-lang/de", 200, &[vary[0], vary[1], ("content-language", "de")], "Seite");
    up.script("/t-lang/any", 200, &vary, "page");
    for express in ["true", "false"] {
        let owned = spawn_proxy(&up.url(), &["--express-lane", express]).await;
        let proxy = &owned;
        let ask = |path: &'static str, al: &'static str| async move {
            call(proxy, "GET", path, &[("accept-language", al)]).await
        };
        assert_eq!(x_cache(&ask("/t-lang/de", "en, de").await), "MISS");
        assert_eq!(x_cache(&ask("/t-lang/de", "eN, De").await), "HIT", "case");
        assert_eq!(x_cache(&ask("/t-lang/de", "fr;q=0.5, de;q=1.0").await), "HIT", "de ranked first: the stored de");
        assert_eq!(x_cache(&ask("/t-lang/de", "fr, de;q=0.5").await), "MISS", "fr ranked first: another variant");
        assert_eq!(x_cache(&ask("/t-lang/any", "en, de").await), "MISS");
        assert_eq!(x_cache(&ask("/t-lang/any", "EN,de").await), "HIT");
        assert_eq!(x_cache(&ask("/t-lang/any", "de, en").await), "MISS", "no Content-Language: order counts");
        owned.shutdown().await;
    }
    assert_eq!((up.hits("/t-lang/de"), up.hits("/t-lang/any")), (4, 4));
}

#[tokio::test]
async fn revalidation_and_client_conditionals() {
    let up = spawn_upstream().await;
    let etag = "\"v1\"";
    up.script("/t-reval/doc", 200, &[("cache-control", "max-age=1"), ("etag", etag), ("x-version", "1")], "doc");
    let proxy = spawn_proxy(&up.url(), &[]).await;
    assert_eq!(fetch(&proxy, "/t-reval/doc").await.text(), "doc");
    // The client's own validator against a fresh entry: 304 from the cache.
    let c = call(&proxy, "GET", "/t-reval/doc", &[("if-none-match", etag)]).await;
    assert_eq!((c.status, x_cache(&c)), (304, "HIT"));
    assert_eq!(c.headers["etag"], etag);
    assert_eq!(up.hits("/t-reval/doc"), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Stale: revalidated with If-None-Match; the 304's headers refresh the entry.
    up.script("/t-reval/doc", 200, &[("cache-control", "max-age=60"), ("etag", etag), ("x-version", "2")], "doc");
    let r = fetch(&proxy, "/t-reval/doc").await;
    assert_eq!((r.status, x_cache(&r), r.text().as_str()), (200, "HIT", "doc"));
    assert_eq!(r.headers["x-version"], "2", "stored headers refreshed from the 304");
    assert!(age(&r) <= 1, "age restarts with the 304");
    let seen = up.seen();
    let last = seen.iter().rev().find(|s| s.uri == "/t-reval/doc").unwrap();
    assert_eq!(last.headers["if-none-match"], etag);
    // Fresh again for 60 s now.
    assert_eq!(x_cache(&fetch(&proxy, "/t-reval/doc").await), "HIT");
    assert_eq!(up.hits("/t-reval/doc"), 2);

    // Request no-cache goes upstream (conditionally) and refreshes.
    let nc = call(&proxy, "GET", "/t-reval/doc", &[("cache-control", "no-cache")]).await;
    assert_eq!(nc.status, 200);
    assert_eq!(up.hits("/t-reval/doc"), 3);
    proxy.shutdown().await;
}

#[tokio::test]
async fn writes_invalidate_their_targets() {
    let up = spawn_upstream().await;
    for p in ["/t-inv/users/1", "/t-inv/users/2", "/t-inv/list", "/t-inv/moved"] {
        up.script(p, 200, &[("cache-control", "max-age=60")], p);
    }
    up.script("/t-inv/create", 201, &[("location", "/t-inv/moved")], "created");
    let cfg = write_config("[[cache.rules]]\npattern = \"GET /t-inv/users/:id\"\ninvalidates = [\"/t-inv/list\"]\n");
    let proxy = spawn_proxy(&up.url(), &["--config", &cfg]).await;
    let warm = |p: &'static str| {
        let proxy = &proxy;
        async move {
            fetch(proxy, p).await;
            assert_eq!(x_cache(&fetch(proxy, p).await), "HIT", "{p}");
        }
    };
    for p in ["/t-inv/users/1", "/t-inv/users/2", "/t-inv/list", "/t-inv/moved"] {
        warm(p).await;
    }
    fetch(&proxy, "/t-inv/users/1?page=2").await;
    let put = call(&proxy, "PUT", "/t-inv/users/1", &[]).await;
    assert_eq!(put.status, 200);
    assert_eq!(x_cache(&fetch(&proxy, "/t-inv/users/1").await), "MISS", "own path dropped");
    assert_eq!(x_cache(&fetch(&proxy, "/t-inv/users/1?page=2").await), "MISS", "with every query");
    assert_eq!(x_cache(&fetch(&proxy, "/t-inv/list").await), "MISS", "the rule's invalidates dropped");
    assert_eq!(x_cache(&fetch(&proxy, "/t-inv/users/2").await), "HIT", "others stay");
    // A failed write invalidates nothing.
    up.script("/t-inv/users/2", 500, &[], "no");
    call(&proxy, "DELETE", "/t-inv/users/2", &[]).await;
    assert_eq!(x_cache(&fetch(&proxy, "/t-inv/users/2").await), "HIT");
    // Location of a successful POST is dropped (RFC 9111 §4.4).
    call(&proxy, "POST", "/t-inv/create", &[]).await;
    assert_eq!(x_cache(&fetch(&proxy, "/t-inv/moved").await), "MISS");
    assert!(cache_doc(&proxy).await["invalidations"].as_u64().unwrap() >= 4);
    proxy.shutdown().await;
}

#[tokio::test]
async fn purge_needs_the_token_and_drops_both_layers() {
    clean_redis("/t-purge/").await;
    let up = spawn_upstream().await;
    for p in ["/t-purge/a/1", "/t-purge/a/2", "/t-purge/b"] {
        up.script(p, 200, &[("cache-control", "max-age=60")], p);
    }
    // A generous Redis budget: this test checks Redis' content, on a busy machine.
    let slow_ok = write_config("[cache]\nredis_timeout_ms = 2000\n");
    let proxy = spawn_proxy(&up.url(), &["--redis-url", REDIS, "--config", &slow_ok]).await;
    assert_eq!(purge(&proxy, Some("Bearer x"), r#"{"pattern":"/t-purge/*"}"#).await.status, 403, "no token configured");
    let tokened =
        spawn_proxy(&up.url(), &["--redis-url", REDIS, "--admin-token", "s3cret", "--config", &slow_ok]).await;
    eventually(5, "redis connected", || async { cache_doc(&tokened).await["backend"] == "redis" }).await;
    assert_eq!(purge(&tokened, None, r#"{"pattern":"/t-purge/*"}"#).await.status, 401);
    assert_eq!(purge(&tokened, Some("Bearer wrong"), r#"{"pattern":"/t-purge/*"}"#).await.status, 403);
    assert_eq!(purge(&tokened, Some("Bearer s3cret"), r#"{"nope":1}"#).await.status, 400);
    let g = call(&tokened, "GET", "/cache/purge", &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(g.status, 405);

    for p in ["/t-purge/a/1", "/t-purge/a/2", "/t-purge/b"] {
        fetch(&tokened, p).await;
        assert_eq!(x_cache(&fetch(&tokened, p).await), "HIT");
    }
    eventually(5, "entries reach redis", || async { indexed("/t-purge/").await.len() == 3 }).await;
    let ok = purge(&tokened, Some("Bearer s3cret"), r#"{"pattern":"/t-purge/a/*"}"#).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["purged"], 2);
    let left = indexed("/t-purge/").await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("/t-purge/b "));
    assert_eq!(x_cache(&fetch(&tokened, "/t-purge/a/1").await), "MISS", "gone from memory and Redis");
    assert_eq!(x_cache(&fetch(&tokened, "/t-purge/b").await), "HIT");
    proxy.shutdown().await;
    tokened.shutdown().await;
}

#[tokio::test]
async fn concurrent_misses_collapse_into_one_upstream_request() {
    let up = spawn_upstream().await;
    up.script_slow("/t-collapse/slow", &[("cache-control", "max-age=60")], "slow", 300);
    // A rule names the route: its misses are worth collapsing from the first.
    let config = write_config("[[cache.rules]]\npattern = \"GET /t-collapse/*\"\n");
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = proxy.url("/t-collapse/slow");
        tasks.push(tokio::spawn(async move { get(&url).await }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!((a.status, a.text().as_str()), (200, "slow"));
        outcomes.push(x_cache(&a).to_string());
    }
    assert_eq!(up.hits("/t-collapse/slow"), 1, "20 concurrent misses, one upstream request: {outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| *o == "MISS").count(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn stale_if_error_serves_the_stale_copy() {
    let up = spawn_upstream().await;
    up.script("/t-stale/a", 200, &[("cache-control", "max-age=1")], "good");
    up.script("/t-stale/strict", 200, &[("cache-control", "max-age=1, must-revalidate")], "strict");
    let proxy = spawn_proxy(&up.url(), &[]).await;
    fetch(&proxy, "/t-stale/a").await;
    fetch(&proxy, "/t-stale/strict").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    up.script("/t-stale/a", 503, &[], "down");
    up.script("/t-stale/strict", 503, &[], "down");
    let a = fetch(&proxy, "/t-stale/a").await;
    assert_eq!((a.status, x_cache(&a), a.text().as_str()), (200, "STALE", "good"));
    let s = fetch(&proxy, "/t-stale/strict").await;
    assert_eq!((s.status, x_cache(&s)), (503, "MISS"), "must-revalidate is never served stale");
    // The upstream gone altogether: still the stale copy.
    up.kill();
    let a = fetch(&proxy, "/t-stale/a").await;
    assert_eq!((a.status, x_cache(&a)), (200, "STALE"));
    assert_eq!(fetch(&proxy, "/t-stale/strict").await.status, 502);
    assert!(cache_doc(&proxy).await["stale"].as_u64().unwrap() >= 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_behind() {
    let up = spawn_upstream().await;
    up.script("/t-swr/a", 200, &[("cache-control", "max-age=1, stale-while-revalidate=30")], "v1");
    let proxy = spawn_proxy(&up.url(), &[]).await;
    fetch(&proxy, "/t-swr/a").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    up.script_slow("/t-swr/a", &[("cache-control", "max-age=60")], "v2", 500);
    let t = Instant::now();
    let a = fetch(&proxy, "/t-swr/a").await;
    assert_eq!((x_cache(&a), a.text().as_str()), ("STALE", "v1"));
    assert!(t.elapsed() < Duration::from_millis(400), "not held for the revalidation");
    eventually(5, "refreshed behind", || async { fetch(&proxy, "/t-swr/a").await.text() == "v2" }).await;
    assert_eq!(up.hits("/t-swr/a"), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn two_instances_share_redis_and_purges_reach_both() {
    clean_redis("/t-two/").await;
    let up = spawn_upstream().await;
    up.script("/t-two/doc", 200, &[("cache-control", "max-age=60")], "shared");
    let (a, b) = two_instances_on_redis(&up).await;
    // Same Host for both, as behind one service name.
    let host = [("host", "svc.local")];
    assert_eq!(x_cache(&call(&a, "GET", "/t-two/doc", &host).await), "MISS");
    let redis = redis_conn().await;
    eventually(5, "A's entry reaches Redis (stored behind the response)", || {
        let mut r = redis.clone();
        async move {
            let n: u64 =
                redis::cmd("EXISTS").arg("perfproxy:obj:/t-two/doc svc.local").query_async(&mut r).await.unwrap();
            n == 1
        }
    })
    .await;
    assert_eq!(x_cache(&call(&b, "GET", "/t-two/doc", &host).await), "HIT", "B finds A's entry in Redis");
    assert_eq!(up.hits("/t-two/doc"), 1, "B's first answer came from Redis");
    assert_eq!(x_cache(&call(&b, "GET", "/t-two/doc", &host).await), "HIT", "now from B's memory");

    let purged = send(
        Request::post(a.url("/cache/purge"))
            .header("authorization", "Bearer tok")
            .body(Full::new(Bytes::from_static(br#"{"pattern":"/t-two/*"}"#)))
            .unwrap(),
    )
    .await;
    assert_eq!(purged.json()["purged"], 1);
    eventually(5, "B's memory copy dropped through pub/sub", || async {
        x_cache(&call(&b, "GET", "/t-two/doc", &host).await) == "MISS"
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn redis_frozen_or_killed_never_fails_a_request() {
    let up = spawn_upstream().await;
    for i in 0..20 {
        up.script(&format!("/t-fault/{i}"), 200, &[("cache-control", "max-age=60")], "x");
    }
    let port = free_port();
    let redis = Redis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let cfg = write_config("[health]\ninterval_ms = 100\ntimeout_ms = 200\n");
    let proxy = spawn_proxy(&up.url(), &["--redis-url", &url, "--config", &cfg]).await;
    eventually(5, "redis up", || async { fetch(&proxy, "/health").await.json()["checks"]["redis"]["status"] == "up" })
        .await;

    // Load: distinct keys, so each request looks in Redis.
    let load = |round: usize| {
        let proxy = &proxy;
        async move {
            let mut worst = Duration::ZERO;
            for i in 0..20 {
                let t = Instant::now();
                let a = fetch(proxy, &format!("/t-fault/{i}?round={round}")).await;
                assert_eq!(a.status, 200, "round {round}");
                worst = worst.max(t.elapsed());
            }
            worst
        }
    };
    load(0).await;
    redis.signal("STOP");
    let worst = load(1).await;
    assert!(worst < Duration::from_millis(1000), "a frozen Redis held a request {worst:?}");
    let doc = fetch(&proxy, "/performance").await.json();
    assert!(doc["cache"]["errors"].as_u64().unwrap() >= 1, "{}", doc["cache"]);
    eventually(5, "health degraded", || async {
        let h = fetch(&proxy, "/health").await;
        h.status == 200 && h.json()["status"] == "degraded"
    })
    .await;
    redis.signal("CONT");
    drop(redis);
    load(2).await;
    // Back on the same port: the connection manager reconnects and stores again.
    let redis = Redis::start(port);
    let mut conn = None;
    for _ in 0..100 {
        if let Ok(c) = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await {
            conn = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut conn = conn.expect("private redis back");
    let mut round = 3;
    eventually(10, "stores reach the restarted Redis", || {
        round += 1;
        let mut conn = conn.clone();
        async move {
            load(round).await;
            let n: usize = redis::cmd("ZCARD").arg("perfproxy:index").query_async(&mut conn).await.unwrap_or(0);
            n > 0
        }
    })
    .await;
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    drop(redis);
    proxy.shutdown().await;
}

#[tokio::test]
async fn one_clients_no_store_or_credentials_do_not_mark_the_url_uncacheable() {
    let up = spawn_upstream().await;
    up.script("/t-ns/a", 200, &[("cache-control", "max-age=60")], "a");
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let first = call(&proxy, "GET", "/t-ns/a", &[("cache-control", "no-store")]).await;
    assert_eq!(x_cache(&first), "MISS");
    let authed = call(&proxy, "GET", "/t-ns/a", &[("authorization", "Bearer x")]).await;
    assert_eq!(x_cache(&authed), "MISS", "not stored, and not a pass either");
    assert_eq!(x_cache(&fetch(&proxy, "/t-ns/a").await), "MISS");
    assert_eq!(x_cache(&fetch(&proxy, "/t-ns/a").await), "HIT");
    assert_eq!(up.hits("/t-ns/a"), 3);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_redis_index_is_swept_of_expired_keys() {
    clean_redis("/t-sweep/").await;
    let up = spawn_upstream().await;
    up.script("/t-sweep/live", 200, &[("cache-control", "max-age=60")], "live");
    let slow_ok = write_config("[cache]\nredis_timeout_ms = 2000\n");
    let proxy = spawn_proxy(&up.url(), &["--redis-url", REDIS, "--config", &slow_ok]).await;
    eventually(5, "redis connected", || async { cache_doc(&proxy).await["backend"] == "redis" }).await;
    fetch(&proxy, "/t-sweep/live").await;
    let mut c = redis_conn().await;
    // An index entry whose hash expired (or never was): what the sweep drops.
    let _: () =
        redis::cmd("ZADD").arg("perfproxy:index").arg(0).arg("/t-sweep/gone h").query_async(&mut c).await.unwrap();
    eventually(5, "the live entry reached Redis", || async { indexed("/t-sweep/").await.len() == 2 }).await;
    let layer = perfproxy::cache::redis_layer::RedisLayer::new(REDIS).unwrap();
    tokio::time::timeout(Duration::from_secs(5), layer.connect()).await.unwrap();
    assert!(layer.sweep().await.unwrap() >= 1);
    let left = indexed("/t-sweep/").await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("/t-sweep/live "), "{left:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_write_during_a_miss_keeps_its_response_out_of_the_cache() {
    let up = spawn_upstream().await;
    up.script_slow("/t-race/doc", &[("cache-control", "max-age=60")], "old", 400);
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let url = proxy.url("/t-race/doc");
    let slow = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The write lands while the GET's (now outdated) answer is on its way.
    up.script("/t-race/doc", 200, &[("cache-control", "max-age=60")], "new");
    let put = call(&proxy, "PUT", "/t-race/doc", &[]).await;
    assert_eq!(put.status, 200);
    let old = slow.await.unwrap();
    assert_eq!((x_cache(&old), old.text().as_str()), ("MISS", "old"));
    let next = fetch(&proxy, "/t-race/doc").await;
    assert_eq!((x_cache(&next), next.text().as_str()), ("MISS", "new"), "the outdated answer was not stored");
    assert_eq!(x_cache(&fetch(&proxy, "/t-race/doc").await), "HIT");
    proxy.shutdown().await;
}

/// 10 concurrent requests to `path`: how long the slowest took.
async fn burst(proxy: &support::Proxy, path: &str) -> Duration {
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let url = proxy.url(path);
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    started.elapsed()
}

#[tokio::test]
async fn uncacheable_bursts_are_never_serialised_behind_a_leader() {
    let up = spawn_upstream().await;
    up.script_slow("/t-uncacheable/slow", &[], "not cacheable", 300);
    let config = write_config("[cache]\nuncacheable_ttl_ms = 600\n");
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    let first = burst(&proxy, "/t-uncacheable/slow").await;
    assert!(first < Duration::from_millis(450), "first burst took {first:?}");
    assert_eq!(up.hits("/t-uncacheable/slow"), 10, "every request went upstream at once");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let again = burst(&proxy, "/t-uncacheable/slow").await;
    assert!(again < Duration::from_millis(450), "burst after uncacheable_ttl_ms took {again:?}");
    // A later storable answer is still stored.
    up.script("/t-uncacheable/slow", 200, &[("cache-control", "max-age=60")], "now cacheable");
    get(&proxy.url("/t-uncacheable/slow")).await;
    get(&proxy.url("/t-uncacheable/slow")).await;
    let hit = get(&proxy.url("/t-uncacheable/slow")).await;
    assert_eq!((x_cache(&hit), hit.text().as_str()), ("HIT", "now cacheable"));
    let perf = get(&proxy.url("/performance")).await.json();
    assert!(perf["cache"]["uncacheable"].as_u64().unwrap() >= 1, "{}", perf["cache"]);
    assert!(perf["cache"]["fresh_hit_rate"].as_f64().is_some());
    proxy.shutdown().await;
}

#[tokio::test]
async fn cache_status_says_what_the_cache_did() {
    let up = spawn_upstream().await;
    up.script("/t-cs/fresh", 200, &[("cache-control", "max-age=60")], "fresh");
    up.script("/t-cs/private", 200, &[("cache-control", "private")], "private");
    up.script("/t-cs/stale", 200, &[("cache-control", "max-age=1")], "stale");
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let status = |a: &support::Answer| a.headers["cache-status"].to_str().unwrap().to_string();
    let miss = get(&proxy.url("/t-cs/fresh")).await;
    assert_eq!(status(&miss), "perfproxy; fwd=uri-miss; stored");
    let hit = get(&proxy.url("/t-cs/fresh")).await;
    assert!(status(&hit).starts_with("perfproxy; hit; ttl="), "{}", status(&hit));
    let ttl: u64 = status(&hit).rsplit('=').next().unwrap().parse().unwrap();
    assert!((58..=60).contains(&ttl), "{ttl}");
    let not_stored = get(&proxy.url("/t-cs/private")).await;
    assert_eq!(status(&not_stored), "perfproxy; fwd=uri-miss");
    let bypass = get(&proxy.url("/t-cs/private")).await;
    assert_eq!(status(&bypass), "perfproxy; fwd=bypass", "remembered as uncacheable");
    let post = support::send(
        http::Request::post(proxy.url("/t-cs/fresh")).body(http_body_util::Full::new(bytes::Bytes::from("x"))).unwrap(),
    )
    .await;
    assert_eq!(status(&post), "perfproxy; fwd=method");
    get(&proxy.url("/t-cs/stale")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    up.script("/t-cs/stale", 503, &[], "down");
    let stale = get(&proxy.url("/t-cs/stale")).await;
    assert_eq!((x_cache(&stale), status(&stale).as_str()), ("STALE", "perfproxy; fwd=stale"));
    let perf = get(&proxy.url("/performance")).await.json();
    let c = &perf["cache"];
    assert!(c["stale"].as_u64().unwrap() >= 1 && c["fresh_hit_rate"].as_f64() < c["hit_rate"].as_f64(), "{c}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn tag_purge_drops_tagged_entries_on_every_instance() {
    clean_redis("/t-tag/").await;
    let tag = format!("user-{}", fastrand::u32(..));
    let up = spawn_upstream().await;
    let tagged = format!("{tag} list");
    up.script("/t-tag/profile", 200, &[("cache-control", "max-age=60"), ("surrogate-key", &tagged)], "profile");
    up.script("/t-tag/orders", 200, &[("cache-control", "max-age=60"), ("cache-tag", &tag)], "orders");
    up.script("/t-tag/other", 200, &[("cache-control", "max-age=60"), ("surrogate-key", "list")], "other");
    let (a, b) = two_instances_on_redis(&up).await;
    let host = [("host", "svc.local")];
    for path in ["/t-tag/profile", "/t-tag/orders", "/t-tag/other"] {
        let first = call(&a, "GET", path, &host).await;
        assert!(!first.headers.contains_key("surrogate-key") && !first.headers.contains_key("cache-tag"));
        // From Redis if A's store landed, else from the upstream: B's memory holds it either way.
        call(&b, "GET", path, &host).await;
        let hit = call(&b, "GET", path, &host).await;
        assert_eq!(x_cache(&hit), "HIT", "{path} now in B's memory");
        assert!(!hit.headers.contains_key("surrogate-key"), "tag headers never reach the client");
    }
    let body: &'static str = Box::leak(format!(r#"{{"tags":["{tag}"]}}"#).into_boxed_str());
    let purged = purge(&a, Some("Bearer tok"), body).await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    assert_eq!(purged.json()["purged"], 2, "the two tagged keys");
    // New content upstream: a dropped copy is refetched (from Redis once
    // the other instance has stored the new one), a kept copy is old.
    up.script("/t-tag/profile", 200, &[("cache-control", "max-age=60"), ("surrogate-key", &tagged)], "v2");
    up.script("/t-tag/orders", 200, &[("cache-control", "max-age=60"), ("cache-tag", &tag)], "v2");
    up.script("/t-tag/other", 200, &[("cache-control", "max-age=60"), ("surrogate-key", "list")], "v2");
    for path in ["/t-tag/profile", "/t-tag/orders"] {
        assert_eq!(call(&a, "GET", path, &host).await.text(), "v2", "{path} gone from A");
        eventually(5, "B's tagged copies dropped through pub/sub", || async {
            call(&b, "GET", path, &host).await.text() == "v2"
        })
        .await;
    }
    let other = call(&b, "GET", "/t-tag/other", &host).await;
    assert_eq!((x_cache(&other), other.text().as_str()), ("HIT", "other"), "untagged entries stay");
    assert_eq!(purge(&a, Some("Bearer tok"), r#"{"tags":[]}"#).await.status, 400);
    assert_eq!(purge(&a, Some("Bearer tok"), r#"{"tags":["a b"]}"#).await.status, 400);
    assert_eq!(purge(&a, None, r#"{"tags":["x"]}"#).await.status, 401);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_written_path_is_literal_a_star_in_it_purges_nothing_else() {
    let up = spawn_upstream().await;
    up.script("/t-lit/a", 200, &[("cache-control", "max-age=60")], "a");
    let proxy = spawn_proxy(&up.url(), &[]).await;
    fetch(&proxy, "/t-lit/a").await;
    assert_eq!(x_cache(&fetch(&proxy, "/t-lit/a").await), "HIT");
    for path in ["/*", "/t-lit/*"] {
        let post = call(&proxy, "POST", path, &[]).await;
        assert!(post.status < 400, "{}", post.status);
    }
    let redirect = [("location", "/*")];
    up.script("/t-lit/login", 302, &redirect, "");
    call(&proxy, "POST", "/t-lit/login", &[]).await;
    assert_eq!(x_cache(&fetch(&proxy, "/t-lit/a").await), "HIT", "a client's `*` is no wildcard");
    proxy.shutdown().await;
}
