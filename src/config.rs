//! Configuration: command-line flags (clap, each with its environment
//! variable), the TOML file and the defaults, merged with that precedence into
//! one [`Settings`] and then validated into a [`Config`]. Every error names the
//! key (flag, variable or file key), the value and what was expected; the
//! binary turns it into exit status 2.

mod file_errors;
mod slo;
mod tls;
mod validate;

use file_errors::{file_line, plain_words};

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

pub use crate::settings::{
    AccessLogSettings, AlertSettings, CacheRule, CacheSettings, ClusterSettings, DatabaseSettings, Endpoints,
    HealthSettings, HistorySettings, HttpCheck, RateLimitRule, RouteRule, Settings, TopClientsSettings,
    TracingSettings,
};
pub use crate::settings::{ConfigError, GrpcSettings, Http2Settings, Protocols, UpstreamAddr, UpstreamProtocol};
pub use validate::Config;

/// perfproxy: a sidecar reverse proxy that measures, caches and watches your backend.
#[derive(Debug, Parser)]
#[command(name = "perfproxy", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML configuration file (see config/perfproxy.toml)
    #[arg(long, global = true, value_name = "FILE", env = "PERFPROXY_CONFIG", hide_env_values = true)]
    pub config: Option<PathBuf>,
    /// Address the proxy listens on [default: 127.0.0.1:4001]
    #[arg(long, global = true, value_name = "ADDR", env = "PERFPROXY_LISTEN", hide_env_values = true)]
    pub listen: Option<String>,
    /// Upstream (backend) base URL [default: http://127.0.0.1:3000]
    #[arg(long, global = true, value_name = "URL", env = "PERFPROXY_UPSTREAM", hide_env_values = true)]
    pub upstream: Option<String>,
    /// Optional second listener serving only the admin endpoints
    #[arg(long, global = true, value_name = "ADDR", env = "PERFPROXY_ADMIN_LISTEN", hide_env_values = true)]
    pub admin_listen: Option<String>,
    /// A TLS listener beside the plain one (needs [tls] cert_file and key_file)
    #[arg(long, global = true, value_name = "ADDR", env = "PERFPROXY_TLS_LISTEN", hide_env_values = true)]
    pub tls_listen: Option<String>,
    /// Redis for the shared cache layer (unset: memory cache only)
    #[arg(long, global = true, value_name = "URL", env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// The backend's PostgreSQL, watched (unset: database checks report "not configured")
    #[arg(long, global = true, value_name = "URL", env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Connections perfproxy may hold to the database [default: 10]
    #[arg(
        long,
        global = true,
        value_name = "N",
        env = "DATABASE_POOL_SIZE",
        hide_env_values = true,
        allow_negative_numbers = true
    )]
    pub database_pool_size: Option<String>,
    /// Seconds, TTL for cache rules that name none [default: 3600]
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        env = "CACHE_TTL_DEFAULT",
        hide_env_values = true,
        allow_negative_numbers = true
    )]
    pub cache_ttl_default: Option<String>,
    /// `false` turns recording off (pure proxy) [default: true]
    #[arg(long, global = true, value_name = "BOOL", env = "PERFORMANCE_MONITORING_ENABLED", hide_env_values = true)]
    pub performance_monitoring_enabled: Option<String>,
    /// Milliseconds; a database query slower is "slow" [default: 1000]
    #[arg(
        long,
        global = true,
        value_name = "MS",
        env = "SLOW_QUERY_THRESHOLD",
        hide_env_values = true,
        allow_negative_numbers = true
    )]
    pub slow_query_threshold: Option<String>,
    /// Milliseconds; a request slower is "slow" [default: 2000]
    #[arg(
        long,
        global = true,
        value_name = "MS",
        env = "SLOW_REQUEST_THRESHOLD",
        hide_env_values = true,
        allow_negative_numbers = true
    )]
    pub slow_request_threshold: Option<String>,
    /// `false` sends every request through the general (hyper) path, a diagnostic switch [default: true]
    #[arg(long, global = true, value_name = "BOOL", env = "PERFPROXY_EXPRESS_LANE", hide_env_values = true)]
    pub express_lane: Option<String>,
    /// `false`: route labels by the plain normalisation, nothing learned from the traffic [default: true]
    #[arg(long, global = true, value_name = "BOOL", env = "PERFPROXY_ROUTE_DISCOVERY", hide_env_values = true)]
    pub route_discovery: Option<String>,
    /// This instance's id in the cluster view [default: hostname-pid]
    #[arg(long, global = true, value_name = "ID", env = "PERFPROXY_INSTANCE", hide_env_values = true)]
    pub instance: Option<String>,
    /// Worker threads; 0 means half the container's CPU quota or of the cores, at least one [default: 0]
    #[arg(
        long,
        global = true,
        value_name = "N",
        env = "PERFPROXY_WORKERS",
        hide_env_values = true,
        allow_negative_numbers = true
    )]
    pub workers: Option<String>,
    /// Bearer token for admin calls: purge always; admin endpoints from peers outside endpoints.allow
    #[arg(long, global = true, value_name = "TOKEN", env = "PERFPROXY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Log line format (filter with RUST_LOG, default "info")
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PERFPROXY_LOG_FORMAT", hide_env_values = true)]
    pub log_format: LogFormat,
}

/// Subcommands besides running the proxy.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration, print the effective settings, exit 0 (or 2 when invalid)
    CheckConfig,
    /// Apply perfproxy's SQL migrations (migrations/) to --database-url, in order; idempotent
    Migrate,
    /// Print Prometheus recording and alerting rules equivalent to [[slo]] and [slo_alerts]
    SloRules,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The parsed command line: what to do, and with which configuration.
#[derive(Debug)]
pub struct Invocation {
    pub command: Option<Command>,
    pub log_format: LogFormat,
    pub config: Config,
}

/// Parses `args` (the first is the program name) and the environment into a
/// validated configuration. `Err(Left)` is clap's own error (usage, `--help`).
pub fn from_args<I, T>(args: I) -> Result<Invocation, Box<LoadError>>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let matches = Cli::command().try_get_matches_from(&args).map_err(|e| Box::new(LoadError::Usage(e)))?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| Box::new(LoadError::Usage(e)))?;
    let mut config = load(&cli, &matches, TlsFiles::Read).map_err(|e| Box::new(LoadError::Invalid(e)))?;
    config.args = args;
    Ok(Invocation { command: cli.command, log_format: cli.log_format, config })
}

/// Whether validation reads the TLS files (at start) or leaves them to the
/// running listener, which reloads them itself (a `SIGHUP`'s re-read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFiles {
    Read,
    Skip,
}

/// [`from_args`] for a reload: the same checks, but the TLS files are not
/// read (the running TLS listener reloads them on its own, and a bad one
/// must not stop the rest of the reload); `tls` and `upstream_tls` are `None`.
pub fn reload_from_args(args: Vec<OsString>) -> Result<Config, Box<LoadError>> {
    let matches = Cli::command().try_get_matches_from(&args).map_err(|e| Box::new(LoadError::Usage(e)))?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| Box::new(LoadError::Usage(e)))?;
    let mut config = load(&cli, &matches, TlsFiles::Skip).map_err(|e| Box::new(LoadError::Invalid(e)))?;
    config.args = args;
    Ok(config)
}

/// Why a command line could not become a configuration.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad usage, or `--help`/`--version` (clap prints and picks the exit code).
    #[error(transparent)]
    Usage(clap::Error),
    /// A bad value: exit status 2.
    #[error(transparent)]
    Invalid(ConfigError),
}

/// Reads the file named by `--config` (if any) into [`Settings`].
pub fn read_file(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("--config", path.display(), format!("a readable TOML file ({e})")))?;
    parse_file(&text, path)
}

/// Parses TOML text into [`Settings`], naming the offending key on error.
pub fn parse_file(text: &str, path: &Path) -> Result<Settings, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().trim().replace('\n', " ");
        let span_line = inner.span().map(|s| text[..s.start].lines().count().max(1));
        if key == "." {
            // A syntax error: name the key written on the offending line.
            let line_no = span_line.unwrap_or(1);
            let line = text.lines().nth(line_no - 1).unwrap_or("");
            let (name, value) = line.split_once('=').unwrap_or((line, ""));
            let key = format!("{} ({}:{line_no})", name.trim(), path.display());
            return ConfigError::new(key, value.trim(), format!("valid TOML ({message})"));
        }
        let line = file_line(text, &key).or(span_line);
        let at = match line {
            Some(l) => format!("{}:{l}", path.display()),
            None => path.display().to_string(),
        };
        let key = format!("{key} ({at})");
        let mut snippet =
            inner.span().map(|s| text[s].lines().next().unwrap_or("").trim().to_string()).unwrap_or_default();
        if message.starts_with("unknown field") {
            // The span is the key itself: show what it was given instead.
            let line = line.and_then(|l| text.lines().nth(l - 1)).unwrap_or("");
            snippet = line.split_once('=').map_or("", |(_, v)| v).trim().to_string();
        }
        ConfigError::new(key, snippet, plain_words(&message))
    })
}

/// Merges defaults, file, environment and flags (highest last), then validates.
fn load(cli: &Cli, matches: &ArgMatches, tls_files: TlsFiles) -> Result<Config, ConfigError> {
    let mut settings = match &cli.config {
        Some(path) => read_file(path).map_err(|mut e| {
            if e.key == "--config" {
                e.key = source_name(matches, "config", "--config", "PERFPROXY_CONFIG");
            }
            e
        })?,
        None => Settings::default(),
    };
    let overridden = apply_overrides(&mut settings, cli, matches)?;
    Config::validate_with(settings, cli.config.clone(), tls_files).map_err(|mut e| {
        // A value from a flag or variable is reported under that name; one
        // from the file with the file and line.
        if let Some((_, name)) = overridden.iter().find(|(key, _)| *key == e.key) {
            e.key = name.clone();
        } else if let Some(path) = &cli.config {
            let line = std::fs::read_to_string(path).ok().and_then(|text| file_line(&text, &e.key));
            if let Some(line) = line {
                e.key = format!("{} ({}:{line})", e.key, path.display());
            }
        }
        e
    })
}

/// The name a user knows a value by: the variable when it came from the
/// environment, the flag otherwise.
fn source_name(matches: &ArgMatches, id: &str, flag: &str, env: &str) -> String {
    match matches.value_source(id) {
        Some(ValueSource::EnvVariable) => env.to_string(),
        _ => flag.to_string(),
    }
}

/// Applies flags and variables over the file; returns which file keys they
/// replaced, with the name each came by.
fn apply_overrides(s: &mut Settings, cli: &Cli, m: &ArgMatches) -> Result<Vec<(&'static str, String)>, ConfigError> {
    let name = |id: &str, flag: &str, env: &str| source_name(m, id, flag, env);
    let mut overridden = Vec::new();
    if let Some(v) = &cli.listen {
        s.listen = v.clone();
        overridden.push(("listen", name("listen", "--listen", "PERFPROXY_LISTEN")));
    }
    if let Some(v) = &cli.upstream {
        s.upstream = v.clone();
        overridden.push(("upstream", name("upstream", "--upstream", "PERFPROXY_UPSTREAM")));
    }
    if let Some(v) = &cli.admin_listen {
        s.admin_listen = Some(v.clone());
        overridden.push(("admin_listen", name("admin_listen", "--admin-listen", "PERFPROXY_ADMIN_LISTEN")));
    }
    if let Some(v) = &cli.tls_listen {
        s.tls_listen = Some(v.clone());
        overridden.push(("tls_listen", name("tls_listen", "--tls-listen", "PERFPROXY_TLS_LISTEN")));
    }
    if let Some(v) = &cli.redis_url {
        s.redis_url = Some(v.clone());
        overridden.push(("redis_url", name("redis_url", "--redis-url", "REDIS_URL")));
    }
    if let Some(v) = &cli.database_url {
        s.database_url = Some(v.clone());
        overridden.push(("database_url", name("database_url", "--database-url", "DATABASE_URL")));
    }
    if let Some(v) = &cli.admin_token {
        s.admin_token = Some(v.clone());
        overridden.push(("admin_token", name("admin_token", "--admin-token", "PERFPROXY_ADMIN_TOKEN")));
    }
    if let Some(v) = &cli.database_pool_size {
        let key = name("database_pool_size", "--database-pool-size", "DATABASE_POOL_SIZE");
        s.database_pool_size = parse_number(&key, v, "a whole number of connections")?;
        overridden.push(("database_pool_size", key));
    }
    if let Some(v) = &cli.cache_ttl_default {
        let key = name("cache_ttl_default", "--cache-ttl-default", "CACHE_TTL_DEFAULT");
        let secs = parse_number(&key, v, "a whole number of seconds")?;
        if secs == 0 {
            return Err(ConfigError::new(key, v, "a whole number of seconds greater than 0"));
        }
        s.cache.default_ttl_ms = secs.saturating_mul(1000);
        overridden.push(("cache.default_ttl_ms", key));
    }
    if let Some(v) = &cli.performance_monitoring_enabled {
        let key = name(
            "performance_monitoring_enabled",
            "--performance-monitoring-enabled",
            "PERFORMANCE_MONITORING_ENABLED",
        );
        s.monitoring_enabled = parse_bool(&key, v)?;
    }
    if let Some(v) = &cli.express_lane {
        let key = name("express_lane", "--express-lane", "PERFPROXY_EXPRESS_LANE");
        s.express_lane = parse_bool(&key, v)?;
        overridden.push(("express_lane", key));
    }
    if let Some(v) = &cli.route_discovery {
        let key = name("route_discovery", "--route-discovery", "PERFPROXY_ROUTE_DISCOVERY");
        s.route_discovery.enabled = parse_bool(&key, v)?;
        overridden.push(("route_discovery.enabled", key));
    }
    if let Some(v) = &cli.instance {
        s.cluster.instance = Some(v.clone());
        overridden.push(("cluster.instance", name("instance", "--instance", "PERFPROXY_INSTANCE")));
    }
    if let Some(v) = &cli.workers {
        let key = name("workers", "--workers", "PERFPROXY_WORKERS");
        s.workers = parse_number(&key, v, "a whole number of worker threads (0: from the CPU quota)")?;
        overridden.push(("workers", key));
    }
    if let Some(v) = &cli.slow_query_threshold {
        let key = name("slow_query_threshold", "--slow-query-threshold", "SLOW_QUERY_THRESHOLD");
        s.alerts.slow_query_ms = parse_number(&key, v, "a whole number of milliseconds")?;
        overridden.push(("alerts.slow_query_ms", key));
    }
    if let Some(v) = &cli.slow_request_threshold {
        let key = name("slow_request_threshold", "--slow-request-threshold", "SLOW_REQUEST_THRESHOLD");
        s.alerts.slow_request_ms = parse_number(&key, v, "a whole number of milliseconds")?;
        overridden.push(("alerts.slow_request_ms", key));
    }
    Ok(overridden)
}

fn parse_number(key: &str, value: &str, expected: &str) -> Result<u64, ConfigError> {
    let v = value.trim();
    v.parse().map_err(|_| {
        let why = if v.starts_with('-') && v[1..].parse::<u64>().is_ok() {
            format!("{expected}, 0 or more (not {v})")
        } else {
            expected.to_string()
        };
        ConfigError::new(key, format!("{value:?}"), why)
    })
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(key, format!("{value:?}"), "true or false")),
    }
}

#[cfg(test)]
mod tests;
