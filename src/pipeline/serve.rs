//! The cache on the request path, top to bottom: methods other than GET and
//! HEAD bypass it (and a successful write invalidates its target); GET and
//! HEAD are looked up (memory, then Redis); a fresh entry answers at once
//! (`304` to a matching conditional), a stale one is revalidated or served
//! stale as its directives allow, and a miss goes upstream, once per key for
//! concurrent misses, its response streamed to the client while a copy
//! ([`Fill`]) is kept for the cache. Responses built from
//! entries are in [`answer`](super::answer).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::answer::{answer, mark, only_if_cached_miss, refreshed, Fwd, Outcome, CACHE_STATUS};
use crate::cache::entry::Entry;
use crate::cache::fill::Fill;
use crate::cache::key::{self, Glob};
use crate::cache::policy::{self, Directives, Policy};
use crate::cache::{Cache, Counters, FlightGuard, Found, Joined};
use crate::pipeline::forward::{self, Upstream};
use crate::shared::body::ProxyBody;
use crate::shared::error::ProxyError;
use crate::shared::state::{Client, Worker};
use crate::upstream::RequestBody;
use crate::wire::encoding::Ranked;
use crate::wire::headers;
use crate::wire::http1;

/// The longest a miss waits for another request fetching the same key.
const COLLAPSE_WAIT: Duration = Duration::from_secs(5);

/// When an upstream exchange happened, for the entry it may become.
struct Fetched {
    request_time: SystemTime,
    response_time: SystemTime,
    /// The cache's invalidation log when it began.
    generation: u64,
    /// Why it went forward (`Cache-Status`).
    fwd: Fwd,
}

/// A request's facts, as the cache needs them.
#[derive(Clone)]
struct Ctx {
    client: Rc<Client>,
    key: String,
    policy: Policy,
    max_object: usize,
    head: bool,
    directives: Directives,
    /// The codings the client takes, best first (which stored variant answers it).
    codings: Ranked,
    /// Why a fetch goes forward when no stored entry is involved.
    fwd: Fwd,
}

/// Forwards a checked request through the cache; the tag headers leave
/// the answer unless `cache.keep_tag_headers`, `Surrogate-Control` always.
pub async fn forward(client: &Rc<Client>, parts: Parts, body: RequestBody) -> Result<Response<ProxyBody>, ProxyError> {
    let mut resp = through_cache(client, parts, body).await?;
    client.worker.shared.cache.rules().strip_tags(resp.headers_mut());
    // perfproxy's own directive: never relayed, stored or not.
    resp.headers_mut().remove(&policy::SURROGATE_CONTROL);
    Ok(resp)
}

async fn through_cache(
    client: &Rc<Client>,
    parts: Parts,
    body: RequestBody,
) -> Result<Response<ProxyBody>, ProxyError> {
    let cache = &client.worker.shared.cache;
    let counters = &client.worker.cache_counters;
    let method = parts.method.clone();
    if !http1::consults_cache(&method, parts.headers.contains_key(header::RANGE)) {
        let target = http1::is_unsafe(&method).then(|| (host(&parts).to_string(), parts.uri.path().to_string()));
        let fwd = if http1::consults_cache(&method, false) { Fwd::Bypass } else { Fwd::Method };
        let up = bypass(client, parts, body).await?;
        if let Some((host, path)) = target {
            invalidate_after_write(client, &host, &path, up.parts.status, &up.parts.headers).await;
        }
        return Ok(mark(up.into_response(), Outcome::Bypass, fwd.value(false)));
    }
    let rules = cache.rules();
    let mut ctx = Ctx {
        client: client.clone(),
        key: key::primary(
            host(&parts),
            parts.uri.path(),
            parts.uri.query(),
            &rules.ignore_query,
            headers::forwarded_sent(&parts.headers),
        ),
        policy: rules.policy(parts.uri.path()),
        max_object: rules.max_object_bytes,
        head: method == Method::HEAD,
        directives: Directives::parse(&parts.headers),
        codings: client.worker.shared.compression.table().rank_request(&method, &parts.headers),
        fwd: Fwd::UriMiss,
    };
    drop(rules);
    if client.worker.cache_passes.borrow().active(&ctx.key) {
        return ctx.pass(parts, body).await;
    }
    let no_cache = ctx.directives.request_no_cache(&parts.headers);
    let (found, redis) = cache.lookup(&ctx.key, &parts.headers, &ctx.codings, counters).await;
    ctx.fwd = match &found {
        _ if no_cache => Fwd::Request,
        Found::Nothing if cache.holds_key(&ctx.key) => Fwd::VaryMiss,
        _ => Fwd::UriMiss,
    };
    let answered = match found {
        // `no-cache`: never answered from the cache, but revalidated with it.
        Found::Entry(entry) if no_cache => ctx.fetch(parts, body, Some(entry), None, false).await,
        Found::Entry(entry) => ctx.use_entry(entry, parts, body).await,
        Found::Nothing if ctx.directives.only_if_cached => Ok(only_if_cached_miss()),
        Found::Nothing if no_cache || ctx.head => ctx.fetch(parts, body, None, None, false).await,
        // Collapsing only pays for keys that will be stored: a rule names
        // them, or their last response was.
        Found::Nothing if !ctx.worth_collapsing() => ctx.fetch(parts, body, None, None, true).await,
        Found::Nothing => ctx.collapse(parts, body).await,
    };
    // The Redis lookup's timing, for the request's span.
    answered.map(|mut resp| {
        if let Some(lookup) = redis {
            resp.extensions_mut().insert(lookup);
        }
        resp
    })
}

impl Ctx {
    fn cache(&self) -> &Arc<Cache> {
        &self.client.worker.shared.cache
    }

    fn counters(&self) -> &Arc<Counters> {
        &self.client.worker.cache_counters
    }

    fn worth_collapsing(&self) -> bool {
        self.policy.rule_ttl.is_some() || self.client.worker.cache_passes.borrow().storable(&self.key)
    }

    /// A key whose last response could not be stored (hit-for-pass, for
    /// `PASS_FOR`): straight upstream, nothing kept, a bypass.
    async fn pass(&self, mut parts: Parts, body: RequestBody) -> Result<Response<ProxyBody>, ProxyError> {
        policy::announce_surrogate(&mut parts.headers);
        let up = bypass(&self.client, parts, body).await?;
        forget_pass_if_storable(&self.client.worker, &self.key, &self.policy, up.parts.status, &up.parts.headers);
        Ok(mark(up.into_response(), Outcome::Bypass, Fwd::Bypass.value(false)))
    }

    /// A stored entry for this request: fresh enough answers; stale is
    /// served if allowed, else revalidated.
    async fn use_entry(
        &self,
        entry: Arc<Entry>,
        parts: Parts,
        body: RequestBody,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let now = SystemTime::now();
        let age = entry.age(now);
        let d = &self.directives;
        match entry.staleness(now) {
            None => {
                let left = entry.lifetime.fresh.saturating_sub(age);
                let acceptable = d.max_age.is_none_or(|m| age <= Duration::from_secs(m))
                    && d.min_fresh.is_none_or(|m| left >= Duration::from_secs(m));
                if acceptable {
                    Counters::add(&self.counters().hits, 1);
                    return Ok(answer(&entry, &parts.headers, self.head, Outcome::Hit));
                }
            }
            Some(stale_by) if !entry.lifetime.must_revalidate => {
                let client_accepts = d.max_stale.is_some_and(|m| m.is_none_or(|m| stale_by <= Duration::from_secs(m)));
                let behind = stale_by < entry.lifetime.stale_while_revalidate;
                if client_accepts || behind {
                    if behind {
                        self.refresh_behind(&parts, entry.clone());
                    }
                    return Ok(self.serve_stale(&entry, &parts.headers));
                }
            }
            Some(_) => {}
        }
        if d.only_if_cached {
            return Ok(only_if_cached_miss());
        }
        self.fetch(parts, body, Some(entry), None, false).await
    }

    /// A miss that nobody else is fetching leads; otherwise it waits for the
    /// leader (bounded) and uses what it stored, or goes upstream itself.
    async fn collapse(&self, parts: Parts, body: RequestBody) -> Result<Response<ProxyBody>, ProxyError> {
        match self.cache().flights().join(&self.key) {
            Joined::Leader(guard) => self.fetch(parts, body, None, Some(guard), true).await,
            Joined::Follower(mut done) => {
                let wait = COLLAPSE_WAIT.min(self.client.worker.shared.config.upstream_timeout);
                let _ = tokio::time::timeout(wait, done.changed()).await;
                if let Some(entry) = self.cache().lookup_memory(&self.key, &parts.headers, &self.codings) {
                    if entry.staleness(SystemTime::now()).is_none() {
                        Counters::add(&self.counters().hits, 1);
                        return Ok(answer(&entry, &parts.headers, self.head, Outcome::Hit));
                    }
                }
                self.fetch(parts, body, None, None, false).await
            }
        }
    }

    /// Goes upstream (conditionally when `stored` has validators) and
    /// answers: a `304` refreshes `stored`; a failure within its
    /// stale-if-error window serves it stale; anything else is a miss whose
    /// response is stored if it may be.
    async fn fetch(
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
                let merged = refreshed(&e, &up.parts.headers, request_time, response_time, &self.policy);
                // Read the (empty) body so the connection goes back to the pool.
                drop(ProxyBody::upstream(up.body, up.lease, up.read_timeout));
                Counters::add(&self.counters().hits, 1);
                let stored = merged.is_some();
                let entry = match merged {
                    Some(m) => {
                        let m = Arc::new(m);
                        self.cache().store_fetched(&self.key, m.clone(), generation, self.counters());
                        m
                    }
                    None => e,
                };
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

    fn serve_stale(&self, entry: &Entry, request: &HeaderMap) -> Response<ProxyBody> {
        Counters::add(&self.counters().hits, 1);
        Counters::add(&self.counters().stale, 1);
        answer(entry, request, self.head, Outcome::Stale)
    }

    /// Revalidates `entry` in the background (stale-while-revalidate),
    /// unless another request is already fetching its key.
    fn refresh_behind(&self, parts: &Parts, entry: Arc<Entry>) {
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

/// A URL remembered as uncacheable whose answer could now be stored is
/// forgotten: its next request is looked up and stores what it gets.
pub(crate) fn forget_pass_if_storable(
    worker: &Worker,
    key: &str,
    policy: &Policy,
    status: StatusCode,
    response: &HeaderMap,
) {
    if policy::lifetime(policy, &HeaderMap::new(), status, response, SystemTime::now()).is_some() {
        worker.cache_passes.borrow_mut().forget(key);
    }
}

/// Straight upstream, the cache not consulted: counted as a bypass.
async fn bypass(client: &Client, parts: Parts, body: RequestBody) -> Result<Upstream, ProxyError> {
    Counters::add(&client.worker.cache_counters.bypasses, 1);
    forward::exchange(client, Request::from_parts(parts, body)).await
}

/// The request's Host (checked and present by now).
fn host(parts: &Parts) -> &str {
    parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("")
}

/// After a POST/PUT/PATCH/DELETE answered `status`, if that is a 2xx or
/// 3xx: drops its path, its rule's `invalidates` and its
/// `Location`/`Content-Location` targets on this host (RFC 9111 §4.4).
pub(crate) async fn invalidate_after_write(
    client: &Client,
    host: &str,
    path: &str,
    status: StatusCode,
    response: &HeaderMap,
) {
    if !(status.is_success() || status.is_redirection()) {
        return;
    }
    let cache = &client.worker.shared.cache;
    let rules = cache.rules();
    // The written paths are literal: a `*` in them is no wildcard.
    let mut patterns = vec![Glob::exact(path)];
    for rule in rules.rules.iter().filter(|r| r.pattern.matches_path(path)) {
        patterns.extend(rule.invalidates.iter().cloned());
    }
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(target) = response.get(&name).and_then(|v| v.to_str().ok()) else { continue };
        let Ok(uri) = target.parse::<http::Uri>() else { continue };
        let same_host = uri.authority().is_none_or(|a| a.as_str().eq_ignore_ascii_case(host));
        if same_host && uri.path().starts_with('/') {
            patterns.push(Glob::exact(uri.path()));
        }
    }
    let timeout = rules.redis_timeout;
    drop(rules);
    for p in patterns {
        cache.invalidate(&p, timeout, &client.worker.cache_counters).await;
    }
}
