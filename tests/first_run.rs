//! What a new operator meets first: configuration errors that name the file
//! and line in plain words, logs without escape codes in a pipe, a
//! dependency that is down at start logged with its cause, the demo on a
//! busy port explained in one line.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary())
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("PERFPROXY_CONFIG")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_config_error_names_the_file_and_line_in_plain_words() {
    let cases = [
        // (file, key, line, words the message must carry)
        ("listen = \"127.0.0.1:4001\"\nlisen = \"x\"\n", "lisen", 2, "a known key"),
        (
            "# cache\n[cache]\nmemory_bytes = \"lots\"\n",
            "cache.memory_bytes",
            3,
            "a whole number (not the string \"lots\")",
        ),
        ("[alerts]\ninterval_ms = 100\nerror_rate = 5\n", "alerts.error_rate", 3, "a fraction from 0.0 to 1.0"),
        ("\nupstream = \"ftp://x\"\n", "upstream", 2, "http://"),
        ("[[routes]]\npattern = \"GET /a\"\n[[routes]]\npattern = \"users/:id\"\n", "routes[1].pattern", 4, "/"),
        ("database_url = \"postgres://u:hunter2@h:notaport/db\"\n", "database_url", 1, "port"),
        ("[health]\nhttp = [{ name = \"x\", url = \"http://:80/\" }]\n", "health.http[0].url", 2, "URL"),
        ("listen = [\n", "listen", 1, "valid TOML"),
    ];
    for (text, key, line, words) in cases {
        let file = write_config(text);
        let (code, stderr) = run(&["check-config", "--config", &file]);
        assert_eq!(code, 2, "{text}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(&format!("{key} ({file}:{line})")), "{key} at {file}:{line} not named: {stderr}");
        assert!(stderr.contains(words), "{words:?} not in: {stderr}");
        assert!(!stderr.contains("expected invalid") && !stderr.contains("hunter2"), "{stderr}");
    }
    // A value from a flag or variable is named by it, not by the file.
    let file = write_config("upstream = \"http://127.0.0.1:3000\"\n");
    let (code, stderr) = run(&["check-config", "--config", &file, "--upstream", "ftp://x"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--upstream") && !stderr.contains(&file), "{stderr}");
}

#[test]
fn dependencies_down_at_start_are_logged_with_their_cause_and_no_escape_codes() {
    let dead = free_port();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(binary())
        .args(["--listen", &listen, "--upstream", &format!("http://127.0.0.1:{dead}")])
        .args(["--database-url", "postgres://postgres@127.0.0.1:5432/perfproxy_no_such_db"])
        .env_remove("REDIS_URL")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    // The first probe runs at once: both causes well within one interval (5 s).
    let deadline = Instant::now() + Duration::from_secs(4);
    let both = |lines: &[String]| {
        let log = lines.join("\n");
        log.contains(&format!("127.0.0.1:{dead}"))
            && log.to_lowercase().contains("connection refused")
            && log.contains("database \"perfproxy_no_such_db\" does not exist")
    };
    while Instant::now() < deadline && !both(&lines) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = lines.join("\n");
    assert!(both(&lines), "both causes logged at start:\n{log}");
    assert!(!log.contains('\u{1b}'), "no escape codes in a pipe:\n{log}");
    assert!(!log.contains("Some(") && !log.contains("None"), "fields printed for people:\n{log}");
}

fn demo() -> std::path::PathBuf {
    let status = Command::new(env!("CARGO")).args(["build", "--quiet", "--example", "demo"]).status().unwrap();
    assert!(status.success());
    std::path::Path::new(binary()).with_file_name("examples").join("demo")
}

#[test]
fn the_demo_on_a_busy_port_says_so_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(demo()).args(["--listen", &addr]).stdout(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line, no backtrace: {stderr}");
    assert!(stderr.contains(&addr) && stderr.contains("-- --listen"), "{stderr}");
    // The backend's own address, taken: the same, naming its flag.
    let listen = format!("127.0.0.1:{}", free_port());
    let out = Command::new(demo()).args(["--listen", &listen, "--backend-listen", &addr]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(&addr) && stderr.contains("--backend-listen"), "{stderr}");
}

#[test]
fn the_demo_backend_listens_where_it_is_told() {
    let backend = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(demo())
        .args(["--backend-listen", &backend, "--listen", &listen])
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env_remove("PERFPROXY_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kept open until the end: a closed pipe would fail the demo's next line.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first.trim(), format!("demo backend on http://{backend}"));
    // The backend answers there, and perfproxy forwards to it.
    let direct = std::net::TcpStream::connect(&backend);
    let through = (0..50).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect(&listen).ok()
    });
    let answer = through.map(|mut s| {
        use std::io::{Read, Write};
        s.write_all(b"GET /api/certificates/7 HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(direct.is_ok(), "backend on {backend}");
    let answer = answer.expect("perfproxy listening");
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("certificate"), "forwarded to it: {answer}");
}

#[test]
fn the_shipped_configs_are_valid() {
    for file in ["config/perfproxy.toml", "config/container.toml"] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let (code, stderr) = run(&["check-config", "--config", &path]);
        assert_eq!(code, 0, "{file}: {stderr}");
    }
}
