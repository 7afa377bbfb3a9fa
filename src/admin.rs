//! perfproxy's own endpoints, answered before anything reaches the upstream.
//! For now: `/health/live` (200 while the process serves). The metrics and
//! health issue adds `/performance`, `/metrics`, `/health` and
//! `/health/ready` here; the cache issue adds the purge endpoint.

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};

use crate::body::ProxyBody;
use crate::state::Client;

/// Answers `req` if it is addressed to perfproxy itself.
pub fn answer<B>(client: &Client, req: &Request<B>) -> Option<Response<ProxyBody>> {
    let endpoints = &client.worker.shared.config.settings.endpoints;
    let path = req.uri().path();
    let health = endpoints.health.as_str();
    if path.len() == health.len() + 5 && path.starts_with(health) && path.ends_with("/live") {
        return Some(match *req.method() {
            Method::GET | Method::HEAD => json(StatusCode::OK, r#"{"status":"live"}"#),
            _ => json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method_not_allowed"}"#,
            ),
        });
    }
    client
        .admin_only
        .then(|| json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#))
}

fn json(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
