//! The cache on the express lane: the lookups that make up nearly all
//! cached traffic, answered with no `http` types. A fresh memory-layer hit
//! is written from bytes kept with its entry ([`Entry::wire_head`]) with
//! `Age`, `Date`, `Server-Timing`, `X-Cache` and `Cache-Status` added; a miss
//! on a key not worth collapsing goes upstream as any express request, its
//! response head decides at once whether it is stored, and a storable body
//! is copied while it is relayed ([`Fill`]; a chunked body's data without
//! its framing). Everything else a lookup can meet goes to the cache's
//! general path ([`crate::pipeline::serve`]): request directives,
//! conditionals and `Authorization`, hits on entries that vary, stale
//! entries, Redis, collapsing, `HEAD` misses.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Buf;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::head::field;
use super::response::{add_field, ResponseHead};
use super::Conn;
use crate::cache::entry::Entry;
use crate::cache::fill::Fill;
use crate::cache::policy::{self, Policy};
use crate::cache::{key, Counters, Rules};
use crate::pipeline::answer::{hit_fields, Fwd, Outcome};
use crate::pipeline::store;
use crate::shared::state::Worker;
use crate::wire::encoding::Ranked;
use crate::wire::http1;

/// A body this big or bigger is written apart from its head.
const WRITE_APART: usize = 16 * 1024;

/// What a lookup on the express lane found.
pub(super) enum Lookup {
    /// A fresh entry, answered from its bytes.
    Hit(Arc<Entry>),
    /// Nothing stored, not worth collapsing: straight upstream.
    Miss(Miss),
    /// The cache's general path decides.
    General,
}

/// A miss on its way upstream.
pub(super) struct Miss {
    key: String,
    policy: Policy,
    max_object: usize,
    uncacheable_ttl: std::time::Duration,
    /// When the request went upstream, and the invalidation log then.
    request_time: SystemTime,
    generation: u64,
}

/// Looks `key` up in the memory layer for a GET or HEAD with no field that
/// changes a lookup (`lookup_fields`); `codings`: the client's, read only
/// when the key's variants are in codings perfproxy chose.
pub(super) fn lookup(
    worker: &Worker,
    rules: &Rules,
    (key, path): (String, &str),
    method: &Method,
    lookup_fields: bool,
    codings: impl FnOnce() -> Ranked,
) -> Lookup {
    let cache = &worker.shared.cache;
    if lookup_fields {
        return Lookup::General;
    }
    match cache.memory_slot(&key) {
        Some(slot) => {
            // The newest variant answers any request only if it varies on
            // nothing; variants in codings perfproxy chose, if they vary on
            // nothing else, answer the client's `Accept-Encoding`.
            let newest = match slot.first() {
                Some(e) if e.vary.is_empty() && e.coding.is_none() => Some(e.clone()),
                Some(e) if e.coding.is_some() && slot.iter().all(|e| e.vary.is_empty()) => {
                    crate::cache::choose(slot.iter(), &codings())
                }
                _ => None,
            };
            let Some(newest) = newest else { return Lookup::General };
            // Tag headers are written only when kept: the general path writes them.
            if newest.staleness(SystemTime::now()).is_some() || rules.keep_tag_headers {
                return Lookup::General;
            }
            Lookup::Hit(newest)
        }
        None if *method == Method::HEAD || cache.has_redis() => Lookup::General,
        None => {
            let policy = rules.policy(path);
            if policy.rule_ttl.is_some() || worker.cache_passes.borrow().storable(&key) {
                return Lookup::General;
            }
            Lookup::Miss(Miss {
                key,
                policy,
                max_object: rules.max_object_bytes,
                uncacheable_ttl: rules.uncacheable_ttl,
                request_time: SystemTime::now(),
                generation: cache.generation(),
            })
        }
    }
}

/// The client's head for a fresh hit on `entry`, to `out`: its stored head,
/// then the fields every hit gets anew ([`hit_fields`], as on hyper).
fn write_hit_head(out: &mut Vec<u8>, entry: &Entry, tag_headers: &[http::HeaderName], request_id: &[u8], close: bool) {
    out.extend_from_slice(entry.wire_head(tag_headers));
    field(out, b"x-request-id", request_id);
    hit_fields(entry, Outcome::Hit, SystemTime::now(), out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

impl Conn {
    /// Answers a fresh hit from its entry's bytes, recorded.
    pub(super) async fn hit(&mut self, entry: Arc<Entry>) -> bool {
        let worker = self.client.worker.clone();
        self.set_request_id();
        let mut recording = self.begin_recording();
        let head = &self.head;
        let head_request = head.method == Method::HEAD;
        let close = self.closes();
        self.buf.advance(self.head.len);
        Counters::add(&worker.cache_counters.hits, 1);
        let out = &mut self.scratch.out;
        out.clear();
        write_hit_head(out, &entry, &worker.shared.cache.rules().tag_headers, &self.request_id, close);
        if let Some(r) = &mut recording {
            r.answered(entry.status.as_u16());
            r.head_ready();
        }
        let body = if http1::bodiless(head_request, entry.status.as_u16()) { &[][..] } else { &entry.body[..] };
        if let Some(r) = &mut recording {
            r.cache("HIT");
            r.sent(body.len());
        }
        let written = if body.len() >= WRITE_APART {
            match self.stream.send(out, self.client.worker.shared.config.send_timeout).await {
                Ok(()) => self.stream.send(body, self.client.worker.shared.config.send_timeout).await,
                Err(e) => Err(e),
            }
        } else {
            out.extend_from_slice(body);
            self.stream.send(out, self.client.worker.shared.config.send_timeout).await
        };
        drop(recording);
        written.is_ok() && !close
    }
}

/// The fields of the request head at the start of `sent` (what went
/// upstream), for the values a response's `Vary` names.
/// `None` if it cannot be read whole (then nothing is stored: a variant
/// must never be filed under values the request did not have).
fn request_fields(sent: &[u8]) -> Option<HeaderMap> {
    // The client's fields and the few perfproxy adds on the way.
    let mut raw = [httparse::EMPTY_HEADER; super::head::MAX_FIELDS + 8];
    let mut req = httparse::Request::new(&mut raw);
    if !matches!(req.parse(sent), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let mut fields = HeaderMap::new();
    for h in req.headers.iter() {
        fields.append(HeaderName::from_bytes(h.name.as_bytes()).ok()?, HeaderValue::from_bytes(h.value).ok()?);
    }
    Some(fields)
}

/// A miss's response head has arrived: counts it, adds its `Cache-Status`
/// to the client's head in `out`, and returns the copy to keep if it is
/// stored. `up_head` holds the upstream's head (`resp`'s fields point
/// there), `sent` the request as it went upstream.
pub(super) fn after_head(
    worker: &Worker,
    miss: Miss,
    resp: &ResponseHead,
    (up_head, sent): (&[u8], &[u8]),
    out: &mut Vec<u8>,
) -> Option<Box<Fill>> {
    let response_time = SystemTime::now();
    // Only an answer with freshness fields was looked at: no other can be stored.
    let mut h = if resp.looked_at { resp.fields_map(up_head) } else { HeaderMap::new() };
    let lifetime = match StatusCode::from_u16(resp.status) {
        Ok(status) if resp.looked_at => {
            let length = (policy::content_length(&h), miss.max_object);
            policy::lifetime_within(&miss.policy, &HeaderMap::new(), (status, &h), length, response_time)
        }
        _ => None,
    };
    store::count(worker, &miss.key, lifetime.is_some(), resp.status, Some(miss.uncacheable_ttl));
    let uri_miss = Fwd::UriMiss.text(false).as_bytes();
    let Some(lifetime) = lifetime else {
        add_field(out, b"cache-status", uri_miss);
        return None;
    };
    // (A longer `Content-Length` than `cache.max_object_bytes` had no
    // lifetime; a body of unknown length is kept while it fits, as on the
    // general path: `Fill::push`.)
    let vary = match policy::vary_names(&h).next() {
        None => Some(Vec::new()),
        Some(_) => request_fields(sent).map(|r| key::vary_values(policy::vary_names(&h), &r)),
    };
    let Some(vary) = vary else {
        add_field(out, b"cache-status", uri_miss);
        return None;
    };
    add_field(out, b"cache-status", Fwd::UriMiss.text(true).as_bytes());
    // As the general path stores it: with perfproxy's `Via` after the upstream's.
    h.append(http::header::VIA, HeaderValue::from_static(http1::VIA));
    let status = StatusCode::from_u16(resp.status).expect("a storable status is a status");
    let pending = store::pending_entry(status, &h, (vary, None), lifetime, (miss.request_time, response_time));
    let cache = worker.shared.cache.clone();
    // Boxed: a request's future reserves no room for a fill it rarely has.
    let fill =
        Fill::new(cache, worker.cache_counters.clone(), miss.key, pending, miss.max_object, miss.generation, None);
    Some(Box::new(fill))
}
