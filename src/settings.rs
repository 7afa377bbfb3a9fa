//! The configuration as an operator writes it: the TOML file's shape, every
//! key optional, with the documented defaults. Flags and environment
//! variables are applied on top of this (see `config::load`), and the result
//! is what `perfproxy check-config` prints.

mod cache;
mod compression;
mod protocols;
mod routing;
mod slo;
mod slow;
mod tls_tables;
mod watch;

use serde::{Deserialize, Serialize};

pub use cache::{CacheRule, CacheSettings};
pub use compression::{CompressionLevels, CompressionSettings};
pub use protocols::{GrpcSettings, Http2Settings, Protocols, UpstreamAddr, UpstreamProtocol};
pub use routing::RouteDiscoverySettings;
pub use slo::{SloAlertSettings, SloRule};
pub use slow::SlowSettings;
pub use tls_tables::{TlsSettings, UpstreamTlsSettings};
pub use watch::{AlertSettings, DatabaseSettings, HealthSettings, HttpCheck};

/// A configuration problem: which key, which value, what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid configuration: {key} = {value}: expected {expected}")]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub expected: String,
}

impl ConfigError {
    /// A URL's password in the value or the expectation is masked: an error
    /// about a configuration never echoes a secret.
    pub(crate) fn new(key: impl Into<String>, value: impl ToString, expected: impl Into<String>) -> Self {
        let (value, expected) = (crate::redact::text(&value.to_string()), crate::redact::text(&expected.into()));
        ConfigError { key: key.into(), value, expected }
    }
}

/// Every setting, in the shape of `config/perfproxy.toml`. Durations are ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub listen: String,
    pub upstream: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    /// A TLS listener beside `listen`, serving the same request path (`[tls]` holds its files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<String>,
    pub upstream_timeout_ms: u64,
    /// An idle pooled upstream connection older than this is closed, not reused.
    pub upstream_idle_timeout_ms: u64,
    /// The longest wait for the next bytes of an upstream answer's body once its head came.
    pub upstream_read_timeout_ms: u64,
    /// The longest a write to a client may wait with none of its bytes taken.
    pub send_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
    /// After SIGTERM: readiness 503 and new connections still accepted this long (ms), before draining.
    pub shutdown_delay_ms: u64,
    pub header_read_timeout_ms: u64,
    pub max_header_bytes: u64,
    pub max_connections: u64,
    pub max_routes: u64,
    /// Worker threads serving traffic; 0 means half the CPU cores, at least one.
    pub workers: u64,
    /// `false`: every request through the general (hyper) path; a diagnostic switch.
    pub express_lane: bool,
    /// `"http1"`, `"h2c"` or `"auto"` (gRPC over h2c, the rest over HTTP/1.1).
    pub upstream_protocol: String,
    /// Peers (CIDRs) whose `X-Forwarded-Host`/`-Proto` are kept.
    pub trusted_proxies: Vec<String>,
    pub monitoring_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    pub database_pool_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    pub endpoints: Endpoints,
    pub routes: Vec<RouteRule>,
    pub route_discovery: routing::RouteDiscoverySettings,
    pub cache: CacheSettings,
    pub health: HealthSettings,
    pub alerts: AlertSettings,
    pub database: DatabaseSettings,
    pub access_log: AccessLogSettings,
    pub tracing: TracingSettings,
    pub cluster: ClusterSettings,
    pub history: HistorySettings,
    pub top_clients: TopClientsSettings,
    pub rate_limits: Vec<RateLimitRule>,
    pub http2: protocols::Http2Settings,
    pub grpc: protocols::GrpcSettings,
    pub slow: slow::SlowSettings,
    /// `[[slo]]`: service level objectives.
    pub slo: Vec<slo::SloRule>,
    pub slo_alerts: slo::SloAlertSettings,
    pub tls: TlsSettings,
    pub upstream_tls: UpstreamTlsSettings,
    pub compression: CompressionSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:4001".into(),
            upstream: "http://127.0.0.1:3000".into(),
            admin_listen: None,
            tls_listen: None,
            upstream_timeout_ms: 30_000,
            upstream_idle_timeout_ms: 4_000,
            upstream_read_timeout_ms: 60_000,
            send_timeout_ms: 60_000,
            shutdown_grace_ms: 30_000,
            shutdown_delay_ms: 0,
            header_read_timeout_ms: 10_000,
            max_header_bytes: 65_536,
            max_connections: 10_000,
            max_routes: 1_000,
            workers: 0,
            express_lane: true,
            upstream_protocol: "auto".into(),
            trusted_proxies: ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7"]
                .map(String::from)
                .to_vec(),
            monitoring_enabled: true,
            redis_url: None,
            database_url: None,
            database_pool_size: 10,
            admin_token: None,
            endpoints: Endpoints::default(),
            routes: Vec::new(),
            route_discovery: Default::default(),
            cache: CacheSettings::default(),
            health: HealthSettings::default(),
            alerts: AlertSettings::default(),
            database: DatabaseSettings::default(),
            access_log: AccessLogSettings::default(),
            tracing: TracingSettings::default(),
            cluster: ClusterSettings::default(),
            history: HistorySettings::default(),
            top_clients: TopClientsSettings::default(),
            rate_limits: Vec::new(),
            http2: Default::default(),
            grpc: Default::default(),
            slow: Default::default(),
            slo: Vec::new(),
            slo_alerts: Default::default(),
            tls: Default::default(),
            upstream_tls: Default::default(),
            compression: Default::default(),
        }
    }
}

/// The `[top_clients]` table: who sends the most requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopClientsSettings {
    /// How many clients `/performance.top_clients` lists.
    pub count: u64,
    /// `"client"` (the address, `X-Forwarded-For` walked past `trusted_proxies`)
    /// or `"header:NAME"` (that header's value, shown hashed).
    pub key: String,
}

impl Default for TopClientsSettings {
    fn default() -> Self {
        TopClientsSettings { count: 10, key: "client".into() }
    }
}

/// A `[[rate_limits]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// As `[[routes]]`: `POST /api/*`, `/api/documents/*`.
    pub pattern: String,
    /// `"client"`, `"header:NAME"` or `"global"`.
    #[serde(default = "client_key")]
    pub key: String,
    /// Requests per second, on average.
    pub rps: f64,
    /// Requests at once after a quiet spell (default: `rps`, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// With Redis: the limit is divided by the live instances of the cluster view.
    #[serde(default)]
    pub shared: bool,
}

fn client_key() -> String {
    "client".into()
}

/// The `[access_log]` table: one line per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessLogSettings {
    pub enabled: bool,
    /// `stdout`, or a file appended to.
    pub path: String,
    /// `json` or `text`.
    pub format: String,
    /// The share of requests logged, 0 to 1.
    pub sample: f64,
    /// Only requests slower than `SLOW_REQUEST_THRESHOLD`.
    pub slow_only: bool,
    /// Keep the query string in `path`.
    pub include_query: bool,
    /// Lines queued for the writer at most; past that they are dropped and counted.
    pub buffer_lines: u64,
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        AccessLogSettings {
            enabled: false,
            path: "stdout".into(),
            format: "json".into(),
            sample: 1.0,
            slow_only: false,
            include_query: false,
            buffer_lines: 16_384,
        }
    }
}

/// The `[history]` table: per-minute rollups in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistorySettings {
    /// Default: on when `DATABASE_URL` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    pub retention_days: u64,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings { enabled: None, retention_days: 7 }
    }
}

/// The `[cluster]` table: the cluster view through Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// How often this instance publishes its figures (ms).
    pub publish_ms: u64,
    /// This instance's id (`PERFPROXY_INSTANCE`); default the hostname and pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings { publish_ms: 5_000, instance: None }
    }
}

/// The `[tracing]` table: OpenTelemetry spans over OTLP/HTTP. The standard
/// `OTEL_*` variables win over these.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingSettings {
    /// The collector's base URL (`/v1/traces` is appended); none: no spans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `service.name` (default `perfproxy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The share of new traces sampled, 0 to 1 (default 1); a client's
    /// sampled flag is followed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_ratio: Option<f64>,
    /// How long spans wait to be exported in a batch (ms; default 5000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_delay_ms: Option<u64>,
    /// Spans queued for export at most (default 2048); past that they are
    /// dropped and counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<u64>,
}

/// Where perfproxy answers on the proxy listener, and to whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Endpoints {
    /// Peers (CIDRs) that may read admin endpoints on the proxy listener without the token.
    pub allow: Vec<String>,
    /// `false`: admin endpoints only on `admin_listen`; their paths reach the app.
    pub proxy_listener: bool,
    /// Peers (CIDRs) that may connect to `admin_listen`.
    pub admin_allow: Vec<String>,
    pub performance: String,
    pub health: String,
    pub metrics: String,
    pub purge: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
            proxy_listener: true,
            admin_allow: vec!["0.0.0.0/0".into(), "::/0".into()],
            performance: "/performance".into(),
            health: "/health".into(),
            metrics: "/metrics".into(),
            purge: "/cache/purge".into(),
        }
    }
}

/// A `[[routes]]` entry: a pattern such as `GET /api/users/:id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    pub pattern: String,
}
