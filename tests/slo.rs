//! Service level objectives from outside: exact good and total counts and
//! the error budget for a known mix (a 151 ms request is bad at
//! `latency_ms = 150`); a fast burn fires `slo_burn` once and resolves it
//! once on the webhook while a burn under the rate never fires;
//! `perfproxy slo-rules` passes `promtool check rules`; bad objectives and
//! rows exit 2 naming their key.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

fn slo<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["slos"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{name}: {doc}"))
}

#[tokio::test]
async fn counts_and_budget_are_exact_for_a_known_mix() {
    let up = spawn_upstream().await;
    up.script("/api/fast", 200, &[], "ok");
    up.script("/api/err", 500, &[], "no");
    up.script_slow("/api/slow", &[], "late", 151);
    let config = write_config(
        "[[slo]]\nname = \"api\"\nroute = \"GET /api/*\"\nobjective = 0.9\nlatency_ms = 150\n\
         [[slo]]\nname = \"all\"\nobjective = 0.99\n\
         [slo_alerts]\nwindows = [[60000, 10000, 2.0, \"critical\"]]\n",
    );
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    for (path, n) in [("/api/fast", 12), ("/api/err", 3), ("/api/slow", 2), ("/other", 5)] {
        for _ in 0..n {
            get(&proxy.url(path)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(150)).await; // workers publish every 50 ms
    let doc = get(&proxy.url("/performance")).await.json();
    let api = slo(&doc, "api");
    assert_eq!((api["good"].as_u64(), api["total"].as_u64()), (Some(12), Some(17)), "{api}");
    assert_eq!(api["route"], "GET /api/*");
    assert_eq!(
        (api["objective"].as_f64(), api["latency_ms"].as_u64(), api["period_days"].as_u64()),
        (Some(0.9), Some(150), Some(28))
    );
    let close = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-9;
    assert!(close(&api["sli"], 12.0 / 17.0), "{api}");
    assert!(close(&api["error_budget_remaining"], 1.0 - 5.0 / (0.1 * 17.0)), "{api}");
    let burns: Vec<(u64, f64)> = api["burn_rates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["window_ms"].as_u64().unwrap(), b["rate"].as_f64().unwrap()))
        .collect();
    assert_eq!(burns.iter().map(|b| b.0).collect::<Vec<_>>(), [10_000, 60_000]);
    assert!((burns[1].1 - (5.0 / 17.0) / 0.1).abs() < 1e-9, "{burns:?}");
    assert!(api["exhaustion_seconds"].as_f64() == Some(0.0), "overspent: gone now: {api}");
    // All traffic: errors are bad, slowness is not (no latency_ms).
    let all = slo(&doc, "all");
    assert_eq!((all["good"].as_u64(), all["total"].as_u64()), (Some(19), Some(22)), "{all}");
    assert!(all["route"].is_null() && all["latency_ms"].is_null());

    let metrics = get(&proxy.url("/metrics")).await.text();
    for line in [
        r#"perfproxy_slo_requests_total{slo="api",outcome="good"} 12"#,
        r#"perfproxy_slo_requests_total{slo="api",outcome="bad"} 5"#,
        r#"perfproxy_slo_requests_total{slo="all",outcome="bad"} 3"#,
        r#"perfproxy_slo_objective{slo="api"} 0.9"#,
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(metrics.contains(r#"perfproxy_slo_burn_rate{slo="api",window="60"}"#), "{metrics}");
    assert!(metrics.contains(r#"perfproxy_slo_error_budget_remaining{slo="api"} -"#), "{metrics}");
    proxy.shutdown().await;
}

fn events(hook: &Upstream) -> Vec<Value> {
    hook.seen().iter().filter(|s| s.uri == "/hook").map(|s| serde_json::from_slice(&s.body).unwrap()).collect()
}

fn count(events: &[Value], subject: &str, status: &str) -> usize {
    events.iter().filter(|e| e["rule"] == "slo_burn" && e["subject"] == subject && e["status"] == status).count()
}

#[tokio::test]
async fn a_fast_burn_fires_once_and_resolves_once_and_a_slow_one_never_fires() {
    let up = spawn_upstream().await;
    let hook = spawn_upstream().await;
    // alerts.for_ms does not apply to slo_burn.
    let config = write_config(&format!(
        "[alerts]\ninterval_ms = 100\nfor_ms = 60000\nkeep_firing_ms = 60000\nwebhook_url = \"http://{}/hook\"\n\
         [[slo]]\nname = \"fast\"\nroute = \"GET /burn/*\"\nobjective = 0.9\n\
         [[slo]]\nname = \"steady\"\nroute = \"GET /steady/*\"\nobjective = 0.5\n\
         [slo_alerts]\nwindows = [[5000, 1000, 2.0, \"critical\"]]\n",
        hook.addr
    ));
    let proxy = spawn_proxy(&up.url(), &["--config", &config]).await;
    up.script("/burn/bad", 500, &[], "no");
    up.script("/steady/bad", 500, &[], "no");
    // Every request to /burn fails: a burn of 10 on both windows; /steady
    // fails half the time: a burn of 1, under 2. Until it fires (while the
    // short window still holds requests: an empty one burns nothing).
    for _ in 0..20 {
        get(&proxy.url("/burn/bad")).await;
    }
    for i in 0.. {
        get(&proxy.url("/burn/bad")).await;
        get(&proxy.url(if i % 2 == 0 { "/steady/bad" } else { "/steady/ok" })).await;
        if count(&events(&hook), "fast", "firing") == 1 {
            break;
        }
        assert!(i < 200, "slo_burn never fired for fast");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let doc = get(&proxy.url("/performance")).await.json();
    let alert = doc["alerts"].as_array().unwrap().iter().find(|a| a["rule"] == "slo_burn").expect("listed").clone();
    assert_eq!((alert["subject"].as_str(), alert["severity"].as_str()), (Some("fast"), Some("critical")));
    let message = alert["message"].as_str().unwrap();
    assert!(message.starts_with("SLO fast: error budget burning 10.0x over 5s and 10.0x over 1s"), "{message}");
    assert!(message.contains("% of the budget left"), "{message}");
    // Good requests only, a few a second: the short window clears within
    // a second while the long one (20 and more failures) still burns; the
    // alert resolves, once.
    for i in 0.. {
        get(&proxy.url("/burn/ok")).await;
        get(&proxy.url(if i % 2 == 0 { "/steady/bad" } else { "/steady/ok" })).await;
        if count(&events(&hook), "fast", "resolved") == 1 {
            break;
        }
        assert!(i < 40, "slo_burn never resolved for fast");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let long = slo(&get(&proxy.url("/performance")).await.json(), "fast")["burn_rates"][1]["rate"].as_f64().unwrap();
    assert!(long > 2.0, "the long window still burns ({long}) and the alert resolved on the short one");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = events(&hook);
    assert_eq!((count(&e, "fast", "firing"), count(&e, "fast", "resolved")), (1, 1), "{e:?}");
    assert_eq!(count(&e, "steady", "firing"), 0, "a burn of 1 under a rate of 2 never fires: {e:?}");
    proxy.shutdown().await;
}

#[test]
fn slo_rules_pass_promtool() {
    let config = write_config(
        "[[slo]]\nname = \"checkout\"\nroute = \"POST /api/orders\"\nobjective = 0.999\nlatency_ms = 300\n\
         [[slo]]\nname = \"everything else\"\nobjective = 0.99\n",
    );
    let out = Command::new(binary()).args(["slo-rules", "--config", &config]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rules = String::from_utf8(out.stdout).unwrap();
    for needle in ["perfproxy_slo:bad_ratio:rate5m", "perfproxy_slo:bad_ratio:rate3d", "PerfproxySloBurn", "(14.4 * "] {
        assert!(rules.contains(needle), "{needle}:\n{rules}");
    }
    let file = std::env::temp_dir().join(format!("pp-slo-rules-{}.yml", fastrand::u64(..)));
    std::fs::write(&file, &rules).unwrap();
    let checked = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (Debian package prometheus)");
    let said = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(checked.status.success(), "{said}\n{rules}");
    assert!(said.contains("SUCCESS: 16 rules found"), "{said}");
    let _ = std::fs::remove_file(file);
}

#[test]
fn bad_objectives_and_rows_exit_2_naming_the_key() {
    for (text, key) in [
        ("[[slo]]\nname = \"a\"\nobjective = 1.0\n", "slo[0].objective"),
        ("[[slo]]\nname = \"a\"\nobjective = 0.9\n[[slo]]\nname = \"a\"\nobjective = 0.99\n", "slo[1].name"),
        ("[slo_alerts]\nwindows = [[300000, 300000, 14.4, \"critical\"]]\n", "slo_alerts.windows[0]"),
        ("[slo_alerts]\nwindows = [[3600000, 300000, 14.4, \"page\"]]\n", "slo_alerts.windows[0]"),
        ("[[slo]]\nname = \"a\"\nobjective = 0.9\nroute = \"api\"\n", "slo[0].route"),
    ] {
        let config = write_config(text);
        let out = Command::new(binary()).args(["check-config", "--config", &config]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(key), "{key} not named: {err}");
    }
}

#[tokio::test]
async fn counts_survive_a_restart_with_history_on() {
    let url = support::pg::fresh_database().await;
    assert_eq!(support::pg::migrate(&url).0, 0);
    let up = spawn_upstream().await;
    up.script("/api/err", 500, &[], "no");
    let config = write_config("[[slo]]\nname = \"api\"\nroute = \"GET /api/*\"\nobjective = 0.9\n");
    let args = ["--config", &config, "--database-url", &url, "--instance", "slo-restart"];
    let proxy = spawn_proxy(&up.url(), &args).await;
    for path in ["/api/ok"; 7].into_iter().chain(["/api/err"; 3]) {
        get(&proxy.url(path)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let api = slo(&get(&proxy.url("/performance")).await.json(), "api").clone();
    assert_eq!((api["good"].as_u64(), api["total"].as_u64()), (Some(7), Some(10)));
    proxy.shutdown().await; // writes the minute under way

    let db = support::pg::connect(&url).await;
    let row =
        db.query_one("SELECT sum(good)::int8, sum(bad)::int8 FROM perfproxy.slo_minutes WHERE slo = 'api'", &[]).await;
    let (good, bad): (i64, i64) = row.map(|r| (r.get(0), r.get(1))).unwrap();
    assert_eq!((good, bad), (7, 3));

    let proxy = spawn_proxy(&up.url(), &args).await;
    eventually(5, "the budget read back", || async {
        let doc = get(&proxy.url("/performance")).await.json();
        slo(&doc, "api")["total"].as_u64() == Some(10)
    })
    .await;
    for _ in 0..2 {
        get(&proxy.url("/api/ok")).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let api = slo(&get(&proxy.url("/performance")).await.json(), "api").clone();
    assert_eq!((api["good"].as_u64(), api["total"].as_u64()), (Some(9), Some(12)), "{api}");
    assert!((api["error_budget_remaining"].as_f64().unwrap() - (1.0 - 3.0 / (0.1 * 12.0))).abs() < 1e-9);
    proxy.shutdown().await;
    // The minute written again holds the whole minute: never counted twice.
    let row =
        db.query_one("SELECT sum(good)::int8, sum(bad)::int8 FROM perfproxy.slo_minutes WHERE slo = 'api'", &[]).await;
    let (good, bad): (i64, i64) = row.map(|r| (r.get(0), r.get(1))).unwrap();
    assert_eq!((good, bad), (9, 3));
}

#[tokio::test]
async fn the_cluster_view_sums_every_instances_counts() {
    let up = spawn_upstream().await;
    up.script("/api/err", 500, &[], "no");
    let port = free_port();
    let _redis = Redis::start(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let redis_url = format!("redis://127.0.0.1:{port}");
    let mut proxies = Vec::new();
    for id in ["slo-a", "slo-b"] {
        let config = write_config(&format!(
            "[cluster]\npublish_ms = 200\ninstance = \"{id}\"\n[[slo]]\nname = \"api\"\nroute = \"GET /api/*\"\nobjective = 0.9\n"
        ));
        proxies.push(spawn_proxy(&up.url(), &["--config", &config, "--redis-url", &redis_url]).await);
    }
    for (proxy, good, bad) in [(&proxies[0], 6, 1), (&proxies[1], 3, 2)] {
        for path in std::iter::repeat_n("/api/ok", good).chain(std::iter::repeat_n("/api/err", bad)) {
            get(&proxy.url(path)).await;
        }
    }
    eventually(5, "both instances' counts summed", || async {
        let doc = get(&proxies[0].url("/performance?scope=cluster")).await.json();
        doc["scope"] == "cluster" && slo(&doc, "api")["total"].as_u64() == Some(12)
    })
    .await;
    let doc = get(&proxies[0].url("/performance?scope=cluster")).await.json();
    let api = slo(&doc, "api");
    assert_eq!(api["good"].as_u64(), Some(9), "{api}");
    assert!((api["error_budget_remaining"].as_f64().unwrap() - (1.0 - 3.0 / (0.1 * 12.0))).abs() < 1e-9, "{api}");
    // Each instance alone: its own counts.
    let own = get(&proxies[1].url("/performance")).await.json();
    assert_eq!(slo(&own, "api")["total"].as_u64(), Some(5));
}
