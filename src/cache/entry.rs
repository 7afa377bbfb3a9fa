//! One stored response ([`Entry`]): status, headers, body, the request
//! header values it varies on, and the times RFC 9111 needs to compute its
//! age. It travels to Redis in a compact binary form ([`Entry::encode`]),
//! versioned so a future layout never misreads an old one.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use super::key::VaryValues;
use super::policy::{epoch_ms, Lifetime};
use crate::wire::encoding::Coding;

/// The longest an entry is kept, whatever it says (a far `Expires`, say).
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The first bytes of an encoded entry (`PPC1`: before codings were stored,
/// still read).
const MAGIC: &[u8; 4] = b"PPC2";
const MAGIC_V1: &[u8; 4] = b"PPC1";

/// A stored response.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub status: StatusCode,
    /// The response's end-to-end headers as served (no `Age`).
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The request header values its `Vary` names (`Accept-Encoding` aside
    /// when perfproxy negotiated the coding: then `coding` says which).
    pub vary: VaryValues,
    /// The coding perfproxy served it in, when it chose one (a compressible
    /// answer): the client's `Accept-Encoding` picks among these variants
    /// by ranking, not by the field's text. `None`: stored as it came.
    pub coding: Option<Coding>,
    /// When it arrived, ms since the epoch.
    pub response_time: u64,
    /// Its age on arrival (RFC 9111 `corrected_initial_age`), ms.
    pub initial_age: u64,
    pub lifetime: Lifetime,
    /// The head as the express lane writes it, made at its first hit.
    pub wire: WireHead,
}

/// A stored response's head as bytes: the status line and its stored
/// fields (`Date` aside: it is per request), ready to be written before the
/// per-request fields. Made once, at the entry's first express-lane hit; a
/// copy of the entry (one being refreshed) starts without it.
#[derive(Debug, Default)]
pub struct WireHead(OnceLock<Box<[u8]>>);

impl Clone for WireHead {
    fn clone(&self) -> WireHead {
        WireHead::default()
    }
}

/// Made from the entry's other fields: never a difference between entries.
impl PartialEq for WireHead {
    fn eq(&self, _: &WireHead) -> bool {
        true
    }
}

impl Entry {
    /// The head's stored part as bytes (see [`WireHead`]), the fields
    /// named in `unrelayed` (the cache's tag headers) left out. Those are
    /// the ones in force at the first hit.
    pub fn wire_head(&self, unrelayed: &[HeaderName]) -> &[u8] {
        self.wire.0.get_or_init(|| {
            let mut out = Vec::with_capacity(64 + self.fields_len());
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(self.status.as_str().as_bytes());
            out.push(b' ');
            out.extend_from_slice(self.status.canonical_reason().unwrap_or("").as_bytes());
            out.extend_from_slice(b"\r\n");
            // A 204 has no length (RFC 9110 §8.6): none is written, stored or not.
            let length = crate::wire::http1::relays_length(self.status.as_u16());
            let relayed = |n: &HeaderName| {
                *n != http::header::DATE && !unrelayed.contains(n) && (length || *n != http::header::CONTENT_LENGTH)
            };
            for (name, value) in self.headers.iter().filter(|(n, _)| relayed(n)) {
                for part in [name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
                    out.extend_from_slice(part);
                }
            }
            if length && !self.headers.contains_key(http::header::CONTENT_LENGTH) {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(self.body.len()).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.into_boxed_slice()
        })
    }

    /// Bytes of the fields as text, `name: value\r\n` each.
    fn fields_len(&self) -> usize {
        self.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum()
    }

    /// Its current age (RFC 9111 §4.2.3).
    pub fn age(&self, now: SystemTime) -> Duration {
        let resident = epoch_ms(now).saturating_sub(self.response_time);
        Duration::from_millis(self.initial_age.saturating_add(resident))
    }

    /// How far past its freshness lifetime it is (`None` while fresh).
    pub fn staleness(&self, now: SystemTime) -> Option<Duration> {
        self.age(now).checked_sub(self.lifetime.fresh)
    }

    /// How long it is worth keeping from `now`: fresh time left plus the
    /// longest stale window (an entry with validators also stays that long
    /// to be revalidated).
    pub fn ttl(&self, now: SystemTime) -> Duration {
        let l = &self.lifetime;
        let keep = l.fresh.saturating_add(l.stale_if_error.max(l.stale_while_revalidate));
        keep.saturating_sub(self.age(now)).min(MAX_TTL)
    }

    pub fn has_validators(&self) -> bool {
        self.headers.contains_key(http::header::ETAG) || self.headers.contains_key(http::header::LAST_MODIFIED)
    }

    /// What the entry costs in memory, as measured (bench/cache-costs.sh:
    /// a 1 KiB body with 8 fields costs about 4.6 KB of RSS with its key):
    /// each field's map slot and owned value (~96 bytes besides its text),
    /// the entry, its `Arc`s and allocator rounding (~512), and the head as
    /// bytes ([`WireHead`]) once it has been hit.
    pub fn weight(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 96).sum();
        self.body.len() + headers + 512 + self.fields_len() + 64
    }

    /// The variant's name within its key: its vary values, one per line,
    /// then its coding.
    pub fn variant(&self) -> String {
        let mut s = String::new();
        for (name, value) in &self.vary {
            s.push_str(name.as_str());
            s.push('=');
            if let Some(v) = value {
                let text = String::from_utf8_lossy(v.as_bytes());
                // Language tags match in any case (`key::vary_matches`): one variant.
                if *name == http::header::ACCEPT_LANGUAGE {
                    s.push_str(&text.to_ascii_lowercase());
                } else {
                    s.push_str(&text);
                }
            }
            s.push('\n');
        }
        if let Some(c) = self.coding {
            s.push_str("coding=");
            s.push_str(c.token());
            s.push('\n');
        }
        s
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.weight());
        out.extend_from_slice(MAGIC);
        out.put_u16(self.status.as_u16());
        out.put_u8(coding_byte(self.coding));
        out.put_u64(self.response_time);
        out.put_u64(self.initial_age);
        let l = &self.lifetime;
        for d in [l.fresh, l.stale_if_error, l.stale_while_revalidate] {
            out.put_u64(d.as_millis() as u64);
        }
        out.put_u8(u8::from(l.must_revalidate));
        out.put_u16(self.vary.len() as u16);
        for (name, value) in &self.vary {
            put_bytes(&mut out, name.as_str().as_bytes());
            out.put_u8(u8::from(value.is_some()));
            put_bytes(&mut out, value.as_ref().map_or(&[][..], HeaderValue::as_bytes));
        }
        out.put_u16(self.headers.len() as u16);
        for (name, value) in &self.headers {
            put_bytes(&mut out, name.as_str().as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        put_bytes(&mut out, &self.body);
        out
    }

    /// `None` for anything that is not an entry this version wrote.
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        let mut r = Reader(bytes);
        let magic = r.take(MAGIC.len())?;
        if magic != MAGIC && magic != MAGIC_V1 {
            return None;
        }
        let status = StatusCode::from_u16(r.u16()?).ok()?;
        let coding = if magic == MAGIC { byte_coding(r.u8()?)? } else { None };
        let response_time = r.u64()?;
        let initial_age = r.u64()?;
        let mut ms = || r.u64().map(Duration::from_millis);
        let (fresh, stale_if_error, stale_while_revalidate) = (ms()?, ms()?, ms()?);
        let must_revalidate = r.u8()? == 1;
        let mut vary = Vec::new();
        for _ in 0..r.u16()? {
            let name = HeaderName::from_bytes(r.bytes()?).ok()?;
            let present = r.u8()? == 1;
            let value = r.bytes()?;
            vary.push((name, if present { Some(HeaderValue::from_bytes(value).ok()?) } else { None }));
        }
        let count = r.u16()?;
        let mut headers = HeaderMap::with_capacity(count as usize);
        for _ in 0..count {
            let name = HeaderName::from_bytes(r.bytes()?).ok()?;
            headers.append(name, HeaderValue::from_bytes(r.bytes()?).ok()?);
        }
        let body = r.bytes()?;
        if !framed_as_written(status, &headers, body.len()) {
            return None;
        }
        let body = Bytes::copy_from_slice(body);
        Some(Entry {
            status,
            headers,
            body,
            vary,
            coding,
            response_time,
            initial_age,
            lifetime: Lifetime { fresh, stale_if_error, stale_while_revalidate, must_revalidate },
            wire: WireHead::default(),
        })
    }
}

/// Whether a decoded entry is framed as perfproxy writes one: a status it
/// stores, no `Transfer-Encoding`, and every `Content-Length` its body's
/// length. A value in Redis is not trusted further than that: one whose
/// length and body disagree would let its extra bytes be read by the
/// client as an answer of their own (response splitting), or leave the
/// client waiting for bytes that never come.
fn framed_as_written(status: StatusCode, headers: &HeaderMap, body: usize) -> bool {
    crate::cache::policy::storable_status(status)
        && !headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .all(|v| crate::wire::http1::content_length(v.as_bytes()).is_some_and(|n| n == body as u64))
}

/// A coding as stored: its index here (0 none, then identity, gzip, br, zstd).
const STORED_CODINGS: [Option<Coding>; 5] =
    [None, Some(Coding::Identity), Some(Coding::Gzip), Some(Coding::Br), Some(Coding::Zstd)];

fn coding_byte(c: Option<Coding>) -> u8 {
    STORED_CODINGS.iter().position(|s| *s == c).expect("every coding is in the table") as u8
}

/// `None` (not an entry) for a byte no version wrote.
fn byte_coding(b: u8) -> Option<Option<Coding>> {
    STORED_CODINGS.get(usize::from(b)).copied()
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.extend_from_slice(b);
}

/// A bounds-checked reader: a short or corrupt value is `None`, never a panic.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|mut b| b.get_u8())
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|mut b| b.get_u16())
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|mut b| b.get_u64())
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.take(4).map(|mut b| b.get_u32())?;
        self.take(n as usize)
    }
}

/// A header value that owns its bytes. A value parsed by hyper is a slice
/// of its connection's read buffer; stored with an entry, a clone would keep
/// that whole buffer alive as long as the entry (10 KB an entry, not 1).
pub fn owned(value: &HeaderValue) -> HeaderValue {
    let mut v = HeaderValue::from_bytes(value.as_bytes()).expect("a header value's bytes are a header value");
    v.set_sensitive(value.is_sensitive());
    v
}

/// A fresh 200 entry of `body` bytes, no fields, for the cache's tests.
#[cfg(test)]
pub fn test_entry(body: usize) -> std::sync::Arc<Entry> {
    std::sync::Arc::new(Entry {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: Bytes::from(vec![b'x'; body]),
        vary: Vec::new(),
        coding: None,
        response_time: epoch_ms(SystemTime::now()),
        initial_age: 0,
        lifetime: Lifetime {
            fresh: Duration::from_secs(60),
            stale_if_error: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            must_revalidate: false,
        },
        wire: WireHead::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        Entry {
            status: StatusCode::NOT_FOUND,
            headers,
            body: Bytes::from_static(b"hello"),
            vary: vec![
                (HeaderName::from_static("accept"), Some(HeaderValue::from_static("text/html"))),
                (HeaderName::from_static("x-absent"), None),
            ],
            coding: Some(Coding::Br),
            response_time: 1_700_000_000_000,
            initial_age: 1500,
            lifetime: Lifetime {
                fresh: Duration::from_secs(60),
                stale_if_error: Duration::from_secs(30),
                stale_while_revalidate: Duration::ZERO,
                must_revalidate: true,
            },
            wire: WireHead::default(),
        }
    }

    #[test]
    fn encoding_round_trips_and_refuses_garbage() {
        let e = sample();
        let bytes = e.encode();
        assert_eq!(Entry::decode(&bytes), Some(e));
        for cut in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..cut]).is_none(), "truncated at {cut}");
        }
        assert!(Entry::decode(b"not an entry").is_none());
        // A version-1 entry (no coding) still reads.
        let plain = Entry { coding: None, ..sample() };
        let mut v1 = plain.encode();
        v1[..4].copy_from_slice(MAGIC_V1);
        v1.remove(6);
        assert_eq!(Entry::decode(&v1), Some(plain));
    }

    /// Found by an attack from outside: a value written into Redis with a
    /// `Content-Length` shorter than its body split the client's stream
    /// (its extra bytes read as the answer to the next request).
    #[test]
    fn a_value_framed_otherwise_than_written_is_not_an_entry() {
        let with = |name: &'static str, value: &'static str| {
            let mut e = sample();
            e.headers.append(name, HeaderValue::from_static(value));
            e
        };
        let written = with("content-length", "5");
        assert_eq!(Entry::decode(&written.encode()), Some(written));
        for (name, value) in [("content-length", "4"), ("content-length", "6"), ("transfer-encoding", "chunked")] {
            assert!(Entry::decode(&with(name, value).encode()).is_none(), "{name}: {value}");
        }
        let mut twice = with("content-length", "5");
        twice.headers.append("content-length", HeaderValue::from_static("50"));
        assert!(Entry::decode(&twice.encode()).is_none());
        for status in [101, 206, 302, 500] {
            let e = Entry { status: StatusCode::from_u16(status).unwrap(), ..sample() };
            assert!(Entry::decode(&e.encode()).is_none(), "{status}");
        }
    }

    #[test]
    fn age_and_staleness() {
        let e = sample();
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(e.age(at(e.response_time + 1000)), Duration::from_millis(2500));
        assert!(e.staleness(at(e.response_time + 58_000)).is_none());
        assert_eq!(e.staleness(at(e.response_time + 60_000)), Some(Duration::from_millis(1500)));
        assert_eq!(e.ttl(at(e.response_time)), Duration::from_millis(88_500));
    }
}
