//! Route discovery from outside: a path value sent once never reaches a
//! label (`/performance`, `/metrics`, alert log lines), a value sent often
//! keeps its own label, one position learns at most `max_literals` values,
//! configured routes and rule patterns win, `enabled = false` restores the
//! plain normalisation, and 100 000 random paths leave memory bounded.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

fn labels(doc: &serde_json::Value) -> Vec<String> {
    doc["routes"].as_array().unwrap().iter().map(|r| r["route"].as_str().unwrap().to_string()).collect()
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await; // samples merge every ~50 ms
}

#[tokio::test]
async fn values_sent_once_never_reach_a_label_and_frequent_ones_do() {
    let up = spawn_upstream().await;
    let proxy = spawn_proxy(&up.url(), &["--route-discovery", "true"]).await;
    // A password in a path, once; 60 one-off search words under one prefix.
    get(&proxy.url("/basic-auth/alice/s3cret")).await;
    for i in 0..60 {
        get(&proxy.url(&format!("/search/word{i}x"))).await;
    }
    // The same secret in a gRPC method's path: gRPC names are learned too.
    let grpc = http::Request::post(proxy.url("/x.y/gs3cret"))
        .header("content-type", "application/grpc")
        .body(Default::default())
        .unwrap();
    send(grpc).await;
    // A name the application really has, asked for often.
    for _ in 0..10 {
        get(&proxy.url("/api/users/me")).await;
    }
    for id in [1, 2, 3] {
        get(&proxy.url(&format!("/api/users/{id}"))).await;
    }
    settle().await;
    let doc = get(&proxy.url("/performance")).await.json();
    let all = labels(&doc);
    let metrics = get(&proxy.url("/metrics")).await.text();
    for secret in ["alice", "s3cret", "word", "x.y"] {
        assert!(!all.iter().any(|l| l.contains(secret)), "{secret} in a label: {all:?}");
        assert!(!metrics.contains(secret), "{secret} in /metrics");
    }
    assert!(all.contains(&"GET /api/users/me".to_string()), "{all:?}");
    assert!(all.contains(&"GET /api/users/:id".to_string()), "{all:?}");
    assert!(all.contains(&"GET /search/:param".to_string()), "{all:?}");
    let under_search = all.iter().filter(|l| l.starts_with("GET /search/")).count();
    assert!(under_search <= 21, "{all:?}");
    let held = &doc["memory"]["held"];
    assert!(
        held["route_positions"].as_u64().unwrap() > 0 && held["route_literals"].as_u64().unwrap() == 4,
        "search, api, users, me: {held}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_position_learns_at_most_max_literals_values() {
    let up = spawn_upstream().await;
    let config = write_config("[route_discovery]\nliteral_after = 2\nmax_literals = 5\n");
    let proxy = spawn_proxy(&up.url(), &["--config", &config, "--route-discovery", "true"]).await;
    for _ in 0..2 {
        get(&proxy.url("/tags")).await;
    }
    for i in 0..60 {
        for _ in 0..2 {
            get(&proxy.url(&format!("/tags/t{i}x"))).await;
        }
    }
    settle().await;
    let all = labels(&get(&proxy.url("/performance")).await.json());
    let under: Vec<&String> = all.iter().filter(|l| l.starts_with("GET /tags/")).collect();
    assert_eq!(under.len(), 6, "five values and :param: {under:?}");
    assert!(under.contains(&&"GET /tags/:param".to_string()));
    proxy.shutdown().await;
}

#[tokio::test]
async fn declared_routes_win_and_off_restores_the_plain_normalisation() {
    let up = spawn_upstream().await;
    let config = write_config(
        "[[routes]]\npattern = \"GET /docs/:page\"\n[[cache.rules]]\npattern = \"GET /files/*\"\nttl_ms = 1000\n",
    );
    let on = spawn_proxy(&up.url(), &["--config", &config, "--route-discovery", "true"]).await;
    get(&on.url("/docs/intro")).await;
    get(&on.url("/files/a/b.txt")).await;
    settle().await;
    let all = labels(&get(&on.url("/performance")).await.json());
    assert!(all.contains(&"GET /docs/:page".to_string()) && all.contains(&"GET /files/*".to_string()), "{all:?}");
    on.shutdown().await;
    let off = spawn_proxy(&up.url(), &["--config", &config, "--route-discovery", "false"]).await;
    get(&off.url("/plain/intro")).await;
    get(&off.url("/files/a/b.txt")).await;
    settle().await;
    let all = labels(&get(&off.url("/performance")).await.json());
    assert!(all.contains(&"GET /plain/intro".to_string()), "as sent, at once: {all:?}");
    assert!(all.contains(&"GET /files/a/b.txt".to_string()), "rules declare nothing when off: {all:?}");
    off.shutdown().await;
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Random requests: two to four segments of random letters and digits.
async fn random_paths(base: String, n: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..n {
        let depth = rng.usize(2..5);
        let path: String = (0..depth)
            .map(|_| {
                let word: String = (0..rng.usize(4..10)).map(|_| rng.alphanumeric()).collect();
                format!("/{word}")
            })
            .collect();
        let answer = get(&format!("{base}{path}")).await;
        assert_eq!(answer.status, 200, "{path}");
    }
}

/// 100 000 random paths through the binary: labels, positions and learned
/// values stay within their bounds, and RSS with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_random_paths_leave_memory_bounded() {
    let up = spawn_upstream().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(binary())
        .args(["--listen", &listen, "--upstream", &up.url(), "--route-discovery", "true"])
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env_remove("PERFPROXY_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("serving") {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "perfproxy exited");
    }
    std::thread::spawn(move || while log.read_line(&mut String::new()).is_ok_and(|n| n > 0) {});
    let base = format!("http://{listen}");
    let run = |n: usize, tasks: u64| {
        let base = base.clone();
        async move {
            let all: Vec<_> =
                (0..tasks).map(|t| tokio::spawn(random_paths(base.clone(), n, t * 7919 + n as u64))).collect();
            for t in all {
                t.await.unwrap();
            }
        }
    };
    run(10_000 / 16, 16).await; // warm: buffers, pools, the first labels
    let before = rss_kib(child.id());
    run(90_000 / 16, 16).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_kib(child.id());
    let doc = get(&format!("{base}/performance")).await.json();
    let _ = child.kill();
    let _ = child.wait();
    let held = &doc["memory"]["held"];
    let total = doc["requests"]["total"].as_u64().unwrap();
    eprintln!("100 000 random paths: RSS {before} KiB after 10 000, {after} KiB after {total}; held {held}");
    assert!(total >= 99_000, "{total}");
    assert!(held["route_labels"].as_u64().unwrap() <= 1_000 + 10, "{held}");
    assert!(held["route_positions"].as_u64().unwrap() <= 4_000, "{held}");
    assert!(held["route_literals"].as_u64().unwrap() <= 4_000, "{held}");
    // Every value was sent once: nothing learned below the first segment.
    let labels = labels(&doc);
    let learned =
        |l: &String| l.split(' ').nth(1).unwrap().split('/').skip(1).any(|seg| seg != ":param" && seg != ":id");
    assert!(!labels.iter().any(learned), "random one-off values made labels: {labels:?}");
    assert!(after < before + 8 * 1024, "RSS grew from {before} to {after} KiB over 90 000 random paths");
}
