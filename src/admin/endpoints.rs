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

use std::sync::Arc;

use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::admit::access::bearer_matches;
use crate::shared::body::ProxyBody;
use crate::shared::endpoints::Doc;
use crate::shared::error::{json, json_error};
use crate::shared::state::{Client, Shared};
use crate::watch::health::{CheckResult, Overall};

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
        Doc::Performance(route, true) => {
            json_into(&crate::admin::cluster_view::document(shared, route.as_deref()), room)
        }
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
            let mut resp = Response::new(ProxyBody::full(dashboard_page(&shared.config.settings)));
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

/// The dashboard page, with this configuration's paths filled in.
fn dashboard_page(s: &crate::settings::Settings) -> String {
    let e = &s.endpoints;
    // A JavaScript string (or null) that cannot close the script element.
    let trace_url = serde_json::to_string(&s.slow.trace_url).expect("a string").replace("</", "<\\/");
    include_str!("dashboard.html")
        .replace("{{PERFORMANCE_PATH}}", &e.performance)
        .replace("{{HEALTH_PATH}}", &e.health)
        .replace("{{TRACE_URL}}", &trace_url)
}
