//! The copy of a response kept while it streams to the client, stored in
//! the cache once its body has ended complete.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};

use super::entry::Entry;
use super::{Cache, Counters, FlightGuard};

/// The copy of a response being stored: the body's frames are appended as
/// they stream to the client; at the end the entry is stored. A body over
/// `max_object_bytes`, or one that fails or is abandoned, is never stored.
/// Dropping it releases requests waiting on the same key.
#[derive(Debug)]
pub struct Fill {
    cache: Arc<Cache>,
    counters: Arc<Counters>,
    key: String,
    entry: Entry,
    body: BytesMut,
    limit: usize,
    /// The invalidation log when the fetch began.
    generation: u64,
    _flight: Option<FlightGuard>,
}

impl Fill {
    /// A copy of the response that will become `entry` under `key` (its
    /// body still empty): at most `limit` body bytes, fetched when the
    /// invalidation log stood at `generation`; dropping it releases
    /// `flight`'s followers.
    pub fn new(
        cache: Arc<Cache>,
        counters: Arc<Counters>,
        key: String,
        entry: Entry,
        limit: usize,
        generation: u64,
        flight: Option<FlightGuard>,
    ) -> Fill {
        Fill { cache, counters, key, entry, body: BytesMut::new(), limit, generation, _flight: flight }
    }

    /// The most body bytes it stores (`max_object_bytes`).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Appends a frame; `false` once the body is too big to store.
    pub fn push(&mut self, data: &[u8]) -> bool {
        if self.body.len() + data.len() > self.limit {
            return false;
        }
        self.body.extend_from_slice(data);
        true
    }

    /// The body ended complete: store the entry.
    pub fn finish(self) {
        let Fill { cache, counters, key, mut entry, body, generation, .. } = self;
        // Exactly the body's bytes: no spare capacity kept with the entry.
        let body = Bytes::copy_from_slice(&body);
        entry.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        entry.body = body;
        cache.store_fetched(&key, Arc::new(entry), generation, &counters);
    }
}
