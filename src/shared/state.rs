//! State shared by the request path: [`Shared`] (one per process, behind an
//! `Arc`, read by every worker) and [`Worker`] (one per worker thread, behind
//! an `Rc`, never touched by another thread).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;

use crate::admit::access::Peer;
use crate::cache::{Cache, Counters, Passes};
use crate::observe::alerts::Alerts;
use crate::shared::endpoints::{AdminPaths, DocumentPace, SharedDocs};
use arc_swap::ArcSwap;

use crate::config::{AlertSettings, CacheSettings, Config, HealthSettings, Settings};
use crate::observe::metrics::{Metrics, Recorder};
use crate::upstream::UpstreamPool;
use crate::watch::database::Database;
use crate::watch::health::Health;
use crate::wire::routes::{RouteCache, RouteTable};

/// Process-wide state.
#[derive(Debug)]
pub struct Shared {
    /// The configuration perfproxy started with (what a reload compares to).
    pub config: Config,
    /// The settings a reload swaps in place (SIGHUP).
    pub live: ArcSwap<Live>,
    pub routes: Arc<RouteTable>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// The watched database, when `DATABASE_URL` is set.
    pub database: Option<Arc<Database>>,
    pub alerts: Arc<Alerts>,
    pub cache: Arc<Cache>,
    /// `[compression]` in force, and what it did.
    pub compression: crate::compress::Compressor,
    pub admin_paths: AdminPaths,
    /// `/performance` and `/metrics` as last built, shared by readers.
    pub admin_docs: SharedDocs,
    /// `[access_log]`, when enabled.
    pub access_log: Option<Arc<crate::observe::access_log::AccessLog>>,
    /// OpenTelemetry spans, when an endpoint is configured.
    pub tracer: Option<Arc<crate::observe::trace::Tracer>>,
    /// The cluster view (publishing to Redis, when there is one).
    pub cluster: Arc<crate::observe::cluster::Cluster>,
    /// Per-minute rollups (with a database), the in-memory series.
    pub history: Arc<crate::observe::history::History>,
    /// `[[rate_limits]]`, swapped on reload.
    pub limits: crate::admit::limits::LiveLimits,
    /// Every worker's top-client counts.
    pub top_clients: crate::admit::clients::top::TopClients,
    /// Every worker's sizes of what it holds (`memory.held`).
    pub held: crate::shared::held::HeldBoard,
    /// Set at SIGTERM: readiness answers 503 and every response closes its
    /// connection, while new connections are still served (`shutdown_delay_ms`).
    draining: std::sync::atomic::AtomicBool,
    pub started: Instant,
}

impl Shared {
    /// Needs a Tokio runtime (the alert webhook's task starts here).
    pub fn new(config: Config) -> Arc<Shared> {
        let routes = Arc::new(RouteTable::new(Vec::new(), config.max_routes, config.discovery));
        routes.set_patterns(routes.patterns_for(&config.routes, &config.declared));
        let s = &config.settings;
        let metrics = Metrics::new(
            s.monitoring_enabled,
            Duration::from_millis(s.alerts.slow_request_ms),
            Duration::from_millis(s.alerts.window_ms),
        );
        metrics.slow.set_keep(s.slow.keep as usize);
        let (objectives, rows) = config.slos.clone();
        let labels = Arc::clone(&routes);
        metrics.count_slos(
            crate::observe::slo::Slos::new(objectives, rows),
            crate::observe::metrics::RouteLabels(Box::new(move |id| labels.name(id))),
        );
        let health = Health::new(&config);
        let database = Database::new(&config);
        let alerts = Alerts::new(config.settings.alerts.webhook_url.as_deref(), config.webhook_tls.clone());
        let admin_paths = AdminPaths::new(&config.settings.endpoints);
        let cache = Cache::new(&config.settings.cache, config.settings.redis_url.as_deref());
        let live = ArcSwap::from_pointee(Live::from(&config.settings));
        let access_log = crate::observe::access_log::AccessLog::start(&config.settings.access_log);
        let tracer = config.tracing.as_ref().and_then(|setup| {
            let peer =
                crate::observe::trace::export::Peer { host: config.upstream.host.clone(), port: config.upstream.port };
            crate::observe::trace::export::start(setup, peer)
                .map_err(|e| tracing::error!(error = %e, "tracing: the exporter could not start; no spans"))
                .ok()
        });
        let cluster = crate::observe::cluster::Cluster::new(
            config.settings.cluster.instance.clone().unwrap_or_else(crate::observe::cluster::default_instance),
            Duration::from_millis(config.settings.cluster.publish_ms),
            config.settings.redis_url.as_deref(),
        );
        let history_on = config.settings.history.enabled.unwrap_or(true);
        let history = crate::observe::history::History::new(
            cluster.instance.clone(),
            config.settings.history.retention_days,
            database.as_ref().filter(|_| history_on).map(|d| d.pool().clone()),
        );
        let limits = crate::admit::limits::LiveLimits::new(&config.rate_limits);
        let (top_key, top_count) = config.top_clients.clone();
        let top_clients = crate::admit::clients::top::TopClients::new(top_count, top_key, metrics.window());
        let compression = crate::compress::Compressor::new(config.compression.clone());
        Arc::new(Shared {
            compression,
            limits,
            top_clients,
            held: Default::default(),
            config,
            live,
            routes,
            metrics,
            health,
            database,
            alerts,
            cache,
            admin_paths,
            admin_docs: SharedDocs::default(),
            access_log,
            tracer,
            cluster,
            history,
            draining: Default::default(),
            started: Instant::now(),
        })
    }
}

impl Shared {
    /// Whether perfproxy is draining (after SIGTERM).
    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Begins draining: readiness 503, `Connection: close` on every response.
    pub fn begin_draining(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The settings that change without a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    pub alerts: AlertSettings,
    pub health: HealthSettings,
    pub cache: CacheSettings,
}

impl From<&Settings> for Live {
    fn from(s: &Settings) -> Live {
        Live { alerts: s.alerts.clone(), health: s.health.clone(), cache: s.cache.clone() }
    }
}

/// One worker thread's state.
#[derive(Debug)]
pub struct Worker {
    pub shared: Arc<Shared>,
    pub upstream: Rc<UpstreamPool>,
    pub route_cache: RefCell<RouteCache>,
    /// `None` when monitoring is off.
    pub recorder: Option<Rc<Recorder>>,
    /// This worker's cache counters (only it writes them).
    pub cache_counters: Arc<Counters>,
    /// This worker's hit-for-pass keys.
    pub cache_passes: RefCell<Passes>,
    /// This worker's pace for `/performance` and `/metrics` answers.
    pub document_pace: DocumentPace,
    /// This worker's handle on the rate limits in force.
    pub limits: crate::admit::limits::WorkerLimits,
    /// Where this worker publishes its sizes ([`Worker::publish_held`]).
    pub held: Arc<crate::shared::held::WorkerHeld>,
}

impl Worker {
    /// Publishes this worker's sizes (`memory.held`); `connections`: the
    /// client connections it has open.
    pub fn publish_held(&self, connections: usize) {
        let (hit_for_pass, storable_keys) = self.cache_passes.borrow().held();
        self.held.publish(crate::shared::held::WorkerSizes {
            hit_for_pass,
            storable_keys,
            route_memo: self.route_cache.borrow().held(),
            upstream_idle: self.upstream.idle_len(),
            connections,
            in_flight_slots: self.recorder.as_ref().map_or(0, |r| r.in_flight_slots()),
        });
    }

    /// Whether requests are recorded: counted (monitoring), traced or logged.
    pub fn records(&self) -> bool {
        self.recorder.is_some() || self.shared.tracer.is_some() || self.shared.access_log.is_some()
    }

    pub fn new(shared: Arc<Shared>) -> Rc<Worker> {
        let upstream = UpstreamPool::new(
            shared.config.upstream.clone(),
            shared.config.upstream_tls.clone(),
            shared.config.upstream_idle_timeout,
            shared.config.protocols.upstream,
            shared.config.max_header_bytes,
        );
        let recorder = shared.metrics.enabled().then(|| Rc::new(shared.metrics.recorder(shared.top_clients.tally())));
        let cache_counters = shared.cache.counters();
        let held = shared.held.join();
        Rc::new(Worker {
            held,
            shared,
            upstream,
            route_cache: RefCell::default(),
            recorder,
            cache_counters,
            cache_passes: RefCell::default(),
            document_pace: DocumentPace::default(),
            limits: Default::default(),
        })
    }
}

/// One client connection's facts, fixed when it was accepted.
#[derive(Debug)]
pub struct Client {
    pub worker: Rc<Worker>,
    /// The peer's IP, rendered once for `X-Forwarded-For`.
    pub ip: HeaderValue,
    /// The peer's IP (IPv4-mapped addresses as IPv4).
    pub addr: std::net::IpAddr,
    /// Accepted on the admin listener: only perfproxy's own endpoints answer.
    pub admin_only: bool,
    /// What the peer address allows (trusted proxy, admin reader).
    pub peer: Peer,
    /// Came in on the TLS listener (`X-Forwarded-Proto: https`).
    pub tls: bool,
}

impl Worker {
    /// The rate limits in force, when there are any.
    pub fn limits(&self) -> Option<Arc<crate::admit::limits::Limits>> {
        self.limits.current(&self.shared.limits)
    }
}

impl Client {
    /// Who a request on this connection is from, asked of its fields.
    pub fn asker<'a, F: crate::admit::clients::Fields>(&'a self, fields: &'a F) -> crate::admit::clients::Asker<'a, F> {
        let trusted = &self.worker.shared.config.trusted_proxies;
        crate::admit::clients::Asker::new(fields, self.addr, self.peer.trusted, trusted)
    }
}

impl crate::observe::history::Traffic for Shared {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn routes(&self) -> &RouteTable {
        &self.routes
    }
}
