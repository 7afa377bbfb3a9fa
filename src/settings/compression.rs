//! The `[compression]` table: whether answers are compressed, with which
//! codings in which order, from what size, for which content types, and
//! each coding's level. Checked and compiled by the `compress` layer.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionSettings {
    pub enabled: bool,
    /// `zstd`, `br`, `gzip`: the ones used, in the order preferred when the
    /// client's q-values tie.
    pub algorithms: Vec<String>,
    /// Answers with a smaller `Content-Length` are sent as they are.
    pub min_bytes: u64,
    /// `type/subtype`, `type/*`, `*/*` or a suffix such as `+json`.
    pub content_types: Vec<String>,
    pub level: CompressionLevels,
}

impl Default for CompressionSettings {
    fn default() -> Self {
        CompressionSettings {
            enabled: false,
            algorithms: ["zstd", "br", "gzip"].map(String::from).to_vec(),
            min_bytes: 1024,
            content_types: [
                "text/*",
                "application/json",
                "application/javascript",
                "application/xml",
                "image/svg+xml",
                "+json",
                "+xml",
            ]
            .map(String::from)
            .to_vec(),
            level: CompressionLevels::default(),
        }
    }
}

/// `[compression.level]`: each coding's level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionLevels {
    /// 1 (fastest) to 9.
    pub gzip: u32,
    /// 0 (fastest) to 11.
    pub br: u32,
    /// 1 (fastest) to 19.
    pub zstd: u32,
}

impl Default for CompressionLevels {
    fn default() -> Self {
        CompressionLevels { gzip: 6, br: 4, zstd: 3 }
    }
}
