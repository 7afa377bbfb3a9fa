//! Request and response heads as bytes: parsed with `httparse` into offsets
//! of the connection's read buffer, checked, and rewritten straight into the
//! output buffer (hop-by-hop fields out, forwarding fields in, by the rules of `http1`) with
//! no `HeaderMap` in between. A request with anything unusual is not parsed
//! further: it is handed to hyper ([`Parsed::Handoff`]), which owns the rules
//! for the rare cases (bodies in `Transfer-Encoding`, upgrades, `Expect`,
//! absolute-form targets, HTTP/1.0, malformed or oversized heads). The head
//! the upstream gets is written in `upstream`.

use std::ops::Range;

use http::header::HeaderName;
use http::Method;

use crate::wire::http1::{self, Field};

mod upstream;

pub use upstream::{field, FieldCopy};

/// Most header fields a head may carry here (hyper's own limit).
pub const MAX_FIELDS: usize = 100;

/// What a request field becomes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Plain,
    /// Hop-by-hop, or a forwarding field perfproxy writes itself: not copied.
    Dropped,
    /// Copied only from a trusted proxy.
    Trusted,
    /// Joined into one `X-Forwarded-For` with the client's address.
    ForwardedFor,
    /// `traceparent`: copied unless perfproxy writes its own.
    TraceParent,
    /// `X-Request-Id`: never copied; the request's one id is written apart.
    RequestId,
}

#[derive(Debug)]
struct FieldAt {
    name: Range<usize>,
    value: Range<usize>,
    role: Role,
}

/// How far a request head got.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Partial,
    Complete,
    /// Not a request for the express lane: hyper takes the connection.
    Handoff,
}

/// A checked request head: offsets into the buffer it was parsed from.
#[derive(Debug, Default)]
pub struct RequestHead {
    /// Bytes of the head, blank line included.
    pub len: usize,
    pub method: Method,
    /// Origin-form path and query.
    target: Range<usize>,
    host: Range<usize>,
    /// The target and the Host as text, copied once per request (buffers
    /// kept across requests): read several times, checked once.
    target_text: String,
    host_text: String,
    /// Where the path ends in the target (the `?`, else its end).
    path_len: usize,
    pub content_length: u64,
    /// The client asked to close after this response.
    pub close: bool,
    /// A `Range` request (the cache does not serve those).
    pub range: bool,
    /// A field that changes a cache lookup (`Cache-Control`, `Pragma`,
    /// `Authorization`, `If-*`): the express lane leaves it to the cache's
    /// general path.
    pub lookup_fields: bool,
    /// A forwarding field that is part of the cache key when a trusted
    /// peer sends it (`X-Original-URL`, `X-Forwarded-Port`, `Forwarded`…):
    /// the cache's general path keys it.
    pub forwarding_other: bool,
    /// The client's `traceparent`, and whether it sent more than one.
    traceparent: Option<Range<usize>>,
    traceparents: usize,
    /// How many `X-Forwarded-For` fields it carries.
    forwarded_fors: usize,
    /// The first `X-Forwarded-Proto` / `-Host` the client sent.
    forwarded_proto: Option<Range<usize>>,
    forwarded_host: Option<Range<usize>>,
    fields: Vec<FieldAt>,
}

/// A head's heap buffers, lent by the worker while a request is read and
/// served: an idle keep-alive connection holds none.
#[derive(Debug, Default)]
pub struct HeadParts {
    fields: Vec<FieldAt>,
    target_text: String,
    host_text: String,
}

impl HeadParts {
    /// No larger than an ordinary head needs (32 fields, 1 KiB of text).
    pub fn small(&self) -> bool {
        self.fields.capacity() <= 32 && self.target_text.capacity() + self.host_text.capacity() <= 1024
    }
}

impl RequestHead {
    /// Gives up the head's buffers (the connection goes idle).
    pub fn give_parts(&mut self) -> HeadParts {
        HeadParts {
            fields: std::mem::take(&mut self.fields),
            target_text: std::mem::take(&mut self.target_text),
            host_text: std::mem::take(&mut self.host_text),
        }
    }

    /// Takes buffers for the next head (each is cleared by the parse).
    pub fn take_parts(&mut self, parts: HeadParts) {
        (self.fields, self.target_text, self.host_text) = (parts.fields, parts.target_text, parts.host_text);
    }
}

/// A parsed head with the buffer it points into.
pub struct HeadFields<'a> {
    head: &'a RequestHead,
    buf: &'a [u8],
}

impl crate::admit::clients::Fields for HeadFields<'_> {
    fn forwarded_for(&self) -> impl DoubleEndedIterator<Item = &[u8]> {
        let fields = self.head.fields.iter().filter(|f| f.role == Role::ForwardedFor);
        fields.map(|f| &self.buf[f.value.clone()])
    }

    fn any_forwarded_for(&self) -> bool {
        self.head.forwarded_fors > 0
    }

    fn field(&self, name: &HeaderName) -> Option<&[u8]> {
        self.head.field_value(self.buf, name.as_str().as_bytes())
    }

    fn field_count(&self, name: &HeaderName) -> usize {
        let named = |f: &&FieldAt| self.buf[f.name.clone()].eq_ignore_ascii_case(name.as_str().as_bytes());
        self.head.fields.iter().filter(named).count()
    }
}

impl crate::pipeline::phases::RequestView for HeadFields<'_> {
    fn method(&self) -> &Method {
        &self.head.method
    }

    fn path(&self) -> &str {
        self.head.path()
    }

    fn target(&self) -> &str {
        self.head.target_text()
    }

    fn host(&self) -> &str {
        self.head.host()
    }

    fn traceparent(&self) -> Option<&[u8]> {
        self.head.traceparent(self.buf)
    }

    fn scheme(&self, trusted_peer: bool, tls: bool) -> &'static str {
        // The forwarded proto already decided by `trusted_proxies` and the listener.
        crate::observe::trace::scheme(true, false, Some(self.head.forwarded(self.buf, trusted_peer, tls).proto))
    }

    fn bytes_in(&self) -> u64 {
        self.head.content_length
    }
}

/// Bytes an origin-form target may hold here: RFC 3986 unreserved,
/// sub-delims, `:@/?%`. Anything else (`#`, quotes, spaces, non-ASCII) goes
/// to hyper, whose URI rules decide.
fn target_byte(b: u8) -> bool {
    TARGET_BYTES[usize::from(b)]
}

/// [`target_byte`] for every byte, worked out once (a table read per byte
/// of every target).
static TARGET_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~!$&'()*+,;=:@/?%";
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

fn method(m: &str) -> Option<Method> {
    Some(match m {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "DELETE" => Method::DELETE,
        "PATCH" => Method::PATCH,
        "OPTIONS" => Method::OPTIONS,
        _ => return None,
    })
}

/// Where `part` (a subslice of `buf`) lies in `buf`.
fn span(buf: &[u8], part: &[u8]) -> Range<usize> {
    if part.is_empty() {
        return 0..0;
    }
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

impl RequestHead {
    /// Parses and checks the head at the start of `buf`.
    pub fn parse(&mut self, buf: &[u8]) -> Parsed {
        let mut raw = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut req = httparse::Request::new(&mut raw);
        let len = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Handoff,
        };
        let (Some(m), Some(path), Some(1)) = (req.method, req.path, req.version) else {
            return Parsed::Handoff;
        };
        let Some(method) = method(m) else { return Parsed::Handoff };
        if !path.starts_with('/') || !path.bytes().all(target_byte) {
            return Parsed::Handoff;
        }
        self.len = len;
        self.method = method;
        self.target = span(buf, path.as_bytes());
        self.target_text.clear();
        self.target_text.push_str(path);
        self.path_len = path.find('?').unwrap_or(path.len());
        (self.content_length, self.close, self.range, self.lookup_fields) = (0, false, false, false);
        self.forwarding_other = false;
        (self.forwarded_proto, self.forwarded_host) = (None, None);
        (self.traceparent, self.traceparents, self.forwarded_fors) = (None, 0, 0);
        self.fields.clear();
        let (mut hosts, mut lengths) = (0, 0);
        for h in req.headers.iter() {
            let value = h.value;
            let role = match http1::request_field(h.name.as_bytes()) {
                Field::Other | Field::Date | Field::Location | Field::CacheOutcome => Role::Plain,
                // gRPC goes upstream as `upstream_protocol` says: hyper's.
                Field::ContentType if crate::wire::grpc::is_grpc_type(value) => return Parsed::Handoff,
                Field::ContentType => Role::Plain,
                // Written once by `write_upstream`: the client's when usable.
                Field::RequestId => Role::RequestId,
                Field::Freshness | Field::Lookup => {
                    self.lookup_fields = true;
                    Role::Plain
                }
                Field::TraceParent => {
                    self.traceparents += 1;
                    self.traceparent.get_or_insert(span(buf, value));
                    Role::TraceParent
                }
                // Framing or protocol changes: hyper's rules.
                Field::TransferEncoding | Field::Upgrade | Field::Expect => return Parsed::Handoff,
                Field::Host => {
                    hosts += 1;
                    // Not `uri-host [":" port]`: hyper's path answers the 400.
                    if !http1::valid_host(value) {
                        return Parsed::Handoff;
                    }
                    self.host = span(buf, value);
                    self.host_text.clear();
                    // Checked visible ASCII above.
                    let Ok(text) = std::str::from_utf8(value) else { return Parsed::Handoff };
                    self.host_text.push_str(text);
                    Role::Plain
                }
                Field::ContentLength => {
                    lengths += 1;
                    match http1::content_length(value) {
                        // hyper sends the length without leading zeros.
                        Some(n) if value[0] != b'0' || value.len() == 1 => self.content_length = n,
                        _ => return Parsed::Handoff,
                    }
                    Role::Plain
                }
                Field::Connection => {
                    for t in http1::tokens(value) {
                        if t.eq_ignore_ascii_case(b"close") {
                            self.close = true;
                        } else if http1::names_a_field(t) {
                            // A token naming more hop-by-hop fields.
                            return Parsed::Handoff;
                        }
                    }
                    Role::Dropped
                }
                Field::HopByHop | Field::Underscored => Role::Dropped,
                Field::ForwardedOther => {
                    self.forwarding_other = true;
                    Role::Trusted
                }
                Field::ForwardedFor => {
                    self.forwarded_fors += 1;
                    Role::ForwardedFor
                }
                Field::ForwardedProto => {
                    self.forwarded_proto.get_or_insert(span(buf, value));
                    Role::Dropped
                }
                Field::ForwardedHost => {
                    self.forwarded_host.get_or_insert(span(buf, value));
                    Role::Dropped
                }
                Field::Range => {
                    self.range = true;
                    Role::Plain
                }
            };
            self.fields.push(FieldAt { name: span(buf, h.name.as_bytes()), value: span(buf, value), role });
        }
        if hosts != 1 || lengths > 1 || (http1::bodyless_method(&self.method) && self.content_length > 0) {
            return Parsed::Handoff;
        }
        Parsed::Complete
    }

    /// The target's path.
    pub fn path(&self) -> &str {
        &self.target_text[..self.path_len]
    }

    pub fn query(&self) -> Option<&str> {
        self.target_text.get(self.path_len + 1..).filter(|_| self.path_len < self.target_text.len())
    }

    pub fn host(&self) -> &str {
        &self.host_text
    }

    /// The value of the first field named `name` (lower case), if any.
    /// Every value of the field `name`, in order.
    pub fn field_values<'b>(&'b self, buf: &'b [u8], name: &'b [u8]) -> impl Iterator<Item = &'b [u8]> + 'b {
        let fields = self.fields.iter().filter(move |f| buf[f.name.clone()].eq_ignore_ascii_case(name));
        fields.map(move |f| &buf[f.value.clone()])
    }

    pub fn field_value<'b>(&self, buf: &'b [u8], name: &[u8]) -> Option<&'b [u8]> {
        let f = self.fields.iter().find(|f| buf[f.name.clone()].eq_ignore_ascii_case(name))?;
        Some(&buf[f.value.clone()])
    }

    /// The target as the client sent it (path and query).
    pub fn target_text(&self) -> &str {
        &self.target_text
    }

    /// The client's `traceparent`, if it sent exactly one (W3C: more is none).
    pub fn traceparent<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        self.traceparent.clone().filter(|_| self.traceparents == 1).map(|r| &buf[r])
    }

    /// The client's `X-Request-Id`, if perfproxy keeps it ([`http1::client_request_id`]).
    pub fn request_id<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        let sent = self.fields.iter().filter(|f| f.role == Role::RequestId);
        http1::client_request_id(sent.map(|f| &buf[f.value.clone()]))
    }

    /// The head's fields as the client rules read them.
    pub fn fields<'a>(&'a self, buf: &'a [u8]) -> HeadFields<'a> {
        HeadFields { head: self, buf }
    }
}

#[cfg(test)]
mod tests;
