//! Rate limits and top clients: a client paced at 200 req/s against a
//! 50 rps limit is let through at 50 (±10 %), its 429s carry `Retry-After`
//! and the `RateLimit` fields and never reach the upstream, other clients
//! pass; header keys count per value and are never shown in clear; a body
//! behind a refused request is never read as a request; the counts reach
//! `/performance`, `/metrics` and the `rate_limited` alert; SIGHUP swaps
//! the rules; `shared` divides by the live instances (real Redis); the top
//! clients rank a noisy client first among 10 000 with flat memory.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;

fn from(url: &str, client: &str) -> Request<Full<Bytes>> {
    Request::get(url).header("x-forwarded-for", client).body(Full::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_200_rps_gets_50_through_and_others_are_unaffected() {
    let up = spawn_upstream().await;
    let config = write_config(
        "[[rate_limits]]\npattern = \"GET /api/*\"\nkey = \"client\"\nrps = 50\n\
         [alerts]\ninterval_ms = 100\nfor_ms = 0\nkeep_firing_ms = 0\nerror_rate = 0.9\nrate_limited = 0.05\n",
    );
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    wait_ready(&proxy.url("/health/live"), 10).await;
    let url = proxy.url("/api/items");

    // The noisy client: paced at 200 req/s for 5 s; the quiet one at 10 req/s.
    let started = Instant::now();
    let (passed_late, passed, refused) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let c = client();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut tasks = Vec::new();
    let mut quiet = Vec::new();
    for i in 0..1000u32 {
        tick.tick().await;
        let (cc, u) = (c.clone(), url.clone());
        let (passed_late, passed, refused) = (passed_late.clone(), passed.clone(), refused.clone());
        let sent_at = started.elapsed();
        tasks.push(tokio::spawn(async move {
            let resp = cc.request(from(&u, "203.0.113.7")).await.expect("answered");
            match resp.status().as_u16() {
                200 => {
                    passed.fetch_add(1, Ordering::Relaxed);
                    // After the first second (the burst), the steady rate.
                    if sent_at >= Duration::from_secs(1) {
                        passed_late.fetch_add(1, Ordering::Relaxed);
                    }
                }
                429 => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                s => panic!("status {s}"),
            }
            resp
        }));
        if i % 20 == 0 {
            let (c, url) = (c.clone(), url.clone());
            quiet.push(tokio::spawn(
                async move { c.request(from(&url, "198.51.100.2")).await.expect("answered").status() },
            ));
        }
    }
    let mut limited_example = None;
    for t in tasks {
        let resp = t.await.unwrap();
        if resp.status() == 429 && limited_example.is_none() {
            limited_example = Some(resp);
        }
    }
    let late = passed_late.load(Ordering::Relaxed) as f64 / 4.0;
    eprintln!("allowed after the burst: {late} req/s of 200 offered, limit 50");
    assert!((late - 50.0).abs() <= 5.0, "allowed {late} req/s after the burst, not 50 ±10 %");
    for q in quiet {
        assert_eq!(q.await.unwrap(), 200, "another client is unaffected");
    }

    let resp = limited_example.expect("some requests were refused");
    let h = resp.headers();
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(h["ratelimit-policy"], "\"GET /api/*\";q=50;w=1");
    let current = h["ratelimit"].to_str().unwrap();
    assert!(current.starts_with("\"GET /api/*\";r=0;t="), "{current}");
    assert_eq!(h["content-type"], "application/json");
    assert!(h.contains_key("x-request-id"));

    // Refused requests never reached the upstream.
    let (passed, refused) = (passed.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    let noisy_seen =
        up.seen().iter().filter(|s| s.headers["x-forwarded-for"].to_str().unwrap().starts_with("203.0.113.7")).count();
    assert_eq!(noisy_seen as u64, passed);

    // Counted per route, in /performance, /metrics and the alert.
    eventually(5, "the limited requests are in /performance", || async {
        let p = get(&proxy.url("/performance")).await.json();
        p["routes"].as_array().unwrap().iter().any(|r| r["route"] == "GET /api/items" && r["limited"] == refused)
            && p["requests"]["limited"] == refused
    })
    .await;
    let metrics = get(&proxy.url("/metrics")).await.text();
    assert!(
        metrics.contains(&format!("perfproxy_rate_limited_total{{route=\"GET /api/items\"}} {refused}")),
        "{metrics}"
    );
    eventually(5, "the rate_limited alert fires", || async {
        let p = get(&proxy.url("/performance")).await.json();
        p["alerts"].as_array().unwrap().iter().any(|a| a["rule"] == "rate_limited")
    })
    .await;
    // The noisy client tops the list.
    let p = get(&proxy.url("/performance")).await.json();
    assert_eq!(p["top_clients"][0]["client"], "203.0.113.7", "{}", p["top_clients"]);
    assert_eq!(p["top_clients"][1]["client"], "198.51.100.2");
    assert_eq!(p["top_clients"][0]["routes"], 1);
}

#[tokio::test]
async fn a_header_key_counts_per_value_and_is_never_shown() {
    let up = spawn_upstream().await;
    let config = write_config(
        "[top_clients]\nkey = \"header:X-Api-Key\"\n\
         [[rate_limits]]\npattern = \"POST /api/*\"\nkey = \"header:X-Api-Key\"\nrps = 1\nburst = 3\n",
    );
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    wait_ready(&proxy.url("/health/live"), 10).await;
    let post = |key: Option<&str>| {
        let mut b = Request::post(proxy.url("/api/orders"));
        if let Some(k) = key {
            b = b.header("x-api-key", k);
        }
        send(b.body(Full::from("{}")).unwrap())
    };
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(post(Some("sk_live_secret_one")).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let refused = post(Some("sk_live_secret_one")).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.headers["connection"], "close", "a refused request's body is never read: the connection closes");
    assert_eq!(post(Some("sk_live_secret_two")).await.status, 200, "another key has its own count");
    assert_eq!(post(None).await.status, 200, "no key: the rule does not apply");
    // Two keys: which one a backend reads is a guess; refused, never forwarded.
    let twice = Request::post(proxy.url("/api/orders"))
        .header("x-api-key", "sk_live_rotating_1")
        .header("x-api-key", "sk_live_secret_one")
        .body(Full::from("{}"))
        .unwrap();
    assert_eq!(send(twice).await.status, 400);
    assert_eq!(get(&proxy.url("/api/orders")).await.status, 200, "GET is not in the pattern");
    assert_eq!(up.seen().len(), 6);

    eventually(5, "the top clients are published", || async {
        !get(&proxy.url("/performance")).await.json()["top_clients"].as_array().unwrap().is_empty()
    })
    .await;
    let perf = get(&proxy.url("/performance")).await.text();
    let metrics = get(&proxy.url("/metrics")).await.text();
    for doc in [&perf, &metrics] {
        assert!(!doc.contains("sk_live"), "a header key is never shown in clear");
    }
    let p: serde_json::Value = serde_json::from_str(&perf).unwrap();
    let first = p["top_clients"][0]["client"].as_str().unwrap().to_string();
    assert!(first.starts_with("sha256:") && first.len() == 23, "{first}");
    // The first 16 hex digits of the key's SHA-256, as `sha256sum` prints it.
    let out = std::process::Command::new("sh")
        .args(["-c", "printf %s sk_live_secret_one | sha256sum | cut -c1-16"])
        .output()
        .unwrap();
    assert_eq!(first, format!("sha256:{}", String::from_utf8_lossy(&out.stdout).trim()));
    assert!(metrics.contains("perfproxy_top_client_requests_per_second{rank=\"1\"}"), "{metrics}");
}

#[tokio::test]
async fn a_body_behind_a_refused_request_never_becomes_a_request() {
    let up = spawn_upstream().await;
    let config = write_config("[[rate_limits]]\npattern = \"/api/*\"\nkey = \"global\"\nrps = 0.001\nburst = 1\n");
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    wait_ready(&proxy.url("/health/live"), 10).await;
    assert_eq!(get(&proxy.url("/api/first-one")).await.status, 200);
    // Refused, with a body that is itself a request.
    let smuggled = "GET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let request = format!(
        "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}GET /api/after HTTP/1.1\r\nHost: x\r\n\r\n",
        smuggled.len()
    );
    let (answer, closed) = raw(proxy.addr, request.as_bytes(), Duration::from_millis(500)).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "one answer, then the connection closes: {answer}");
    assert!(closed);
    let paths: Vec<String> = up.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(paths, ["/api/first-one"], "nothing behind a refused request reached the upstream");
    // A chunked body (the general path) is refused the same way.
    let chunked = "POST /api/y HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let (answer, _) = raw(proxy.addr, chunked.as_bytes(), Duration::from_millis(500)).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("ratelimit-policy: \"/api/*\";q=1;w=1000"), "{answer}");
    // Spelled otherwise, the same path is the same rule's (the quota is spent).
    for odd in ["//api/first-one", "/%61pi/x", "/b/../api/x", "/./api/x"] {
        assert_eq!(get(&proxy.url(odd)).await.status, 429, "{odd}");
    }
    assert_eq!(up.seen().len(), 1);
    // perfproxy's own endpoints are never limited.
    for _ in 0..3 {
        assert_eq!(get(&proxy.url("/health/live")).await.status, 200);
    }
}

#[tokio::test]
async fn sighup_swaps_the_rules() {
    let up = spawn_upstream().await;
    let port = free_port();
    let config = write_config("listen = \"127.0.0.1:0\"\n");
    let child = start_binary(&up.url(), port, &["--config", &config]);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/health/live"), 10).await;
    let burst = |n: usize| {
        let url = format!("{base}/api/z");
        async move {
            let mut refused = 0;
            for _ in 0..n {
                if get(&url).await.status == 429 {
                    refused += 1;
                }
            }
            refused
        }
    };
    assert_eq!(burst(5).await, 0);
    std::fs::write(&config, "[[rate_limits]]\npattern = \"GET /api/*\"\nkey = \"global\"\nrps = 0.01\nburst = 2\n")
        .unwrap();
    signal(&child, "-HUP");
    eventually(5, "the new rule applies", || async { get(&format!("{base}/api/z")).await.status == 429 }).await;
    std::fs::write(&config, "").unwrap();
    signal(&child, "-HUP");
    eventually(5, "the rule is gone", || async { get(&format!("{base}/api/z")).await.status == 200 }).await;
    assert_eq!(burst(5).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_limit_is_divided_by_the_live_instances() {
    let up = spawn_upstream().await;
    // Its own Redis database: no other test's instances in the registry.
    let redis = "redis://127.0.0.1:6379/11";
    let config = write_config(
        "[cluster]\npublish_ms = 200\n\
         [[rate_limits]]\npattern = \"/api/*\"\nkey = \"global\"\nrps = 0.01\nburst = 10\nshared = true\n",
    );
    let (pa, pb) = (free_port(), free_port());
    let args = ["--config", config.as_str(), "--redis-url", redis];
    let a = start_binary(&up.url(), pa, &[&args[..], &["--instance", "limit-a"]].concat());
    let _b = start_binary(&up.url(), pb, &[&args[..], &["--instance", "limit-b"]].concat());
    let base = format!("http://127.0.0.1:{pa}");
    wait_ready(&format!("{base}/health/live"), 10).await;
    eventually(10, "both instances are in the cluster view", || async {
        let p = get(&format!("{base}/performance?scope=cluster")).await.json();
        p["instances"].as_array().is_some_and(|i| i.len() == 2)
    })
    .await;
    // A beat more: the limiter reads the count the last exchange saw.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut passed = 0;
    for _ in 0..10 {
        if get(&format!("{base}/api/s")).await.status == 200 {
            passed += 1;
        }
    }
    assert_eq!(passed, 5, "a burst of 10 shared by two instances is 5 each");
    drop(a);
}

/// The real binary (its memory measured on its own): 10 000 distinct
/// clients and one noisy one, ranked first, RSS growth under 8 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_client_ranks_first_among_ten_thousand_in_flat_memory() {
    let up = spawn_upstream().await;
    let port = free_port();
    let child = start_binary(&up.url(), port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/health/live"), 10).await;
    let c = client();
    let url = format!("{base}/api/things");
    // Warm up (pools, the route, the allocator), then measure.
    for i in 0..500u32 {
        c.request(from(&url, &format!("192.0.2.{}", i % 200))).await.unwrap();
    }
    let rss = || async { get(&format!("{base}/performance")).await.json()["memory"]["rss_bytes"].as_u64().unwrap() };
    let before = rss().await;
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let (c, url, sent) = (c.clone(), url.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..1250u32 {
                let n = w * 1250 + i;
                // Behind a trusted hop: the client is the untrusted entry.
                let who = format!("100.64.{}.{}, 10.1.2.3", n >> 8, n & 255);
                c.request(from(&url, &who)).await.unwrap();
                if i % 16 == 0 {
                    c.request(from(&url, "203.0.113.66")).await.unwrap();
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let p = get(&format!("{base}/performance")).await.json();
    let top = p["top_clients"].as_array().unwrap();
    assert_eq!(top.len(), 10);
    assert_eq!(top[0]["client"], "203.0.113.66", "{top:?}");
    let after = rss().await;
    let growth = after.saturating_sub(before);
    eprintln!("RSS {} -> {} KiB with 10 000 distinct clients", before >> 10, after >> 10);
    assert!(growth < 8 << 20, "RSS grew {} KiB with 10 000 clients", growth >> 10);
    drop(child);
}
