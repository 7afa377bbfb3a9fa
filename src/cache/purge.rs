//! `POST /cache/purge`: `{"pattern": "/api/users/*"}` with
//! `Authorization: Bearer $PERFPROXY_ADMIN_TOKEN` drops matching entries from
//! both layers (and, through pub/sub, from every other instance's memory)
//! and answers `{"purged": N}`, N being the keys that held entries. No
//! token configured: 403; no credentials: 401; wrong token: 403.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use super::key::Glob;
use crate::body::ProxyBody;
use crate::error::{json, json_error as error};
use crate::state::Client;

/// Bodies larger than this are refused (a pattern is a short path).
const MAX_BODY: usize = 8 * 1024;
/// A purge waits this long for Redis (an operator's call, not a request's).
const REDIS_BUDGET: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    pattern: String,
}

pub async fn answer(client: &Client, req: Request<Incoming>) -> Response<ProxyBody> {
    if req.method() != Method::POST {
        let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST");
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let shared = &client.worker.shared;
    let Some(token) = shared.config.settings.admin_token.as_deref() else {
        return error(StatusCode::FORBIDDEN, "forbidden", "no PERFPROXY_ADMIN_TOKEN is configured");
    };
    if crate::access::bearer(req.headers()).is_none() {
        let mut resp = error(StatusCode::UNAUTHORIZED, "unauthorized", "Authorization: Bearer <token> required");
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    if !crate::access::bearer_matches(req.headers(), token) {
        return error(StatusCode::FORBIDDEN, "forbidden", "wrong token");
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "bad_request", "unreadable or too large body"),
    };
    let pattern = match serde_json::from_slice::<PurgeRequest>(&body) {
        Ok(p) if p.pattern.starts_with('/') || p.pattern.starts_with('*') => p.pattern,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "bad_request", "pattern must be a path such as /api/users/*"),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("expected {{\"pattern\": \"/path/*\"}}: {e}"),
            )
        }
    };
    let cache = &shared.cache;
    let purged = cache.invalidate(&Glob::new(&pattern), REDIS_BUDGET, cache.background_counters()).await;
    tracing::info!(pattern, purged, "cache purge");
    json(StatusCode::OK, serde_json::json!({ "purged": purged }).to_string().into_bytes())
}
