//! What perfproxy's own endpoints keep between requests: their paths
//! ([`AdminPaths`]), the documents concurrent readers share ([`SharedDocs`])
//! and each worker's pace for answering them ([`DocumentPace`]). The
//! endpoints themselves are answered above, in `admin`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::settings::Endpoints;

/// The admin paths, resolved once.
#[derive(Debug)]
pub struct AdminPaths {
    pub performance: String,
    pub dashboard: String,
    pub metrics: String,
    /// `/performance/history`.
    pub history: String,
    pub health: String,
    pub live: String,
    pub ready: String,
    /// `POST` here purges the cache (see `cache::purge`).
    pub purge: String,
    /// Admin endpoints answer on the proxy listener too (`endpoints.proxy_listener`).
    on_proxy_listener: bool,
}

impl AdminPaths {
    pub fn new(e: &Endpoints) -> AdminPaths {
        AdminPaths {
            performance: e.performance.clone(),
            dashboard: format!("{}/dashboard", e.performance.trim_end_matches('/')),
            metrics: e.metrics.clone(),
            history: format!("{}/history", e.performance.trim_end_matches('/')),
            health: e.health.clone(),
            live: format!("{}/live", e.health.trim_end_matches('/')),
            ready: format!("{}/ready", e.health.trim_end_matches('/')),
            purge: e.purge.clone(),
            on_proxy_listener: e.proxy_listener,
        }
    }

    /// `/performance` (and its dashboard) or `/metrics`: the documents a
    /// storm of readers could make expensive.
    pub fn is_document(&self, path: &str) -> bool {
        path == self.performance || path == self.dashboard || path == self.metrics || path == self.history
    }

    pub fn is_probe(&self, path: &str) -> bool {
        path == self.health || path == self.live || path == self.ready
    }

    /// Whether perfproxy answers `path` itself on this listener (the purge
    /// path included): probes everywhere, the rest unless taken off the
    /// proxy listener.
    pub fn owns(&self, path: &str, admin_listener: bool) -> bool {
        if self.is_probe(path) {
            return true;
        }
        (admin_listener || self.on_proxy_listener)
            && [&self.performance, &self.dashboard, &self.metrics, &self.history, &self.purge]
                .iter()
                .any(|p| p.as_str() == path)
    }
}

/// Admin documents one worker answers per second, at most: readers past
/// that wait their turn (a dashboard or a scrape waits a few ms at worst), so
/// a storm of readers cannot take the worker from proxied traffic.
const DOCUMENTS_PER_SECOND: u32 = 200;

/// A worker's pace for admin documents (see [`DOCUMENTS_PER_SECOND`]).
#[derive(Debug)]
pub struct DocumentPace {
    next: std::cell::Cell<tokio::time::Instant>,
}

impl Default for DocumentPace {
    fn default() -> Self {
        DocumentPace { next: std::cell::Cell::new(tokio::time::Instant::now()) }
    }
}

impl DocumentPace {
    /// Waits for this worker's next turn to answer a document.
    pub async fn turn(&self) {
        let now = tokio::time::Instant::now();
        let at = self.next.get().max(now);
        self.next.set(at + Duration::from_secs(1) / DOCUMENTS_PER_SECOND);
        if at > now {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// How old a shared document may be.
const DOC_MAX_AGE: Duration = Duration::from_millis(50);
/// Documents kept at once (`?route=` makes more than one).
const DOCS_KEPT: usize = 32;

/// Which admin document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Doc {
    /// `/performance`, narrowed to a route or not; `true`: `scope=cluster`.
    Performance(Option<String>, bool),
    /// `/metrics`; `true`: in OpenMetrics.
    Metrics(bool),
}

/// Admin documents shared by concurrent readers: one merge serves every
/// reader for up to 50 ms, so a storm of `/performance` or `/metrics`
/// calls costs one build per 50 ms, not one per call.
#[derive(Debug)]
pub struct SharedDocs {
    docs: Mutex<HashMap<Doc, (Instant, Bytes)>>,
    builds: AtomicU64,
    /// The largest JSON document built so far: the next one's buffer is
    /// made this large at once (no doubling and copying as it grows, no spare
    /// half kept with the document).
    largest: AtomicUsize,
    /// One blocking-pool thread builds at a time; other readers wait for
    /// it as tasks, not as threads blocked on `docs`.
    pub building: tokio::sync::Semaphore,
}

impl Default for SharedDocs {
    fn default() -> Self {
        SharedDocs {
            docs: Mutex::default(),
            builds: AtomicU64::new(0),
            largest: AtomicUsize::new(0),
            building: tokio::sync::Semaphore::new(1),
        }
    }
}

impl SharedDocs {
    /// The document, built (under the lock, so concurrent readers wait for
    /// the one build) when the kept one is older than 50 ms.
    pub fn get(&self, doc: Doc, build: impl FnOnce(&Doc, usize) -> Vec<u8>) -> Bytes {
        let mut docs = self.docs.lock().expect("no code panics holding the document map");
        if let Some((at, bytes)) = docs.get(&doc) {
            if at.elapsed() < DOC_MAX_AGE {
                return bytes.clone();
            }
        }
        let room = self.largest.load(Ordering::Relaxed);
        let mut built = build(&doc, room + room / 16);
        if matches!(doc, Doc::Performance(..)) {
            self.largest.fetch_max(built.len(), Ordering::Relaxed);
        }
        built.shrink_to_fit();
        let bytes = Bytes::from(built);
        self.builds.fetch_add(1, Ordering::Relaxed);
        if docs.len() >= DOCS_KEPT {
            docs.retain(|_, (at, _)| at.elapsed() < DOC_MAX_AGE);
            if docs.len() >= DOCS_KEPT {
                docs.clear();
            }
        }
        docs.insert(doc, (Instant::now(), bytes.clone()));
        bytes
    }

    /// Documents built so far (`perfproxy_admin_document_builds_total`).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }
}
