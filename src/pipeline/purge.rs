//! `POST /cache/purge`: `{"pattern": "/api/users/*"}` or `{"tags": ["user-42"]}` with
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

use crate::cache::key::Glob;
use crate::shared::body::ProxyBody;
use crate::shared::error::{json, json_error as error};
use crate::shared::state::Client;

/// Bodies larger than this are refused (a pattern is a short path).
const MAX_BODY: usize = 8 * 1024;
/// A purge waits this long for Redis (an operator's call, not a request's).
const REDIS_BUDGET: Duration = Duration::from_secs(5);

/// `{"pattern": "/api/users/*"}` or `{"tags": ["user-42"]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    pattern: Option<String>,
    tags: Option<Vec<String>>,
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
    if crate::admit::access::bearer(req.headers()).is_none() {
        let mut resp = error(StatusCode::UNAUTHORIZED, "unauthorized", "Authorization: Bearer <token> required");
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    if !crate::admit::access::bearer_matches(req.headers(), token) {
        return error(StatusCode::FORBIDDEN, "forbidden", "wrong token");
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "bad_request", "unreadable or too large body"),
    };
    let request = match serde_json::from_slice::<PurgeRequest>(&body) {
        Ok(r) => r,
        Err(e) => {
            let detail = format!("expected {{\"pattern\": \"/path/*\"}} or {{\"tags\": [\"tag\"]}}: {e}");
            return error(StatusCode::BAD_REQUEST, "bad_request", &detail);
        }
    };
    let cache = &shared.cache;
    let counters = cache.background_counters();
    let purged = match request {
        PurgeRequest { pattern: Some(p), tags: None } if p.starts_with('/') || p.starts_with('*') => {
            let purged = cache.invalidate(&Glob::new(&p), REDIS_BUDGET, counters).await;
            tracing::info!(pattern = %p, purged, "cache purge");
            purged
        }
        PurgeRequest { pattern: None, tags: Some(tags) } if !tags.is_empty() && tags.iter().all(|t| valid_tag(t)) => {
            let purged = cache.purge_tags(&tags, REDIS_BUDGET, counters).await;
            tracing::info!(?tags, purged, "cache purge by tag");
            purged
        }
        PurgeRequest { pattern: Some(_), tags: None } => {
            return error(StatusCode::BAD_REQUEST, "bad_request", "pattern must be a path such as /api/users/*")
        }
        _ => {
            let detail = "give either a pattern or a non-empty list of tags (no spaces or commas in a tag)";
            return error(StatusCode::BAD_REQUEST, "bad_request", detail);
        }
    };
    json(StatusCode::OK, serde_json::json!({ "purged": purged }).to_string().into_bytes())
}

/// A tag as a tag header can carry one: no separators, not empty, not too long.
fn valid_tag(tag: &str) -> bool {
    !tag.is_empty() && tag.len() <= 256 && !tag.contains([' ', ',']) && !tag.chars().any(char::is_control)
}
