//! The HTTP/1 rulebook: every wire rule perfproxy applies, in one place, for
//! both lanes (the byte-level express lane and hyper) and both directions.
//! A lane may differ in *how* it applies a rule (bytes in a buffer, or a
//! `HeaderMap`), never in *which* rule it applies:
//! - field names and what perfproxy does with each ([`field`]): hop-by-hop,
//!   framing, forwarding, the fields the cache and invalidation read;
//! - list values ([`tokens`], quote-aware) and `Content-Length` ([`content_length`]);
//! - status-line validity ([`valid_status`]) and response framing ([`response_framing`], RFC 9112 §6.3);
//! - forwarding headers ([`Forwarded`], who may set `X-Forwarded-Host`/`-Proto`: `trusted_proxies`);
//! - the retry policy ([`replayable`]), unsafe methods ([`is_unsafe`]) and
//!   which requests consult the cache ([`consults_cache`]);
//! - why an upstream answer is refused ([`Malformed`], a 502).

use http::Method;

/// The `Via` value perfproxy adds both ways.
pub const VIA: &str = "1.1 perfproxy";
/// The same as a head line, for the lanes that write heads as bytes.
pub const VIA_LINE: &[u8] = b"via: 1.1 perfproxy\r\n";

thread_local! {
    /// The `Date` value, rendered once a second per worker.
    static DATE_NOW: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// The current `Date` value (IMF-fixdate, always 29 bytes): every answer's
/// own, never a stored one.
pub fn date() -> [u8; 29] {
    let now = std::time::SystemTime::now();
    let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_NOW.with_borrow_mut(|(at, text)| {
        if *at != secs || text.len() != 29 {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        text.as_bytes().try_into().expect("an IMF-fixdate is 29 bytes")
    })
}

thread_local! {
    /// The state of this thread's request-id generator (splitmix64),
    /// seeded once from the process's random hasher keys.
    static ID_STATE: std::cell::Cell<u64> = std::cell::Cell::new({
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id().into());
        h.finish()
    });
}

/// 64 random bits from this thread's generator (splitmix64): request ids
/// and sampling decisions, not secrets.
pub fn random_u64() -> u64 {
    ID_STATE.with(|s| {
        let mut z = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// A new `X-Request-Id`: 128 random bits as 32 lowercase hex digits.
pub fn new_request_id() -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(16).zip([random_u64(), random_u64()]) {
        chunk[..8].copy_from_slice(&hex8((word >> 32) as u32));
        chunk[8..].copy_from_slice(&hex8(word as u32));
    }
    out
}

/// `x` as 8 lowercase hex digits, most significant first: its nibbles
/// spread one per byte, then turned to ASCII all at once (a byte of 10 or
/// more gets `'a' - '0' - 10` more).
fn hex8(x: u32) -> [u8; 8] {
    let x = u64::from(x);
    let mut v = ((x & 0xffff_0000) << 16) | (x & 0xffff);
    v = ((v & 0x0000_ff00_0000_ff00) << 8) | (v & 0x0000_00ff_0000_00ff);
    v = ((v & 0x00f0_00f0_00f0_00f0) << 4) | (v & 0x000f_000f_000f_000f);
    let letters = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (v + 0x3030_3030_3030_3030 + letters * 39).to_be_bytes()
}

/// What a field is to perfproxy, by its name (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    /// `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`: never forwarded.
    HopByHop,
    /// `Upgrade`: hop-by-hop, except in a tunnelled handshake.
    Upgrade,
    Expect,
    ForwardedFor,
    ForwardedProto,
    ForwardedHost,
    /// `Forwarded`, `X-Forwarded-Port`/`-Scheme`/`-Ssl`/`-Prefix`/`-Server`,
    /// `X-Host`, `X-Original-URL`, `X-Rewrite-URL`: kept only from trusted
    /// proxies (frameworks build URLs or pick routes from them too).
    ForwardedOther,
    Range,
    Date,
    /// `Cache-Control`, `Expires`, `Surrogate-Control`: what makes a response storable.
    Freshness,
    /// `X-Cache`, `Cache-Status`: perfproxy's own on a cache's answers.
    CacheOutcome,
    /// `Location` or `Content-Location`: invalidated after a write.
    Location,
    /// `X-Request-Id`: the client's is kept when it is usable
    /// ([`client_request_id`]; else perfproxy makes one), sent upstream
    /// once and returned; an upstream's is replaced.
    RequestId,
    /// `traceparent` (W3C Trace Context): with tracing on, replaced by
    /// perfproxy's own upstream; relayed as it came otherwise.
    TraceParent,
    /// `Pragma`, `Authorization`, `If-*`: in a request, they change how the
    /// cache answers it (with `Cache-Control`, a [`Field::Freshness`]).
    Lookup,
    /// `Content-Type`: a gRPC request (`application/grpc*`) is the general
    /// path's (`upstream_protocol`); relayed as any other field.
    ContentType,
    /// One of the names above spelled with `_` for `-`: never forwarded in
    /// a request (a CGI-style backend would read it as that field); only
    /// [`request_field`] says so.
    Underscored,
    Other,
}

impl Field {
    /// Never forwarded as received (`Connection`-named fields aside).
    pub fn is_hop_by_hop(self) -> bool {
        matches!(self, Field::Connection | Field::HopByHop | Field::Upgrade | Field::TransferEncoding)
    }
}

/// The longest client `X-Request-Id` kept (longer ones are replaced).
pub const MAX_REQUEST_ID: usize = 128;

/// The client's `X-Request-Id` among the values it sent, if perfproxy keeps
/// it: exactly one field, 1 to [`MAX_REQUEST_ID`] bytes of visible ASCII.
/// Anything else (none, repeated, empty, too long, spaces, control bytes) is
/// replaced by perfproxy's own id, so exactly one reaches the upstream and
/// no client value can bloat or forge an answer or a log line.
pub fn client_request_id<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let first = values.next()?;
    let usable = !first.is_empty() && first.len() <= MAX_REQUEST_ID && first.iter().all(u8::is_ascii_graphic);
    (usable && values.next().is_none()).then_some(first)
}

/// Whether a `Host` value (or an HTTP/2 `:authority`) is `uri-host [":"
/// port]` (RFC 9112 §3.2, RFC 3986 §3.2.2): a registered name of
/// unreserved characters, `%XX` escapes and sub-delimiters other than `,`
/// (a list is not a host), or a bracketed IP literal; then, optionally, a
/// port of 1 to 5 digits from 1 to 65535. No userinfo, no path, no spaces,
/// and never empty (an http URI's host is not: RFC 9110 §4.2.1).
pub fn valid_host(value: &[u8]) -> bool {
    if value.first() == Some(&b'[') {
        return valid_ip_literal_host(value);
    }
    // One pass, a table lookup a byte (this runs on every request).
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if REG_NAME[usize::from(b)] {
            i += 1;
            continue;
        }
        match b {
            b'%' if value.get(i + 1..i + 3).is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) => i += 3,
            b':' => return i > 0 && valid_port(&value[i + 1..]),
            _ => return false,
        }
    }
    i > 0
}

/// The bytes of a registered name (RFC 3986 §3.2.2): unreserved and
/// sub-delimiters but `,` (a list is not a host); `%` escapes apart.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b';' | b'='
            );
        b += 1;
    }
    table
};

/// A port: 1 to 5 digits, 1 to 65535.
fn valid_port(p: &[u8]) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.iter().all(u8::is_ascii_digit)
        && (1..=65535).contains(&p.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
}

/// `[` IP-literal `]` and an optional port: an IPv6 address, or IPvFuture
/// (`v` HEXDIG+ "." then unreserved, sub-delimiters or `:`).
fn valid_ip_literal_host(value: &[u8]) -> bool {
    let Some(end) = value.iter().position(|&b| b == b']') else { return false };
    let (inner, rest) = (&value[1..end], &value[end + 1..]);
    let port_ok = match rest {
        [] => true,
        [b':', port @ ..] => valid_port(port),
        _ => false,
    };
    let literal_ok = match inner {
        [b'v' | b'V', rest @ ..] => rest.iter().position(|&b| b == b'.').is_some_and(|dot| {
            let (version, address) = (&rest[..dot], &rest[dot + 1..]);
            !version.is_empty()
                && version.iter().all(u8::is_ascii_hexdigit)
                && !address.is_empty()
                && address.iter().all(|&b| REG_NAME[usize::from(b)] || b == b':')
        }),
        _ => std::str::from_utf8(inner).is_ok_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
    };
    port_ok && literal_ok
}

/// Whether an `Upgrade` value asks for the one protocol perfproxy tunnels:
/// WebSocket. Any other (`h2c` above all: an upgraded connection would
/// reach the upstream raw, past every rule here) is removed from the
/// forwarded request, with `HTTP2-Settings`.
pub fn tunnelled_upgrade(value: &[u8]) -> bool {
    let mut protocols = tokens(value);
    protocols.next().is_some_and(|p| p.eq_ignore_ascii_case(b"websocket")) && protocols.next().is_none()
}

/// Classifies a field name.
pub fn field(name: &[u8]) -> Field {
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    match name.len() {
        2 if is("te") => Field::HopByHop,
        4 if is("host") => Field::Host,
        4 if is("date") => Field::Date,
        5 if is("range") => Field::Range,
        6 if is("pragma") => Field::Lookup,
        6 if is("expect") => Field::Expect,
        7 if is("upgrade") => Field::Upgrade,
        7 if is("trailer") => Field::HopByHop,
        7 if is("expires") => Field::Freshness,
        7 if is("x-cache") => Field::CacheOutcome,
        8 if is("location") => Field::Location,
        8 if is("if-match") || is("if-range") => Field::Lookup,
        9 if is("forwarded") => Field::ForwardedOther,
        10 if is("connection") => Field::Connection,
        11 if is("traceparent") => Field::TraceParent,
        12 if is("cache-status") => Field::CacheOutcome,
        12 if is("x-request-id") => Field::RequestId,
        12 if is("content-type") => Field::ContentType,
        13 if is("cache-control") => Field::Freshness,
        13 if is("authorization") || is("if-none-match") => Field::Lookup,
        10 if is("keep-alive") => Field::HopByHop,
        14 if is("content-length") => Field::ContentLength,
        15 if is("x-forwarded-for") => Field::ForwardedFor,
        15 if is("x-forwarded-ssl") => Field::ForwardedOther,
        16 if is("proxy-connection") => Field::HopByHop,
        // Only meaningful beside `Upgrade: h2c`, which is never forwarded.
        14 if is("http2-settings") => Field::HopByHop,
        // Frameworks take the URL or host from these (Symfony, IIS, Zend):
        // forwarding headers, kept from trusted proxies only.
        6 if is("x-host") => Field::ForwardedOther,
        14 if is("x-original-url") => Field::ForwardedOther,
        13 if is("x-rewrite-url") => Field::ForwardedOther,
        18 if is("x-forwarded-server") => Field::ForwardedOther,
        16 if is("x-forwarded-host") => Field::ForwardedHost,
        16 if is("content-location") => Field::Location,
        16 if is("x-forwarded-port") => Field::ForwardedOther,
        18 if is("x-forwarded-scheme") || is("x-forwarded-prefix") => Field::ForwardedOther,
        17 if is("transfer-encoding") => Field::TransferEncoding,
        17 if is("surrogate-control") => Field::Freshness,
        17 if is("x-forwarded-proto") => Field::ForwardedProto,
        17 if is("if-modified-since") => Field::Lookup,
        19 if is("if-unmodified-since") => Field::Lookup,
        _ => Field::Other,
    }
}

/// Classifies a request field's name: [`field`], and [`Field::Underscored`]
/// for one of those names spelled with `_` for `-` (`X_Forwarded_Host`,
/// `Content_Length`): backends that read headers as CGI-style variables
/// (Rack, WSGI, PHP) take it for that field, so it is never forwarded
/// (nginx drops every underscored name by default).
// A name is short: a loop beats `contains`' memchr set-up.
#[allow(clippy::manual_contains)]
pub fn request_field(name: &[u8]) -> Field {
    match field(name) {
        // Longer than any name above, or no `_`: an ordinary field.
        Field::Other if name.len() <= 20 && name.iter().any(|&b| b == b'_') => {
            let mut dashed = [0u8; 20];
            for (d, &b) in dashed.iter_mut().zip(name) {
                *d = if b == b'_' { b'-' } else { b };
            }
            match field(&dashed[..name.len()]) {
                Field::Other | Field::ContentType => Field::Other,
                _ => Field::Underscored,
            }
        }
        f => f,
    }
}

/// The elements of a comma-separated list value (RFC 9110 §5.6.1), trimmed,
/// empty ones skipped; commas inside a quoted string do not split.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = value;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let (mut quoted, mut escaped, mut end) = (false, false, rest.len());
        for (i, &b) in rest.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let item = rest[..end].trim_ascii();
        rest = if end < rest.len() { &rest[end + 1..] } else { &[] };
        if !item.is_empty() {
            return Some(item);
        }
    })
}

/// Whether a `Connection` token names a field to remove. `close` and
/// `keep-alive` name no field beyond those removed anyway, and the framing
/// fields are never removed this way: the framing rules decide them (a
/// `Connection: content-length` must not strip a body's length).
pub fn names_a_field(token: &[u8]) -> bool {
    !matches!(field(token), Field::ContentLength | Field::TransferEncoding)
        && !token.eq_ignore_ascii_case(b"close")
        && !token.eq_ignore_ascii_case(b"keep-alive")
}

/// Methods whose requests carry no body here: one that comes with a body
/// takes the general path, which frames it as it came.
pub fn bodyless_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

/// A `Content-Length` value: decimal digits only (RFC 9110 §8.6), at most 18.
pub fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Whether the last transfer coding of a `Transfer-Encoding` value is `chunked`.
pub fn ends_chunked(value: &[u8]) -> bool {
    tokens(value).last().is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
}

/// How many times `chunked` appears in a `Transfer-Encoding` value.
pub fn chunked_count(value: &[u8]) -> usize {
    tokens(value).filter(|t| t.eq_ignore_ascii_case(b"chunked")).count()
}

/// A status an upstream may answer with: three digits from 100 to 599.
pub fn valid_status(code: u16) -> bool {
    (100..=599).contains(&code)
}

/// Checks an upstream answer's status: within 100–599, and a `101` only to
/// a WebSocket upgrade that was forwarded (`upgrade_sent`).
pub fn check_status(code: u16, upgrade_sent: bool) -> Result<(), Malformed> {
    if !valid_status(code) {
        return Err(Malformed("status outside 100-599"));
    }
    if code == 101 && !upgrade_sent {
        return Err(Malformed("101 to a request that asked for no upgrade"));
    }
    Ok(())
}

/// Whether an answer with this status may carry `Content-Length` to the
/// client: never a 1xx or a 204 (RFC 9110 §8.6), which have no body and no
/// length; a HEAD or 304 answer keeps the length it would have had.
pub fn relays_length(status: u16) -> bool {
    status != 204 && !(100..200).contains(&status)
}

/// Why an upstream answer is refused (a 502; the connection is discarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed upstream response: {0}")]
pub struct Malformed(pub &'static str);

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD, 1xx, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Read until the upstream closes.
    Close,
}

/// RFC 9112 §6.3 for a response: `transfer_encoding` is `Some(ends in
/// chunked)` when the field is present; `length` the agreed `Content-Length`.
pub fn response_framing(
    head_request: bool,
    status: u16,
    transfer_encoding: Option<bool>,
    length: Option<u64>,
) -> Framing {
    if bodiless(head_request, status) {
        return Framing::Empty;
    }
    match transfer_encoding {
        Some(true) => Framing::Chunked,
        Some(false) => Framing::Close,
        None => length.map_or(Framing::Close, Framing::Length),
    }
}

/// Whether an answer of perfproxy's own (a 502, a 504) closes the client
/// connection: always when the request carried a body, read or not, so
/// what the client sent after it can never be taken for a request (RFC 9112
/// §9.3; both lanes, whatever they had read when the answer was made).
pub fn own_answer_closes(request_had_body: bool) -> bool {
    request_had_body
}

/// Checks the `Content-Length` fields of an upstream response: digits only,
/// all equal (for HEAD and 304 answers too, which hyper does not read).
pub fn check_lengths<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<Option<u64>, Malformed> {
    let mut length = Lengths::default();
    for v in values {
        length.add(v)?;
    }
    Ok(length.0)
}

/// [`check_lengths`] one field at a time, for a lane that reads the fields once.
#[derive(Debug, Default, Clone, Copy)]
pub struct Lengths(pub Option<u64>);

impl Lengths {
    pub fn add(&mut self, value: &[u8]) -> Result<(), Malformed> {
        let n = content_length(value).ok_or(Malformed("bad Content-Length"))?;
        if self.0.is_some_and(|l| l != n) {
            return Err(Malformed("differing Content-Lengths"));
        }
        self.0 = Some(n);
        Ok(())
    }
}

/// A response that has no body whatever its fields say: to HEAD, 1xx, 204, 304.
pub fn bodiless(head_request: bool, status: u16) -> bool {
    head_request || status == 204 || status == 304 || (100..200).contains(&status)
}

/// A request that may be sent again when a pooled connection closed under
/// it before any answer byte (idempotent methods, as nginx retries).
pub fn replayable(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS)
}

/// A method that may change what the target holds (RFC 9111 §4.4): a
/// successful one invalidates the cache.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// Whether a request is looked up in the cache: GET and HEAD without `Range`.
pub fn consults_cache(method: &Method, range: bool) -> bool {
    matches!(*method, Method::GET | Method::HEAD) && !range
}

/// What `X-Forwarded-Host` and `X-Forwarded-Proto` say upstream: the
/// client's own values when its peer is a trusted proxy (an ingress in
/// front), else perfproxy's view (`Host`; `https` over the TLS listener,
/// else `http`). Exactly one of each is
/// sent, and the cache key carries both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded<'a> {
    pub host: &'a [u8],
    pub proto: &'a [u8],
}

impl<'a> Forwarded<'a> {
    /// `sent_host`/`sent_proto`: the first of each the client sent; `tls`:
    /// the request came over the TLS listener.
    pub fn decide(
        trusted_peer: bool,
        tls: bool,
        host: &'a [u8],
        sent_host: Option<&'a [u8]>,
        sent_proto: Option<&'a [u8]>,
    ) -> Forwarded<'a> {
        let keep = |v: Option<&'a [u8]>| v.filter(|v| trusted_peer && !v.is_empty());
        let own: &'static [u8] = if tls { b"https" } else { b"http" };
        Forwarded { host: keep(sent_host).unwrap_or(host), proto: keep(sent_proto).unwrap_or(own) }
    }

    /// Whether these are perfproxy's own view for `host` (then the cache key needs no more).
    pub fn is_default_for(&self, host: &[u8]) -> bool {
        // The same bytes first: nearly always, and a plain compare.
        self.proto == b"http" && (self.host == host || self.host.eq_ignore_ascii_case(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_lowercase_hex_digits() {
        for x in [0u32, 1, 9, 10, 15, 16, 0xdead_beef, 0x0123_4567, 0x89ab_cdef, u32::MAX] {
            assert_eq!(std::str::from_utf8(&hex8(x)).unwrap(), format!("{x:08x}"));
        }
        let mut seed = 0x9e37_79b9_u32;
        for _ in 0..10_000 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            assert_eq!(std::str::from_utf8(&hex8(seed)).unwrap(), format!("{seed:08x}"));
        }
        let id = new_request_id();
        assert!(id.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)));
        assert_ne!(new_request_id(), id);
    }

    #[test]
    fn field_names_are_classified_ignoring_case_and_exactly() {
        let known = [
            ("te", Field::HopByHop),
            ("host", Field::Host),
            ("content-length", Field::ContentLength),
            ("x-forwarded-for", Field::ForwardedFor),
            ("x-forwarded-scheme", Field::ForwardedOther),
            ("if-unmodified-since", Field::Lookup),
            ("surrogate-control", Field::Freshness),
        ];
        for (name, kind) in known {
            assert_eq!(field(name.as_bytes()), kind, "{name}");
            assert_eq!(field(name.to_ascii_uppercase().as_bytes()), kind, "{name}");
            // One byte off, one byte more or less: another name.
            let mut off = name.as_bytes().to_vec();
            off[name.len() - 1] ^= 1;
            assert_eq!(field(&off), Field::Other, "{name}");
            assert_eq!(field(&name.as_bytes()[..name.len() - 1]), Field::Other, "{name}");
            assert_eq!(field(format!("{name}s").as_bytes()), Field::Other, "{name}");
        }
        // `_` and `^` are tokens whose 0x20 bit folds them elsewhere: never a known name.
        assert_eq!(field(b"content_length"), Field::Other);
        assert_eq!(field(b"x-forwarded-for-a-very-long-name"), Field::Other);
        assert_eq!(field(b""), Field::Other);
    }

    #[test]
    fn lists_split_outside_quotes_only() {
        let t: Vec<&[u8]> = tokens(br#" a, "b,c" ,, d\, e ,"x\"," "#).collect();
        assert_eq!(t, vec![&b"a"[..], br#""b,c""#, b"d\\", b"e", br#""x\",""#]);
        assert_eq!(tokens(b"").count(), 0);
        assert!(ends_chunked(b"gzip, chunked") && !ends_chunked(b"chunked, gzip"));
        assert_eq!(chunked_count(b"chunked, Chunked"), 2);
    }

    #[test]
    fn lengths_are_digits_only() {
        assert_eq!(content_length(b"42"), Some(42));
        for bad in [&b""[..], b"+1", b"-1", b" 1", b"1 ", b"0x1", b"1,1", b"9999999999999999999"] {
            assert_eq!(content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn statuses_and_framing() {
        assert!(valid_status(100) && valid_status(599));
        assert!(!valid_status(99) && !valid_status(600) && !valid_status(0));
        assert_eq!(response_framing(true, 200, Some(true), None), Framing::Empty);
        assert_eq!(response_framing(false, 304, None, Some(5)), Framing::Empty);
        assert_eq!(response_framing(false, 200, Some(true), Some(5)), Framing::Chunked);
        assert_eq!(response_framing(false, 200, Some(false), Some(5)), Framing::Close);
        assert_eq!(response_framing(false, 200, None, Some(5)), Framing::Length(5));
        assert_eq!(response_framing(false, 200, None, None), Framing::Close);
    }

    #[test]
    fn forwarding_headers_come_from_trusted_peers_only() {
        let f = Forwarded::decide(false, false, b"shop", Some(b"evil"), Some(b"https"));
        assert_eq!((f.host, f.proto), (&b"shop"[..], &b"http"[..]));
        assert!(f.is_default_for(b"SHOP"));
        let f = Forwarded::decide(true, false, b"shop", Some(b"evil"), Some(b"https"));
        assert_eq!((f.host, f.proto), (&b"evil"[..], &b"https"[..]));
        assert!(!f.is_default_for(b"shop"));
        let f = Forwarded::decide(true, false, b"shop", None, Some(b""));
        assert_eq!((f.host, f.proto), (&b"shop"[..], &b"http"[..]));
        // Over the TLS listener perfproxy's own view is https; a trusted
        // proxy's word still wins, an untrusted peer's never does.
        let f = Forwarded::decide(false, true, b"shop", None, Some(b"http"));
        assert_eq!(f.proto, &b"https"[..]);
        assert!(!f.is_default_for(b"shop"), "https requests are keyed apart from http ones");
        let f = Forwarded::decide(true, true, b"shop", None, Some(b"http"));
        assert_eq!(f.proto, &b"http"[..]);
    }

    #[test]
    fn hosts_are_uri_host_and_port() {
        for good in
            ["a.example", "a.example:8080", "127.0.0.1:1", "[::1]:65535", "[::1]", "x_y-z~", "%41b", "A", "[v1.x]"]
        {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "user@a.example",
            "a, b",
            "a,b",
            "a.example/x",
            "a.example:0",
            "a.example:65536",
            "a.example:x",
            "a.example:",
            "a.example:123456",
            "a b",
            ":80",
            "[]",
            "[::1",
            "a%4",
            "a\\b",
            "a?b",
            "a#b",
            "",
            "[.]",
            "[%]",
            "[vvv]",
            "[1]",
            "[:]",
            "[a]:80",
            "[v1.]",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn request_ids_are_single_short_and_visible() {
        let one = |v: &[&str]| client_request_id(v.iter().map(|s| s.as_bytes())).map(|v| v.to_vec());
        assert_eq!(one(&["abc-1"]), Some(b"abc-1".to_vec()));
        assert_eq!(one(&["a", "b"]), None);
        assert_eq!(one(&["", "b"]), None);
        assert_eq!(one(&[""]), None);
        assert_eq!(one(&["a b"]), None);
        assert_eq!(one(&["a\"x"]), Some(b"a\"x".to_vec()), "visible ASCII is kept; the text log escapes it");
        assert_eq!(one(&[&"x".repeat(128)]).map(|v| v.len()), Some(128));
        assert_eq!(one(&[&"x".repeat(129)]), None);
    }

    #[test]
    fn only_websocket_is_tunnelled_and_101_only_to_it() {
        assert!(tunnelled_upgrade(b"websocket") && tunnelled_upgrade(b"WebSocket"));
        for other in [&b"h2c"[..], b"websocket, h2c", b"h2c, websocket", b"", b"TLS/1.2"] {
            assert!(!tunnelled_upgrade(other), "{other:?}");
        }
        assert!(check_status(101, true).is_ok() && check_status(101, false).is_err());
        assert!(check_status(600, false).is_err() && check_status(204, false).is_ok());
        assert!(!relays_length(204) && !relays_length(100) && relays_length(304) && relays_length(200));
        assert_eq!(field(b"HTTP2-Settings"), Field::HopByHop);
        for smuggled in ["X_Forwarded_Host", "X-Original_URL", "x_host", "Content_Length", "X_Request_Id"] {
            assert_eq!(request_field(smuggled.as_bytes()), Field::Underscored, "{smuggled}");
            assert_eq!(field(smuggled.as_bytes()), Field::Other, "answers relay them: {smuggled}");
        }
        for plain in ["X_Custom", "my_header", "Content_Type", "x_a_very_long_custom_header_name"] {
            assert_eq!(request_field(plain.as_bytes()), Field::Other, "{plain}");
        }
        assert_eq!(request_field(b"Host"), Field::Host);
    }

    #[test]
    fn the_via_line_says_via() {
        assert_eq!(VIA_LINE, format!("via: {VIA}\r\n").as_bytes());
    }

    #[test]
    fn field_names() {
        assert_eq!(field(b"Content-Length"), Field::ContentLength);
        assert_eq!(field(b"X-FORWARDED-HOST"), Field::ForwardedHost);
        for other in [
            "forwarded",
            "x-forwarded-port",
            "x-forwarded-ssl",
            "x-forwarded-scheme",
            "X-Forwarded-Prefix",
            "X-Forwarded-Server",
            "X-Original-URL",
            "x-rewrite-url",
            "X-Host",
        ] {
            assert_eq!(field(other.as_bytes()), Field::ForwardedOther, "{other}");
        }
        assert!(field(b"keep-alive").is_hop_by_hop() && field(b"Upgrade").is_hop_by_hop());
        assert!(!field(b"x-forwarded-for").is_hop_by_hop());
        for lookup in ["Pragma", "authorization", "If-None-Match", "if-match", "If-Range", "if-modified-since"] {
            assert_eq!(field(lookup.as_bytes()), Field::Lookup, "{lookup}");
        }
        assert_eq!(field(b"If-Unmodified-Since"), Field::Lookup);
        assert_eq!(field(b"X-Request-ID"), Field::RequestId);
        assert_eq!(field(b"TraceParent"), Field::TraceParent);
        let (a, b) = (new_request_id(), new_request_id());
        assert!(a != b && a.iter().all(u8::is_ascii_hexdigit), "{a:?}");
        assert!(replayable(&Method::PUT) && !replayable(&Method::POST));
        assert!(is_unsafe(&Method::PATCH) && !is_unsafe(&Method::GET));
        assert!(consults_cache(&Method::HEAD, false) && !consults_cache(&Method::GET, true));
    }
}
