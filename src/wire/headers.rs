//! The HTTP/1 rules of [`http1`] applied to `HeaderMap`s (the hyper path):
//! hop-by-hop headers out both ways (`Connection` and every header it names,
//! `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`,
//! `Upgrade`), forwarding headers in (`X-Forwarded-For` appended,
//! `X-Forwarded-Proto`/`-Host` as [`Forwarded`] decides, `Via`). Headers
//! are edited in place; the request's framing is left to hyper.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::wire::http1::{self, Field, Forwarded};

/// `X-Request-Id`: the client's, else perfproxy's own; sent upstream and back.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

fn via() -> HeaderValue {
    HeaderValue::from_static(http1::VIA)
}

/// `upstream;dur=<ms>` since a request went upstream, to 0.1 ms, rendered
/// on the stack (no `fmt` machinery: this runs on every response).
pub struct ServerTiming {
    buf: [u8; 48],
    len: usize,
}

impl ServerTiming {
    pub fn since(sent: std::time::Instant) -> ServerTiming {
        ServerTiming::of(sent.elapsed())
    }

    /// `upstream;dur=` for an upstream that took `took`.
    pub fn of(took: std::time::Duration) -> ServerTiming {
        let tenths = (took.as_micros() / 100).min(u128::from(u64::MAX)) as u64;
        let mut t = ServerTiming { buf: [0; 48], len: 0 };
        let mut whole = itoa::Buffer::new();
        for part in [&b"upstream;dur="[..], whole.format(tenths / 10).as_bytes(), b".", &[b'0' + (tenths % 10) as u8]] {
            t.buf[t.len..t.len + part.len()].copy_from_slice(part);
            t.len += part.len();
        }
        t
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The `Upgrade` a client asked for, when it is a WebSocket handshake
/// (`Connection: upgrade` and `Upgrade: websocket`, the one upgrade
/// perfproxy tunnels: [`http1::tunnelled_upgrade`]). Any other is not an
/// upgrade here: its fields are removed as hop-by-hop.
pub fn upgrade_request(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    let upgrade = upgrades.next().filter(|_| upgrades.next().is_none())?;
    let asked = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    (asked && http1::tunnelled_upgrade(upgrade.as_bytes())).then(|| upgrade.clone())
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers.get_all(header::CONNECTION).iter().flat_map(|v| http1::tokens(v.as_bytes()))
}

/// The headers this module acts on, found in one pass over a message's names.
#[derive(Default)]
struct Present {
    /// Hop-by-hop headers other than `Connection`, by name.
    hop: Vec<HeaderName>,
    connection: bool,
    content_length: bool,
    transfer_encoding: bool,
    expect: bool,
    forwarded_for: bool,
    /// `Forwarded`, `X-Forwarded-Port` and the like, by name.
    forwarded_other: Vec<HeaderName>,
    /// Known fields spelled with `_` (`X_Forwarded_Host`): never forwarded upstream.
    underscored: Vec<HeaderName>,
}

impl Present {
    fn scan(headers: &HeaderMap) -> Present {
        let mut p = Present::default();
        for name in headers.keys() {
            match http1::request_field(name.as_str().as_bytes()) {
                Field::Connection => p.connection = true,
                Field::ContentLength => p.content_length = true,
                Field::Expect => p.expect = true,
                Field::ForwardedFor => p.forwarded_for = true,
                Field::ForwardedOther if !p.forwarded_other.contains(name) => p.forwarded_other.push(name.clone()),
                Field::TransferEncoding => {
                    p.transfer_encoding = true;
                    p.hop.push(name.clone());
                }
                Field::Underscored if !p.underscored.contains(name) => p.underscored.push(name.clone()),
                f if f.is_hop_by_hop() && !p.hop.contains(name) => p.hop.push(name.clone()),
                _ => {}
            }
        }
        p
    }
}

fn strip(headers: &mut HeaderMap, present: &Present) {
    if present.connection {
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| http1::names_a_field(t))
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in &present.hop {
        headers.remove(name);
    }
}

/// Prepares a client's request headers for the upstream: hop-by-hop and
/// framing headers out (hyper frames the body it actually sends), forwarding
/// headers in. `client_ip` is the peer address, rendered once per
/// connection; `trusted_peer` says whether it is in `trusted_proxies`.
pub fn prepare_request(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    trusted_peer: bool,
    tls: bool,
    upgrade: Option<HeaderValue>,
) {
    let present = Present::scan(headers);
    strip(headers, &present);
    if present.content_length {
        headers.remove(header::CONTENT_LENGTH);
    }
    if present.expect {
        headers.remove(header::EXPECT);
    }
    if !trusted_peer {
        for name in &present.forwarded_other {
            headers.remove(name);
        }
    }
    for name in &present.underscored {
        headers.remove(name);
    }
    // Up to five inserts below: grow the map at most once.
    headers.reserve(5);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    if present.forwarded_for {
        append_forwarded_for(headers, client_ip);
    } else {
        headers.insert(X_FORWARDED_FOR.clone(), client_ip.clone());
    }
    let empty = HeaderValue::from_static("");
    let host = headers.get(header::HOST).unwrap_or(&empty);
    let forwarded = Forwarded::decide(
        trusted_peer,
        tls,
        host.as_bytes(),
        headers.get(&X_FORWARDED_HOST).map(HeaderValue::as_bytes),
        headers.get(&X_FORWARDED_PROTO).map(HeaderValue::as_bytes),
    );
    let value = |v: &[u8]| HeaderValue::from_bytes(v).expect("bytes of a header value are a header value");
    let (fwd_host, fwd_proto) = (value(forwarded.host), value(forwarded.proto));
    headers.insert(X_FORWARDED_HOST.clone(), fwd_host);
    headers.insert(X_FORWARDED_PROTO.clone(), fwd_proto);
    headers.append(header::VIA, via());
}

/// HTTP/2 clients may send each cookie in a field of its own (RFC 9113
/// §8.2.3); HTTP/1.1 servers expect one `Cookie` field, so they are joined
/// with "; " before the request goes on as HTTP/1.1.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else { return };
    let mut joined = first.as_bytes().to_vec();
    for more in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(more.as_bytes());
    }
    let value = HeaderValue::from_bytes(&joined).expect("header values joined by \"; \" are a header value");
    headers.insert(header::COOKIE, value);
}

/// What the cache keys a prepared request by: the forwarding values it sends.
pub fn forwarded_sent(headers: &HeaderMap) -> Forwarded<'_> {
    let get = |n: &HeaderName| headers.get(n).map(HeaderValue::as_bytes);
    // Prepared headers carry exactly the values sent: take them as they are.
    Forwarded::decide(true, false, get(&header::HOST).unwrap_or(b""), get(&X_FORWARDED_HOST), get(&X_FORWARDED_PROTO))
}

fn append_forwarded_for(headers: &mut HeaderMap, client_ip: &HeaderValue) {
    let mut existing = headers.get_all(&X_FORWARDED_FOR).iter();
    let Some(first) = existing.next() else {
        headers.insert(X_FORWARDED_FOR.clone(), client_ip.clone());
        return;
    };
    let mut joined = Vec::with_capacity(first.len() + client_ip.len() + 16);
    joined.extend_from_slice(first.as_bytes());
    for v in existing {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(client_ip.as_bytes());
    let value = HeaderValue::from_bytes(&joined).expect("joined valid header values stay valid");
    headers.insert(X_FORWARDED_FOR.clone(), value);
}

/// How an upstream response's body is delimited ([`http1::response_framing`]
/// on a `HeaderMap`, before [`prepare_response`] strips the framing fields).
/// A malformed `Content-Length` is refused here even where hyper would not
/// read the body (HEAD, 304).
pub fn response_framing(
    headers: &HeaderMap,
    head_request: bool,
    status: u16,
) -> Result<http1::Framing, http1::Malformed> {
    let codings = headers.get_all(header::TRANSFER_ENCODING);
    let te = headers
        .contains_key(header::TRANSFER_ENCODING)
        .then(|| http1::chunked_alone(codings.iter().map(HeaderValue::as_bytes)));
    let length = http1::check_lengths(headers.get_all(header::CONTENT_LENGTH).iter().map(HeaderValue::as_bytes))?;
    http1::response_framing(head_request, status, te, length)
}

/// The size of a response head as written on the wire, about (one space
/// after each colon; the reason phrase counted from the status's own):
/// what an upstream head is held to (`max_header_bytes`) once hyper has
/// parsed it, as the express lane holds the bytes it read.
pub fn head_len(status_reason: usize, headers: &HeaderMap) -> usize {
    let fields: usize = headers.iter().map(|(n, v)| n.as_str().len() + 2 + v.len() + 2).sum();
    "HTTP/1.1 200 \r\n".len() + status_reason + fields + 2
}

/// An upstream's trailer fields as a client may get them (HTTP/2 clients
/// do): without the connection's fields (and those `Connection` names),
/// which HTTP/2 refuses (the stream was reset after its data), nor the
/// ones a trailer may not carry (RFC 9110 §6.5.1: framing, routing, the
/// content's own fields).
pub fn strip_trailers(trailers: &mut HeaderMap) {
    let named: Vec<HeaderName> = trailers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| http1::tokens(v.as_bytes()))
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect();
    let never = [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::UPGRADE,
        header::TRAILER,
        header::HOST,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_TYPE,
        header::CONTENT_RANGE,
    ];
    for name in never.into_iter().chain(named) {
        trailers.remove(name);
    }
    trailers.remove("keep-alive");
    trailers.remove("proxy-connection");
}

/// Prepares an upstream response for the client. A `Content-Length` is kept
/// once (HEAD and 304 answers need it; repeats were checked equal) unless
/// the upstream also sent `Transfer-Encoding`, in which case the body was
/// read as chunked, or the status has no length ([`http1::relays_length`]).
/// Room is made for the headers perfproxy adds (`Via`, `Server-Timing`,
/// `X-Cache`).
pub fn prepare_response(headers: &mut HeaderMap, status: u16) {
    let present = Present::scan(headers);
    if present.content_length {
        if present.transfer_encoding || !http1::relays_length(status) {
            headers.remove(header::CONTENT_LENGTH);
        } else if let Some(one) = headers.get(header::CONTENT_LENGTH).cloned() {
            headers.insert(header::CONTENT_LENGTH, one);
        }
    }
    strip(headers, &present);
    headers.reserve(3);
    headers.append(header::VIA, via());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn http2_cookie_fields_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2; c=3"]);
        let mut one = HeaderMap::new();
        one.insert(header::COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut one);
        assert_eq!(one[header::COOKIE], "a=1");
    }

    #[test]
    fn request_loses_hop_by_hop_and_gains_forwarding() {
        let mut h = map(&[
            ("host", "app.example"),
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("content-length", "5"),
            ("proxy-connection", "keep-alive"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("accept", "*/*"),
        ]);
        prepare_request(&mut h, &HeaderValue::from_static("127.0.0.9"), false, false, None);
        for gone in
            ["connection", "x-secret", "keep-alive", "te", "transfer-encoding", "content-length", "proxy-connection"]
        {
            assert!(!h.contains_key(gone), "{gone} kept");
        }
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example");
        assert_eq!(h["via"], "1.1 perfproxy");
        assert_eq!(h["accept"], "*/*");
    }

    #[test]
    fn forwarding_headers_are_kept_from_trusted_peers_only() {
        let sent = [("host", "shop"), ("x-forwarded-host", "evil"), ("x-forwarded-proto", "https")];
        let mut h = map(&sent);
        prepare_request(&mut h, &HeaderValue::from_static("203.0.113.9"), false, false, None);
        assert_eq!(
            (&h["x-forwarded-host"], &h["x-forwarded-proto"]),
            (&"shop".parse().unwrap(), &"http".parse().unwrap())
        );
        let mut h = map(&sent);
        h.append("x-forwarded-host", HeaderValue::from_static("second"));
        prepare_request(&mut h, &HeaderValue::from_static("10.0.0.9"), true, false, None);
        assert_eq!(h.get_all("x-forwarded-host").iter().collect::<Vec<_>>(), ["evil"]);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!((forwarded_sent(&h).host, forwarded_sent(&h).proto), (&b"evil"[..], &b"https"[..]));
    }

    #[test]
    fn upgrade_is_kept_only_for_a_real_handshake() {
        let h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let up = upgrade_request(&h).unwrap();
        let mut h2 = h.clone();
        prepare_request(&mut h2, &HeaderValue::from_static("1.2.3.4"), false, false, Some(up));
        assert_eq!(h2["upgrade"], "websocket");
        assert_eq!(h2["connection"], "upgrade");
        assert!(upgrade_request(&map(&[("upgrade", "websocket")])).is_none());
        let h2c = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
        ]);
        assert!(upgrade_request(&h2c).is_none());
        let mut h = h2c.clone();
        prepare_request(&mut h, &HeaderValue::from_static("1.2.3.4"), false, false, None);
        for gone in ["upgrade", "http2-settings", "connection"] {
            assert!(!h.contains_key(gone), "{gone} forwarded");
        }
    }

    #[test]
    fn response_keeps_length_unless_chunked() {
        let mut h = map(&[("content-length", "10"), ("connection", "close"), ("upgrade", "h2c")]);
        prepare_response(&mut h, 200);
        assert_eq!(h["content-length"], "10");
        assert!(!h.contains_key("connection") && !h.contains_key("upgrade"));
        let mut h = map(&[("content-length", "10"), ("content-length", "10")]);
        prepare_response(&mut h, 200);
        assert_eq!(h.get_all("content-length").iter().count(), 1);
        let mut h = map(&[("content-length", "0")]);
        prepare_response(&mut h, 204);
        assert!(!h.contains_key("content-length"));
        let mut h = map(&[("content-length", "10"), ("transfer-encoding", "chunked")]);
        prepare_response(&mut h, 200);
        assert!(!h.contains_key("content-length") && !h.contains_key("transfer-encoding"));
    }
}
