//! Validation: [`Settings`] become a [`Config`] the server can run with, or a
//! [`ConfigError`] naming the first bad key. Settings that later features
//! consume (cache, health, alerts) are checked here too, so a typo never
//! starts a half-configured proxy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::settings::UpstreamAddr;
use http::uri::Uri;

use super::{ConfigError, Settings};
use crate::admit::access::Cidrs;
use crate::wire::routes::RoutePattern;

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The merged settings this was validated from (what check-config prints).
    pub settings: Settings,
    /// The file they were read from, for reloads.
    pub source: Option<PathBuf>,
    /// The command line they came from (re-read on reload, so flags and
    /// environment keep their precedence over the file).
    pub args: Vec<std::ffi::OsString>,
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    /// `tls_listen` and its certificates (`[tls]`); `None` in a reload's
    /// configuration (the running listener keeps and reloads its own).
    pub tls: Option<super::tls::Listener>,
    pub upstream: UpstreamAddr,
    /// TLS to an `https://` upstream (`[upstream_tls]`).
    pub upstream_tls: Option<std::sync::Arc<crate::tls::UpstreamTls>>,
    /// TLS to an `https://` alert webhook (`alerts.webhook_ca_file`).
    pub webhook_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub upstream_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    /// The longest wait for the next bytes of an upstream body (`upstream_read_timeout_ms`).
    pub upstream_read_timeout: Duration,
    /// The longest a write to a client waits with none of its bytes taken (`send_timeout_ms`).
    pub send_timeout: Duration,
    pub shutdown_grace: Duration,
    pub shutdown_delay: Duration,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub max_routes: usize,
    pub workers: usize,
    /// `[[routes]]`, first match wins.
    pub routes: Vec<RoutePattern>,
    /// The patterns cache rules and rate limits name, in order: routes too
    /// when they are discovered (see `RouteTable::patterns_for`).
    pub declared: Vec<RoutePattern>,
    /// `[route_discovery]`: `(literal_after, max_literals)`; `None` when off.
    pub discovery: Option<(u32, usize)>,
    pub trusted_proxies: Cidrs,
    /// `endpoints.allow`.
    pub admin_allow_proxy: Cidrs,
    /// `endpoints.admin_allow`.
    pub admin_allow: Cidrs,
    /// `[tracing]` and the `OTEL_*` variables; `None`: no spans.
    pub tracing: Option<crate::observe::trace::Setup>,
    /// `[[rate_limits]]`, in order.
    pub rate_limits: Vec<crate::admit::limits::Rule>,
    /// `[[slo]]` and the rows of `[slo_alerts]`.
    pub slos: (Vec<crate::observe::slo::Objective>, Vec<crate::observe::slo::BurnRow>),
    /// `top_clients.key` and `top_clients.count`.
    pub top_clients: (crate::admit::clients::KeySpec, usize),
    /// `upstream_protocol`, `[http2]`, `[grpc]`.
    pub protocols: super::Protocols,
    /// `[compression]`.
    pub compression: crate::compress::Compression,
}

fn positive_ms(key: &str, ms: u64) -> Result<Duration, ConfigError> {
    if ms == 0 {
        return Err(ConfigError::new(key, ms, "a duration in milliseconds greater than 0"));
    }
    Ok(Duration::from_millis(ms))
}

fn in_range(key: &str, v: u64, lo: u64, hi: u64) -> Result<usize, ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError::new(key, v, format!("a number from {lo} to {hi}")));
    }
    Ok(v as usize)
}

fn socket_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| ConfigError::new(key, format!("{v:?}"), "IP:PORT, e.g. 127.0.0.1:4001"))
}

fn fraction(key: &str, v: f64) -> Result<(), ConfigError> {
    if !(0.0..=1.0).contains(&v) {
        return Err(ConfigError::new(key, v, "a fraction from 0.0 to 1.0"));
    }
    Ok(())
}

/// Parses an `http://` or `https://host[:port][/]` URL (a base: no path beyond `/`).
fn upstream_addr(key: &str, v: &str) -> Result<UpstreamAddr, ConfigError> {
    let bad = || ConfigError::new(key, format!("{v:?}"), "an http:// or https:// URL such as http://127.0.0.1:3000");
    let uri: Uri = v.parse().map_err(|_| bad())?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad()),
    };
    let authority = uri.authority().ok_or_else(bad)?.clone();
    // `uri-host [":" port]`, a port of 1-65535 (`:99999` would be read as no port: 80).
    let host_and_port = crate::wire::http1::valid_host(authority.as_str().as_bytes());
    if !host_and_port || !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad());
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
    if host.is_empty() {
        return Err(bad());
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(UpstreamAddr { host, port, authority, tls })
}

/// Checks a URL's scheme, naming the key but never echoing credentials.
fn url_with_scheme(key: &str, v: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let scheme = v.split("://").next().unwrap_or("");
    if !v.contains("://") || !schemes.contains(&scheme) || v.len() <= scheme.len() + 3 {
        let shown = format!("{:?}", crate::redact::url(v));
        return Err(ConfigError::new(key, shown, format!("a URL starting with {}://", schemes.join("://, "))));
    }
    // The whole URL, as the client that will use it reads it.
    let problem = match scheme {
        "postgres" | "postgresql" => v.parse::<tokio_postgres::Config>().err().map(|e| crate::redact::chain(&e)),
        "redis" | "rediss" | "redis+unix" => redis::Client::open(v).err().map(|e| e.to_string()),
        _ => match v.parse::<Uri>() {
            Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => None,
            Ok(_) => Some("no host".to_string()),
            Err(e) => Some(e.to_string()),
        },
    };
    if let Some(problem) = problem {
        let shown = format!("{:?}", crate::redact::url(v));
        return Err(ConfigError::new(key, shown, format!("a valid {scheme} URL ({})", crate::redact::text(&problem))));
    }
    Ok(())
}

fn path(key: &str, v: &str) -> Result<(), ConfigError> {
    if !v.starts_with('/') || v.contains(['?', '#', ' ']) {
        return Err(ConfigError::new(key, format!("{v:?}"), "an absolute path such as /health"));
    }
    Ok(())
}

impl Config {
    /// Checks every setting (and reads the TLS files); the first bad one is returned, named.
    pub fn validate(settings: Settings, source: Option<PathBuf>) -> Result<Config, ConfigError> {
        Config::validate_with(settings, source, super::TlsFiles::Read)
    }

    /// [`validate`](Self::validate), reading the TLS files or not.
    pub fn validate_with(
        settings: Settings,
        source: Option<PathBuf>,
        tls_files: super::TlsFiles,
    ) -> Result<Config, ConfigError> {
        let s = &settings;
        let listen = socket_addr("listen", &s.listen)?;
        let admin_listen = s.admin_listen.as_deref().map(|v| socket_addr("admin_listen", v)).transpose()?;
        let upstream = upstream_addr("upstream", &s.upstream)?;
        let (tls, upstream_tls) = super::tls::validate(s, &upstream, tls_files)?;
        let upstream_timeout = positive_ms("upstream_timeout_ms", s.upstream_timeout_ms)?;
        let upstream_idle_timeout = positive_ms("upstream_idle_timeout_ms", s.upstream_idle_timeout_ms)?;
        let upstream_read_timeout = positive_ms("upstream_read_timeout_ms", s.upstream_read_timeout_ms)?;
        let send_timeout = positive_ms("send_timeout_ms", s.send_timeout_ms)?;
        let shutdown_grace = Duration::from_millis(s.shutdown_grace_ms);
        let shutdown_delay =
            Duration::from_millis(in_range("shutdown_delay_ms", s.shutdown_delay_ms, 0, 600_000)? as u64);
        let header_read_timeout = positive_ms("header_read_timeout_ms", s.header_read_timeout_ms)?;
        let max_header_bytes = in_range("max_header_bytes", s.max_header_bytes, 8192, 1 << 24)?;
        let max_connections = in_range("max_connections", s.max_connections, 1, 1_000_000)?;
        let max_routes = in_range("max_routes", s.max_routes, 1, 1_000_000)?;
        let workers = in_range("workers", s.workers, 0, 256)?;
        in_range("database_pool_size", s.database_pool_size, 1, 1000)?;
        if let Some(url) = &s.redis_url {
            url_with_scheme("redis_url", url, &["redis", "rediss", "redis+unix"])?;
        }
        if let Some(url) = &s.database_url {
            url_with_scheme("database_url", url, &["postgres", "postgresql"])?;
        }
        if s.admin_token.as_deref() == Some("") {
            return Err(ConfigError::new("admin_token", "\"\"", "a non-empty token (or leave it unset)"));
        }

        let trusted_proxies = Cidrs::parse("trusted_proxies", &s.trusted_proxies)?;
        let e = &s.endpoints;
        let admin_allow_proxy = Cidrs::parse("endpoints.allow", &e.allow)?;
        let admin_allow = Cidrs::parse("endpoints.admin_allow", &e.admin_allow)?;
        path("endpoints.performance", &e.performance)?;
        path("endpoints.health", &e.health)?;
        path("endpoints.metrics", &e.metrics)?;
        path("endpoints.purge", &e.purge)?;
        // Each endpoint's paths apart from every other's: `performance =
        // "/health"` would serve the figures where probes read, unguarded.
        let paths = [
            ("endpoints.performance", &e.performance),
            ("endpoints.health", &e.health),
            ("endpoints.metrics", &e.metrics),
            ("endpoints.purge", &e.purge),
        ];
        for (i, (key, p)) in paths.iter().enumerate() {
            let under = |a: &str, b: &str| {
                a == b || b.strip_prefix(a.trim_end_matches('/')).is_some_and(|rest| rest.starts_with('/'))
            };
            if let Some((other, q)) = paths[..i].iter().find(|(_, q)| under(p, q) || under(q, p)) {
                // Named: the one moved from its default (`performance =
                // "/health"` names performance, not health).
                let defaults = crate::settings::Endpoints::default();
                let moved = |k: &str, v: &str| match k {
                    "endpoints.performance" => v != defaults.performance,
                    "endpoints.health" => v != defaults.health,
                    "endpoints.metrics" => v != defaults.metrics,
                    _ => v != defaults.purge,
                };
                let (key, p, other) = if moved(key, p) { (*key, p, *other) } else { (*other, q, *key) };
                return Err(ConfigError::new(
                    key,
                    format!("{p:?}"),
                    format!("a path apart from {other} and its subpaths"),
                ));
            }
        }

        let mut routes = Vec::with_capacity(s.routes.len());
        for (i, r) in s.routes.iter().enumerate() {
            let key = format!("routes[{i}].pattern");
            routes.push(
                RoutePattern::parse(&r.pattern)
                    .map_err(|why| ConfigError::new(key, format!("{:?}", r.pattern), why))?,
            );
        }

        let c = &s.cache;
        in_range("cache.memory_bytes", c.memory_bytes, 0, 1 << 40)?;
        in_range("cache.max_object_bytes", c.max_object_bytes, 1, 1 << 32)?;
        positive_ms("cache.redis_timeout_ms", c.redis_timeout_ms)?;
        positive_ms("cache.default_ttl_ms", c.default_ttl_ms)?;
        for (i, q) in c.ignore_query.iter().enumerate() {
            if q.is_empty() {
                return Err(ConfigError::new(
                    format!("cache.ignore_query[{i}]"),
                    "\"\"",
                    "a query parameter name or glob such as utm_*",
                ));
            }
        }
        for (i, name) in c.tag_headers.iter().enumerate() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConfigError::new(format!("cache.tag_headers[{i}]"), format!("{name:?}"), "a header name"));
            }
        }
        // Rules declare their routes (used when routes are discovered):
        // the cache rules' patterns here, the rate limits' once compiled.
        let mut declared = Vec::with_capacity(c.rules.len() + s.rate_limits.len());
        for (i, rule) in c.rules.iter().enumerate() {
            declared.push(RoutePattern::parse(&rule.pattern).map_err(|why| {
                ConfigError::new(format!("cache.rules[{i}].pattern"), format!("{:?}", rule.pattern), why)
            })?);
            if let Some(ttl) = rule.ttl_ms {
                positive_ms(&format!("cache.rules[{i}].ttl_ms"), ttl)?;
            }
            for (j, p) in rule.invalidates.iter().enumerate() {
                path(&format!("cache.rules[{i}].invalidates[{j}]"), p)?;
            }
        }

        let d = &s.route_discovery;
        in_range("route_discovery.literal_after", d.literal_after, 2, 1_000_000)?;
        in_range("route_discovery.max_literals", d.max_literals, 0, 100_000)?;
        let discovery = d.enabled.then_some((d.literal_after as u32, d.max_literals as usize));

        let slow = &s.slow;
        in_range("slow.sample_interval_ms", slow.sample_interval_ms, 10, 60_000)?;
        in_range("slow.keep", slow.keep, 0, 10_000)?;
        if let Some(url) = &slow.trace_url {
            let template = url.replace("{trace_id}", "0");
            if !url.contains("{trace_id}") || url_with_scheme("slow.trace_url", &template, &["http", "https"]).is_err()
            {
                return Err(ConfigError::new(
                    "slow.trace_url",
                    format!("{url:?}"),
                    "an http:// or https:// URL holding {trace_id}",
                ));
            }
        }

        let slo = super::slo::validate(&s.slo, &s.slo_alerts, s.monitoring_enabled)?;
        declared.extend(slo.declared);

        let h = &s.health;
        positive_ms("health.interval_ms", h.interval_ms)?;
        positive_ms("health.timeout_ms", h.timeout_ms)?;
        path("health.upstream_path", &h.upstream_path)?;
        for (i, check) in h.http.iter().enumerate() {
            if check.name.is_empty() || ["upstream", "redis", "database"].contains(&check.name.as_str()) {
                return Err(ConfigError::new(
                    format!("health.http[{i}].name"),
                    format!("{:?}", check.name),
                    "a unique name other than upstream, redis, database",
                ));
            }
            url_with_scheme(&format!("health.http[{i}].url"), &check.url, &["http", "https"])?;
            let ca_key = format!("health.http[{i}].ca_file");
            if check.url.starts_with("https://") {
                if tls_files != super::TlsFiles::Skip {
                    crate::tls::upstream::verified_client(&ca_key, check.ca_file.as_deref())?;
                }
            } else if check.ca_file.is_some() {
                return Err(ConfigError::new(ca_key, format!("{:?}", check.ca_file), "unset: the url is not https://"));
            }
        }
        for (list, names) in [("critical", &h.critical), ("ready", &h.ready)] {
            for (i, name) in names.iter().enumerate() {
                let known = ["upstream", "redis", "database"].contains(&name.as_str())
                    || h.http.iter().any(|c| &c.name == name);
                if !known {
                    return Err(ConfigError::new(
                        format!("health.{list}[{i}]"),
                        format!("{name:?}"),
                        "upstream, redis, database or a [[health.http]] name",
                    ));
                }
            }
        }

        let l = &s.access_log;
        if !["json", "text"].contains(&l.format.as_str()) {
            return Err(ConfigError::new("access_log.format", format!("{:?}", l.format), "\"json\" or \"text\""));
        }
        if l.path.is_empty() {
            return Err(ConfigError::new("access_log.path", "\"\"", "\"stdout\" or a file path"));
        }
        fraction("access_log.sample", l.sample)?;
        in_range("access_log.buffer_lines", l.buffer_lines, 1, 1 << 24)?;

        positive_ms("cluster.publish_ms", s.cluster.publish_ms)?;
        in_range("history.retention_days", s.history.retention_days, 1, 3650)?;
        if let Some(id) = &s.cluster.instance {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::new("cluster.instance", format!("{id:?}"), "a non-empty id without spaces"));
            }
        }
        let rate_limits = s
            .rate_limits
            .iter()
            .enumerate()
            .map(|(i, r)| crate::admit::limits::Rule::compile(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        declared.extend(rate_limits.iter().map(|r| r.pattern.clone()));
        let top_key = crate::admit::clients::KeySpec::parse("top_clients.key", &s.top_clients.key, false)?;
        let top_count = in_range("top_clients.count", s.top_clients.count, 1, 1000)?;
        let protocols = super::Protocols::validate(&s.upstream_protocol, &s.http2, &s.grpc)?;
        let compression = crate::compress::Compression::compile(&s.compression)?;
        let tracing = crate::observe::trace::Setup::resolve(&s.tracing, |k| std::env::var(k).ok())?;

        let d = &s.database;
        positive_ms("database.poll_interval_ms", d.poll_interval_ms)?;
        positive_ms("database.statement_timeout_ms", d.statement_timeout_ms)?;
        in_range("database.slow_query_limit", d.slow_query_limit, 1, 1000)?;

        let a = &s.alerts;
        positive_ms("alerts.window_ms", a.window_ms)?;
        positive_ms("alerts.interval_ms", a.interval_ms)?;
        fraction("alerts.error_rate", a.error_rate)?;
        fraction("alerts.cache_hit_rate", a.cache_hit_rate)?;
        fraction("alerts.rate_limited", a.rate_limited)?;
        positive_ms("alerts.slow_request_ms", a.slow_request_ms)?;
        positive_ms("alerts.slow_query_ms", a.slow_query_ms)?;
        in_range("alerts.for_ms", a.for_ms, 0, 86_400_000)?;
        in_range("alerts.keep_firing_ms", a.keep_firing_ms, 0, 86_400_000)?;
        let mut webhook_tls = None;
        if let Some(url) = &a.webhook_url {
            url_with_scheme("alerts.webhook_url", url, &["http", "https"])?;
            if url.starts_with("https://") && tls_files != super::TlsFiles::Skip {
                webhook_tls = Some(std::sync::Arc::new(crate::tls::upstream::verified_client(
                    "alerts.webhook_ca_file",
                    a.webhook_ca_file.as_deref(),
                )?));
            }
        }

        Ok(Config {
            source,
            args: Vec::new(),
            listen,
            admin_listen,
            tls,
            upstream,
            upstream_tls,
            webhook_tls,
            upstream_timeout,
            upstream_idle_timeout,
            upstream_read_timeout,
            send_timeout,
            shutdown_grace,
            shutdown_delay,
            header_read_timeout,
            max_header_bytes,
            max_connections,
            max_routes,
            discovery,
            workers,
            routes,
            declared,
            trusted_proxies,
            admin_allow_proxy,
            admin_allow,
            tracing,
            rate_limits,
            slos: (slo.objectives, slo.rows),
            top_clients: (top_key, top_count),
            protocols,
            compression,
            settings,
        })
    }

    /// The settings as TOML, secrets redacted (what check-config prints).
    pub fn effective_toml(&self) -> String {
        let mut s = self.settings.clone();
        s.admin_token = s.admin_token.map(|_| "<redacted>".into());
        let text = toml::to_string(&s).expect("settings are plain TOML-compatible data");
        // Every URL-valued key (upstream, Redis, the database, tracing, the
        // webhook, health checks, trace links) loses its password.
        text.lines().map(|line| crate::redact::text(line) + "\n").collect()
    }
}

#[cfg(test)]
mod tests;
