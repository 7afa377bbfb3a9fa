//! The HTTP/1 rulebook: every wire rule perfproxy applies, in one place, for
//! both lanes (the byte-level express lane and hyper) and both directions.
//! A lane may differ in *how* it applies a rule (bytes in a buffer, or a
//! `HeaderMap`), never in *which* rule it applies:
//! - field names and what perfproxy does with each ([`field`]): hop-by-hop,
//!   framing, forwarding, the fields the cache and invalidation read;
//! - list values ([`tokens`], quote-aware) and `Content-Length` ([`content_length`]);
//! - status-line validity ([`check_status`]) and response framing ([`response_framing`], RFC 9112 §6.3),
//!   in `framing`; `Host` syntax ([`valid_host`], in `host`); `Date` and request ids (`ids`);
//! - forwarding headers ([`Forwarded`], who may set `X-Forwarded-Host`/`-Proto`: `trusted_proxies`);
//! - the retry policy ([`replayable`]), unsafe methods ([`is_unsafe`]) and
//!   which requests consult the cache ([`consults_cache`]);
//! - why an upstream answer is refused ([`Malformed`], a 502).

use http::Method;

mod framing;
mod host;
mod ids;

pub use framing::{
    bodiless, check_lengths, check_status, chunked_alone, content_length, own_answer_closes, relays_length,
    response_framing, Framing, Lengths, Malformed, MALFORMED_CHUNKS,
};
pub use host::valid_host;
pub use ids::{client_request_id, date, new_request_id, random_u64};

/// The `Via` value perfproxy adds both ways.
pub const VIA: &str = "1.1 perfproxy";
/// The same as a head line, for the lanes that write heads as bytes.
pub const VIA_LINE: &[u8] = b"via: 1.1 perfproxy\r\n";

/// What a field is to perfproxy, by its name (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    /// `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `HTTP2-Settings`,
    /// `Surrogate-Capability` (perfproxy sends its own): never forwarded.
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
        // Surrogates' capabilities (Edge Architecture 1.0): perfproxy sends
        // its own; a client's (or a proxy's in front, which passes clients'
        // on) never, so none can claim perfproxy's. Nothing in front could be
        // targeted anyway: `Surrogate-Control` never leaves perfproxy.
        20 if is("surrogate-capability") => Field::HopByHop,
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
/// `Connection: content-length` must not strip a body's length). Nor are
/// `Host` and `X-Request-Id`, meant for every recipient (RFC 9110 §7.6.1):
/// a `Connection: host` must not send the upstream a request without a
/// `Host`, nor a `Connection: x-request-id` one without the id.
pub fn names_a_field(token: &[u8]) -> bool {
    !matches!(field(token), Field::ContentLength | Field::TransferEncoding | Field::Host | Field::RequestId)
        && !token.eq_ignore_ascii_case(b"close")
        && !token.eq_ignore_ascii_case(b"keep-alive")
}

/// Methods whose requests carry no body here: one that comes with a body
/// takes the general path, which frames it as it came.
pub fn bodyless_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
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
        assert!(chunked_alone([&b"chunked"[..]]) && chunked_alone([&b" Chunked "[..]]));
        assert!(!chunked_alone([&b"gzip, chunked"[..]]) && !chunked_alone([&b"chunked, gzip"[..]]));
        assert!(!chunked_alone([&b"gzip"[..], b"chunked"]), "across fields too");
        assert!(!chunked_alone([&b"chunked, Chunked"[..]]) && !chunked_alone([&b"chunked"[..], b"chunked"]));
        assert!(!chunked_alone([&b""[..]]) && !chunked_alone([&b"identity"[..]]));
        // hyper reads the last field's last element: an empty one is not `chunked`.
        assert!(!chunked_alone([&b" CHUNKED , "[..]]) && !chunked_alone([&b"chunked"[..], b""]));
        assert!(chunked_alone([&b", chunked"[..]]));
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
    fn only_websocket_is_tunnelled_and_101_only_to_it() {
        assert!(tunnelled_upgrade(b"websocket") && tunnelled_upgrade(b"WebSocket"));
        for other in [&b"h2c"[..], b"websocket, h2c", b"h2c, websocket", b"", b"TLS/1.2"] {
            assert!(!tunnelled_upgrade(other), "{other:?}");
        }
        assert!(check_status(101, true).is_ok() && check_status(101, false).is_err());
        assert!(check_status(600, false).is_err() && check_status(204, false).is_ok());
        assert!(!relays_length(204) && !relays_length(100) && !relays_length(304) && relays_length(200));
        assert_eq!(field(b"HTTP2-Settings"), Field::HopByHop);
        assert_eq!(field(b"Surrogate-Capability"), Field::HopByHop);
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
