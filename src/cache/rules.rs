//! The `[cache]` settings compiled for the request path ([`Rules`]): what
//! a reload swaps in one piece.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName};
use http::Method;

use super::key::Glob;
use super::policy::Policy;
use crate::settings::CacheSettings;
use crate::wire::routes::RoutePattern;

/// The cache configuration as the request path uses it (swapped on reload).
#[derive(Debug)]
pub struct Rules {
    pub enabled: bool,
    pub origin_directives: bool,
    pub max_object_bytes: usize,
    pub redis_timeout: Duration,
    pub stale_if_error: Duration,
    /// How long a URL found uncacheable is remembered (`cache.uncacheable_ttl_ms`).
    pub uncacheable_ttl: Duration,
    pub ignore_query: Vec<Glob>,
    /// `cache.tag_headers`: the fields whose values tag an entry.
    pub tag_headers: Vec<HeaderName>,
    pub keep_tag_headers: bool,
    pub rules: Vec<Rule>,
}

/// Tags one entry may carry, at most, and the longest tag kept.
const MAX_TAGS: usize = 64;
const MAX_TAG_LEN: usize = 256;

/// A compiled `[[cache.rules]]` entry.
#[derive(Debug)]
pub struct Rule {
    pub pattern: RoutePattern,
    pub ttl: Duration,
    pub invalidates: Vec<Glob>,
}

impl Rules {
    pub fn new(s: &CacheSettings) -> Rules {
        Rules {
            enabled: s.enabled,
            origin_directives: s.origin_directives,
            max_object_bytes: s.max_object_bytes as usize,
            redis_timeout: Duration::from_millis(s.redis_timeout_ms),
            stale_if_error: Duration::from_millis(s.stale_if_error_ms),
            uncacheable_ttl: Duration::from_millis(s.uncacheable_ttl_ms),
            ignore_query: s.ignore_query.iter().map(|g| Glob::new(g)).collect(),
            // Validated at load: every name parses.
            tag_headers: s.tag_headers.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect(),
            keep_tag_headers: s.keep_tag_headers,
            rules: s
                .rules
                .iter()
                .filter_map(|r| {
                    Some(Rule {
                        // Validated at load: a pattern here always parses.
                        pattern: RoutePattern::parse(&r.pattern).ok()?,
                        ttl: Duration::from_millis(r.ttl_ms.unwrap_or(s.default_ttl_ms)),
                        invalidates: r.invalidates.iter().map(|g| Glob::new(g)).collect(),
                    })
                })
                .collect(),
        }
    }

    /// The tags a response's tag headers give (space or comma separated).
    pub fn tags(&self, headers: &HeaderMap) -> Vec<String> {
        let mut tags: Vec<String> = Vec::new();
        for name in &self.tag_headers {
            for v in headers.get_all(name).iter().filter_map(|v| v.to_str().ok()) {
                for t in v.split([' ', ',']).map(str::trim).filter(|t| !t.is_empty() && t.len() <= MAX_TAG_LEN) {
                    if tags.len() < MAX_TAGS && !tags.iter().any(|x| x == t) {
                        tags.push(t.to_string());
                    }
                }
            }
        }
        tags
    }

    /// Removes the tag headers before an answer leaves, unless kept.
    pub fn strip_tags(&self, headers: &mut HeaderMap) {
        if !self.keep_tag_headers {
            for name in &self.tag_headers {
                headers.remove(name);
            }
        }
    }

    /// The storage policy for a GET of `path`.
    pub fn policy(&self, path: &str) -> Policy {
        Policy {
            origin_directives: self.origin_directives,
            rule_ttl: self.rules.iter().find(|r| r.pattern.matches(&Method::GET, path)).map(|r| r.ttl),
            stale_if_error: self.stale_if_error,
        }
    }
}
