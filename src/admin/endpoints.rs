//! perfproxy's own endpoints, answered before anything reaches the upstream
//! and never counted as traffic: `/performance` (JSON, or the dashboard page
//! for `Accept: text/html`, also at `/performance/dashboard`), `/metrics`
//! (Prometheus), `/health`, `/health/live`, `/health/ready`. Paths come from
//! `[endpoints]`; on the admin listener everything else is 404.
//!
//! Two kinds: probes (`/health*`) answer anyone on every listener; admin
//! endpoints answer anyone who can reach `admin_listen`, and on the proxy
//! listener only peers in `endpoints.allow` or requests with the admin
//! token (else `403`), or nobody with `endpoints.proxy_listener = false`
//! (their paths then reach the app).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::admit::access::bearer_matches;
use crate::settings::Endpoints;
use crate::shared::body::ProxyBody;
use crate::shared::error::{json, json_error};
use crate::shared::state::{Client, Shared};
use crate::watch::health::{CheckResult, Overall};

/// The admin paths, resolved once.
#[derive(Debug)]
pub struct AdminPaths {
    performance: String,
    dashboard: String,
    /// The page, with this configuration's paths filled in.
    dashboard_html: String,
    metrics: String,
    /// `/performance/history`.
    history: String,
    health: String,
    live: String,
    ready: String,
    /// `POST` here purges the cache (see `cache::purge`).
    pub purge: String,
    /// Admin endpoints answer on the proxy listener too (`endpoints.proxy_listener`).
    on_proxy_listener: bool,
}

impl AdminPaths {
    pub fn new(e: &Endpoints) -> AdminPaths {
        let dashboard_html = include_str!("dashboard.html")
            .replace("{{PERFORMANCE_PATH}}", &e.performance)
            .replace("{{HEALTH_PATH}}", &e.health);
        AdminPaths {
            performance: e.performance.clone(),
            dashboard: format!("{}/dashboard", e.performance.trim_end_matches('/')),
            dashboard_html,
            metrics: e.metrics.clone(),
            history: format!("{}/history", e.performance.trim_end_matches('/')),
            health: e.health.clone(),
            live: format!("{}/live", e.health.trim_end_matches('/')),
            ready: format!("{}/ready", e.health.trim_end_matches('/')),
            purge: e.purge.clone(),
            on_proxy_listener: e.proxy_listener,
        }
    }

    /// `/performance` (and its dashboard) or `/metrics`: the documents a
    /// storm of readers could make expensive.
    pub fn is_document(&self, path: &str) -> bool {
        path == self.performance || path == self.dashboard || path == self.metrics || path == self.history
    }

    fn is_probe(&self, path: &str) -> bool {
        path == self.health || path == self.live || path == self.ready
    }

    /// Whether perfproxy answers `path` itself on this listener (the purge
    /// path included): probes everywhere, the rest unless taken off the
    /// proxy listener.
    pub fn owns(&self, path: &str, admin_listener: bool) -> bool {
        if self.is_probe(path) {
            return true;
        }
        (admin_listener || self.on_proxy_listener)
            && [&self.performance, &self.dashboard, &self.metrics, &self.history, &self.purge]
                .iter()
                .any(|p| p.as_str() == path)
    }
}

#[derive(Clone, Copy)]
enum Endpoint {
    Performance,
    Dashboard,
    Metrics,
    History,
    Health,
    Live,
    Ready,
}

/// An admin endpoint's answer: at once; a history query (it reads the
/// database: the caller awaits [`crate::admin::history_query::answer`]); or a
/// document to build off the worker (the caller awaits [`built`]).
#[allow(clippy::large_enum_variant)] // returned once per admin request, never stored
pub enum Reply {
    Now(Response<ProxyBody>),
    History,
    Build(Doc),
}

/// The document `doc`, built on the blocking pool: with 10 000 routes a
/// build takes tens of milliseconds, which the worker spends serving
/// traffic instead. Concurrent readers still share one build.
pub async fn built(shared: &std::sync::Arc<Shared>, doc: Doc) -> Response<ProxyBody> {
    let metrics = match doc {
        Doc::Metrics(om) => Some(om),
        Doc::Performance(..) => None,
    };
    let _turn = shared.admin_docs.building.acquire().await.expect("the document semaphore is never closed");
    let shared = shared.clone();
    let bytes =
        tokio::task::spawn_blocking(move || shared.admin_docs.get(doc, |doc, room| render(&shared, doc, room))).await;
    let Ok(bytes) = bytes else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the document could not be built");
    };
    let Some(om) = metrics else { return json(StatusCode::OK, bytes) };
    let mut resp = Response::new(ProxyBody::full(bytes));
    let ct =
        if om { crate::admin::prometheus::OPENMETRICS_CONTENT_TYPE } else { crate::admin::prometheus::CONTENT_TYPE };
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The document; a JSON one is written into a buffer of `room` bytes (the
/// largest document so far) made at once.
fn render(shared: &Shared, doc: &Doc, room: usize) -> Vec<u8> {
    match doc {
        Doc::Performance(route, true) => json_into(&crate::observe::cluster::document(shared, route.as_deref()), room),
        Doc::Performance(route, false) => json_into(&crate::admin::performance::build(shared, route.as_deref()), room),
        Doc::Metrics(om) => crate::admin::prometheus::render(shared, *om).into_bytes(),
    }
}

fn json_into(document: &impl serde::Serialize, room: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(room);
    serde_json::to_writer(&mut out, document).expect("the document is plain data");
    out
}

/// Answers `req` if it is addressed to perfproxy itself.
pub fn answer<B>(client: &Client, req: &Request<B>) -> Option<Reply> {
    let shared = &client.worker.shared;
    let p = &shared.admin_paths;
    let path = req.uri().path();
    let endpoint = if path == p.performance {
        if wants_html(req) {
            Endpoint::Dashboard
        } else {
            Endpoint::Performance
        }
    } else if path == p.dashboard {
        Endpoint::Dashboard
    } else if path == p.metrics {
        Endpoint::Metrics
    } else if path == p.history {
        Endpoint::History
    } else if path == p.health {
        Endpoint::Health
    } else if path == p.live {
        Endpoint::Live
    } else if path == p.ready {
        Endpoint::Ready
    } else {
        return client
            .admin_only
            .then(|| Reply::Now(json_error(StatusCode::NOT_FOUND, "not_found", "not an admin endpoint")));
    };
    if !p.owns(path, client.admin_only) {
        return None;
    }
    if !p.is_probe(path) && !client.admin_only && !may_read(client, req.headers()) {
        return Some(Reply::Now(forbidden()));
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut resp = json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET or HEAD");
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(Reply::Now(resp));
    }
    Some(Reply::Now(match endpoint {
        Endpoint::History => return Some(Reply::History),
        Endpoint::Performance => {
            let param = |name: &str| {
                req.uri().query().and_then(|q| {
                    form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
                })
            };
            let cluster = param("scope").as_deref() == Some("cluster");
            return Some(Reply::Build(Doc::Performance(param("route"), cluster)));
        }
        Endpoint::Metrics => {
            let om = crate::admin::prometheus::wants_openmetrics(req.headers().get(http::header::ACCEPT));
            return Some(Reply::Build(Doc::Metrics(om)));
        }
        Endpoint::Dashboard => {
            let mut resp = Response::new(ProxyBody::full(p.dashboard_html.clone()));
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp.headers_mut().insert(
                http::header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:"),
            );
            resp
        }
        Endpoint::Live => json(StatusCode::OK, br#"{"status":"live"}"#.to_vec()),
        Endpoint::Health => health(shared, false),
        Endpoint::Ready => health(shared, true),
    }))
}

/// On the proxy listener: a peer in `endpoints.allow` (its socket address,
/// never `X-Forwarded-For`), or the admin token.
fn may_read(client: &Client, headers: &http::HeaderMap) -> bool {
    client.peer.admin_allowed
        || client.worker.shared.config.settings.admin_token.as_deref().is_some_and(|t| bearer_matches(headers, t))
}

fn forbidden() -> Response<ProxyBody> {
    json_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "admin endpoints answer on admin_listen, to peers in endpoints.allow, \
         or with Authorization: Bearer $PERFPROXY_ADMIN_TOKEN",
    )
}

/// A browser asking for a page (`Accept: text/html`) gets the dashboard.
fn wants_html<B>(req: &Request<B>) -> bool {
    req.headers().get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"))
}

#[derive(Serialize)]
struct HealthDoc {
    status: Overall,
    version: &'static str,
    uptime_seconds: u64,
    checks: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checked_at: Option<String>,
    /// `/health/ready` only: whether this replica should get traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    ready: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    draining: Option<bool>,
}

/// `/health` (503 when a critical check is down) or `/health/ready` (503
/// while draining or when a `health.ready` check is down).
fn health(shared: &Arc<Shared>, readiness: bool) -> Response<ProxyBody> {
    let report = shared.health.report();
    let status = shared.health.overall(&report);
    let draining = shared.draining();
    let ready = !draining && shared.health.ready(&report);
    let checks = report
        .checks
        .iter()
        .map(|(name, c): &(String, CheckResult)| (name.clone(), serde_json::to_value(c).expect("plain data")))
        .collect();
    let doc = HealthDoc {
        status,
        version: crate::system::VERSION,
        uptime_seconds: shared.started.elapsed().as_secs(),
        checks,
        checked_at: report.checked_at.map(|t| humantime::format_rfc3339_millis(t).to_string()),
        ready: readiness.then_some(ready),
        draining: readiness.then_some(draining),
    };
    let down = if readiness { !ready } else { status == Overall::Unhealthy };
    let code = if down { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    json(code, serde_json::to_vec(&doc).expect("plain data"))
}

/// Admin documents one worker answers per second, at most: readers past
/// that wait their turn (a dashboard or a scrape waits a few ms at worst), so
/// a storm of readers cannot take the worker from proxied traffic.
const DOCUMENTS_PER_SECOND: u32 = 200;

/// A worker's pace for admin documents (see [`DOCUMENTS_PER_SECOND`]).
#[derive(Debug)]
pub struct DocumentPace {
    next: std::cell::Cell<tokio::time::Instant>,
}

impl Default for DocumentPace {
    fn default() -> Self {
        DocumentPace { next: std::cell::Cell::new(tokio::time::Instant::now()) }
    }
}

impl DocumentPace {
    /// Waits for this worker's next turn to answer a document.
    pub async fn turn(&self) {
        let now = tokio::time::Instant::now();
        let at = self.next.get().max(now);
        self.next.set(at + Duration::from_secs(1) / DOCUMENTS_PER_SECOND);
        if at > now {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// How old a shared document may be.
const DOC_MAX_AGE: Duration = Duration::from_millis(50);
/// Documents kept at once (`?route=` makes more than one).
const DOCS_KEPT: usize = 32;

/// Which admin document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Doc {
    /// `/performance`, narrowed to a route or not; `true`: `scope=cluster`.
    Performance(Option<String>, bool),
    /// `/metrics`; `true`: in OpenMetrics.
    Metrics(bool),
}

/// Admin documents shared by concurrent readers: one merge serves every
/// reader for up to 50 ms, so a storm of `/performance` or `/metrics`
/// calls costs one build per 50 ms, not one per call.
#[derive(Debug)]
pub struct SharedDocs {
    docs: Mutex<HashMap<Doc, (Instant, Bytes)>>,
    builds: AtomicU64,
    /// The largest JSON document built so far: the next one's buffer is
    /// made this large at once (no doubling and copying as it grows, no spare
    /// half kept with the document).
    largest: AtomicUsize,
    /// One blocking-pool thread builds at a time; other readers wait for
    /// it as tasks, not as threads blocked on `docs`.
    building: tokio::sync::Semaphore,
}

impl Default for SharedDocs {
    fn default() -> Self {
        SharedDocs {
            docs: Mutex::default(),
            builds: AtomicU64::new(0),
            largest: AtomicUsize::new(0),
            building: tokio::sync::Semaphore::new(1),
        }
    }
}

impl SharedDocs {
    /// The document, built (under the lock, so concurrent readers wait for
    /// the one build) when the kept one is older than 50 ms.
    pub fn get(&self, doc: Doc, build: impl FnOnce(&Doc, usize) -> Vec<u8>) -> Bytes {
        let mut docs = self.docs.lock().expect("no code panics holding the document map");
        if let Some((at, bytes)) = docs.get(&doc) {
            if at.elapsed() < DOC_MAX_AGE {
                return bytes.clone();
            }
        }
        let room = self.largest.load(Ordering::Relaxed);
        let mut built = build(&doc, room + room / 16);
        if matches!(doc, Doc::Performance(..)) {
            self.largest.fetch_max(built.len(), Ordering::Relaxed);
        }
        built.shrink_to_fit();
        let bytes = Bytes::from(built);
        self.builds.fetch_add(1, Ordering::Relaxed);
        if docs.len() >= DOCS_KEPT {
            docs.retain(|_, (at, _)| at.elapsed() < DOC_MAX_AGE);
            if docs.len() >= DOCS_KEPT {
                docs.clear();
            }
        }
        docs.insert(doc, (Instant::now(), bytes.clone()));
        bytes
    }

    /// Documents built so far (`perfproxy_admin_document_builds_total`).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }
}
