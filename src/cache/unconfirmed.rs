//! Invalidations Redis has not taken yet: an unsafe request's or a purge's
//! deletion that failed or outlasted its timeout (a Redis stall, a
//! restart). Each is kept and retried in the background until Redis takes
//! it and the other instances are told; until then nothing it selects is
//! read back from Redis into memory, so a write or a purge is never undone
//! by the copy it meant to remove (read-after-write holds through a stall).

use std::sync::Mutex;
use std::time::Duration;

use tracing::{debug, warn};

use super::key::Glob;
use super::redis_layer::{LayerError, RedisLayer};

/// How long one retry may take, and the pause between rounds.
const RETRY_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// Most invalidations held; past it the oldest goes (logged).
const MOST_HELD: usize = 10_000;

/// What Redis still has to be told.
#[derive(Debug, Clone)]
pub enum Invalidation {
    Pattern(Glob),
    /// Tags, with the paths memory held for them (what reads must skip).
    Tags(Vec<String>, Vec<Glob>),
}

impl Invalidation {
    fn selects(&self, key: &str) -> bool {
        match self {
            Invalidation::Pattern(glob) => glob.selects(key),
            Invalidation::Tags(_, paths) => paths.iter().any(|p| p.selects(key)),
        }
    }

    /// Deletes what it selects from Redis and tells the other instances.
    pub async fn send(&self, redis: &RedisLayer, instance: &str) -> Result<Vec<String>, LayerError> {
        match self {
            Invalidation::Pattern(glob) => {
                let keys = redis.delete_matching(glob).await?;
                redis.publish(instance, glob).await?;
                Ok(keys)
            }
            Invalidation::Tags(tags, _) => {
                let keys = redis.delete_tagged(tags).await?;
                for tag in tags {
                    redis.publish_tag(instance, tag).await?;
                }
                Ok(keys)
            }
        }
    }
}

/// The invalidations held, each with an id to confirm it by.
#[derive(Debug, Default)]
pub struct Unconfirmed {
    held: Mutex<(u64, Vec<(u64, Invalidation)>)>,
    added: tokio::sync::Notify,
}

impl Unconfirmed {
    /// Keeps `invalidation` for the retrier.
    pub fn hold(&self, invalidation: Invalidation) {
        let mut held = self.held.lock().expect("no code panics holding the unconfirmed list");
        if let Invalidation::Pattern(glob) = &invalidation {
            // The same pattern again (writes to one path while Redis is down): held once.
            if held.1.iter().any(|(_, i)| matches!(i, Invalidation::Pattern(g) if g == glob)) {
                return;
            }
        }
        held.0 += 1;
        let id = held.0;
        held.1.push((id, invalidation));
        if held.1.len() > MOST_HELD {
            let (_, oldest) = held.1.remove(0);
            warn!(?oldest, "cache: too many invalidations Redis has not taken; the oldest is given up");
        }
        drop(held);
        self.added.notify_one();
    }

    /// Whether a held invalidation selects `key` (it must not be read from Redis).
    pub fn selects(&self, key: &str) -> bool {
        let held = self.held.lock().expect("no code panics holding the unconfirmed list");
        held.1.iter().any(|(_, i)| i.selects(key))
    }

    /// Retries every held invalidation until Redis takes it, for ever.
    pub async fn retry(&self, redis: &RedisLayer, instance: &str) {
        loop {
            self.added.notified().await;
            loop {
                let pending = self.held.lock().expect("no code panics holding the unconfirmed list").1.clone();
                if pending.is_empty() {
                    break;
                }
                for (id, invalidation) in pending {
                    match tokio::time::timeout(RETRY_TIMEOUT, invalidation.send(redis, instance)).await {
                        Ok(Ok(keys)) => {
                            debug!(?invalidation, deleted = keys.len(), "cache: redis took a held invalidation");
                            let mut held = self.held.lock().expect("no code panics holding the unconfirmed list");
                            held.1.retain(|(i, _)| *i != id);
                        }
                        Ok(Err(e)) => debug!(error = %e, "cache: held invalidation still refused by redis"),
                        Err(_) => debug!("cache: held invalidation timed out again"),
                    }
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
    }
}
