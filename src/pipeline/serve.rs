//! The cache on the request path, top to bottom: methods other than GET and
//! HEAD bypass it (and a successful write invalidates its target); GET and
//! HEAD are looked up (memory, then Redis); a fresh entry answers at once
//! (`304` to a matching conditional), a stale one is revalidated or served
//! stale as its directives allow, and a miss goes upstream, once per key for
//! concurrent misses, its response streamed to the client while a copy
//! (`Fill`) is kept for the cache (going upstream and storing: `fetch`).
//! Responses built from entries are in [`answer`](super::answer).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};

use super::answer::{answer, mark, only_if_cached_miss, Fwd, Outcome};
use crate::cache::entry::Entry;
use crate::cache::key::{self, Glob};
use crate::cache::policy::{self, Directives, Policy};
use crate::cache::{Cache, Counters, Found, Joined};
use crate::pipeline::forward::{self, Upstream};
use crate::shared::body::ProxyBody;
use crate::shared::error::ProxyError;
use crate::shared::state::{Client, Worker};
use crate::upstream::RequestBody;
use crate::wire::encoding::Ranked;
use crate::wire::headers;
use crate::wire::http1;

mod fetch;

/// The longest a miss waits for another request fetching the same key.
const COLLAPSE_WAIT: Duration = Duration::from_secs(5);

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
    // A GET with a body ("fat GET") is answered from what the body said:
    // stored, it would be served to requests that sent none (RFC 9110
    // §9.3.1 gives such a body no meaning; a backend may read it anyway).
    let body_sent = !http_body::Body::is_end_stream(&body);
    if !http1::consults_cache(&method, parts.headers.contains_key(header::RANGE)) || body_sent {
        let target = http1::is_unsafe(&method).then(|| (host(&parts).to_string(), parts.uri.path().to_string()));
        let fwd = if http1::consults_cache(&method, false) { Fwd::Bypass } else { Fwd::Method };
        let up = bypass(client, parts, body).await?;
        if let Some((host, path)) = target {
            invalidate_after_write(client, &host, &path, up.parts.status, &up.parts.headers).await;
        }
        return Ok(mark(up.into_response(), Outcome::Bypass, fwd.value(false)));
    }
    let rules = cache.rules();
    let mut key = key::primary(
        host(&parts),
        parts.uri.path(),
        parts.uri.query(),
        &rules.ignore_query,
        headers::forwarded_sent(&parts.headers),
    );
    key::forwarding_fields(&mut key, &parts.headers);
    let mut ctx = Ctx {
        client: client.clone(),
        key,
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
    async fn pass(&self, parts: Parts, body: RequestBody) -> Result<Response<ProxyBody>, ProxyError> {
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

    fn serve_stale(&self, entry: &Entry, request: &HeaderMap) -> Response<ProxyBody> {
        Counters::add(&self.counters().hits, 1);
        Counters::add(&self.counters().stale, 1);
        answer(entry, request, self.head, Outcome::Stale)
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
