//! Health: background probes of the upstream, Redis, the database
//! and any extra HTTP dependencies, every `health.interval_ms`, each bounded
//! by `health.timeout_ms`. The latest [`HealthReport`] is published through
//! arc-swap; `/health` only reads it, so a probe storm never reaches a
//! dependency. A critical check down makes the whole `unhealthy` (503); a
//! non-critical one, `degraded` (200).

mod h2c;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde::Serialize;
use tracing::{info, warn};

use crate::config::{Config, HealthSettings};

/// One check's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Up,
    Down,
    NotConfigured,
}

/// The latest result of one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub status: CheckStatus,
    pub latency_ms: f64,
    pub error: Option<String>,
}

impl CheckResult {
    fn not_configured() -> CheckResult {
        CheckResult { status: CheckStatus::NotConfigured, latency_ms: 0.0, error: None }
    }
    fn pending() -> CheckResult {
        CheckResult { status: CheckStatus::Down, latency_ms: 0.0, error: Some("not checked yet".into()) }
    }
}

/// The overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    Healthy,
    Degraded,
    Unhealthy,
}

/// Every check's latest result, in a fixed order (upstream, redis, database, extras).
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub checks: Vec<(String, CheckResult)>,
    pub checked_at: Option<SystemTime>,
}

/// The health state shared with the request path.
#[derive(Debug)]
pub struct Health {
    latest: ArcSwap<HealthReport>,
    critical: ArcSwap<Vec<String>>,
    /// `health.ready`: the checks readiness follows.
    ready: ArcSwap<Vec<String>>,
}

impl Health {
    pub fn new(config: &Config) -> Arc<Health> {
        let s = &config.settings;
        let mut checks = vec![("upstream".to_string(), CheckResult::pending())];
        let configured = |on: bool| if on { CheckResult::pending() } else { CheckResult::not_configured() };
        checks.push(("redis".into(), configured(s.redis_url.is_some())));
        checks.push(("database".into(), configured(s.database_url.is_some())));
        for extra in &s.health.http {
            checks.push((extra.name.clone(), CheckResult::pending()));
        }
        Arc::new(Health {
            latest: ArcSwap::from_pointee(HealthReport { checks, checked_at: None }),
            critical: ArcSwap::from_pointee(s.health.critical.clone()),
            ready: ArcSwap::from_pointee(s.health.ready.clone()),
        })
    }

    /// The latest report (no I/O).
    pub fn report(&self) -> Arc<HealthReport> {
        self.latest.load_full()
    }

    /// Whether no check in `health.ready` is down in `report` (readiness
    /// follows what this replica alone can fix, not shared dependencies).
    pub fn ready(&self, report: &HealthReport) -> bool {
        let ready = self.ready.load();
        !report.checks.iter().any(|(name, c)| c.status == CheckStatus::Down && ready.iter().any(|r| r == name))
    }

    /// The verdict for `report` under this configuration's critical set.
    pub fn overall(&self, report: &HealthReport) -> Overall {
        let critical = self.critical.load();
        let mut verdict = Overall::Healthy;
        for (name, check) in &report.checks {
            if check.status == CheckStatus::Down {
                if critical.iter().any(|c| c == name) {
                    return Overall::Unhealthy;
                }
                verdict = Overall::Degraded;
            }
        }
        verdict
    }

    /// Probes until `shutdown` resolves: once at once, then every
    /// `health.interval_ms`, following reloads of `[health]` (`live`).
    pub async fn probe_periodically(
        self: Arc<Self>,
        config: Config,
        database: Option<deadpool_postgres::Pool>,
        live: impl Fn() -> HealthSettings,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut settings = live();
        let mut prober = Prober::new(&config, &settings, database.clone());
        tokio::pin!(shutdown);
        loop {
            let now = live();
            if now != settings {
                settings = now;
                prober = Prober::new(&config, &settings, database.clone());
                self.critical.store(Arc::new(settings.critical.clone()));
                self.ready.store(Arc::new(settings.ready.clone()));
            }
            let report = tokio::select! {
                _ = &mut shutdown => return,
                r = prober.round() => r,
            };
            self.log_changes(&report);
            self.latest.store(Arc::new(report));
            let interval = Duration::from_millis(settings.interval_ms);
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Logs each check that changed, and at start each one found down
    /// (an unready pod says why in its log).
    fn log_changes(&self, next: &HealthReport) {
        let prev = self.latest.load();
        let first = prev.checked_at.is_none();
        for ((name, was), (_, now)) in prev.checks.iter().zip(&next.checks) {
            let changed = if first { now.status == CheckStatus::Down } else { was.status != now.status };
            if changed {
                match now.status {
                    CheckStatus::Down => {
                        warn!(check = %name, error = %now.error.as_deref().unwrap_or(""), "health check down")
                    }
                    _ => info!(check = %name, "health check up"),
                }
            }
        }
    }
}

/// The probing side: clients and connections kept between rounds.
/// Plain HTTP, or HTTPS to an `https://` upstream (verified as the proxy
/// verifies it: `[upstream_tls]`).
pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The probes' connector: TLS only for an `https://` upstream, with its
/// roots, name and client certificate.
fn connector(config: &Config) -> Connector {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match &config.upstream_tls {
        Some(tls) => {
            let mut client = (*tls.http1_config).clone();
            // The connector sets ALPN itself.
            client.alpn_protocols.clear();
            let name = hyper_rustls::FixedServerNameResolver::new(tls.server_name().clone());
            builder.with_tls_config(client).https_or_http().with_server_name_resolver(name)
        }
        None => builder.with_tls_config(crate::tls::upstream::no_roots()).https_or_http(),
    };
    builder.enable_http1().enable_http2().wrap_connector(tcp())
}

/// The TCP side of every probe's connector (TLS decided by the wrapper).
fn tcp() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http
}

struct Prober {
    http: Client<Connector, Empty<Bytes>>,
    /// With every request to the upstream over h2c, so is its probe.
    h2c: Option<h2c::H2Client>,
    timeout: Duration,
    upstream: Uri,
    redis: Option<(redis::Client, Option<redis::aio::MultiplexedConnection>)>,
    /// The watched database's pool (`DATABASE_POOL_SIZE`): the probe holds
    /// no connection of its own.
    database: Option<deadpool_postgres::Pool>,
    extras: Vec<Extra>,
}

/// A `[[health.http]]` dependency: its URL and the client that probes it
/// (the upstream's for `http://`; for `https://` one of its own, verified
/// against the check's `ca_file` or the system's CAs), or why there is none.
struct Extra {
    name: String,
    uri: Uri,
    client: Result<Client<Connector, Empty<Bytes>>, String>,
}

impl Prober {
    fn new(config: &Config, health: &HealthSettings, database: Option<deadpool_postgres::Pool>) -> Prober {
        let s = &config.settings;
        let connector = connector(config);
        let http =
            Client::builder(hyper_util::rt::TokioExecutor::new()).pool_max_idle_per_host(1).build(connector.clone());
        let scheme = if config.upstream.tls { "https" } else { "http" };
        let upstream = format!("{scheme}://{}{}", config.upstream.authority, health.upstream_path);
        let h2c = config.protocols.upstream == crate::config::UpstreamProtocol::H2c;
        Prober {
            h2c: h2c.then(|| h2c::client(connector.clone())),
            extras: s.health.http.iter().enumerate().map(|(i, check)| Extra::new(i, check, &http)).collect(),
            http,
            timeout: Duration::from_millis(health.timeout_ms),
            upstream: upstream.parse().expect("a validated authority and path form a URI"),
            redis: s.redis_url.as_ref().and_then(|u| redis::Client::open(u.as_str()).ok()).map(|c| (c, None)),
            database,
        }
    }

    async fn round(&mut self) -> HealthReport {
        let timeout = self.timeout;
        let http = self.http.clone();
        let upstream = timed(timeout, async {
            match &self.h2c {
                Some(h2) => h2c::probe(h2, &self.upstream).await,
                None => probe_http(&http, self.upstream.clone(), 500).await,
            }
        });
        let redis = async {
            match &mut self.redis {
                Some((client, conn)) => timed(timeout, probe_redis(client, conn)).await,
                None => CheckResult::not_configured(),
            }
        };
        let database = async {
            match &self.database {
                Some(pool) => timed(timeout, probe_database(pool, timeout)).await,
                None => CheckResult::not_configured(),
            }
        };
        let extras = async {
            let mut set = tokio::task::JoinSet::new();
            for (i, extra) in self.extras.iter().enumerate() {
                let (client, uri) = (extra.client.clone(), extra.uri.clone());
                set.spawn(async move {
                    let probe = async { probe_http(&client?, uri, 400).await };
                    (i, timed(timeout, probe).await)
                });
            }
            let mut results = vec![CheckResult::pending(); self.extras.len()];
            while let Some(Ok((i, r))) = set.join_next().await {
                results[i] = r;
            }
            results
        };
        let (upstream, redis, database, extras) = tokio::join!(upstream, redis, database, extras);
        let mut checks =
            vec![("upstream".to_string(), upstream), ("redis".into(), redis), ("database".into(), database)];
        checks.extend(self.extras.iter().map(|extra| extra.name.clone()).zip(extras));
        HealthReport { checks, checked_at: Some(SystemTime::now()) }
    }
}

impl Extra {
    fn new(i: usize, check: &crate::config::HttpCheck, http: &Client<Connector, Empty<Bytes>>) -> Extra {
        let uri: Uri = check.url.parse().expect("validated extra check URL");
        let client = if uri.scheme_str() == Some("https") {
            // Validated at load; read again here, a file gone since is this check's error.
            crate::tls::upstream::verified_client(&format!("health.http[{i}].ca_file"), check.ca_file.as_deref())
                .map(|tls| {
                    let connector = hyper_rustls::HttpsConnectorBuilder::new()
                        .with_tls_config(tls)
                        .https_only()
                        .enable_http1()
                        .enable_http2()
                        .wrap_connector(tcp());
                    Client::builder(hyper_util::rt::TokioExecutor::new()).pool_max_idle_per_host(1).build(connector)
                })
                .map_err(|e| e.to_string())
        } else {
            Ok(http.clone())
        };
        Extra { name: check.name.clone(), uri, client }
    }
}

/// Runs a probe under `timeout`, timing it.
async fn timed(timeout: Duration, probe: impl std::future::Future<Output = Result<(), String>>) -> CheckResult {
    let t = Instant::now();
    let outcome = match tokio::time::timeout(timeout, probe).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    };
    let latency_ms = (t.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    match outcome {
        Ok(()) => CheckResult { status: CheckStatus::Up, latency_ms, error: None },
        Err(e) => CheckResult { status: CheckStatus::Down, latency_ms, error: Some(crate::redact::text(&e)) },
    }
}

/// Up when the URL answers with a status below `down_from`.
async fn probe_http(client: &Client<Connector, Empty<Bytes>>, uri: Uri, down_from: u16) -> Result<(), String> {
    let where_ = uri.authority().map_or_else(String::new, |a| a.to_string());
    let req =
        Request::get(uri).header("user-agent", "perfproxy-health").body(Empty::new()).map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| format!("{} ({where_})", crate::redact::chain(&e)))?;
    let status = resp.status().as_u16();
    if status >= down_from {
        return Err(format!("answered {status}"));
    }
    Ok(())
}

async fn probe_redis(
    client: &redis::Client,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
) -> Result<(), String> {
    if conn.is_none() {
        *conn = Some(client.get_multiplexed_async_connection().await.map_err(|e| crate::redact::chain(&e))?);
    }
    let c = conn.as_mut().expect("connected just above");
    match redis::cmd("PING").query_async::<String>(c).await {
        Ok(_) => Ok(()),
        Err(e) => {
            *conn = None;
            Err(crate::redact::chain(&e))
        }
    }
}

/// `SELECT 1` on a connection of the pool. Waiting for one is bounded by
/// half the probe's `timeout`; a pool whose every connection is open and
/// lent out past that is busy on a database that answers, not a database
/// down (with `DATABASE_POOL_SIZE = 1` the history writer holds it often).
async fn probe_database(pool: &deadpool_postgres::Pool, timeout: Duration) -> Result<(), String> {
    let wait = deadpool_postgres::Timeouts { wait: Some(timeout / 2), ..pool.timeouts() };
    let conn = match pool.timeout_get(&wait).await {
        Ok(conn) => conn,
        Err(deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait))
            if pool.status().available == 0 && pool.status().size == pool.status().max_size =>
        {
            return Ok(());
        }
        Err(e) => return Err(crate::redact::chain(&e)),
    };
    conn.simple_query("SELECT 1").await.map(|_| ()).map_err(|e| crate::redact::chain(&e))
}
