//! Unit tests of `config`.

use super::*;

fn invalid(args: &[&str]) -> ConfigError {
    match from_args(args.iter().copied()) {
        Err(e) => match *e {
            LoadError::Invalid(e) => e,
            LoadError::Usage(e) => panic!("usage error: {e}"),
        },
        Ok(_) => panic!("accepted {args:?}"),
    }
}

#[test]
fn defaults_are_the_spec_defaults() {
    let inv = from_args(["perfproxy"]).unwrap();
    assert_eq!(inv.config.listen.to_string(), "127.0.0.1:4001");
    assert_eq!(inv.config.upstream.authority.as_str(), "127.0.0.1:3000");
    assert_eq!(inv.config.settings.database_pool_size, 10);
    assert_eq!(inv.config.settings.cache.default_ttl_ms, 3_600_000);
    assert_eq!(inv.config.settings.alerts.slow_request_ms, 2000);
    assert!(inv.config.settings.monitoring_enabled);
}

#[test]
fn flags_override_and_bad_flags_are_named() {
    let inv = from_args(["perfproxy", "--listen", "0.0.0.0:8080", "--slow-request-threshold", "150"]).unwrap();
    assert_eq!(inv.config.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(inv.config.settings.alerts.slow_request_ms, 150);
    let e = invalid(&["perfproxy", "--slow-query-threshold", "soon"]);
    assert_eq!(e.key, "--slow-query-threshold");
    let e = invalid(&["perfproxy", "--listen", "nowhere"]);
    assert_eq!(e.key, "--listen");
    assert_eq!(e.value, "\"nowhere\"");
    let e = invalid(&["perfproxy", "--upstream", "ftp://x"]);
    assert_eq!(e.key, "--upstream");
}

#[test]
fn file_errors_name_the_key() {
    let p = Path::new("t.toml");
    let e = parse_file("[cache]\nmemory_bytes = \"lots\"\n", p).unwrap_err();
    assert!(e.key.starts_with("cache.memory_bytes"), "{e}");
    assert_eq!(e.expected, "a whole number (not the string \"lots\")", "{e}");
    let e = parse_file("listen = \"127.0.0.1:1\"\nlisten_port = 3\n", p).unwrap_err();
    assert!(e.expected.starts_with("a known key instead of `listen_port`"), "{e}");
    assert!(e.key.contains("t.toml:2"), "{e}");
    let e = parse_file("[[routes]]\npattern = 5\n", p).unwrap_err();
    assert!(e.key.starts_with("routes[0].pattern"), "{e}");
    let e = parse_file("listen = \n", p).unwrap_err();
    assert!(e.to_string().lines().count() == 1, "{e}");
}

#[test]
fn shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/perfproxy.toml");
    let s = read_file(&path).unwrap();
    Config::validate(s, Some(path)).unwrap();
}

/// Found by an attack from outside: an upstream port out of range was read
/// as no port (80), and endpoint paths that collide were accepted
/// (`performance = "/health"` served the figures, unguarded, where probes read).
#[test]
fn upstream_ports_and_colliding_endpoint_paths_are_refused() {
    for url in ["http://x:99999", "http://127.0.0.1:85037", "http://x:0", "http://x:", "http://[::1]:70000"] {
        let e = invalid(&["perfproxy", "--upstream", url]);
        assert_eq!(e.key, "--upstream", "{url}: {e}");
    }
    for url in ["http://x:65535", "https://[::1]:8443/", "http://backend"] {
        assert!(from_args(["perfproxy", "--upstream", url]).is_ok(), "{url}");
    }
    let p = Path::new("t.toml");
    for (text, key) in [
        ("[endpoints]\nperformance = \"/health\"\n", "endpoints.performance"),
        ("[endpoints]\nmetrics = \"/health/live\"\n", "endpoints.metrics"),
        ("[endpoints]\npurge = \"/performance/x\"\n", "endpoints.purge"),
        ("[endpoints]\nhealth = \"/\"\n", "endpoints.health"),
    ] {
        let settings = parse_file(text, p).expect("parses");
        let e = Config::validate(settings, None).expect_err(text);
        assert_eq!(e.key, key, "{text}: {e}");
    }
    let settings = parse_file("[endpoints]\nperformance = \"/ops/perf\"\nhealth = \"/ops/health\"\n", p).unwrap();
    assert!(Config::validate(settings, None).is_ok());
}
