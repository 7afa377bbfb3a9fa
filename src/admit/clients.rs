//! Who a request is from, the one rule both lanes apply:
//! - its **address**: walking `X-Forwarded-For` from the right, starting at
//!   the peer, the first address not in `trusted_proxies` (nginx's
//!   `real_ip_recursive`); the peer itself when it is not trusted; the
//!   leftmost entry when every hop is trusted; the last trusted hop when an
//!   entry is not an address ([`Asker::address`]);
//! - its **key**, what rate limits and top clients count it under
//!   ([`KeySpec`]): the address, a header's value, or one key for all;
//! - how it is **shown**: an address as text, a header value only as the
//!   first 16 hex digits of its SHA-256, never in clear ([`Shown`]).
//!
//! [`top`] ranks the clients by request rate.

pub mod sliding;
pub mod top;

use std::cell::Cell;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};

use http::header::HeaderName;

use crate::admit::access::Cidrs;
use crate::settings::ConfigError;

/// What a request is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// The client's address.
    Client,
    /// A header's value (a request without it is not counted).
    Header(HeaderName),
    /// One key for every request.
    Global,
}

impl KeySpec {
    /// `"client"`, `"header:NAME"` or (where `global` is allowed) `"global"`.
    pub fn parse(key: &str, value: &str, global: bool) -> Result<KeySpec, ConfigError> {
        let expected =
            if global { "\"client\", \"global\" or \"header:NAME\"" } else { "\"client\" or \"header:NAME\"" };
        match value {
            "client" => Ok(KeySpec::Client),
            "global" if global => Ok(KeySpec::Global),
            _ => match value.strip_prefix("header:").map(|n| HeaderName::from_bytes(n.trim().as_bytes())) {
                Some(Ok(name)) => Ok(KeySpec::Header(name)),
                _ => Err(ConfigError::new(key, format!("{value:?}"), expected)),
            },
        }
    }
}

/// A client as the counters know it: 64 bits of its address or key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub u64);

/// How a client is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    Address(IpAddr),
    /// The first 8 bytes of the SHA-256 of a header's value.
    Hashed([u8; 8]),
    Everyone,
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shown::Address(ip) => write!(f, "{ip}"),
            Shown::Hashed(bytes) => {
                f.write_str("sha256:")?;
                bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Shown::Everyone => f.write_str("global"),
        }
    }
}

/// One client of a request, as a key names it.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    Address(IpAddr),
    Header(&'a [u8]),
    Everyone,
}

impl Who<'_> {
    /// Its key: addresses, header values and the global key never meet.
    #[inline]
    pub fn key(&self) -> Key {
        let hash = |seed: u64, bytes: &[u8]| foldhash::fast::FixedState::with_seed(seed).hash_one(bytes);
        Key(match self {
            Who::Address(IpAddr::V4(v4)) => u64::from(u32::from(*v4)),
            Who::Address(IpAddr::V6(v6)) => hash(6, &v6.octets()) | 1 << 63,
            Who::Header(value) => hash(7, value) | 1 << 62,
            Who::Everyone => 1 << 61,
        })
    }

    /// How it is shown (a header value hashed: a SHA-256 per call).
    pub fn shown(&self) -> Shown {
        match self {
            Who::Address(ip) => Shown::Address(*ip),
            Who::Header(value) => {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(value);
                Shown::Hashed(digest[..8].try_into().expect("a SHA-256 is 32 bytes"))
            }
            Who::Everyone => Shown::Everyone,
        }
    }
}

/// What the client rules read of a request: each lane's own view of its head.
pub trait Fields {
    /// The `X-Forwarded-For` values, in the order they came.
    fn forwarded_for(&self) -> impl DoubleEndedIterator<Item = &[u8]>;
    /// Whether it carries an `X-Forwarded-For` at all.
    fn any_forwarded_for(&self) -> bool;
    /// The first value of the field `name`.
    fn field(&self, name: &HeaderName) -> Option<&[u8]>;
    /// How many fields `name` it carries.
    fn field_count(&self, name: &HeaderName) -> usize;
}

impl Fields for http::HeaderMap {
    fn forwarded_for(&self) -> impl DoubleEndedIterator<Item = &[u8]> {
        self.get_all(&crate::wire::headers::X_FORWARDED_FOR).iter().map(|v| v.as_bytes())
    }

    fn any_forwarded_for(&self) -> bool {
        self.contains_key(&crate::wire::headers::X_FORWARDED_FOR)
    }

    fn field(&self, name: &HeaderName) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }

    fn field_count(&self, name: &HeaderName) -> usize {
        self.get_all(name).iter().count()
    }
}

/// Asks a request who its client is, working its address out once.
pub struct Asker<'a, F> {
    fields: &'a F,
    peer: IpAddr,
    peer_trusted: bool,
    trusted: &'a Cidrs,
    address: Cell<Option<IpAddr>>,
}

impl<'a, F: Fields> Asker<'a, F> {
    pub fn new(fields: &'a F, peer: IpAddr, peer_trusted: bool, trusted: &'a Cidrs) -> Self {
        Asker { fields, peer, peer_trusted, trusted, address: Cell::new(None) }
    }

    /// The client's address (see the module's rule).
    #[inline]
    pub fn address(&self) -> IpAddr {
        // Most requests: an untrusted peer, or a trusted one that forwards nothing.
        if !self.peer_trusted || !self.fields.any_forwarded_for() {
            return self.peer;
        }
        self.walked()
    }

    #[inline(never)]
    fn walked(&self) -> IpAddr {
        if let Some(ip) = self.address.get() {
            return ip;
        }
        let ip = walk(self.peer, self.fields.forwarded_for(), self.trusted);
        self.address.set(Some(ip));
        ip
    }

    /// Whether `spec` is a header the request carries more than once.
    pub fn repeated(&self, spec: &KeySpec) -> bool {
        matches!(spec, KeySpec::Header(name) if self.fields.field_count(name) > 1)
    }

    /// The client as `spec` names it; `None`: a header key the request lacks.
    #[inline]
    pub fn who(&self, spec: &KeySpec) -> Option<Who<'a>> {
        match spec {
            KeySpec::Client => Some(Who::Address(self.address())),
            KeySpec::Header(name) => self.fields.field(name).filter(|v| !v.is_empty()).map(Who::Header),
            KeySpec::Global => Some(Who::Everyone),
        }
    }
}

/// Walks `X-Forwarded-For` from its right end, past trusted hops.
fn walk<'v>(peer: IpAddr, values: impl DoubleEndedIterator<Item = &'v [u8]>, trusted: &Cidrs) -> IpAddr {
    let mut hop = peer;
    for value in values.rev() {
        for entry in value.rsplit(|&b| b == b',') {
            let entry = entry.trim_ascii();
            if entry.is_empty() {
                continue;
            }
            match parse_entry(entry) {
                Some(ip) if trusted.contains(ip) => hop = ip.to_canonical(),
                Some(ip) => return ip.to_canonical(),
                // Not an address: the chain is broken here; the hop that passed it on is the client.
                None => return hop,
            }
        }
    }
    hop
}

/// An address, bare or with a port (`1.2.3.4:5`, `[::1]:5`, `[::1]`).
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| text.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(peer: &str, xff: &[&str]) -> String {
        let trusted = Cidrs::parse("t", &["127.0.0.0/8".into(), "10.0.0.0/8".into()]).expect("valid");
        let mut headers = http::HeaderMap::new();
        for v in xff {
            headers.append("x-forwarded-for", v.parse().expect("valid"));
        }
        let peer: IpAddr = peer.parse().expect("an address");
        Asker::new(&headers, peer, trusted.contains(peer), &trusted).address().to_string()
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        // An untrusted peer is the client, whatever it says.
        assert_eq!(address("203.0.113.9", &["1.1.1.1"]), "203.0.113.9");
        assert_eq!(address("127.0.0.1", &[]), "127.0.0.1");
        assert_eq!(address("127.0.0.1", &["1.1.1.1, 2.2.2.2"]), "2.2.2.2");
        assert_eq!(address("127.0.0.1", &["1.1.1.1, 2.2.2.2, 10.0.0.7"]), "2.2.2.2");
        // Across fields, the last field last.
        assert_eq!(address("127.0.0.1", &["9.9.9.9", "2.2.2.2, 10.1.1.1", "10.0.0.2"]), "2.2.2.2");
        // Every hop trusted: the leftmost.
        assert_eq!(address("127.0.0.1", &["10.0.0.1, 10.0.0.2"]), "10.0.0.1");
        // A spoofed entry left of the real client changes nothing.
        assert_eq!(address("10.0.0.1", &["6.6.6.6, 2.2.2.2"]), "2.2.2.2");
        // Garbage: the hop that passed it on.
        assert_eq!(address("127.0.0.1", &["2.2.2.2, nonsense, 10.0.0.3"]), "10.0.0.3");
        assert_eq!(address("127.0.0.1", &["unknown"]), "127.0.0.1");
        // Ports and brackets.
        assert_eq!(address("127.0.0.1", &["2.2.2.2:443"]), "2.2.2.2");
        assert_eq!(address("127.0.0.1", &["[2001:db8::1]:443"]), "2001:db8::1");
        assert_eq!(address("127.0.0.1", &["[2001:db8::1]"]), "2001:db8::1");
        assert_eq!(address("127.0.0.1", &["::ffff:2.2.2.2"]), "2.2.2.2");
        assert_eq!(address("127.0.0.1", &[" , 2.2.2.2 ,"]), "2.2.2.2");
    }

    #[test]
    fn keys_are_parsed_and_header_values_never_shown() {
        assert_eq!(KeySpec::parse("k", "client", false), Ok(KeySpec::Client));
        assert_eq!(KeySpec::parse("k", "global", true), Ok(KeySpec::Global));
        assert!(KeySpec::parse("k", "global", false).is_err());
        assert!(KeySpec::parse("k", "header:", true).is_err());
        assert!(KeySpec::parse("k", "peer", true).is_err());
        assert_eq!(
            KeySpec::parse("k", "header:X-Api-Key", true),
            Ok(KeySpec::Header(HeaderName::from_static("x-api-key")))
        );
        let secret = b"sk_live_abcdef";
        let shown = Who::Header(secret).shown().to_string();
        // `printf %s sk_live_abcdef | sha256sum | cut -c1-16`
        assert_eq!(shown, "sha256:694433e85526039c");
        assert!(!shown.contains("sk_live"));
        assert_ne!(Who::Header(b"1").key(), Who::Address("0.0.0.1".parse().expect("ip")).key());
    }
}
