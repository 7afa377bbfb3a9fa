//! Unit tests of `validate`.

use super::*;

#[test]
fn upstream_urls() {
    let u = upstream_addr("upstream", "http://backend:8080").unwrap();
    assert_eq!((u.host.as_str(), u.port), ("backend", 8080));
    let u = upstream_addr("upstream", "http://[::1]/").unwrap();
    assert_eq!((u.host.as_str(), u.port), ("::1", 80));
    for bad in ["ftp://x", "x:80", "http://x/api", "http://u:p@x", "http://"] {
        assert!(upstream_addr("upstream", bad).is_err(), "{bad}");
    }
}

#[test]
fn settings_are_checked_by_key() {
    let mut s = Settings::default();
    s.alerts.error_rate = 5.0;
    assert_eq!(Config::validate(s, None).unwrap_err().key, "alerts.error_rate");
    let mut s = Settings::default();
    s.health.critical.push("googl".into());
    assert_eq!(Config::validate(s, None).unwrap_err().key, "health.critical[2]");
    let s = Settings { database_url: Some("mysql://root:hunter2@db/x".into()), ..Settings::default() };
    let e = Config::validate(s, None).unwrap_err();
    assert_eq!(e.key, "database_url");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let s = Settings { max_header_bytes: 100, ..Settings::default() };
    assert_eq!(Config::validate(s, None).unwrap_err().key, "max_header_bytes");
    let s = Settings { trusted_proxies: vec!["10.0.0.0/33".into()], ..Settings::default() };
    assert_eq!(Config::validate(s, None).unwrap_err().key, "trusted_proxies[0]");
}

#[test]
fn effective_toml_redacts_secrets() {
    let s = Settings {
        admin_token: Some("sekrit".into()),
        database_url: Some("postgres://app:hunter2@db:5432/app".into()),
        ..Settings::default()
    };
    let text = Config::validate(s, None).unwrap().effective_toml();
    assert!(!text.contains("sekrit") && !text.contains("hunter2"), "{text}");
    assert!(text.contains("postgres://app:***@db:5432/app"), "{text}");
    let mut s = Settings::default();
    s.alerts.webhook_url = Some("https://hook:pw1@alerts.example/x".into());
    s.tracing.endpoint = Some("http://otel:pw2@collector:4318".into());
    s.slow.trace_url = Some("https://u:pw3@traces.example/t/{trace_id}".into());
    let text = Config::validate(s, None).unwrap().effective_toml();
    assert!(!text.contains("pw1") && !text.contains("pw2") && !text.contains("pw3"), "{text}");
    assert!(text.contains("https://hook:***@alerts.example/x"), "{text}");
}

#[test]
fn errors_about_urls_never_echo_their_password() {
    let s = Settings { upstream: "http://admin:S3CRET@backend:3000".into(), ..Settings::default() };
    let e = Config::validate(s, None).unwrap_err();
    assert_eq!(e.key, "upstream");
    assert!(!e.to_string().contains("S3CRET") && e.to_string().contains("admin:***@"), "{e}");
    let mut s = Settings::default();
    s.slow.trace_url = Some("ftp://u:S3CRET@traces/{trace_id}".into());
    let e = Config::validate(s, None).unwrap_err();
    assert!(e.key == "slow.trace_url" && !e.to_string().contains("S3CRET"), "{e}");
}

#[test]
fn a_key_out_of_range_is_refused_though_its_feature_is_off() {
    let mut s = Settings::default();
    s.tls.min_version = Some("1.1".into());
    assert_eq!(Config::validate(s, None).unwrap_err().key, "tls.min_version", "without tls_listen");
}
