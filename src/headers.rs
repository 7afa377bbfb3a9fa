//! Header hygiene for both directions (SPEC §2): hop-by-hop headers out
//! (`Connection` and every header it names, `Keep-Alive`, `Proxy-Connection`,
//! `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`), forwarding headers in
//! (`X-Forwarded-For` appended, `X-Forwarded-Proto`/`-Host` kept when an
//! ingress in front already set them, `Via`). Headers are edited in place;
//! the request's framing is left to hyper.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const VIA_VALUE: HeaderValue = HeaderValue::from_static("1.1 perfproxy");
const HTTP: HeaderValue = HeaderValue::from_static("http");

/// `upstream;dur=<ms>` since a request went upstream, to 0.1 ms, rendered
/// on the stack (no `fmt` machinery: this runs on every response).
pub struct ServerTiming {
    buf: [u8; 48],
    len: usize,
}

impl ServerTiming {
    pub fn since(sent: std::time::Instant) -> ServerTiming {
        let tenths = (sent.elapsed().as_micros() / 100).min(u128::from(u64::MAX)) as u64;
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

/// The `Upgrade` a client asked for, when it is a real upgrade handshake
/// (`Connection: upgrade` and an `Upgrade` header), e.g. a WebSocket.
pub fn upgrade_request(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(header::UPGRADE)?;
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade")).then(|| upgrade.clone())
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The headers this module acts on, found in one pass over a message's
/// names (comparing standard names is an integer compare, so a message is
/// hashed only for the headers it actually has).
#[derive(Default)]
struct Present {
    /// Hop-by-hop headers other than `Connection`, by name.
    hop: Vec<&'static HeaderName>,
    connection: bool,
    content_length: bool,
    expect: bool,
    forwarded_for: bool,
    forwarded_proto: bool,
    forwarded_host: bool,
}

static HOP_BY_HOP: [&HeaderName; 6] =
    [&KEEP_ALIVE, &PROXY_CONNECTION, &header::TE, &header::TRAILER, &header::TRANSFER_ENCODING, &header::UPGRADE];

impl Present {
    fn scan(headers: &HeaderMap) -> Present {
        let mut p = Present::default();
        for name in headers.keys() {
            if name == header::CONNECTION {
                p.connection = true;
            } else if name == header::CONTENT_LENGTH {
                p.content_length = true;
            } else if name == header::EXPECT {
                p.expect = true;
            } else if name == X_FORWARDED_FOR {
                p.forwarded_for = true;
            } else if name == X_FORWARDED_PROTO {
                p.forwarded_proto = true;
            } else if name == X_FORWARDED_HOST {
                p.forwarded_host = true;
            } else if let Some(hop) = HOP_BY_HOP.iter().find(|h| **h == name) {
                if !p.hop.contains(hop) {
                    p.hop.push(hop);
                }
            }
        }
        p
    }
}

/// Removes every hop-by-hop header, including those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let present = Present::scan(headers);
    strip(headers, &present);
}

fn strip(headers: &mut HeaderMap, present: &Present) {
    if present.connection {
        // `keep-alive` and `close` are the usual tokens: neither names a
        // header beyond those removed anyway.
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in &present.hop {
        headers.remove(*name);
    }
}

/// Prepares a client's request headers for the upstream: hop-by-hop and
/// framing headers out (hyper frames the body it actually sends), forwarding
/// headers in. `client_ip` is the peer address, rendered once per connection.
pub fn prepare_request(headers: &mut HeaderMap, client_ip: &HeaderValue, upgrade: Option<HeaderValue>) {
    let present = Present::scan(headers);
    strip(headers, &present);
    if present.content_length {
        headers.remove(header::CONTENT_LENGTH);
    }
    if present.expect {
        headers.remove(header::EXPECT);
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
    if !present.forwarded_proto {
        headers.insert(X_FORWARDED_PROTO.clone(), HTTP);
    }
    if !present.forwarded_host {
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
    }
    headers.append(header::VIA, VIA_VALUE);
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

/// Prepares an upstream response for the client. A `Content-Length` is kept
/// (HEAD and 304 answers need it) unless the upstream also sent
/// `Transfer-Encoding`, in which case the body was read as chunked. Room is
/// made for the headers perfproxy adds (`Via`, `Server-Timing`, `X-Cache`).
pub fn prepare_response(headers: &mut HeaderMap) {
    let present = Present::scan(headers);
    if present.content_length && present.hop.contains(&&header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    strip(headers, &present);
    headers.reserve(3);
    headers.append(header::VIA, VIA_VALUE);
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
        prepare_request(&mut h, &HeaderValue::from_static("127.0.0.9"), None);
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
    fn upgrade_is_kept_only_for_a_real_handshake() {
        let h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let up = upgrade_request(&h).unwrap();
        let mut h2 = h.clone();
        prepare_request(&mut h2, &HeaderValue::from_static("1.2.3.4"), Some(up));
        assert_eq!(h2["upgrade"], "websocket");
        assert_eq!(h2["connection"], "upgrade");
        assert!(upgrade_request(&map(&[("upgrade", "websocket")])).is_none());
    }

    #[test]
    fn response_keeps_length_unless_chunked() {
        let mut h = map(&[("content-length", "10"), ("connection", "close"), ("upgrade", "h2c")]);
        prepare_response(&mut h);
        assert_eq!(h["content-length"], "10");
        assert!(!h.contains_key("connection") && !h.contains_key("upgrade"));
        let mut h = map(&[("content-length", "10"), ("transfer-encoding", "chunked")]);
        prepare_response(&mut h);
        assert!(!h.contains_key("content-length") && !h.contains_key("transfer-encoding"));
    }
}
