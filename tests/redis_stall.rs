//! A Redis that stalls while a write or a purge is invalidating (SPEC §6):
//! found by an attack from outside, the deletion timed out and was dropped,
//! so the old copy came back from Redis into every instance's memory for
//! its whole TTL. Now it is held and retried until Redis takes it, and
//! meanwhile never read back: read-after-write holds through the stall.

mod support;

use std::time::Duration;

use http::Request;
use http_body_util::Full;
use support::*;

async fn call(proxy: &Proxy, method: &str, path: &str) -> Answer {
    send(Request::builder().method(method).uri(proxy.url(path)).body(Full::default()).unwrap()).await
}

fn x_cache(a: &Answer) -> &str {
    a.headers.get("x-cache").map_or("-", |v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_or_purge_during_a_redis_stall_is_not_undone() {
    let up = spawn_upstream().await;
    let cacheable = [("cache-control", "max-age=300")];
    up.script("/stall/doc", 200, &cacheable, "old");
    up.script("/stall/purged", 200, &cacheable, "old");
    let port = free_port();
    let redis = Redis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    // Invalidations wait at most 300 ms for Redis (the purge's and the write's own bound).
    let cfg = write_config("[cache]\nredis_timeout_ms = 300\n");
    let args = ["--redis-url", url.as_str(), "--admin-token", "tok", "--config", cfg.as_str()];
    let (a, b) = (spawn_proxy(&up.url(), &args).await, spawn_proxy(&up.url(), &args).await);
    let (a, b) = (&a, &b);
    for proxy in [a, b] {
        eventually(10, "both on redis", || async {
            call(proxy, "GET", "/performance").await.json()["cache"]["backend"] == "redis"
        })
        .await;
    }
    // Stored through a, in both layers; b holds it in memory too.
    for path in ["/stall/doc", "/stall/purged"] {
        assert_eq!(x_cache(&call(a, "GET", path).await), "MISS");
        eventually(5, "b reads it from redis", || async { call(b, "GET", path).await.text() == "old" }).await;
        assert_eq!(x_cache(&call(b, "GET", path).await), "HIT");
    }

    up.script("/stall/doc", 200, &cacheable, "new");
    up.script("/stall/purged", 200, &cacheable, "new");
    redis.signal("STOP");
    let write = call(a, "PUT", "/stall/doc").await;
    assert_eq!(write.status, 200, "a stalled Redis fails no write");
    let purge = send(
        Request::post(a.url("/cache/purge"))
            .header("authorization", "Bearer tok")
            .header("content-type", "application/json")
            .body(Full::from(r#"{"pattern":"/stall/purged"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(purge.status, 200, "{}", purge.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.signal("CONT");

    // a never reads the removed copies back from Redis; b is told once
    // Redis takes the held invalidations.
    for path in ["/stall/doc", "/stall/purged"] {
        assert_eq!(call(a, "GET", path).await.text(), "new", "{path} on a, right after the stall");
        assert_eq!(call(a, "GET", path).await.text(), "new", "{path} on a, again");
        eventually(8, "b drops the old copy", || async { call(b, "GET", path).await.text() == "new" }).await;
    }
    // And the held invalidations are done with: Redis serves the new copies.
    let mut conn = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("perfproxy:obj:/stall/*").query_async(&mut conn).await.unwrap();
    assert!(!keys.is_empty(), "the new copies are stored");
}
