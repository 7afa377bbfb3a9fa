//! Security defaults, attacked from outside: forwarding headers reflected by
//! a backend through the cache (poisoning), admin endpoints from peers
//! outside `endpoints.allow`, `admin_listen` and `endpoints.admin_allow`,
//! and a storm of `/performance` readers sharing one merge.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::raw::{spawn_raw_upstream, RawAnswer};
use support::{send, spawn_proxy, spawn_upstream, write_config};

const ATTACK: &[(&str, &str)] = &[("x-forwarded-host", "evil.example"), ("x-forwarded-proto", "https")];

async fn get_with(url: &str, host: &str, headers: &[(&str, &str)]) -> support::Answer {
    let mut req = Request::get(url).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(Full::<Bytes>::default()).unwrap()).await
}

#[tokio::test]
async fn forwarding_headers_cannot_poison_the_cache_on_either_lane() {
    for lane in ["true", "false"] {
        // The test client (127.0.0.1) is not a trusted proxy here: its
        // forwarding headers are replaced by perfproxy's own view.
        let up = spawn_raw_upstream().await;
        up.answer("/home", RawAnswer::ReflectForwarded);
        let config = write_config("trusted_proxies = [\"10.0.0.0/8\"]\n");
        let proxy = spawn_proxy(&up.url(), &["--express-lane", lane, "--config", &config]).await;
        let attack = get_with(&proxy.url("/home"), "shop.example", ATTACK).await;
        assert!(!attack.text().contains("evil.example"), "lane {lane}: {}", attack.text());
        assert!(attack.text().contains("http://shop.example/app.js"), "lane {lane}: {}", attack.text());
        let victim = get_with(&proxy.url("/home"), "shop.example", &[]).await;
        assert_eq!(victim.headers["x-cache"], "HIT", "lane {lane}");
        assert!(victim.text().contains("http://shop.example/app.js"), "lane {lane}: {}", victim.text());
        let sent = up.seen();
        assert_eq!(sent.len(), 1, "lane {lane}");
        let header = |name: &str| sent[0].headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).count();
        assert_eq!((header("x-forwarded-host"), header("x-forwarded-proto")), (1, 1), "lane {lane}: {sent:?}");
        proxy.shutdown().await;

        // A trusted peer's values go upstream, and are part of the key: the
        // page built from them is only served to requests that send them.
        let up = spawn_raw_upstream().await;
        up.answer("/home", RawAnswer::ReflectForwarded);
        let proxy = spawn_proxy(&up.url(), &["--express-lane", lane]).await;
        let attack = get_with(&proxy.url("/home"), "shop.example", ATTACK).await;
        assert!(attack.text().contains("https://evil.example/app.js"), "lane {lane}: {}", attack.text());
        let victim = get_with(&proxy.url("/home"), "shop.example", &[]).await;
        assert_eq!(victim.headers["x-cache"], "MISS", "lane {lane}");
        assert!(victim.text().contains("http://shop.example/app.js"), "lane {lane}: {}", victim.text());
        let again = get_with(&proxy.url("/home"), "shop.example", ATTACK).await;
        assert_eq!(again.headers["x-cache"], "HIT", "lane {lane}: same values, same entry");
        assert_eq!(up.seen().len(), 2, "lane {lane}");
        proxy.shutdown().await;
    }
}

/// The other forwarding fields a trusted peer may send (an ingress passes
/// a client's on unchanged) can steer a backend's routing or its URLs:
/// `X-Original-URL: /admin` answered with the admin page under `/home`'s
/// key would be served to everyone (web cache poisoning by an unkeyed
/// field). They are part of the key; `Forwarded`'s `for` (the client) is not.
#[tokio::test]
async fn trusted_forwarding_fields_are_part_of_the_cache_key() {
    for lane in ["true", "false"] {
        let up = spawn_raw_upstream().await;
        up.answer("/home", RawAnswer::ReflectField("x-original-url"));
        up.answer("/port", RawAnswer::ReflectField("x-forwarded-port"));
        up.answer("/fwd", RawAnswer::ReflectField("forwarded"));
        let proxy = spawn_proxy(&up.url(), &["--express-lane", lane]).await;
        let attack = get_with(&proxy.url("/home"), "shop.example", &[("x-original-url", "/admin")]).await;
        assert_eq!(attack.text(), "page for /admin", "lane {lane}");
        let victim = get_with(&proxy.url("/home"), "shop.example", &[]).await;
        assert_eq!(victim.headers["x-cache"], "MISS", "lane {lane}");
        assert_eq!(victim.text(), "page for ", "lane {lane}");
        let again = get_with(&proxy.url("/home"), "shop.example", &[("x-original-url", "/admin")]).await;
        assert_eq!((again.headers["x-cache"].to_str().unwrap(), again.text().as_str()), ("HIT", "page for /admin"));
        // A value an ingress sets on every request keeps one entry.
        for round in 0..2 {
            let port = get_with(&proxy.url("/port"), "shop.example", &[("x-forwarded-port", "443")]).await;
            assert_eq!(port.headers["x-cache"], ["MISS", "HIT"][round], "lane {lane}");
        }
        // `Forwarded`: `host` and `proto` are keyed, `for` is not.
        let url = proxy.url("/fwd");
        for (value, outcome) in [
            ("for=192.0.2.1;host=evil.example", "MISS"),
            ("for=192.0.2.2;host=evil.example", "HIT"),
            ("for=192.0.2.2;host=shop.example", "MISS"),
        ] {
            let answer = get_with(&url, "shop.example", &[("forwarded", value)]).await;
            assert_eq!(answer.headers["x-cache"], outcome, "lane {lane}: {value}");
        }
        assert_eq!(up.seen().len(), 5, "lane {lane}");
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn every_forwarded_or_added_header_is_what_perfproxy_decided() {
    for lane in ["true", "false"] {
        let up = spawn_raw_upstream().await;
        let config = write_config("trusted_proxies = [\"10.0.0.0/8\"]\n[cache]\nenabled = false\n");
        let proxy = spawn_proxy(&up.url(), &["--express-lane", lane, "--config", &config]).await;
        let sent = [("x-forwarded-for", "203.0.113.7"), ("via", "1.0 edge"), ATTACK[0], ATTACK[1]];
        get_with(&proxy.url("/r"), "shop.example", &sent).await;
        let seen = &up.seen()[0];
        let all = |name: &str| -> Vec<&str> {
            seen.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
        };
        assert_eq!(all("x-forwarded-for"), ["203.0.113.7, 127.0.0.1"], "lane {lane}");
        assert_eq!(all("x-forwarded-host"), ["shop.example"], "lane {lane}");
        assert_eq!(all("x-forwarded-proto"), ["http"], "lane {lane}");
        assert_eq!(all("via").last(), Some(&"1.1 perfproxy"), "lane {lane}");
        proxy.shutdown().await;
    }
}

fn bearer(req: http::request::Builder, token: Option<&str>) -> http::request::Builder {
    match token {
        Some(t) => req.header("authorization", format!("Bearer {t}")),
        None => req,
    }
}

async fn status(url: &str, token: Option<&str>, extra: &[(&str, &str)]) -> u16 {
    let mut req = bearer(Request::get(url), token);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    send(req.body(Full::default()).unwrap()).await.status
}

#[tokio::test]
async fn admin_endpoints_answer_only_allowed_peers_or_the_token() {
    for lane in ["true", "false"] {
        let up = spawn_upstream().await;
        let config = write_config("[endpoints]\nallow = [\"10.0.0.0/8\"]\n");
        let proxy =
            spawn_proxy(&up.url(), &["--express-lane", lane, "--config", &config, "--admin-token", "sekrit"]).await;
        for path in ["/performance", "/metrics", "/performance/dashboard"] {
            let url = proxy.url(path);
            let denied = send(Request::get(&url).body(Full::default()).unwrap()).await;
            assert_eq!(denied.status, 403, "lane {lane} {path}");
            assert_eq!(denied.json()["error"], "forbidden", "lane {lane} {path}");
            assert!(denied.json()["detail"].as_str().unwrap().contains("PERFPROXY_ADMIN_TOKEN"));
            assert_eq!(status(&url, None, &[("x-forwarded-for", "127.0.0.1")]).await, 403, "lane {lane} {path}");
            assert_eq!(status(&url, Some("wrong"), &[]).await, 403, "lane {lane} {path}");
            assert_eq!(status(&url, Some("sekrit"), &[]).await, 200, "lane {lane} {path}");
        }
        for path in ["/health", "/health/live", "/health/ready"] {
            let s = status(&proxy.url(path), None, &[]).await;
            assert!(s == 200 || s == 503, "lane {lane} {path}: {s}");
        }
        assert_eq!(up.hits("/performance") + up.hits("/metrics"), 0, "admin paths never reach the app here");
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn admin_endpoints_can_leave_the_proxy_listener_for_admin_listen() {
    for lane in ["true", "false"] {
        let up = spawn_upstream().await;
        let port = support::free_port();
        let config = write_config(&format!(
            "admin_listen = \"127.0.0.1:{port}\"\n[endpoints]\nproxy_listener = false\nallow = [\"10.0.0.0/8\"]\n"
        ));
        let proxy = spawn_proxy(&up.url(), &["--express-lane", lane, "--config", &config]).await;
        let app = support::get(&proxy.url("/metrics")).await;
        assert_eq!(app.status, 200, "lane {lane}");
        assert_eq!(up.hits("/metrics"), 1, "lane {lane}: the app's own /metrics is reached");
        assert_eq!(status(&proxy.url("/health/live"), None, &[]).await, 200, "probes stay on the proxy listener");
        let admin = proxy.admin.expect("admin listener");
        let perf = support::get(&format!("http://{admin}/performance")).await;
        assert_eq!(perf.status, 200, "admin_listen serves anyone who can connect");
        assert!(perf.json()["requests"]["total"].as_u64().is_some());
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn admin_allow_restricts_who_may_connect_to_admin_listen() {
    let up = spawn_upstream().await;
    let port = support::free_port();
    let config =
        write_config(&format!("admin_listen = \"127.0.0.1:{port}\"\n[endpoints]\nadmin_allow = [\"10.0.0.0/8\"]\n"));
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    let admin = proxy.admin.unwrap();
    let (answer, closed) =
        support::raw(admin, b"GET /performance HTTP/1.1\r\nHost: a\r\n\r\n", Duration::from_millis(500)).await;
    assert!(answer.is_empty() && closed, "{answer}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_performance_storm_shares_one_merge_per_50_ms() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &[]).await;
    let url = proxy.url("/performance");
    let started = Instant::now();
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut stamps = Vec::new();
                while started.elapsed() < Duration::from_millis(1500) {
                    stamps.push(support::get(&url).await.json()["generated_at"].as_str().unwrap().to_string());
                }
                stamps
            })
        })
        .collect();
    let mut calls = 0;
    let mut distinct = HashSet::new();
    for r in readers {
        let stamps = r.await.unwrap();
        calls += stamps.len();
        distinct.extend(stamps);
    }
    let elapsed_ms = started.elapsed().as_millis() as usize;
    // One build per 50 ms at most, plus the one in progress at each edge.
    assert!(distinct.len() <= elapsed_ms / 50 + 2, "{} documents for {calls} calls in {elapsed_ms} ms", distinct.len());
    assert!(calls > distinct.len() * 2, "readers shared documents: {calls} calls, {} builds", distinct.len());
    let metrics = support::get(&proxy.url("/metrics")).await.text();
    assert!(metrics.contains("perfproxy_admin_document_builds_total"), "{metrics}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn other_forwarding_headers_come_from_trusted_peers_only() {
    for lane in ["true", "false"] {
        let up = spawn_raw_upstream().await;
        let config = write_config("trusted_proxies = [\"10.0.0.0/8\"]\n[cache]\nenabled = false\n");
        let proxy = spawn_proxy(&up.url(), &["--express-lane", lane, "--config", &config]).await;
        let sent = [
            ("forwarded", "host=evil.example;proto=https"),
            ("x-forwarded-port", "8443"),
            ("x-forwarded-prefix", "/evil"),
            ("x-forwarded-ssl", "on"),
            ("x-forwarded-scheme", "https"),
        ];
        get_with(&proxy.url("/r"), "shop.example", &sent).await;
        let seen = &up.seen()[0];
        for (name, _) in sent {
            assert!(!seen.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)), "lane {lane}: {name} passed");
        }
        proxy.shutdown().await;
    }
}
