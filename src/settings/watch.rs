//! What perfproxy watches and raises: `[health]` (probes, what readiness
//! needs, extra HTTP dependencies), `[alerts]` (the thresholds) and
//! `[database]` (how the watched PostgreSQL is polled).

use serde::{Deserialize, Serialize};

/// The `[health]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub upstream_path: String,
    pub critical: Vec<String>,
    /// Checks whose failure makes `/health/ready` answer 503.
    pub ready: Vec<String>,
    pub http: Vec<HttpCheck>,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            interval_ms: 5_000,
            timeout_ms: 2_000,
            upstream_path: "/".into(),
            critical: vec!["upstream".into(), "database".into()],
            ready: vec!["upstream".into()],
            http: Vec::new(),
        }
    }
}

/// A `[[health.http]]` entry: an extra HTTP dependency to probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    pub name: String,
    pub url: String,
    /// PEM CA certificates an `https://` url's certificate is verified
    /// against instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// The `[alerts]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    pub window_ms: u64,
    /// How often the rules are evaluated.
    pub interval_ms: u64,
    pub error_rate: f64,
    pub slow_request_ms: u64,
    pub slow_query_ms: u64,
    pub memory_bytes: u64,
    pub cache_hit_rate: f64,
    /// Share of requests answered 429 by a rate limit above which `rate_limited` fires.
    pub rate_limited: f64,
    /// How long a condition must hold, at every evaluation, before it fires.
    pub for_ms: u64,
    /// How long a firing alert's condition must stay clear before it resolves.
    pub keep_firing_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// PEM CA certificates an `https://` webhook is verified against
    /// (default: the system's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_ca_file: Option<String>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            window_ms: 60_000,
            interval_ms: 5_000,
            error_rate: 0.05,
            slow_request_ms: 2_000,
            slow_query_ms: 1_000,
            memory_bytes: 524_288_000,
            cache_hit_rate: 0.70,
            rate_limited: 0.05,
            for_ms: 30_000,
            keep_firing_ms: 60_000,
            webhook_url: None,
            webhook_ca_file: None,
        }
    }
}

/// The `[database]` table: how the watched database is polled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// How often `pg_stat_statements` and the catalog are read.
    pub poll_interval_ms: u64,
    /// `statement_timeout` of perfproxy's own queries.
    pub statement_timeout_ms: u64,
    /// How many slow queries `/performance` lists (slowest total first).
    pub slow_query_limit: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings { poll_interval_ms: 10_000, statement_timeout_ms: 5_000, slow_query_limit: 10 }
    }
}
