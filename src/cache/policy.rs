//! RFC 9111 as a shared cache applies it: `Cache-Control` parsing (request
//! and response), whether a response may be stored, and for how long it is
//! fresh. Nothing here touches a cache layer; it is pure header logic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap};
use http::StatusCode;

/// The `Cache-Control` directives perfproxy acts on. Delta-seconds that do
/// not parse are `Some(0)`: RFC 9111 §4.2.1 says to treat such a response as
/// stale, and §5.2 to be conservative with requests.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Directives {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    /// `max-stale` (request): `Some(None)` accepts any staleness.
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl Directives {
    /// Parses every `Cache-Control` field of `headers`. Unknown directives
    /// change nothing.
    pub fn parse(headers: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            for item in crate::wire::http1::tokens(value.as_bytes()) {
                d.apply(item);
            }
        }
        d
    }

    /// `Surrogate-Control` (Edge Architecture 1.0): the directives targeted
    /// at perfproxy (`max-age=60;perfproxy`) when it has a `max-age` or
    /// `no-store` among them, else those with no target; directives for
    /// another device are ignored. Only `max-age` and `no-store` are read.
    pub fn surrogate(headers: &HeaderMap) -> Directives {
        let (mut ours, mut untargeted) = (Directives::default(), Directives::default());
        for value in headers.get_all(&SURROGATE_CONTROL) {
            for item in crate::wire::http1::tokens(value.as_bytes()) {
                match target(item) {
                    (directive, None) => untargeted.apply(directive),
                    (directive, Some(device)) if device.eq_ignore_ascii_case(SURROGATE_DEVICE.as_bytes()) => {
                        ours.apply(directive)
                    }
                    (_, Some(_)) => {}
                }
            }
        }
        // Only the directives read here make a targeted set (not `content=`, say).
        let d = if ours.max_age.is_some() || ours.no_store { ours } else { untargeted };
        Directives { max_age: d.max_age, no_store: d.no_store, ..Directives::default() }
    }

    /// Takes one directive (`name` or `name=value`) into `self`.
    fn apply(&mut self, item: &[u8]) {
        let Ok(item) = std::str::from_utf8(item) else { return };
        let (name, arg) = match item.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (item.trim(), None),
        };
        // RFC 9111 §1.2.2: delta-seconds past 2^31 count as 2^31.
        let seconds = || arg.map(|a| a.parse::<u64>().map_or(0, |s| s.min(MAX_DELTA))).or(Some(0));
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "max-age" => self.max_age = min_of(self.max_age, seconds()),
            "s-maxage" => self.s_maxage = min_of(self.s_maxage, seconds()),
            "no-store" => self.no_store = true,
            // The field-name forms (`no-cache="Set-Cookie"`,
            // `private="x"`) are taken as the unqualified ones: stricter.
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "max-stale" => self.max_stale = Some(arg.and_then(|a| a.parse().ok())),
            "min-fresh" => self.min_fresh = seconds(),
            "only-if-cached" => self.only_if_cached = true,
            "stale-while-revalidate" => self.stale_while_revalidate = seconds(),
            "stale-if-error" => self.stale_if_error = seconds(),
            _ => {}
        }
    }

    /// A request that must not be answered from the cache without the
    /// origin's say (`no-cache`, or HTTP/1.0 `Pragma: no-cache`).
    pub fn request_no_cache(&self, headers: &HeaderMap) -> bool {
        self.no_cache
            || (!headers.contains_key(header::CACHE_CONTROL)
                && headers.get(header::PRAGMA).and_then(|v| v.to_str().ok()).is_some_and(|p| p.contains("no-cache")))
    }
}

/// The largest delta-seconds value taken (2^31, RFC 9111 §1.2.2).
const MAX_DELTA: u64 = 1 << 31;

/// A `Surrogate-Control` item's directive and the device it targets: the
/// text after its last `;` when that is a token (RFC 9110 `tchar`s:
/// `max-age=60;perfproxy`, `max-age=60;my+cdn`).
/// Anything else (`x="a;b"`, an empty target) is one untargeted directive.
fn target(item: &[u8]) -> (&[u8], Option<&[u8]>) {
    let Some(i) = item.iter().rposition(|&b| b == b';') else { return (item, None) };
    let device = item[i + 1..].trim_ascii();
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if device.is_empty() || !device.iter().all(token) {
        return (item, None);
    }
    (item[..i].trim_ascii(), Some(device))
}

/// A directive given twice counts with its smaller value (conservative).
fn min_of(old: Option<u64>, new: Option<u64>) -> Option<u64> {
    match (old, new) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `Surrogate-Control` (Edge Architecture 1.0): directives for reverse
/// proxies like perfproxy, which take precedence over `Cache-Control` for
/// freshness and are removed before the response goes on.
pub static SURROGATE_CONTROL: header::HeaderName = header::HeaderName::from_static("surrogate-control");

/// The device token `Surrogate-Control` directives target perfproxy with.
const SURROGATE_DEVICE: &str = "perfproxy";

/// `Surrogate-Capability`: what perfproxy tells the upstream on requests
/// whose answer it may store, so directives can be targeted at it.
pub static SURROGATE_CAPABILITY: header::HeaderName = header::HeaderName::from_static("surrogate-capability");

/// The value perfproxy adds to `Surrogate-Capability` (`device="Surrogate/1.0"`).
pub const SURROGATE_CAPABILITY_VALUE: &str = "perfproxy=\"Surrogate/1.0\"";

/// Adds perfproxy's `Surrogate-Capability` to a request going upstream
/// (after any the client or a proxy before it sent, as Edge Architecture
/// 1.0 has each surrogate do).
pub fn announce_surrogate(request: &mut HeaderMap) {
    request.append(SURROGATE_CAPABILITY.clone(), header::HeaderValue::from_static(SURROGATE_CAPABILITY_VALUE));
}

/// Statuses that may be stored (docs/cache.md).
pub fn storable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 301 | 404 | 410)
}

/// How long a stored response lives, decided when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// The freshness lifetime (0: stale at once, revalidated on every use).
    pub fresh: Duration,
    /// How long past `fresh` it may still answer when the origin fails.
    pub stale_if_error: Duration,
    /// How long past `fresh` it may answer while being revalidated behind.
    pub stale_while_revalidate: Duration,
    /// `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache`:
    /// never served stale, not even on error.
    pub must_revalidate: bool,
}

/// What the cache configuration says about one request's route.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Honour `s-maxage`/`max-age`/`Expires` on any route.
    pub origin_directives: bool,
    /// The TTL of the `[[cache.rules]]` entry matching the route, if any.
    pub rule_ttl: Option<Duration>,
    /// `cache.stale_if_error_ms`: the default stale-if-error window.
    pub stale_if_error: Duration,
}

/// Whether a response to a GET may be stored, and for how long (`None`:
/// not stored). `request` holds the request's headers.
pub fn lifetime(
    policy: &Policy,
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    response_time: SystemTime,
) -> Option<Lifetime> {
    let cc = Directives::parse(response);
    let surrogate = Directives::surrogate(response);
    let req_cc = Directives::parse(request);
    if !storable_status(status)
        || cc.no_store
        || surrogate.no_store
        || cc.private
        || req_cc.no_store
        || response.contains_key(header::SET_COOKIE)
        || vary_names(response).any(|n| n == "*")
    {
        return None;
    }
    // Only an explicit `public` or `s-maxage` lets an answer to one user's
    // credentials be stored for everyone (RFC 9111 §3.5 also allows
    // `must-revalidate`; perfproxy does not).
    if request.contains_key(header::AUTHORIZATION) && !(cc.public || cc.s_maxage.is_some()) {
        return None;
    }
    let explicit = match surrogate.max_age {
        _ if !policy.origin_directives => None,
        Some(s) => Some(Duration::from_secs(s)),
        None => explicit_freshness(&cc, response, response_time),
    };
    let has_validators = response.contains_key(header::ETAG) || response.contains_key(header::LAST_MODIFIED);
    let fresh = match (explicit, policy.rule_ttl) {
        // `no-cache`: stored only to be revalidated on each use, and only
        // where something lets this response be stored at all (the
        // origin's directives, or a rule).
        _ if cc.no_cache && (policy.origin_directives || policy.rule_ttl.is_some()) => Duration::ZERO,
        (Some(f), _) => f,
        (None, Some(ttl)) => ttl,
        // No explicit freshness and no rule: only a `no-cache` response
        // with validators is kept (to be revalidated on each use).
        (None, None) => return None,
    };
    if fresh.is_zero() && !has_validators {
        return None;
    }
    Some(Lifetime {
        fresh,
        stale_if_error: cc.stale_if_error.map_or(policy.stale_if_error, Duration::from_secs),
        stale_while_revalidate: Duration::from_secs(cc.stale_while_revalidate.unwrap_or(0)),
        must_revalidate: cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some() || cc.no_cache,
    })
}

/// [`lifetime`], for a response whose body (`length` bytes as the upstream
/// sent it, when known) fits `max_object` bytes (a longer one is never stored).
pub fn lifetime_within(
    policy: &Policy,
    request: &HeaderMap,
    (status, response): (StatusCode, &HeaderMap),
    (length, max_object): (Option<u64>, usize),
    response_time: SystemTime,
) -> Option<Lifetime> {
    if length.is_some_and(|n| n > max_object as u64) {
        return None;
    }
    lifetime(policy, request, status, response, response_time)
}

/// A response's `Content-Length`, when it has one that reads.
pub fn content_length(response: &HeaderMap) -> Option<u64> {
    response.get(header::CONTENT_LENGTH).and_then(|v| crate::wire::http1::content_length(v.as_bytes()))
}

/// `s-maxage`, else `max-age`, else `Expires − Date` (RFC 9111 §4.2.1).
fn explicit_freshness(cc: &Directives, response: &HeaderMap, response_time: SystemTime) -> Option<Duration> {
    if let Some(s) = cc.s_maxage.or(cc.max_age) {
        return Some(Duration::from_secs(s));
    }
    let expires = response.get(header::EXPIRES)?;
    // An invalid date (`0`, say) means "already expired".
    let Some(expires) = expires.to_str().ok().and_then(|e| httpdate::parse_http_date(e).ok()) else {
        return Some(Duration::ZERO);
    };
    let date = http_date(response, header::DATE).unwrap_or(response_time);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// A header holding an HTTP date, parsed.
pub fn http_date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    headers.get(name)?.to_str().ok().and_then(|v| httpdate::parse_http_date(v).ok())
}

/// The names a response's `Vary` lists, lower-cased.
pub fn vary_names(response: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}

/// An age that makes any response stale: what an unreadable `Age` means.
const INVALID_AGE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The age a response had when it arrived (RFC 9111 §4.2.3:
/// `corrected_initial_age`). An `Age` that is not one field of digits makes
/// the response stale: a list (`0, 7200`, two hops' ages) is read the
/// conservative way, not by its first member as §5.1 suggests, so a copy
/// one hop calls old is never served as fresh (docs/cache.md#conformance).
pub fn initial_age(response: &HeaderMap, request_time: SystemTime, response_time: SystemTime) -> Duration {
    let date = http_date(response, header::DATE).unwrap_or(response_time);
    let apparent = response_time.duration_since(date).unwrap_or(Duration::ZERO);
    let mut ages = response.get_all(header::AGE).iter();
    let age_value = match (ages.next(), ages.next()) {
        (None, _) => Duration::ZERO,
        (Some(v), None) => {
            let v = v.as_bytes().trim_ascii();
            match std::str::from_utf8(v).ok().filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())) {
                Some(s) => s.parse::<u64>().map_or(INVALID_AGE, |a| Duration::from_secs(a.min(MAX_DELTA))),
                None => INVALID_AGE,
            }
        }
        (Some(_), Some(_)) => INVALID_AGE,
    };
    let delay = response_time.duration_since(request_time).unwrap_or(Duration::ZERO);
    apparent.max(age_value.saturating_add(delay))
}

/// Milliseconds since the epoch (how times travel in stored entries).
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
