//! Who may do what, decided from the connection's peer address (never from
//! `X-Forwarded-For`) or the admin token: the CIDR lists `trusted_proxies`,
//! `endpoints.allow` and `endpoints.admin_allow` ([`Cidrs`]), the bearer
//! token check ([`bearer_matches`]), and what a connection is allowed,
//! fixed once when it is accepted ([`Peer`]).

use std::net::IpAddr;

use http::header::{HeaderMap, AUTHORIZATION};
use ipnet::IpNet;

use crate::settings::ConfigError;

/// A list of address ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cidrs(Vec<IpNet>);

impl Cidrs {
    /// Parses `values` (CIDRs, or bare addresses as /32 and /128); an error names `key[i]`.
    pub fn parse(key: &str, values: &[String]) -> Result<Cidrs, ConfigError> {
        let mut nets = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let net = v
                .parse::<IpNet>()
                .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| ConfigError::new(format!("{key}[{i}]"), format!("{v:?}"), "a CIDR such as 10.0.0.0/8"))?;
            nets.push(net);
        }
        Ok(Cidrs(nets))
    }

    /// Every address (`0.0.0.0/0` and `::/0`).
    pub fn any() -> Cidrs {
        Cidrs(vec!["0.0.0.0/0".parse().expect("a valid CIDR"), "::/0".parse().expect("a valid CIDR")])
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counts as its IPv4) is in a range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// What a client connection may do, from its peer address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peer {
    /// In `trusted_proxies`: its `X-Forwarded-Host`/`-Proto` are kept.
    pub trusted: bool,
    /// In `endpoints.allow`: may read admin endpoints on the proxy listener.
    pub admin_allowed: bool,
}

/// Whether `headers` carry `Authorization: Bearer <token>` with this token
/// (compared without an early exit, so timing does not reveal it).
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    bearer(headers).is_some_and(|given| same(given.as_bytes(), token.as_bytes()))
}

/// The credentials of an `Authorization: Bearer` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim())
}

/// Compares a guess with the token in time that does not depend on the
/// guess, its length included: every byte of the token is compared (with
/// the guess's byte at that place, or a byte that cannot match past its
/// end), and a length mismatch folds into the same result, so neither a
/// wrong byte nor a wrong length, short or long, answers sooner.
fn same(guess: &[u8], token: &[u8]) -> bool {
    if token.is_empty() {
        return false;
    }
    let lengths = (guess.len() ^ token.len()) as u64;
    let bytes = token.iter().enumerate().fold(0u8, |acc, (i, t)| acc | (t ^ guess.get(i).map_or(!t, |g| *g)));
    std::hint::black_box(lengths | u64::from(bytes)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_mapped_addresses() {
        let c = Cidrs::parse("k", &["127.0.0.0/8".into(), "::1".into(), "10.1.2.3".into()]).unwrap();
        assert!(c.contains("127.9.9.9".parse().unwrap()));
        assert!(c.contains("::ffff:127.0.0.1".parse().unwrap()), "IPv4-mapped");
        assert!(c.contains("::1".parse().unwrap()) && c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.1.2.4".parse().unwrap()) && !c.contains("8.8.8.8".parse().unwrap()));
        let e = Cidrs::parse("endpoints.allow", &["10.0.0.0/8".into(), "ten".into()]).unwrap_err();
        assert_eq!(e.key, "endpoints.allow[1]");
        assert!(Cidrs::any().contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert!(!bearer_matches(&h, "t"));
        h.insert(AUTHORIZATION, "Bearer  sekrit ".parse().unwrap());
        assert!(bearer_matches(&h, "sekrit") && !bearer_matches(&h, "sekri"));
        h.insert(AUTHORIZATION, "Basic sekrit".parse().unwrap());
        assert!(!bearer_matches(&h, "sekrit"));
        // A guess that is the token repeated, or its prefix, is no match.
        assert!(!same(b"sekritsekrit", b"sekrit") && !same(b"sek", b"sekrit") && !same(b"", b"sekrit"));
        assert!(same(b"sekrit", b"sekrit") && !same(b"x", b""));
    }
}
