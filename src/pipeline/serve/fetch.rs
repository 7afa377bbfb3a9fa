//! A miss or a revalidation going upstream: the conditional request made
//! from a stored entry's validators, a `304` refreshing it, a failure
//! answered stale within its stale-if-error window, and a response stored
//! on its way to the client when it may be ([`Fill`]); stale-while-revalidate
//! refreshes in the background.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::Ctx;
use crate::cache::entry::Entry;
use crate::cache::fill::Fill;
use crate::cache::key;
use crate::cache::policy;
use crate::cache::{Counters, FlightGuard, Joined};
use crate::pipeline::answer::{answer, mark, refreshed, Fwd, Outcome, CACHE_STATUS};
use crate::pipeline::forward::{self, Upstream};
use crate::shared::body::ProxyBody;
use crate::shared::error::ProxyError;
use crate::upstream::RequestBody;

/// When an upstream exchange happened, for the entry it may become.
struct Fetched {
    request_time: SystemTime,
    response_time: SystemTime,
    /// The cache's invalidation log when it began.
    generation: u64,
    /// Why it went forward (`Cache-Status`).
    fwd: Fwd,
}

impl Ctx {
    /// Goes upstream (conditionally when `stored` has validators) and
    /// answers: a `304` refreshes `stored`; a failure within its
    /// stale-if-error window serves it stale; anything else is a miss whose
    /// response is stored if it may be.
    pub(super) async fn fetch(
        &self,
        mut parts: Parts,
        body: RequestBody,
        stored: Option<Arc<Entry>>,
        flight: Option<FlightGuard>,
        mark_uncacheable: bool,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let client_headers = parts.headers.clone();
        let conditional = stored.as_ref().filter(|e| e.has_validators() && e.status == StatusCode::OK && !self.head);
        let revalidating = conditional.is_some();
        if let Some(e) = conditional {
            for h in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::IF_MATCH, header::IF_UNMODIFIED_SINCE] {
                parts.headers.remove(h);
            }
            if let Some(etag) = e.headers.get(header::ETAG) {
                parts.headers.insert(header::IF_NONE_MATCH, etag.clone());
            }
            if let Some(lm) = e.headers.get(header::LAST_MODIFIED) {
                parts.headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
            }
        }
        policy::announce_surrogate(&mut parts.headers);
        let request_time = SystemTime::now();
        let generation = self.cache().generation();
        let sent = std::time::Instant::now();
        let result = forward::exchange(&self.client, Request::from_parts(parts, body)).await;
        // For the answers built from the entry (a 304, stale on error): the
        // upstream's share, and its span.
        let went_upstream = forward::UpstreamTime { sent, took: sent.elapsed() };
        let response_time = SystemTime::now();
        let stale_ok = |e: &Entry| {
            !e.lifetime.must_revalidate && e.staleness(response_time).is_none_or(|s| s <= e.lifetime.stale_if_error)
        };
        let fwd = match self.fwd {
            Fwd::Request => Fwd::Request,
            _ if stored.is_some() => Fwd::Stale,
            other => other,
        };
        match (result, stored) {
            (Ok(up), Some(e)) if up.parts.status == StatusCode::NOT_MODIFIED && revalidating => {
                let (merged, stored) = refreshed(&e, &up.parts.headers, request_time, response_time, &self.policy);
                // Read the (empty) body so the connection goes back to the pool.
                drop(ProxyBody::upstream(up.body, up.lease, up.read_timeout));
                Counters::add(&self.counters().hits, 1);
                // The client gets the updated response (RFC 9111 §4.3.4),
                // stored only if it still may be: a 304 that brings a
                // `Set-Cookie` gives this client its cookie and leaves the
                // stored copy as it was (to be revalidated again).
                let entry = Arc::new(merged);
                if stored {
                    self.cache().store_fetched(&self.key, entry.clone(), generation, self.counters());
                }
                let mut resp = answer(&entry, &client_headers, self.head, Outcome::Hit);
                resp.headers_mut().insert(CACHE_STATUS.clone(), Fwd::Stale.value(stored));
                resp.extensions_mut().insert(went_upstream);
                Ok(resp)
            }
            (Ok(up), Some(e)) if up.parts.status.is_server_error() && stale_ok(&e) => {
                drop(up);
                let mut resp = self.serve_stale(&e, &client_headers);
                resp.extensions_mut().insert(went_upstream);
                Ok(resp)
            }
            (Err(err), Some(e)) if err.status().is_server_error() && stale_ok(&e) => {
                tracing::debug!(error = %err, "upstream failed: serving stale");
                let mut resp = self.serve_stale(&e, &client_headers);
                resp.extensions_mut().insert(went_upstream);
                Ok(resp)
            }
            (Ok(up), _) => {
                let fetched = Fetched { request_time, response_time, generation, fwd };
                Ok(self.store_and_respond(up, &client_headers, fetched, flight, mark_uncacheable))
            }
            (Err(err), _) => {
                Counters::add(&self.counters().misses, 1);
                Err(err)
            }
        }
    }

    /// The upstream's response for the client, with a copy kept for the
    /// cache when it may be stored.
    fn store_and_respond(
        &self,
        mut up: Upstream,
        request: &HeaderMap,
        fetched: Fetched,
        flight: Option<FlightGuard>,
        mark_uncacheable: bool,
    ) -> Response<ProxyBody> {
        let Fetched { request_time, response_time, generation, fwd } = fetched;
        let h = &up.parts.headers;
        // A body compressed on its way is judged by the size the upstream sent.
        let length = (up.identity_length.or_else(|| policy::content_length(h)), self.max_object);
        let lifetime = if self.head || self.directives.no_store {
            None
        } else {
            policy::lifetime_within(&self.policy, request, (up.parts.status, h), length, response_time)
        };
        up.parts.headers.remove(&policy::SURROGATE_CONTROL);
        // Only the response's own traits mark the key uncacheable: not this
        // request's `no-store` or `Authorization`.
        let this_request_only = self.directives.no_store || request.contains_key(header::AUTHORIZATION);
        let pass_ttl = (mark_uncacheable && !this_request_only).then(|| self.cache().rules().uncacheable_ttl);
        let status = up.parts.status;
        crate::pipeline::store::count(&self.client.worker, &self.key, lifetime.is_some(), status.as_u16(), pass_ttl);
        let Some(lifetime) = lifetime else {
            return mark(up.into_response(), Outcome::Miss, fwd.value(false));
        };
        let h = &up.parts.headers;
        // A coding perfproxy chose is the entry's coding, not an `Accept-Encoding` text.
        let names = policy::vary_names(h).filter(|n| up.coding.is_none() || n != "accept-encoding");
        let vary = (key::vary_values(names, request), up.coding);
        let pending = crate::pipeline::store::pending_entry(status, h, vary, lifetime, (request_time, response_time));
        let (cache, counters) = (self.cache().clone(), self.counters().clone());
        let fill = Fill::new(cache, counters, self.key.clone(), pending, self.max_object, generation, flight);
        mark(up.into_response(), Outcome::Miss, fwd.value(true)).map(|b| b.filling(fill))
    }

    /// Revalidates `entry` in the background (stale-while-revalidate),
    /// unless another request is already fetching its key.
    pub(super) fn refresh_behind(&self, parts: &Parts, entry: Arc<Entry>) {
        let Joined::Leader(guard) = self.cache().flights().join(&self.key) else { return };
        let mut req = Request::new(());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = parts.uri.clone();
        *req.headers_mut() = parts.headers.clone();
        // Not the triggering request's trace: its spans end before this
        // refresh does, and the upstream would name a parent never exported.
        req.headers_mut().remove(&crate::observe::trace::TRACEPARENT);
        req.headers_mut().remove("tracestate");
        let (parts, ()) = req.into_parts();
        let mut ctx = self.clone();
        ctx.head = false;
        tokio::task::spawn_local(async move {
            if let Ok(resp) = ctx.fetch(parts, RequestBody::Empty, Some(entry), Some(guard), false).await {
                // Reading it to the end stores it (see Fill).
                let _ = resp.into_body().collect().await;
            }
        });
    }
}
