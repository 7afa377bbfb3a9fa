//! Content codings on the wire (RFC 9110 §8.4, §12.5.3): the codings
//! perfproxy compresses with ([`Coding`]), a client's `Accept-Encoding`
//! read with its q-values ([`Accepted`]) and ranked ([`Ranked`]), the
//! content types worth compressing ([`ContentTypes`]), whether an answer
//! may be compressed at all ([`compressible`]), and the head of an answer
//! once compressed ([`mark_compressed`], [`add_vary`]). Pure functions: the
//! `compress` layer and the cache call them.

use http::header::{self, HeaderMap, HeaderValue};

/// A content coding perfproxy knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Identity,
    Gzip,
    Br,
    Zstd,
}

impl Coding {
    /// The compressing codings, in the default order of preference.
    pub const COMPRESSED: [Coding; 3] = [Coding::Zstd, Coding::Br, Coding::Gzip];

    /// The coding's token (`Content-Encoding`, `Accept-Encoding`, config).
    pub fn token(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Br => "br",
            Coding::Zstd => "zstd",
        }
    }

    /// A token (case-insensitive; `x-gzip` is gzip, RFC 9110 §8.4.1.3).
    pub fn from_token(token: &[u8]) -> Option<Coding> {
        let is = |s: &str| token.eq_ignore_ascii_case(s.as_bytes());
        match token.len() {
            2 if is("br") => Some(Coding::Br),
            4 if is("gzip") || is("zstd") => Some(if is("gzip") { Coding::Gzip } else { Coding::Zstd }),
            6 if is("x-gzip") => Some(Coding::Gzip),
            8 if is("identity") => Some(Coding::Identity),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A client's `Accept-Encoding`: the weight (q × 1000) it gives each coding
/// perfproxy knows, and `*`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    q: [Option<u16>; 4],
    star: Option<u16>,
}

impl Accepted {
    /// Reads the request's `Accept-Encoding` values (none: identity only,
    /// as every proxy reads a request without the field).
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Accepted {
        let mut accepted = Accepted::default();
        for value in values {
            for (token, q) in weighted(value) {
                // A malformed weight: the item is ignored.
                let Some(q) = q else { continue };
                if token == b"*" {
                    accepted.star = Some(q);
                } else if let Some(c) = Coding::from_token(token) {
                    // The first mention of a coding counts.
                    accepted.q[c.index()].get_or_insert(q);
                }
            }
        }
        accepted
    }

    /// The weight the client gives a compressing coding (0: refused).
    fn weight_of(&self, c: Coding) -> u16 {
        self.q[c.index()].or(self.star).unwrap_or(0)
    }

    /// The codings to answer with, best first: the compressing codings of
    /// `order` the client accepts, by its q-values then `order`; identity
    /// first only when the client prefers it (or accepts nothing else),
    /// and then followed by the rest. A request for which nothing may be
    /// compressed (`HEAD`) is ranked with `compress = false`: identity alone.
    pub fn rank(&self, order: &[Coding], compress: bool) -> Ranked {
        let mut ranked = Ranked::default();
        let identity = match self.q[Coding::Identity.index()] {
            Some(q) => q,
            // Not named: acceptable unless `*;q=0`, below every named coding.
            None if self.star == Some(0) => 0,
            None => 1,
        };
        // At most three compressing codings: sorted in place, no allocation.
        let mut codings = [(0u16, Coding::Identity); 3];
        let mut n = 0;
        for c in order.iter().filter(|c| compress && **c != Coding::Identity).take(3) {
            let q = self.weight_of(*c);
            if q > 0 {
                codings[n] = (q, *c);
                n += 1;
            }
        }
        let codings = &mut codings[..n];
        // Stable: equal weights keep `order`.
        codings.sort_by_key(|c| std::cmp::Reverse(c.0));
        let identity_first = identity > 0 && codings.first().is_none_or(|(q, _)| identity > *q);
        if identity_first {
            ranked.push(Coding::Identity);
        }
        for (_, c) in codings.iter() {
            ranked.push(*c);
        }
        if ranked.len == 0 {
            // Nothing acceptable: identity anyway (RFC 9110 §12.5.3 allows it).
            ranked.push(Coding::Identity);
        }
        ranked
    }
}

/// The items of a weighted list (`Accept-Encoding`, `Accept-Language`):
/// each token with its weight in thousandths (no `q`: 1000; a malformed
/// one, `q=`, `q=2`, `q=0.0001`: `None`), empty items skipped.
pub fn weighted(value: &[u8]) -> impl Iterator<Item = (&[u8], Option<u16>)> {
    value.split(|&b| b == b',').filter_map(|item| {
        let mut parts = item.split(|&b| b == b';');
        let token = parts.next().unwrap_or_default().trim_ascii();
        let q = parts.map(<[u8]>::trim_ascii).find(|p| p.len() >= 2 && p[..2].eq_ignore_ascii_case(b"q="));
        (!token.is_empty()).then(|| (token, q.map_or(Some(1000), |p| weight(&p[2..]))))
    })
}

/// A q-value (`0`, `0.5`, `1.000`) as thousandths; `None` if malformed.
fn weight(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &[][..]),
    };
    if int.len() != 1 || frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut q = u16::from(int[0].checked_sub(b'0').filter(|d| *d <= 1)?) * 1000;
    for (i, d) in frac.iter().enumerate() {
        q += u16::from(d - b'0') * [100, 10, 1][i];
    }
    (q <= 1000).then_some(q)
}

/// The codings a request may be answered with, best first (see [`Accepted::rank`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ranked {
    codings: [Option<Coding>; 4],
    len: usize,
}

impl Ranked {
    fn push(&mut self, c: Coding) {
        self.codings[self.len] = Some(c);
        self.len += 1;
    }

    /// Identity alone: a request without `Accept-Encoding`, or one nothing is compressed for.
    pub fn identity() -> Ranked {
        let mut r = Ranked::default();
        r.push(Coding::Identity);
        r
    }

    /// The coding to compress a fresh answer with (identity: none).
    pub fn best(&self) -> Coding {
        self.codings[0].unwrap_or(Coding::Identity)
    }

    /// Where `c` stands (0 is best); `None` if it is not acceptable here.
    pub fn position(&self, c: Coding) -> Option<usize> {
        self.codings[..self.len].iter().position(|x| *x == Some(c))
    }
}

/// The content types worth compressing: `type/subtype`, `type/*`, `*/*`,
/// or a structured suffix (`+json`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentTypes {
    patterns: Vec<String>,
}

impl ContentTypes {
    /// Lower-cased patterns; the first that is not one is returned as `Err(index)`.
    pub fn parse(patterns: &[String]) -> Result<ContentTypes, usize> {
        let token =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
        let mut out = Vec::with_capacity(patterns.len());
        for (i, p) in patterns.iter().enumerate() {
            let p = p.trim().to_ascii_lowercase();
            let ok = match p.split_once('/') {
                Some(("*", "*")) => true,
                Some((t, "*")) => token(t),
                Some((t, s)) => token(t) && token(s),
                None => p.len() > 1 && p.starts_with('+') && token(&p[1..]),
            };
            if !ok {
                return Err(i);
            }
            out.push(p);
        }
        Ok(ContentTypes { patterns: out })
    }

    /// Whether a `Content-Type` value (parameters ignored) is one of them.
    pub fn matches(&self, content_type: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(content_type) else { return false };
        let media = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let Some((t, s)) = media.split_once('/') else { return false };
        self.patterns.iter().any(|p| match p.split_once('/') {
            Some(("*", "*")) => true,
            Some((pt, "*")) => pt == t,
            Some(_) => *p == media,
            None => s.ends_with(p.as_str()),
        })
    }
}

/// Whether an upstream answer may be compressed: a status with a body
/// that is not partial (not 1xx, 204, 206, 304), not encoded already, no
/// `no-transform`, a listed content type (never gRPC's), and a `length`
/// (the body's, when known: `Content-Length`, or an HTTP/2 body already
/// ended) not under `min_bytes` (a body of unknown length may be).
pub fn compressible(
    status: u16,
    headers: &HeaderMap,
    length: Option<u64>,
    min_bytes: u64,
    types: &ContentTypes,
) -> bool {
    if status < 200 || matches!(status, 204 | 206 | 304) || headers.contains_key(header::CONTENT_RANGE) {
        return false;
    }
    let encoded = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| crate::wire::http1::tokens(v.as_bytes()).any(|t| !t.eq_ignore_ascii_case(b"identity")));
    if encoded || no_transform(headers) {
        return false;
    }
    // gRPC compresses its messages itself, never the stream (`*/*` included).
    let content_type = headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes);
    if !content_type.is_some_and(|t| types.matches(t) && !crate::wire::grpc::is_grpc_type(t)) {
        return false;
    }
    length.is_none_or(|n| n >= min_bytes)
}

/// `Cache-Control: no-transform` (RFC 9111 §5.2.1.6, §5.2.2.6).
pub fn no_transform(headers: &HeaderMap) -> bool {
    let values = headers.get_all(header::CACHE_CONTROL).iter();
    values.flat_map(|v| crate::wire::http1::tokens(v.as_bytes())).any(|t| t.eq_ignore_ascii_case(b"no-transform"))
}

/// Adds `Accept-Encoding` to `Vary` (once; never beside `*`).
pub fn add_vary(headers: &mut HeaderMap) {
    let names = headers.get_all(header::VARY).iter().flat_map(|v| crate::wire::http1::tokens(v.as_bytes()));
    let mut listed = false;
    for n in names {
        listed |= n == b"*" || n.eq_ignore_ascii_case(b"accept-encoding");
    }
    if !listed {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// The head of an answer compressed with `coding`: `Content-Encoding`, no
/// length (it is sent as it is made) and no byte ranges, `Vary:
/// Accept-Encoding`, and a strong `ETag` made weak (the bytes differ from
/// the upstream's; RFC 9110 §8.8.3).
pub fn mark_compressed(headers: &mut HeaderMap, coding: Coding) {
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    for digest in DIGESTS {
        headers.remove(digest);
    }
    add_vary(headers);
    weaken_etag(headers);
}

/// The fields that describe the upstream's bytes (digests): never kept on
/// a coding perfproxy made, in its head, its trailers or a refresh.
const DIGESTS: [&str; 4] = ["content-md5", "digest", "content-digest", "repr-digest"];

/// Whether `name` is one of the digest fields ([`DIGESTS`]).
pub fn is_digest(name: &http::HeaderName) -> bool {
    DIGESTS.contains(&name.as_str())
}

/// Whether a client's `If-None-Match` holds the weak form of `etag` (a
/// strong tag): the copy it revalidates is one perfproxy compressed.
pub fn holds_weak_form(if_none_match: &[HeaderValue], etag: &HeaderValue) -> bool {
    let tag = etag.as_bytes();
    if !tag.starts_with(b"\"") {
        return false;
    }
    let items = if_none_match.iter().flat_map(|v| v.as_bytes().split(|&b| b == b','));
    items.map(<[u8]>::trim_ascii).any(|t| t.strip_prefix(b"W/") == Some(tag))
}

/// A strong `ETag` made weak (`"v1"` → `W/"v1"`): the validator of a
/// compressed answer, also on a `304` to a client whose copy is one
/// ([`holds_weak_form`]; RFC 9110 §15.4.5), so it never reaches `If-Range`
/// as a strong one.
pub fn weaken_etag(headers: &mut HeaderMap) {
    if let Some(etag) = headers.get(header::ETAG).filter(|e| e.as_bytes().starts_with(b"\"")) {
        let weak = [&b"W/"[..], etag.as_bytes()].concat();
        let weak = HeaderValue::from_bytes(&weak).expect("a valid value with W/ before it is valid");
        headers.insert(header::ETAG, weak);
    }
}

#[cfg(test)]
mod tests;
