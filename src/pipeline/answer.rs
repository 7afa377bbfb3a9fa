//! Responses made from the cache: a stored entry as the client gets it
//! (`Age`, `X-Cache`, `Cache-Status`, `Server-Timing`, or `304` to a
//! matching conditional), an entry refreshed by a `304` (RFC 9111 §4.3.4),
//! the `only-if-cached` miss, and how every answer is marked ([`mark`]).
//! A hit's own fields are written once, by [`hit_fields`], for both lanes:
//! into a `HeaderMap` here, as bytes after the entry's stored head on the
//! express lane.

use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::cache::entry::Entry;
use crate::cache::policy::{self, Policy};
use crate::shared::body::ProxyBody;

pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Fields every answer gets anew: never stored with an entry (`Date` is
/// stored, to date it, and replaced when served). The W3C trace fields an
/// upstream may echo (`traceresponse`, `traceparent`, `tracestate`) belong
/// to the request that fetched the entry, never to another client's.
pub fn per_request(name: &HeaderName) -> bool {
    name == header::AGE
        || name == crate::wire::headers::SERVER_TIMING
        || name == X_CACHE
        || name == CACHE_STATUS
        || name == crate::wire::headers::X_REQUEST_ID
        || name == crate::observe::trace::TRACEPARENT
        || name.as_str() == "traceresponse"
        || name.as_str() == "tracestate"
}

/// Why a request went forward (RFC 9211 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// Nothing stored for the URL.
    UriMiss,
    /// Something stored for the URL, no variant for these request headers.
    VaryMiss,
    /// Stored but stale: revalidated, or served stale.
    Stale,
    /// The client asked (`no-cache`).
    Request,
    /// A method the cache does not answer.
    Method,
    /// Not looked up: `Range`, or a URL remembered as uncacheable.
    Bypass,
}

impl Fwd {
    /// The `Cache-Status` text, `; stored` when the response is being stored.
    pub fn text(self, stored: bool) -> &'static str {
        match (self, stored) {
            (Fwd::UriMiss, false) => "perfproxy; fwd=uri-miss",
            (Fwd::UriMiss, true) => "perfproxy; fwd=uri-miss; stored",
            (Fwd::VaryMiss, false) => "perfproxy; fwd=vary-miss",
            (Fwd::VaryMiss, true) => "perfproxy; fwd=vary-miss; stored",
            (Fwd::Stale, false) => "perfproxy; fwd=stale",
            (Fwd::Stale, true) => "perfproxy; fwd=stale; stored",
            (Fwd::Request, false) => "perfproxy; fwd=request",
            (Fwd::Request, true) => "perfproxy; fwd=request; stored",
            (Fwd::Method, false) => "perfproxy; fwd=method",
            (Fwd::Method, true) => "perfproxy; fwd=method; stored",
            (Fwd::Bypass, false) => "perfproxy; fwd=bypass",
            (Fwd::Bypass, true) => "perfproxy; fwd=bypass; stored",
        }
    }

    /// [`Fwd::text`] as a field value.
    pub fn value(self, stored: bool) -> HeaderValue {
        HeaderValue::from_static(self.text(stored))
    }
}

/// Where an answer's fields are written: a `HeaderMap` (hyper), or the
/// bytes of a head being written (the express lane).
pub trait FieldSink {
    /// Sets `name` (which the answer does not carry yet) to `value`.
    fn put(&mut self, name: &HeaderName, value: &[u8]);
}

impl FieldSink for HeaderMap {
    fn put(&mut self, name: &HeaderName, value: &[u8]) {
        let value = HeaderValue::from_bytes(value).expect("perfproxy's own field values are visible ASCII");
        self.insert(name.clone(), value);
    }
}

impl FieldSink for Vec<u8> {
    fn put(&mut self, name: &HeaderName, value: &[u8]) {
        self.extend_from_slice(name.as_str().as_bytes());
        self.extend_from_slice(b": ");
        self.extend_from_slice(value);
        self.extend_from_slice(b"\r\n");
    }
}

/// The fields an answer from `entry` gets anew, after its stored ones:
/// `Age`, its own `Date` (the stored one still dates the entry),
/// `Server-Timing`, `X-Cache` and `Cache-Status` (a fresh hit's with the
/// seconds of freshness left). The one writer of a hit's fields, for both lanes.
pub fn hit_fields(entry: &Entry, outcome: Outcome, now: SystemTime, out: &mut impl FieldSink) {
    let age = entry.age(now);
    out.put(&header::AGE, itoa::Buffer::new().format(age.as_secs()).as_bytes());
    out.put(&header::DATE, &crate::wire::http1::date());
    let timing: &[u8] = if outcome == Outcome::Stale { b"cache;desc=STALE" } else { b"cache;desc=HIT" };
    out.put(&crate::wire::headers::SERVER_TIMING, timing);
    out.put(&X_CACHE, outcome.as_str().as_bytes());
    if outcome == Outcome::Stale {
        out.put(&CACHE_STATUS, Fwd::Stale.text(false).as_bytes());
    } else {
        const PREFIX: &[u8] = b"perfproxy; hit; ttl=";
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(entry.lifetime.fresh.saturating_sub(age).as_secs()).as_bytes();
        // A u64 has at most 20 digits.
        let mut text = [0u8; PREFIX.len() + 20];
        text[..PREFIX.len()].copy_from_slice(PREFIX);
        text[PREFIX.len()..][..digits.len()].copy_from_slice(digits);
        out.put(&CACHE_STATUS, &text[..PREFIX.len() + digits.len()]);
    }
}
/// How a response relates to the cache (`X-Cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Bypass,
    Stale,
}

impl Outcome {
    /// The `X-Cache` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Bypass => "BYPASS",
            Outcome::Stale => "STALE",
        }
    }

    fn header(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// The stored response, for the client: `304` if its conditional matches.
pub fn answer(entry: &Entry, request: &HeaderMap, head: bool, outcome: Outcome) -> Response<ProxyBody> {
    let not_modified = entry.status == StatusCode::OK && not_modified(entry, request);
    let mut resp = if head || not_modified {
        Response::new(ProxyBody::empty())
    } else {
        Response::new(ProxyBody::full(entry.body.clone()))
    };
    if not_modified {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        let h = resp.headers_mut();
        for name in [
            header::CACHE_CONTROL,
            header::CONTENT_LOCATION,
            header::DATE,
            header::ETAG,
            header::EXPIRES,
            header::VARY,
            header::LAST_MODIFIED,
            header::VIA,
        ] {
            for v in entry.headers.get_all(&name) {
                h.append(name.clone(), v.clone());
            }
        }
    } else {
        *resp.status_mut() = entry.status;
        *resp.headers_mut() = entry.headers.clone();
        if !crate::wire::http1::relays_length(entry.status.as_u16()) {
            resp.headers_mut().remove(header::CONTENT_LENGTH);
        }
    }
    hit_fields(entry, outcome, SystemTime::now(), resp.headers_mut());
    resp
}

/// Whether the client's own validators match the stored response
/// (If-None-Match first, else If-Modified-Since; RFC 9110 §13.2.2).
fn not_modified(entry: &Entry, request: &HeaderMap) -> bool {
    if request.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = entry.headers.get(header::ETAG).and_then(|v| v.to_str().ok()) else { return false };
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|list| list.split(',').any(|t| t.trim() == "*" || weak(t) == weak(etag)));
    }
    let Some(since) = policy::http_date(request, header::IF_MODIFIED_SINCE) else { return false };
    let modified =
        policy::http_date(&entry.headers, header::LAST_MODIFIED).or(policy::http_date(&entry.headers, header::DATE));
    modified.is_some_and(|m| m <= since)
}

/// The stored entry updated by a `304` (RFC 9111 §4.3.4): its headers
/// replace the stored ones (framing excepted) and its times restart the
/// clock; with whether it may still be stored (a `304` that brings a
/// `Set-Cookie` makes it one not to store, but the client's answer).
pub fn refreshed(
    e: &Entry,
    update: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
    policy: &Policy,
) -> (Entry, bool) {
    let mut headers = e.headers.clone();
    for name in update.keys() {
        // Framing, content metadata and the validator stay the stored body's.
        let kept = [header::CONTENT_LENGTH, header::AGE, header::CONTENT_ENCODING, header::CONTENT_RANGE, header::ETAG];
        // Nor is a per-request field ever stored (an upstream's `X-Cache`, say).
        if kept.contains(name) || name == "content-md5" || per_request(name) {
            continue;
        }
        // Nor byte ranges or digests of the upstream's bytes on a coding perfproxy made.
        let compressed = e.coding.is_some_and(|c| c != crate::wire::encoding::Coding::Identity);
        if compressed && (name == header::ACCEPT_RANGES || crate::wire::encoding::is_digest(name)) {
            continue;
        }
        headers.remove(name);
        for v in update.get_all(name) {
            headers.append(name.clone(), crate::cache::entry::owned(v));
        }
    }
    if e.coding.is_some() {
        // Still the variant of a coding perfproxy chose, whatever `Vary` the 304 brought.
        crate::wire::encoding::add_vary(&mut headers);
    }
    let lifetime = policy::lifetime(policy, &HeaderMap::new(), e.status, &headers, response_time);
    // Read for the lifetime above, perfproxy's own: not stored, not relayed.
    headers.remove(&policy::SURROGATE_CONTROL);
    let storable = lifetime.is_some();
    let updated = Entry {
        initial_age: policy::initial_age(update, request_time, response_time).as_millis() as u64,
        response_time: policy::epoch_ms(response_time),
        lifetime: lifetime.unwrap_or(e.lifetime),
        headers,
        ..e.clone()
    };
    (updated, storable)
}

/// `only-if-cached` with nothing usable stored: 504 (RFC 9111 §5.2.1.7).
pub fn only_if_cached_miss() -> Response<ProxyBody> {
    let mut resp =
        Response::new(ProxyBody::full(&br#"{"error":"gateway_timeout","detail":"only-if-cached: not in cache"}"#[..]));
    *resp.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    mark(resp, Outcome::Miss, Fwd::UriMiss.value(false))
}

/// Marks an answer: `X-Cache` (an upstream's replaced) and perfproxy's
/// `Cache-Status` entry, after those of the caches behind it on an answer
/// from upstream (RFC 9211 §2; never taken from a stored entry).
pub fn mark(mut resp: Response<ProxyBody>, outcome: Outcome, status: HeaderValue) -> Response<ProxyBody> {
    resp.headers_mut().insert(X_CACHE.clone(), outcome.header());
    resp.headers_mut().append(CACHE_STATUS.clone(), status);
    resp
}
