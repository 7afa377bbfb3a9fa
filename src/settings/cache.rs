//! The `[cache]` table and its `[[cache.rules]]`, with the documented
//! defaults (64 MiB in memory, 1 MiB per object, Redis time-boxed at 50 ms).

use serde::{Deserialize, Serialize};

/// The `[cache]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    pub enabled: bool,
    pub origin_directives: bool,
    pub memory_bytes: u64,
    pub max_object_bytes: u64,
    pub redis_timeout_ms: u64,
    pub stale_if_error_ms: u64,
    /// How long a URL whose response could not be stored goes straight upstream (not collapsed).
    pub uncacheable_ttl_ms: u64,
    /// TTL for rules that name none (`CACHE_TTL_DEFAULT`, in seconds, sets it).
    pub default_ttl_ms: u64,
    pub ignore_query: Vec<String>,
    /// Response headers whose values tag an entry for `POST /cache/purge {"tags": [...]}`.
    pub tag_headers: Vec<String>,
    /// Keep the tag headers on answers (else they are removed before the client sees them).
    pub keep_tag_headers: bool,
    pub rules: Vec<CacheRule>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: true,
            origin_directives: true,
            memory_bytes: 64 * 1024 * 1024,
            max_object_bytes: 1024 * 1024,
            redis_timeout_ms: 50,
            stale_if_error_ms: 60_000,
            uncacheable_ttl_ms: 120_000,
            default_ttl_ms: 3_600_000,
            ignore_query: Vec::new(),
            tag_headers: vec!["Surrogate-Key".into(), "Cache-Tag".into()],
            keep_tag_headers: false,
            rules: Vec::new(),
        }
    }
}

/// A `[[cache.rules]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    pub pattern: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(default)]
    pub invalidates: Vec<String>,
}
