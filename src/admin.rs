//! perfproxy's own endpoints, answered before anything reaches the upstream
//! and never counted as traffic: `/performance` (JSON, or the dashboard page
//! for `Accept: text/html`, also at `/performance/dashboard`), `/metrics`
//! (Prometheus), `/health`, `/health/live`, `/health/ready`. Paths come from
//! `[endpoints]`; on the admin listener everything else is 404.

use std::sync::Arc;

use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::body::ProxyBody;
use crate::config::Endpoints;
use crate::health::{CheckResult, Overall};
use crate::state::{Client, Shared};

/// The admin paths, resolved once.
#[derive(Debug)]
pub struct AdminPaths {
    performance: String,
    dashboard: String,
    /// The page, with this configuration's paths filled in.
    dashboard_html: String,
    metrics: String,
    health: String,
    live: String,
    ready: String,
    /// `POST` here purges the cache (see `cache::purge`).
    pub purge: String,
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
            health: e.health.clone(),
            live: format!("{}/live", e.health.trim_end_matches('/')),
            ready: format!("{}/ready", e.health.trim_end_matches('/')),
            purge: e.purge.clone(),
        }
    }
}

impl AdminPaths {
    /// Whether `path` is one of perfproxy's own (the purge path included).
    pub fn owns(&self, path: &str) -> bool {
        [&self.performance, &self.dashboard, &self.metrics, &self.health, &self.live, &self.ready, &self.purge]
            .iter()
            .any(|p| p.as_str() == path)
    }
}

#[derive(Clone, Copy)]
enum Endpoint {
    Performance,
    Dashboard,
    Metrics,
    Health,
    Live,
    Ready,
}

/// Answers `req` if it is addressed to perfproxy itself.
pub fn answer<B>(client: &Client, req: &Request<B>) -> Option<Response<ProxyBody>> {
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
    } else if path == p.health {
        Endpoint::Health
    } else if path == p.live {
        Endpoint::Live
    } else if path == p.ready {
        Endpoint::Ready
    } else {
        return client.admin_only.then(|| json(StatusCode::NOT_FOUND, br#"{"error":"not_found"}"#.to_vec()));
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut resp = json(StatusCode::METHOD_NOT_ALLOWED, br#"{"error":"method_not_allowed"}"#.to_vec());
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(resp);
    }
    Some(match endpoint {
        Endpoint::Performance => {
            let route = req.uri().query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "route").map(|(_, v)| v.into_owned())
            });
            let doc = crate::performance::build(shared, route.as_deref());
            json(StatusCode::OK, serde_json::to_vec(&doc).expect("the document is plain data"))
        }
        Endpoint::Metrics => {
            let mut resp = Response::new(ProxyBody::full(crate::prometheus::render(shared)));
            let ct = HeaderValue::from_static(crate::prometheus::CONTENT_TYPE);
            resp.headers_mut().insert(CONTENT_TYPE, ct);
            resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
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
        Endpoint::Health | Endpoint::Ready => health(shared),
    })
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
}

fn health(shared: &Arc<Shared>) -> Response<ProxyBody> {
    let report = shared.health.report();
    let status = shared.health.overall(&report);
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
    };
    let code = if status == Overall::Unhealthy { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    json(code, serde_json::to_vec(&doc).expect("plain data"))
}

pub(crate) fn json(status: StatusCode, body: Vec<u8>) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
