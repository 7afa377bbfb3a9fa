//! A real Prometheus server (Debian's `prometheus`, exemplar storage on)
//! scrapes perfproxy while it traces into a real OTLP receiver: through
//! Prometheus' HTTP API come the semantic-convention histogram and an
//! exemplar whose `trace_id` is one of the exported spans'. Prometheus
//! asks for OpenMetrics, so this also checks that perfproxy's OpenMetrics
//! parses as a whole (a scrape that fails to parse stores nothing).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::otlp::spawn_receiver;
use support::*;

struct Prometheus(Child, std::path::PathBuf);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start_prometheus(target: std::net::SocketAddr, port: u16) -> Prometheus {
    let dir = std::env::temp_dir().join(format!("perfproxy-prometheus-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: perfproxy\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--enable-feature=exemplar-storage")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (scripts/test.sh installs Debian's package)");
    Prometheus(child, dir)
}

async fn api(port: u16, path_and_query: &str) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{port}{path_and_query}");
    match tokio::time::timeout(Duration::from_secs(2), client().get(url.parse().unwrap())).await {
        Ok(Ok(resp)) => {
            use http_body_util::BodyExt;
            let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
        }
        _ => serde_json::Value::Null,
    }
}

#[tokio::test]
async fn prometheus_stores_the_histogram_and_exemplars_that_name_exported_traces() {
    let rx = spawn_receiver().await;
    let up = spawn_upstream().await;
    let cfg = write_config(&format!("[tracing]\nendpoint = \"{}\"\nbatch_delay_ms = 50\n", rx.url()));
    let proxy = spawn_proxy(&up.url(), &["--config", &cfg]).await;
    for i in 0..20 {
        assert_eq!(get(&proxy.url(&format!("/api/items/{i}"))).await.status, 200);
    }
    let port = free_port();
    let _prometheus = start_prometheus(proxy.addr, port);

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let query = format!(
        "/api/v1/query_exemplars?query=http_server_request_duration_seconds_bucket&start={}&end={}",
        now - 600,
        now + 600
    );
    let mut exemplars = Vec::new();
    eventually(60, "Prometheus stores exemplars from perfproxy's scrape", || {
        let query = query.clone();
        async move { !api(port, &query).await["data"].as_array().is_none_or(Vec::is_empty) }
    })
    .await;
    let doc = api(port, &query).await;
    for series in doc["data"].as_array().unwrap() {
        assert_eq!(series["seriesLabels"]["http_route"], "/api/items/:id", "{series}");
        for e in series["exemplars"].as_array().unwrap() {
            exemplars.push(e["labels"]["trace_id"].as_str().unwrap().to_string());
        }
    }
    assert!(!exemplars.is_empty(), "{doc}");
    let mut exported = Vec::new();
    eventually(10, "the exemplars' traces are exported", || {
        exported = rx.spans().iter().map(|s| s.trace_id()).collect();
        let all = exemplars.iter().all(|t| exported.contains(t));
        async move { all }
    })
    .await;

    let count = api(port, "/api/v1/query?query=http_server_request_duration_seconds_count").await;
    let result = &count["data"]["result"][0];
    assert_eq!(result["metric"]["http_request_method"], "GET", "{count}");
    assert_eq!(result["metric"]["http_response_status_code"], "200", "{count}");
    assert_eq!(result["value"][1], "20", "{count}");
    let up_series = api(port, "/api/v1/query?query=up").await;
    assert_eq!(up_series["data"]["result"][0]["value"][1], "1", "the scrape parses: {up_series}");
}
