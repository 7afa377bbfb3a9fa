//! SIGHUP reload (SPEC §1) of the real binary under load: new routes and
//! thresholds take effect with no failed request and no lost count; a change
//! needing a restart is logged, not applied; a broken file keeps the old
//! configuration.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

fn hup(pid: u32) {
    assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
}

#[tokio::test]
async fn sighup_swaps_routes_and_thresholds_under_load() {
    let up = spawn_upstream().await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let base_config = format!(
        "listen = \"{listen}\"\n[alerts]\ninterval_ms = 100\nfor_ms = 0\nkeep_firing_ms = 0\nerror_rate = 0.9\n"
    );
    let config = write_config(&base_config);
    let log_path = std::env::temp_dir().join(format!("pp-reload-{}.log", fastrand::u64(..)));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(binary())
        .args(["--config", &config, "--upstream", &up.url()])
        .env("PERFPROXY_ROUTE_DISCOVERY", "false") // the plain labels these tests assert
        .env("RUST_LOG", "info")
        .env("PERFPROXY_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let base = format!("http://{listen}");
    wait_ready(&format!("{base}/health/live"), 10).await;
    let perf = || async { get(&format!("{base}/performance")).await.json() };

    // Steady load on kept-alive connections for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, sent, failed, url) =
            (stop.clone(), sent.clone(), failed.clone(), format!("{base}/api/items/widget"));
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                match c.get(url.parse().unwrap()).await {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(perf().await["routes"].as_array().unwrap().iter().any(|r| r["route"] == "GET /api/items/widget"));

    // Reload: a route pattern, a stricter error-rate threshold, and a listen change (needs a restart).
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\n[[routes]]\npattern = \"GET /api/items/:name\"\n[alerts]\ninterval_ms = 100\nfor_ms = 0\nkeep_firing_ms = 0\nerror_rate = 0.01\n",
    )
    .unwrap();
    hup(child.id());
    eventually(5, "new route label in use", || async {
        perf().await["routes"].as_array().unwrap().iter().any(|r| r["route"] == "GET /api/items/:name")
    })
    .await;
    // Errors keep coming beside the load (which alone, on a fast build, can
    // outnumber a one-off burst of 30 by more than 100 to 1).
    let errors_sent = AtomicU64::new(0);
    eventually(5, "error_rate fires at the new threshold", || async {
        for _ in 0..30 {
            get(&format!("{base}/status/500")).await;
        }
        errors_sent.fetch_add(30, Ordering::Relaxed);
        perf().await["alerts"].as_array().unwrap().iter().any(|a| a["rule"] == "error_rate" && a["threshold"] == 0.01)
    })
    .await;

    // A broken file: refused, the running configuration stays (the
    // reloaded pattern keeps counting; the old label gets nothing new).
    let count_of = |doc: &serde_json::Value, label: &str| {
        doc["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == label)
            .map_or(0, |r| r["count"].as_u64().unwrap())
    };
    let before = perf().await;
    std::fs::write(&config, "[alerts]\nerror_rat = 0.5\n").unwrap();
    hup(child.id());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = perf().await;
    assert!(
        count_of(&after, "GET /api/items/:name") > count_of(&before, "GET /api/items/:name"),
        "reloaded routes kept"
    );
    assert_eq!(count_of(&after, "GET /api/items/widget"), count_of(&before, "GET /api/items/widget"));

    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 100, "load ran ({sent})");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed across reloads");
    // No lost counts: every request sent is counted (load + the errors sent).
    let errors_sent = errors_sent.load(Ordering::Relaxed);
    eventually(3, "all requests counted", || async {
        let total = perf().await["requests"]["total"].as_u64().unwrap();
        total == sent + errors_sent
    })
    .await;

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("configuration reloaded"), "{logs}");
    assert!(logs.lines().any(|l| l.contains("needs a restart") && l.contains("\"key\":\"listen\"")), "{logs}");
    assert!(logs.lines().any(|l| l.contains("reload refused") && l.contains("error_rat")), "{logs}");
}
