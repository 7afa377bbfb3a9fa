//! Compression of upstream answers (`[compression]`), written once for
//! both lanes: [`Compression`] is the compiled table (codings in order,
//! minimum size, content types, levels) and decides, per answer, whether
//! it is sent as it came, as identity marked `Vary: Accept-Encoding`, or
//! compressed ([`Decision`]); [`encoder`] compresses a body as it streams;
//! [`stats`] counts what it did. [`Compressor`] holds the table a reload
//! swaps. The cache stores what was served, each coding its own variant
//! (see `cache::Cache::lookup`), so a hit never compresses again.

pub mod encoder;
pub mod stats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderMap, Method};

pub use encoder::Encoder;
pub use stats::{Figures, Stats};

use crate::settings::{CompressionSettings, ConfigError};
use crate::wire::encoding::{self, Accepted, Coding, ContentTypes, Ranked};

/// `[compression]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Compression {
    pub enabled: bool,
    /// The codings used, preferred first when the client's q-values tie.
    pub order: Vec<Coding>,
    pub min_bytes: u64,
    types: ContentTypes,
    /// gzip, br, zstd.
    levels: [u32; 3],
}

/// What becomes of an upstream answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not a compressible answer: sent and stored as it came.
    AsItCame,
    /// Compressible, sent in `coding` (identity: as it came, for a client
    /// that takes nothing else, a `HEAD` or a `Range` request), marked
    /// `Vary: Accept-Encoding`; stored as that coding's variant.
    Negotiated(Coding),
}

impl Compression {
    /// Checks the table; errors name the key.
    pub fn compile(s: &CompressionSettings) -> Result<Compression, ConfigError> {
        let mut order = Vec::with_capacity(s.algorithms.len());
        for (i, name) in s.algorithms.iter().enumerate() {
            let coding = Coding::from_token(name.as_bytes()).filter(|c| *c != Coding::Identity);
            let key = format!("compression.algorithms[{i}]");
            let Some(coding) = coding.filter(|_| !name.eq_ignore_ascii_case("x-gzip")) else {
                return Err(ConfigError::new(key, format!("{name:?}"), "one of \"zstd\", \"br\", \"gzip\""));
            };
            if order.contains(&coding) {
                return Err(ConfigError::new(key, format!("{name:?}"), "each algorithm once"));
            }
            order.push(coding);
        }
        if s.enabled && order.is_empty() {
            return Err(ConfigError::new("compression.algorithms", "[]", "at least one of \"zstd\", \"br\", \"gzip\""));
        }
        if s.min_bytes > 1 << 30 {
            return Err(ConfigError::new("compression.min_bytes", s.min_bytes, "a number from 0 to 1073741824"));
        }
        let types = ContentTypes::parse(&s.content_types).map_err(|i| {
            ConfigError::new(
                format!("compression.content_types[{i}]"),
                format!("{:?}", s.content_types[i]),
                "a media type such as text/html, text/*, */* or a suffix such as +json",
            )
        })?;
        let l = &s.level;
        for (key, level, lo, hi) in [
            ("compression.level.gzip", l.gzip, 1, 9),
            ("compression.level.br", l.br, 0, 11),
            ("compression.level.zstd", l.zstd, 1, 19),
        ] {
            if !(lo..=hi).contains(&level) {
                return Err(ConfigError::new(key, level, format!("a level from {lo} to {hi}")));
            }
        }
        Ok(Compression { enabled: s.enabled, order, min_bytes: s.min_bytes, types, levels: [l.gzip, l.br, l.zstd] })
    }

    /// The level `coding` compresses at.
    pub fn level(&self, coding: Coding) -> u32 {
        match coding {
            Coding::Gzip => self.levels[0],
            Coding::Br => self.levels[1],
            Coding::Zstd => self.levels[2],
            Coding::Identity => 0,
        }
    }

    /// The codings a request may be answered with, best first, from its
    /// `Accept-Encoding` values: identity alone for a `HEAD`, a `Range`
    /// request or one that says `no-transform`.
    pub fn rank<'a>(&self, accept_encoding: impl IntoIterator<Item = &'a [u8]>, compress: bool) -> Ranked {
        Accepted::parse(accept_encoding).rank(&self.order, compress)
    }

    /// [`Compression::rank`] for a request as `http` types.
    pub fn rank_request(&self, method: &Method, headers: &HeaderMap) -> Ranked {
        let compress =
            *method != Method::HEAD && !headers.contains_key(http::header::RANGE) && !encoding::no_transform(headers);
        let values = headers.get_all(http::header::ACCEPT_ENCODING).iter().map(|v| v.as_bytes());
        self.rank(values, compress)
    }

    /// What becomes of an upstream answer (`status`, `headers`, its body's
    /// `length` when known) to a request ranked `ranked`.
    pub fn decide(&self, ranked: &Ranked, status: u16, headers: &HeaderMap, length: Option<u64>) -> Decision {
        if !self.enabled || !encoding::compressible(status, headers, length, self.min_bytes, &self.types) {
            return Decision::AsItCame;
        }
        Decision::Negotiated(ranked.best())
    }
}

/// The compression table in force (swapped by a reload) and its counts.
#[derive(Debug)]
pub struct Compressor {
    table: ArcSwap<Compression>,
    /// `table.enabled`, read by the express lane per request for one load.
    on: AtomicBool,
    pub stats: Arc<Stats>,
}

impl Compressor {
    pub fn new(table: Compression) -> Compressor {
        let on = AtomicBool::new(table.enabled);
        Compressor { table: ArcSwap::from_pointee(table), on, stats: Arc::default() }
    }

    /// Whether answers are compressed.
    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    pub fn table(&self) -> arc_swap::Guard<Arc<Compression>> {
        self.table.load()
    }

    /// Applies a reloaded table.
    pub fn replace(&self, table: Compression) {
        self.on.store(table.enabled, Ordering::Relaxed);
        self.table.store(Arc::new(table));
    }

    /// A compressor for an answer `decided` so, of `length` bytes if known.
    /// A compressor that cannot start (zstd out of memory) sends identity: `None`.
    pub fn encoder(&self, coding: Coding, length: Option<u64>) -> Option<Box<Encoder>> {
        let level = self.table().level(coding);
        match Encoder::new(coding, level, length, self.stats.clone()) {
            Ok(e) => e.map(Box::new),
            Err(e) => {
                tracing::warn!(error = %e, coding = coding.token(), "compression could not start: sent as it came");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_checked_by_key() {
        let ok = Compression::compile(&CompressionSettings::default()).unwrap();
        assert_eq!(ok.order, Coding::COMPRESSED);
        assert!(!ok.enabled);
        let bad = |f: &dyn Fn(&mut CompressionSettings)| {
            let mut s = CompressionSettings::default();
            f(&mut s);
            Compression::compile(&s).unwrap_err().key
        };
        assert_eq!(bad(&|s| s.algorithms = vec!["gzip".into(), "lz4".into()]), "compression.algorithms[1]");
        assert_eq!(bad(&|s| s.algorithms = vec!["gzip".into(), "GZIP".into()]), "compression.algorithms[1]");
        assert_eq!(bad(&|s| s.algorithms = vec!["identity".into()]), "compression.algorithms[0]");
        assert_eq!(
            bad(&|s| {
                s.enabled = true;
                s.algorithms.clear()
            }),
            "compression.algorithms"
        );
        assert_eq!(bad(&|s| s.content_types = vec!["text".into()]), "compression.content_types[0]");
        assert_eq!(bad(&|s| s.level.gzip = 0), "compression.level.gzip");
        assert_eq!(bad(&|s| s.level.br = 12), "compression.level.br");
        assert_eq!(bad(&|s| s.level.zstd = 22), "compression.level.zstd");
    }

    #[test]
    fn decisions() {
        let mut s = CompressionSettings { enabled: true, ..Default::default() };
        let table = Compression::compile(&s).unwrap();
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        let gzip = table.rank([&b"gzip"[..]], true);
        assert_eq!(table.decide(&gzip, 200, &h, None), Decision::Negotiated(Coding::Gzip));
        let head = table.rank_request(&Method::HEAD, &HeaderMap::new());
        assert_eq!(table.decide(&head, 200, &h, None), Decision::Negotiated(Coding::Identity));
        assert_eq!(table.decide(&gzip, 304, &h, None), Decision::AsItCame);
        s.enabled = false;
        assert_eq!(Compression::compile(&s).unwrap().decide(&gzip, 200, &h, None), Decision::AsItCame);
    }
}
