//! An upstream response head, parsed and rewritten for the client in one
//! pass: status line in HTTP/1.1, hop-by-hop fields out (`Connection` and
//! what it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//! `Upgrade`), the framing kept as the upstream sent it, and perfproxy's
//! fields added (`Via`, `Date` when missing, `Server-Timing`, `X-Cache`).

use std::ops::Range;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::head::{field, FieldCopy, MAX_FIELDS};
use crate::wire::http1::{self, Field, Framing, Malformed};

/// What perfproxy adds to a response head.
#[derive(Debug)]
pub struct Additions<'a> {
    /// The request was a HEAD: no body, whatever the fields say.
    pub head_request: bool,
    pub server_timing: &'a [u8],
    /// The `Date` value, asked for only when the upstream sent none.
    pub date: fn() -> [u8; 29],
    pub x_cache: Option<&'static [u8]>,
    pub cache_status: Option<&'static [u8]>,
    /// Keep every field's place ([`ResponseHead::fields`]), not only the
    /// locations, when the answer carries freshness fields or `rule_route`.
    pub keep_fields: bool,
    /// A `[[cache.rules]]` route: storable without freshness fields.
    pub rule_route: bool,
    /// Fields not relayed (the cache's tag headers).
    pub drop: &'a [HeaderName],
    /// `Surrogate-Control` is for perfproxy: not relayed (the cache is on).
    pub strip_surrogate: bool,
    /// The request's `X-Request-Id` (an upstream's is replaced by it).
    pub request_id: &'a [u8],
    /// Close the client connection after this response.
    pub close: bool,
}

/// A response head the client has been given (in the output buffer).
#[derive(Debug)]
pub struct ResponseHead {
    /// Bytes of the upstream's head.
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The upstream connection can carry another request after the body.
    pub reusable: bool,
    /// Where fields lie in the upstream's head (name, value): `Location`
    /// and `Content-Location` (invalidation after a write), or all of them
    /// when asked for.
    pub fields: Vec<(Range<usize>, Range<usize>)>,
    /// Every field was kept (a pass whose answer may now be storable).
    pub looked_at: bool,
}

impl ResponseHead {
    /// The kept fields as a `HeaderMap` (`buf`: the upstream's head).
    pub fn fields_map(&self, buf: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(self.fields.len());
        for (name, value) in &self.fields {
            if let (Ok(n), Ok(v)) =
                (HeaderName::from_bytes(&buf[name.clone()]), HeaderValue::from_bytes(&buf[value.clone()]))
            {
                h.append(n, v);
            }
        }
        h
    }
}

/// `Via` ([`http1::VIA_LINE`]) and the start of `Server-Timing`, written as one.
const VIA_THEN_TIMING: &[u8] = b"via: 1.1 perfproxy\r\nserver-timing: ";

/// Adds a field to a client head already ended by its blank line in `out`.
pub fn add_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    debug_assert!(out.ends_with(b"\r\n\r\n"), "a whole head");
    out.truncate(out.len() - 2);
    field(out, name, value);
    out.extend_from_slice(b"\r\n");
}

/// How far an upstream response head got.
#[derive(Debug)]
pub enum Parsed {
    Partial,
    /// A 1xx other than 101, this many bytes: skipped.
    Interim(usize),
    Complete(ResponseHead),
}

/// Parses the upstream head at the start of `buf`; when complete, writes
/// the client's head to `out`.
pub fn parse(buf: &[u8], add: &Additions<'_>, out: &mut Vec<u8>) -> Result<Parsed, Malformed> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut raw);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(_) => return Err(Malformed("unparsable head")),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err(Malformed("unparsable head"));
    };
    // The express lane forwards no upgrade: a 101 is malformed here.
    http1::check_status(status, false)?;
    if (100..200).contains(&status) {
        return Ok(Parsed::Interim(len));
    }
    // First pass: framing and the fields `Connection` names; each field's
    // kind is kept for the second.
    let (mut close, mut has_date, mut freshness, mut encoded) = (false, false, false, false);
    let mut lengths = http1::Lengths::default();
    let mut named: Vec<&[u8]> = Vec::new();
    let mut kinds = [Field::Other; MAX_FIELDS];
    for (h, kind) in resp.headers.iter().zip(kinds.iter_mut()) {
        *kind = http1::field(h.name.as_bytes());
        match *kind {
            Field::ContentLength => lengths.add(h.value)?,
            Field::Freshness => freshness = true,
            Field::Connection => {
                for t in http1::tokens(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if http1::names_a_field(t) {
                        named.push(t);
                    }
                }
            }
            Field::TransferEncoding => encoded = true,
            Field::Date => has_date = true,
            _ => {}
        }
    }
    // RFC 9112 §6.1: an HTTP/1.0 message's framing is faulty with it (hyper refuses it too).
    if encoded && version == 0 {
        return Err(Malformed("Transfer-Encoding in an HTTP/1.0 answer"));
    }
    let transfer_encoding = encoded.then(|| {
        let fields = resp.headers.iter().zip(&kinds);
        http1::chunked_alone(fields.filter(|(_, k)| **k == Field::TransferEncoding).map(|(h, _)| h.value))
    });
    let length = lengths.0;
    // A pass's answer is looked at (is it storable now?) only when it could be.
    let keep_all = add.keep_fields && (freshness || add.rule_route);
    let framing = http1::response_framing(add.head_request, status, transfer_encoding, length)?;
    // Both framings: read as chunked, the length dropped, the connection not reused.
    let reusable = version == 1 && !close && framing != Framing::Close && !(encoded && length.is_some());

    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut fields = Vec::new();
    // Where a part of the head (a field's name or value) lies in `buf`.
    let at = |part: &[u8]| {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + part.len()
    };
    let mut copy = FieldCopy::new(buf);
    // One `Content-Length` at most (repeats were checked equal), none on a 204 or 1xx.
    let mut length_relayed = !http1::relays_length(status);
    for (h, &kind) in resp.headers.iter().zip(kinds.iter()) {
        let n = h.name.as_bytes();
        let dropped = match kind {
            // Written below as hyper writes it (only `chunked` passes the checks).
            Field::TransferEncoding => true,
            Field::ContentLength => encoded || std::mem::replace(&mut length_relayed, true),
            k => k.is_hop_by_hop(),
        };
        if dropped || named.iter().any(|t| t.eq_ignore_ascii_case(n)) {
            continue;
        }
        if keep_all || kind == Field::Location {
            fields.push((at(n), at(h.value)));
        }
        // Kept for the cache, not relayed: an upstream's `X-Cache` where
        // perfproxy's replaces it (its `Cache-Status` entries go on, before
        // perfproxy's: RFC 9211), the tag headers, `Surrogate-Control`.
        let unrelayed = match kind {
            Field::CacheOutcome => add.x_cache.is_some() && n.eq_ignore_ascii_case(b"x-cache"),
            Field::Other | Field::ContentType => add.drop.iter().any(|d| d.as_str().as_bytes().eq_ignore_ascii_case(n)),
            Field::Freshness => add.strip_surrogate && n.eq_ignore_ascii_case(b"surrogate-control"),
            Field::RequestId => true,
            _ => false,
        };
        if !unrelayed {
            copy.push(out, at(n), at(h.value));
        }
    }
    copy.flush(out);
    // perfproxy's fields in few writes: this runs on every answer.
    if has_date {
        out.extend_from_slice(VIA_THEN_TIMING);
    } else {
        out.extend_from_slice(http1::VIA_LINE);
        field(out, b"date", &(add.date)());
        out.extend_from_slice(b"server-timing: ");
    }
    out.extend_from_slice(add.server_timing);
    out.extend_from_slice(b"\r\nx-request-id: ");
    out.extend_from_slice(add.request_id);
    out.extend_from_slice(b"\r\n");
    if let Some(x) = add.x_cache {
        field(out, b"x-cache", x);
    }
    if let Some(s) = add.cache_status {
        field(out, b"cache-status", s);
    }
    if matches!(framing, Framing::Chunked | Framing::Close) {
        // A close-delimited body is relayed chunked too (`Conn::relay`), as
        // hyper does: the client's connection outlives the upstream's.
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if add.close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Parsed::Complete(ResponseHead { len, status, framing, reusable, fields, looked_at: keep_all }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_then_timing_is_the_via_line_then_server_timing() {
        assert_eq!(VIA_THEN_TIMING, [http1::VIA_LINE, b"server-timing: "].concat());
    }

    fn add(head_request: bool) -> Additions<'static> {
        Additions {
            head_request,
            server_timing: b"upstream;dur=0.1",
            date: || *b"Fri, 27 Nov 2026 18:00:00 GMT",
            x_cache: Some(b"BYPASS"),
            cache_status: None,
            keep_fields: false,
            rule_route: false,
            drop: &[],
            strip_surrogate: false,
            request_id: b"rid-1",
            close: false,
        }
    }

    fn rewrite(raw: &str, head_request: bool) -> (ResponseHead, String) {
        let mut out = Vec::new();
        let Parsed::Complete(head) = parse(raw.as_bytes(), &add(head_request), &mut out).unwrap() else {
            panic!("incomplete")
        };
        (head, String::from_utf8(out).unwrap())
    }

    #[test]
    fn hop_by_hop_fields_go_and_perfproxys_come() {
        let (head, out) = rewrite(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
             Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nETag: \"a\"\r\n\r\nhello",
            false,
        );
        assert_eq!((head.status, head.framing, head.reusable), (200, Framing::Length(5), true));
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"a\"\r\nvia: 1.1 perfproxy\r\n\
             date: Fri, 27 Nov 2026 18:00:00 GMT\r\nserver-timing: upstream;dur=0.1\r\nx-request-id: rid-1\r\n\
             x-cache: BYPASS\r\n\r\n"
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let (h, out) = rewrite("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n", false);
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, false), "both framings: read as chunked, not reused");
        assert!(out.contains("transfer-encoding: chunked") && !out.contains("Content-Length"));
        let (h, out) = rewrite("HTTP/1.1 200 OK\r\nTransfer-Encoding:  CHUNKED \r\n\r\n", false);
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, true));
        assert_eq!(out.to_ascii_lowercase().matches("transfer-encoding").count(), 1, "{out}");
        assert!(out.contains("transfer-encoding: chunked\r\n"), "written as hyper writes it: {out}");
        let (h, out) = rewrite("HTTP/1.1 200 OK\r\nContent-Length: 9\r\nDate: x\r\n\r\n", true);
        assert_eq!(h.framing, Framing::Empty);
        assert!(out.contains("Content-Length: 9") && !out.contains("date: Fri"));
        let (h, out) = rewrite("HTTP/1.0 200 OK\r\n\r\n", false);
        assert_eq!((h.framing, h.reusable), (Framing::Close, false));
        // Re-framed chunked for the client, whose connection goes on.
        assert!(out.contains("transfer-encoding: chunked\r\n") && !out.contains("connection: close"), "{out}");
        let (h, out) = rewrite("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false);
        assert_eq!(h.framing, Framing::Empty);
        assert!(!out.to_ascii_lowercase().contains("content-length"), "{out}");
        let (_, out) = rewrite("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", false);
        assert_eq!(out.matches("Content-Length: 2").count(), 1, "{out}");
        let (h, _) = rewrite("HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n", false);
        assert_eq!((h.framing, h.reusable), (Framing::Empty, false));
        assert!(matches!(
            parse(b"HTTP/1.1 103 Early\r\n\r\nHTTP/1.1", &add(false), &mut Vec::new()),
            Ok(Parsed::Interim(22))
        ));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 101 S\r\n\r\n",
            "HTTP/1.1 099 Weird\r\n\r\n",
            "HTTP/1.1 600 Odd\r\n\r\n",
            "HTTP/1.1 000 Zero\r\n\r\n",
            "nonsense\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(parse(bad.as_bytes(), &add(false), &mut Vec::new()).is_err(), "{bad}");
        }
    }
}
