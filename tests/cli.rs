//! The binary as operators run it: bad configuration exits 2 with one line
//! naming the key; check-config; SIGTERM drains in-flight requests and exits 0;
//! large bodies stream through in bounded memory.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_2_naming_the_key() {
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--config".into(), write_config("lisen = \"127.0.0.1:1\"\n")], vec![], "lisen"),
        (vec!["--config".into(), write_config("[cache]\nmemory_bytes = \"lots\"\n")], vec![], "cache.memory_bytes"),
        (vec!["--config".into(), write_config("[alerts]\nerror_rate = 7.5\n")], vec![], "alerts.error_rate"),
        (vec!["--config".into(), write_config("send_timeout_ms = 0\n")], vec![], "send_timeout_ms"),
        (vec!["--config".into(), write_config("[[routes]]\npattern = \"users/:id\"\n")], vec![], "routes[0].pattern"),
        (vec!["--config".into(), "/nonexistent/perfproxy.toml".into()], vec![], "--config"),
        (vec!["--config".into(), write_config("listen = [\n")], vec![], "listen"),
        (vec!["--upstream".into(), "ftp://secure".into()], vec![], "--upstream"),
        (
            vec!["--config".into(), write_config("[compression]\nalgorithms = [\"gzip\", \"lz4\"]\n")],
            vec![],
            "compression.algorithms[1]",
        ),
        (vec!["--config".into(), write_config("[compression.level]\nbr = 12\n")], vec![], "compression.level.br"),
        (
            vec!["--config".into(), write_config("[compression]\ncontent_types = [\"json\"]\n")],
            vec![],
            "compression.content_types[0]",
        ),
        (vec!["--config".into(), write_config("[compression]\nenabled = \"yes\"\n")], vec![], "compression.enabled"),
        (vec![], vec![("PERFPROXY_LISTEN", "localhost")], "PERFPROXY_LISTEN"),
        (vec![], vec![("DATABASE_POOL_SIZE", "ten")], "DATABASE_POOL_SIZE"),
        (vec![], vec![("PERFORMANCE_MONITORING_ENABLED", "maybe")], "PERFORMANCE_MONITORING_ENABLED"),
        (vec![], vec![("SLOW_REQUEST_THRESHOLD", "2s")], "SLOW_REQUEST_THRESHOLD"),
        (vec![], vec![("DATABASE_URL", "mysql://u:hunter2@db/app")], "DATABASE_URL"),
        (vec![], vec![("CACHE_TTL_DEFAULT", "0")], "CACHE_TTL_DEFAULT = 0: expected a whole number of seconds"),
        (vec![], vec![("PERFPROXY_CONFIG", "/nonexistent/perfproxy.toml")], "PERFPROXY_CONFIG ="),
        (vec!["--upstream".into(), "http://admin:hunter2@backend:3000".into()], vec![], "admin:***@backend"),
    ];
    for (args, env, key) in cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = run(&argv, &env);
        assert_eq!(code, 2, "{argv:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
        assert!(stderr.contains(key), "{key} not named: {stderr}");
        assert!(stdout.is_empty());
        assert!(!stderr.contains("hunter2"), "secret printed: {stderr}");
    }
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let file = write_config("upstream = \"http://10.1.2.3:8080\"\n[cache]\nmemory_bytes = 1024\n");
    let (code, stdout, stderr) = run(
        &["check-config", "--config", &file],
        &[("PERFPROXY_LISTEN", "0.0.0.0:9000"), ("PERFPROXY_ADMIN_TOKEN", "sekrit"), ("CACHE_TTL_DEFAULT", "60")],
    );
    assert_eq!(code, 0, "{stderr}");
    let effective: toml::Value = toml::from_str(&stdout).expect("check-config prints TOML");
    assert_eq!(effective["listen"].as_str(), Some("0.0.0.0:9000"), "env beats file and defaults");
    assert_eq!(effective["upstream"].as_str(), Some("http://10.1.2.3:8080"));
    assert_eq!(effective["cache"]["memory_bytes"].as_integer(), Some(1024));
    assert_eq!(effective["cache"]["default_ttl_ms"].as_integer(), Some(60_000));
    assert!(!stdout.contains("sekrit"));
    // Flags beat the environment.
    let (_, stdout, _) = run(&["check-config", "--listen", "127.0.0.1:7"], &[("PERFPROXY_LISTEN", "0.0.0.0:9000")]);
    assert!(stdout.contains("listen = \"127.0.0.1:7\""), "{stdout}");
}

#[test]
fn help_documents_every_flag_and_its_variable() {
    let (code, stdout, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for name in [
        "--listen",
        "PERFPROXY_LISTEN",
        "--upstream",
        "PERFPROXY_UPSTREAM",
        "--admin-listen",
        "PERFPROXY_ADMIN_LISTEN",
        "REDIS_URL",
        "DATABASE_URL",
        "DATABASE_POOL_SIZE",
        "CACHE_TTL_DEFAULT",
        "PERFORMANCE_MONITORING_ENABLED",
        "SLOW_QUERY_THRESHOLD",
        "SLOW_REQUEST_THRESHOLD",
        "PERFPROXY_ADMIN_TOKEN",
        "--config",
        "check-config",
    ] {
        assert!(stdout.contains(name), "--help lacks {name}");
    }
    // Each variable named plainly: no empty `NAME=` when it is unset, and
    // no value of one that is set (a token, a password in a URL).
    assert!(stdout.contains("[env: PERFPROXY_LISTEN]"), "{stdout}");
    assert!(!stdout.contains("=]"), "an empty variable shown: {stdout}");
    let (_, stdout, _) = run(&["--help"], &[("PERFPROXY_ADMIN_TOKEN", "s3cret"), ("PERFPROXY_LISTEN", "")]);
    assert!(!stdout.contains("s3cret") && !stdout.contains("=]"), "{stdout}");
}

#[test]
fn a_mistyped_key_names_the_closest_in_a_few_lines() {
    let file = write_config("upstream_timout_ms = 100\n");
    let (code, _, stderr) = run(&["check-config", "--config", &file], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.trim().lines().count() <= 3, "a few lines: {stderr}");
    assert!(stderr.contains("did you mean `upstream_timeout_ms`?"), "{stderr}");
    assert!(!stderr.contains("`shutdown_grace_ms`"), "not every key listed: {stderr}");
    let file = write_config("[alerts]\nerror_rat = 0.1\n");
    let (code, _, stderr) = run(&["check-config", "--config", &file], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("alerts") && stderr.contains("did you mean `error_rate`?"), "{stderr}");
    let file = write_config("upstream_timeout_ms = -5\n");
    let (code, _, stderr) = run(&["check-config", "--config", &file], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("= -5: expected a whole number, 0 or more (not -5)"), "{stderr}");
    // The unknown key's line shows its value, not the key again.
    let file = write_config("upstream_timout_ms = 100\n");
    let (_, _, stderr) = run(&["check-config", "--config", &file], &[]);
    assert!(stderr.contains(") = 100: expected a known key"), "{stderr}");
    // A negative number from a flag or a variable: one line, saying why.
    let (code, _, stderr) = run(&["check-config", "--database-pool-size", "-5"], &[]);
    assert_eq!((code, stderr.trim().lines().count()), (2, 1), "{stderr}");
    assert!(stderr.contains("--database-pool-size") && stderr.contains("0 or more (not -5)"), "{stderr}");
    let (code, _, stderr) = run(&["check-config"], &[("PERFPROXY_WORKERS", "-5")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("PERFPROXY_WORKERS") && stderr.contains("0 or more (not -5)"), "{stderr}");
}

fn rss_kib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let up = spawn_upstream().await;
    let port = free_port();
    let child = start_binary(&up.url(), port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/health/live"), 10).await;
    let slow = tokio::spawn({
        let url = format!("{base}/delay/800");
        async move { get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    signal(&child, "-TERM");
    // New connections are refused soon after the signal...
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "still accepting after SIGTERM");
    // ...while the in-flight request completes.
    let a = slow.await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "slept 800");
    assert_eq!(exit_code(child).await, Some(0));
    assert!(t.elapsed() < Duration::from_secs(5), "drain took {:?}", t.elapsed());
}

#[tokio::test]
async fn a_gigabyte_streams_through_in_bounded_memory() {
    let up = spawn_upstream().await;
    let port = free_port();
    let child = start_binary(&up.url(), port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/health/live"), 10).await;
    let idle = rss_kib(&child);

    // Download 1 GiB, sampling the proxy's RSS as it flows.
    let resp = client().get(format!("{base}/big/{}", 1u64 << 30).parse().unwrap()).await.unwrap();
    let mut body = resp.into_body();
    let (mut got, mut peak) = (0u64, 0u64);
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        got += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
        if got % (64 << 20) < 65536 {
            peak = peak.max(rss_kib(&child));
        }
    }
    assert_eq!(got, 1 << 30);
    // Upload 1 GiB with curl (chunked, from a generator) and let the upstream count it.
    let curl = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("head -c 1073741824 /dev/zero | curl -sS -X POST -T - {base}/sink"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(120), curl.wait_with_output()).await.unwrap().unwrap();
    peak = peak.max(rss_kib(&child));
    assert_eq!(String::from_utf8_lossy(&out.stdout), (1u64 << 30).to_string());
    assert!(peak < idle + 32 * 1024, "RSS grew from {idle} KiB to {peak} KiB while streaming");
}

/// A listener that cannot bind is named with its address, and perfproxy
/// exits 1 (it named the proxy listener whichever failed).
#[test]
fn a_taken_port_names_the_listener_that_failed() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, stderr) = run(&["--listen", "127.0.0.1:0", "--admin-listen", &addr], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("admin_listen {addr}")), "{stderr}");
    let (code, _, stderr) = run(&["--listen", &addr], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("listen {addr}")) && !stderr.contains("admin_listen"), "{stderr}");
}
