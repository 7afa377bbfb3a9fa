//! The request's head as it leaves for the upstream: the client's
//! end-to-end fields copied as they came (runs of them in one copy), then
//! perfproxy's forwarding fields (`X-Forwarded-*`, `Via`, `X-Request-Id`,
//! `traceparent`, `Surrogate-Capability`); and the same head as `http`
//! types for what the express lane hands to the shared path.

use std::ops::Range;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Uri, Version};

use super::{RequestHead, Role};
use crate::cache::policy;
use crate::upstream::RequestBody;
use crate::wire::http1::{self, Forwarded};

impl RequestHead {
    /// What `X-Forwarded-Host`/`-Proto` say upstream (see [`Forwarded`]).
    pub fn forwarded<'b>(&self, buf: &'b [u8], trusted_peer: bool, tls: bool) -> Forwarded<'b> {
        let sent = |r: &Option<Range<usize>>| r.clone().map(|r| &buf[r]);
        Forwarded::decide(
            trusted_peer,
            tls,
            &buf[self.host.clone()],
            sent(&self.forwarded_host),
            sent(&self.forwarded_proto),
        )
    }

    /// Writes the head the upstream gets: request line in HTTP/1.1, the
    /// client's end-to-end fields as they came, then `X-Forwarded-For`
    /// (appended to), `X-Forwarded-Proto` and `-Host` (see [`Forwarded`]),
    /// `Via`, the request's one `X-Request-Id` (`request_id`: the client's
    /// or perfproxy's), perfproxy's `traceparent` in place of the
    /// client's when tracing, and `Surrogate-Capability` when the answer
    /// may be stored (`storable`).
    pub fn write_upstream(
        &self,
        buf: &[u8],
        (client_ip, trusted_peer, tls): (&[u8], bool, bool),
        (request_id, traceparent): (&[u8], Option<&[u8]>),
        storable: bool,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(&buf[self.target.clone()]);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let copied = |r: Role| {
            r == Role::Plain
                || (trusted_peer && r == Role::Trusted)
                || (r == Role::TraceParent && traceparent.is_none())
        };
        let mut copy = FieldCopy::new(buf);
        for f in self.fields.iter().filter(|f| copied(f.role)) {
            copy.push(out, f.name.clone(), f.value.clone());
        }
        copy.flush(out);
        out.extend_from_slice(b"x-forwarded-for: ");
        for f in self.fields.iter().filter(|f| f.role == Role::ForwardedFor && !f.value.is_empty()) {
            out.extend_from_slice(&buf[f.value.clone()]);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(client_ip);
        let forwarded = self.forwarded(buf, trusted_peer, tls);
        // Few writes: this runs on every request.
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(forwarded.proto);
        out.extend_from_slice(b"\r\nx-forwarded-host: ");
        out.extend_from_slice(forwarded.host);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(http1::VIA_LINE);
        field(out, b"x-request-id", request_id);
        if let Some(tp) = traceparent {
            field(out, b"traceparent", tp);
        }
        if storable {
            field(out, policy::SURROGATE_CAPABILITY.as_str().as_bytes(), policy::SURROGATE_CAPABILITY_VALUE.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The request as `http` types, for what the express lane does not do
    /// itself (perfproxy's endpoints, cache lookups). No body: those requests
    /// have none. `None` if a field is not a valid `http` header.
    pub fn to_request(&self, buf: &[u8]) -> Option<Request<RequestBody>> {
        let mut req = Request::new(RequestBody::Empty);
        *req.method_mut() = self.method.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.uri_mut() = Uri::from_maybe_shared(Bytes::copy_from_slice(&buf[self.target.clone()])).ok()?;
        let headers = req.headers_mut();
        headers.reserve(self.fields.len());
        for f in &self.fields {
            let name = HeaderName::from_bytes(&buf[f.name.clone()]).ok()?;
            headers.append(name, HeaderValue::from_bytes(&buf[f.value.clone()]).ok()?);
        }
        Some(req)
    }
}

/// Appends `name: value\r\n`.
pub fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Fields copied from a parsed head (`src`) to `out` as `name: value\r\n`:
/// a run of fields that stand in `src` exactly so, one after another, is
/// copied in one piece (what was sent any other way, with other spacing or
/// a bare LF, is written field by field in the canonical form).
pub struct FieldCopy<'a> {
    src: &'a [u8],
    run: std::ops::Range<usize>,
}

impl<'a> FieldCopy<'a> {
    pub fn new(src: &'a [u8]) -> FieldCopy<'a> {
        FieldCopy { src, run: 0..0 }
    }

    /// Copies the field at `name` and `value` (ranges of `src`).
    #[inline]
    pub fn push(&mut self, out: &mut Vec<u8>, name: Range<usize>, value: Range<usize>) {
        let src = self.src;
        let canonical = value.start == name.end + 2
            && src.get(name.end..value.start) == Some(b": ")
            && src.get(value.end..value.end + 2) == Some(b"\r\n");
        if canonical && self.run.end == name.start && !self.run.is_empty() {
            self.run.end = value.end + 2;
        } else if canonical {
            self.flush(out);
            self.run = name.start..value.end + 2;
        } else {
            self.flush(out);
            field(out, &src[name], &src[value]);
        }
    }

    /// Writes the run held back; call before writing anything else to `out`.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.src[std::mem::replace(&mut self.run, 0..0)]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use crate::lanes::express::head::Parsed;

    #[test]
    fn plain_requests_are_rewritten_for_the_upstream() {
        let raw = "GET /a/b?x=1 HTTP/1.1\r\nHost: app\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\
                   X-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\n\r\nGET /next";
        let (head, parsed) = parse(raw);
        assert_eq!(parsed, Parsed::Complete);
        assert_eq!(head.len, raw.len() - "GET /next".len());
        let buf = raw.as_bytes();
        assert_eq!((head.path(), head.query(), head.host()), ("/a/b", Some("x=1"), "app"));
        let (bare, _) = parse("GET /p? HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((bare.path(), bare.query()), ("/p", Some("")));
        let (none, _) = parse("GET /p HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((none.path(), none.query()), ("/p", None));
        let mut out = Vec::new();
        head.write_upstream(buf, (b"127.0.0.9", false, false), (b"rid", None), false, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /a/b?x=1 HTTP/1.1\r\nHost: app\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.1, 127.0.0.9\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: app\r\nvia: 1.1 perfproxy\r\nx-request-id: rid\r\n\r\n"
        );
        let req = head.to_request(buf).unwrap();
        assert_eq!(req.uri(), "/a/b?x=1");
        assert_eq!(req.headers()["accept"], "*/*");
    }

    #[test]
    fn an_empty_forwarded_for_is_not_joined() {
        let raw = "GET / HTTP/1.1\r\nHost: app\r\nX-Forwarded-For:\r\nX-Forwarded-Proto: https\r\n\r\n";
        let (head, parsed) = parse(raw);
        assert_eq!(parsed, Parsed::Complete);
        let mut out = Vec::new();
        head.write_upstream(raw.as_bytes(), (b"10.1.2.3", true, false), (b"rid", None), false, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("x-forwarded-for: 10.1.2.3\r\n"), "{out}");
        assert!(out.contains("x-forwarded-proto: https\r\n") && !out.contains("X-Forwarded-Proto"), "{out}");
    }

    #[test]
    fn forwarding_fields_from_an_untrusted_peer_are_replaced() {
        let raw = "GET / HTTP/1.1\r\nHost: shop\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Host: two\r\n\
                   X-Forwarded-Proto: https\r\n\r\n";
        let (head, _) = parse(raw);
        for (trusted, host, proto) in [(false, "shop", "http"), (true, "evil", "https")] {
            let mut out = Vec::new();
            head.write_upstream(raw.as_bytes(), (b"1.2.3.4", trusted, false), (b"rid", None), false, &mut out);
            let out = String::from_utf8(out).unwrap();
            assert_eq!(out.matches("x-forwarded-host: ").count() + out.matches("X-Forwarded-Host").count(), 1, "{out}");
            assert!(out.contains(&format!("x-forwarded-host: {host}\r\n")), "{out}");
            assert!(out.contains(&format!("x-forwarded-proto: {proto}\r\n")), "{out}");
        }
    }

    #[test]
    fn a_storable_request_announces_perfproxy_and_never_a_clients_capabilities() {
        let raw = "GET / HTTP/1.1\r\nHost: app\r\nSurrogate-Capability: perfproxy=\"Surrogate/1.0 ESI/1.0\"\r\n\r\n";
        let (head, _) = parse(raw);
        for (trusted, storable) in [(true, true), (false, true), (true, false), (false, false)] {
            let mut out = Vec::new();
            head.write_upstream(raw.as_bytes(), (b"1.2.3.4", trusted, false), (b"rid", None), storable, &mut out);
            let out = String::from_utf8(out).unwrap().to_ascii_lowercase();
            let named: Vec<&str> = out.lines().filter(|l| l.starts_with("surrogate-capability")).collect();
            let expected = if storable { vec!["surrogate-capability: perfproxy=\"surrogate/1.0\""] } else { vec![] };
            assert_eq!(named, expected, "trusted {trusted}, storable {storable}: {out}");
        }
    }
}
