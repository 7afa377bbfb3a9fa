//! The dashboard page (`/performance` with `Accept: text/html`) rendered in a
//! real browser: headless Chromium (Debian package, installed by
//! scripts/test.sh) loads it, its script fetches the JSON, and the DOM then
//! holds the routes and numbers.

mod support;

use std::process::Command;

use support::*;

fn chromium_dom(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("pp-chromium-{}", fastrand::u64(..)));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium (Debian package) is installed");
    let _ = std::fs::remove_dir_all(profile);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_dashboard_renders_routes_and_numbers_in_a_browser() {
    let up = spawn_upstream().await;
    let started = std::time::Instant::now();
    // A memory alert far over its tiny threshold: critical, at once.
    // An error-rate threshold of 50 %: the 20 % below shows green.
    let config = write_config(
        "[alerts]\ninterval_ms = 100\nfor_ms = 0\nmemory_bytes = 1000\nerror_rate = 0.5\n\
         [[slo]]\nname = \"users\"\nroute = \"GET /api/users/*\"\nobjective = 0.99\n",
    );
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    // Paced, so the rate the page shows is a rate in real time.
    for i in 0..7 {
        assert_eq!(get(&proxy.url(&format!("/api/users/{i}"))).await.status, 200);
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    for _ in 0..3 {
        get(&proxy.url("/status/503")).await;
    }
    up.script("/cached", 200, &[("cache-control", "max-age=60")], "cached");
    for _ in 0..5 {
        get(&proxy.url("/cached")).await;
    }
    // A browser's Accept gets the page; anything else the JSON.
    let page = send(
        http::Request::get(proxy.url("/performance"))
            .header("accept", "text/html,*/*")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.text().contains("<canvas id=\"chart\""));
    assert!(get(&proxy.url("/performance")).await.json()["requests"].is_object());

    let traffic_done = started.elapsed().as_secs_f64();
    let url = proxy.url("/performance/dashboard");
    let dom = tokio::task::spawn_blocking(move || chromium_dom(&url)).await.unwrap();
    let dom_done = started.elapsed().as_secs_f64();
    // The rate is perfproxy's, measured over the real time the window
    // covers (never the browser's virtual clock): 15 requests over between
    // the end of the traffic and the end of the page load.
    let shown = dom.split(r#"id="k-rate">"#).nth(1).and_then(|t| t.split("&nbsp;req/s").next()).expect("a rate");
    let shown: f64 = shown.parse().unwrap_or_else(|_| panic!("a number: {shown}"));
    let (low, high) = (15.0 / dom_done * 0.8, 15.0 / traffic_done * 1.3);
    assert!(shown >= low && shown <= high, "rate {shown} req/s outside {low:.1}..{high:.1}:\n{dom}");
    assert!(dom.contains("&nbsp;req/s · last 60 s"), "the rate says its window, its unit kept with it:\n{dom}");
    assert!(dom.contains("Latency per 10 s slot (ms, log scale)"), "the chart says what it plots:\n{dom}");
    assert!(dom.contains("Routes · since start"), "{dom}");
    assert!(dom.contains(r#"<span class="sev bad">critical</span><strong class="bad"> memory</strong>"#), "{dom}");
    assert!(dom.contains("firing since "), "an alert says since when:\n{dom}");
    assert!(dom.contains("<td>GET /api/users/:id</td><td>7</td>"), "routes table not rendered:\n{dom}");
    assert!(dom.contains("<td>GET /status/:id</td><td>3</td>"), "{dom}");
    assert!(dom.contains("<td><code>127.0.0.1</code></td>"), "the top clients panel lists the client:\n{dom}");
    assert!(dom.contains(r#"id="k-total">15<"#), "total not rendered:\n{dom}");
    assert!(dom.contains(r#"class="badge healthy">healthy<"#), "health badge:\n{dom}");
    assert!(
        dom.contains(r#"class="value ok" id="k-err" title="alert threshold 50.00 %">20.00<small>%</small>"#),
        "recent error rate (3 of 15), coloured by the configured threshold:\n{dom}"
    );
    assert!(dom.contains(r#"id="k-p50">"#) && dom.contains("<small>ms</small>"), "units kept apart:\n{dom}");
    // The objective: every request to the users route was good.
    assert!(dom.contains("<strong>users</strong>"), "the SLO panel:\n{dom}");
    assert!(dom.contains(r#"<span class="ok">100.00 %</span>"#), "the budget left:\n{dom}");
    assert!(dom.contains("not burning"), "{dom}");
    // No gRPC calls, no database: those panels take no space.
    for card in ["grpc-card", "db-card", "advice-card"] {
        assert!(
            dom.contains(&format!(r#"class="card wide hidden" id="{card}""#))
                || dom.contains(&format!(r#"class="card side hidden" id="{card}""#)),
            "{card} hidden:\n{dom}"
        );
    }
    // /cached: 1 miss then 4 fresh hits; the 7 users and 3 errors could not
    // be stored: uncacheable, not misses, so the fresh hit rate is 4 of 5.
    assert!(dom.contains(r#"id="k-cache">80.00<small>%</small><"#), "cache fresh hit rate:\n{dom}");
    assert!(dom.contains("4 hits (0 stale) · 1 misses · 10 uncacheable"), "cache counts:\n{dom}");
    assert!(
        !up.seen().iter().any(|s| s.uri.contains("favicon")),
        "the page made the browser ask the backend for a favicon"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_slow_requests_panel_shows_the_database_statement_and_links_the_trace() {
    let url = support::pg::fresh_database().await;
    let receiver = support::otlp::spawn_receiver().await;
    let up = spawn_upstream().await;
    up.script_slow("/api/report", &[], "late", 900);
    let config = write_config(&format!(
        "[slow]\nsample_interval_ms = 100\ntrace_url = \"http://traces.example/trace/{{trace_id}}\"\n\
         [tracing]\nendpoint = \"{}\"\n",
        receiver.url()
    ));
    let args = ["--config", &config, "--database-url", &url, "--slow-request-threshold", "200"];
    let proxy = spawn_proxy(&up.url(), &args).await;
    let other = support::pg::connect(&url).await;
    let sleeping = tokio::spawn(async move { other.simple_query("SELECT pg_sleep(2) AS \"napping\"").await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(get(&proxy.url("/api/report")).await.status, 200);
    let slow = get(&proxy.url("/performance")).await.json()["slow_requests"][0].clone();
    let trace_id = slow["trace_id"].as_str().expect("traced: a trace id").to_string();

    let page = proxy.url("/performance/dashboard");
    let dom = tokio::task::spawn_blocking(move || chromium_dom(&page)).await.unwrap();
    assert!(dom.contains("Slow requests, and what the database was doing"), "{dom}");
    assert!(dom.contains("slower than 200 ms, latest 1"), "{dom}");
    assert!(dom.contains("<code>GET /api/report</code>"), "the route:\n{dom}");
    assert!(dom.contains(&format!(r#"href="http://traces.example/trace/{trace_id}""#)), "the trace linked:\n{dom}");
    assert!(dom.contains("<code>SELECT pg_sleep($1) AS \"napping\"</code>"), "the statement, normalised:\n{dom}");
    assert!(dom.contains("active · Timeout · PgSleep"), "its wait event:\n{dom}");
    sleeping.await.unwrap().unwrap();
    proxy.shutdown().await;
}
