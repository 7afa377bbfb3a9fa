//! The shared layer: entries in Redis under `perfproxy:`, through one
//! auto-reconnecting [`ConnectionManager`]. Layout:
//! - `perfproxy:obj:<primary key>`: a hash, one field per variant (its vary
//!   values), each an encoded [`Entry`]; the hash's TTL is its longest-lived
//!   variant's (`PEXPIRE … NX` then `GT`, Redis ≥ 7).
//! - `perfproxy:index`: a sorted set of primary keys, all with score 0, so a
//!   pattern's literal prefix is a `ZRANGEBYLEX` range: purges never `KEYS`
//!   or `SCAN` the keyspace. Keys whose hash has expired are swept from it
//!   in the background ([`RedisLayer::sweep`], `ZSCAN` over the index only).
//! - `perfproxy:tag:<tag>`: a set of the primary keys carrying a tag, living
//!   as long as its longest-lived member; `perfproxy:tags`, a sorted set of
//!   tag names, swept like the index ([`RedisLayer::sweep_tags`]): a tag
//!   purge reads its set, never the keyspace.
//! - `perfproxy:invalidate`: the pub/sub channel on which instances tell each
//!   other which patterns (`/path*`) and tags (`#tag`) to drop from their
//!   memory layer.
//!
//! Callers time-box every call (`cache.redis_timeout_ms`); this module only
//! talks to Redis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisError;
use tracing::{debug, info, warn};

use super::entry::Entry;
use super::key::Glob;

const OBJECT_PREFIX: &str = "perfproxy:obj:";
const INDEX: &str = "perfproxy:index";
const TAG_PREFIX: &str = "perfproxy:tag:";
const TAGS: &str = "perfproxy:tags";
pub const CHANNEL: &str = "perfproxy:invalidate";
/// Index entries read per round trip during a purge.
const PAGE: usize = 500;

/// Why a Redis call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("redis not connected")]
    NotConnected,
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
}

/// The Redis side of the cache.
pub struct RedisLayer {
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    /// Listening on the invalidation channel now.
    subscribed: AtomicBool,
}

impl std::fmt::Debug for RedisLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLayer").field("connected", &self.conn.load().is_some()).finish()
    }
}

impl RedisLayer {
    /// `None` when the URL does not parse (config validation checks it first).
    pub fn new(url: &str) -> Option<RedisLayer> {
        let client = redis::Client::open(url).ok()?;
        Some(RedisLayer { client, conn: ArcSwapOption::empty(), subscribed: AtomicBool::new(false) })
    }

    /// Whether the layer is in use: connected (the manager reconnects by
    /// itself after that) and listening for other instances' invalidations.
    pub fn connected(&self) -> bool {
        self.conn.load().is_some() && self.subscribed.load(Ordering::Relaxed)
    }

    fn conn(&self) -> Result<ConnectionManager, LayerError> {
        self.conn.load().as_deref().cloned().ok_or(LayerError::NotConnected)
    }

    /// Connects, retrying until it succeeds (Redis may be down at start);
    /// from then on the connection manager reconnects by itself.
    pub async fn connect(&self) {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(3)
            .set_max_delay(1000);
        let mut delay = Duration::from_millis(200);
        loop {
            match ConnectionManager::new_with_config(self.client.clone(), config.clone()).await {
                Ok(m) => {
                    info!("cache: redis layer connected");
                    self.conn.store(Some(Arc::new(m)));
                    return;
                }
                Err(e) => {
                    debug!(error = %e, "cache: redis not reachable yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Every stored variant of `key`.
    pub async fn get(&self, key: &str) -> Result<Vec<Entry>, LayerError> {
        let mut c = self.conn()?;
        let values: Vec<Vec<u8>> = redis::cmd("HVALS").arg(object(key)).query_async(&mut c).await?;
        Ok(values.iter().filter_map(|v| Entry::decode(v)).collect())
    }

    /// Stores one variant with its tags; the hash (and each tag's set)
    /// lives as long as its longest variant.
    pub async fn put(&self, key: &str, entry: &Entry, tags: &[String]) -> Result<(), LayerError> {
        let ttl = entry.ttl(SystemTime::now()).as_millis().max(1) as u64;
        let obj = object(key);
        let mut c = self.conn()?;
        let mut pipe = redis::pipe();
        for tag in tags {
            let set = tag_set(tag);
            pipe.cmd("SADD").arg(&set).arg(key).ignore();
            pipe.cmd("PEXPIRE").arg(&set).arg(ttl).arg("NX").ignore();
            pipe.cmd("PEXPIRE").arg(&set).arg(ttl).arg("GT").ignore();
            pipe.cmd("ZADD").arg(TAGS).arg(0).arg(tag).ignore();
        }
        pipe.atomic()
            .cmd("HSET")
            .arg(&obj)
            .arg(entry.variant())
            .arg(entry.encode())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&obj)
            .arg(ttl)
            .arg("NX")
            .ignore()
            .cmd("PEXPIRE")
            .arg(&obj)
            .arg(ttl)
            .arg("GT")
            .ignore()
            .cmd("ZADD")
            .arg(INDEX)
            .arg(0)
            .arg(key)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// Deletes every key carrying one of `tags`; returns the keys that existed.
    pub async fn delete_tagged(&self, tags: &[String]) -> Result<Vec<String>, LayerError> {
        let mut c = self.conn()?;
        let mut purged = Vec::new();
        for tag in tags {
            let keys: Vec<String> = redis::cmd("SMEMBERS").arg(tag_set(tag)).query_async(&mut c).await?;
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("DEL").arg(object(k));
            }
            if !keys.is_empty() {
                pipe.cmd("ZREM").arg(INDEX).arg(&keys).ignore();
            }
            pipe.cmd("DEL").arg(tag_set(tag)).ignore();
            pipe.cmd("ZREM").arg(TAGS).arg(tag).ignore();
            let deleted: Vec<u64> = pipe.query_async(&mut c).await?;
            purged.extend(keys.into_iter().zip(deleted).filter(|(_, n)| *n > 0).map(|(k, _)| k));
        }
        Ok(purged)
    }

    /// One pass over the tag names, dropping those whose set has expired;
    /// returns how many.
    pub async fn sweep_tags(&self) -> Result<usize, LayerError> {
        self.sweep_members(TAGS, tag_set).await
    }

    /// Deletes every key `pattern` selects; returns the keys that existed.
    pub async fn delete_matching(&self, pattern: &Glob) -> Result<Vec<String>, LayerError> {
        let mut c = self.conn()?;
        let prefix = pattern.literal_prefix().as_bytes();
        let max = if prefix.is_empty() { b"+".to_vec() } else { [b"[", prefix, b"\xff"].concat() };
        let mut min = if prefix.is_empty() { b"-".to_vec() } else { [b"[", prefix].concat() };
        let mut purged = Vec::new();
        loop {
            let page: Vec<String> = redis::cmd("ZRANGEBYLEX")
                .arg(INDEX)
                .arg(&min)
                .arg(&max)
                .arg("LIMIT")
                .arg(0)
                .arg(PAGE)
                .query_async(&mut c)
                .await?;
            let Some(last) = page.last() else { break };
            min = [b"(", last.as_bytes()].concat();
            let chosen: Vec<&String> = page.iter().filter(|k| pattern.selects(k)).collect();
            if !chosen.is_empty() {
                let mut pipe = redis::pipe();
                for k in &chosen {
                    pipe.cmd("DEL").arg(object(k));
                }
                pipe.cmd("ZREM").arg(INDEX).arg(&chosen).ignore();
                let deleted: Vec<u64> = pipe.query_async(&mut c).await?;
                purged.extend(chosen.iter().zip(deleted).filter(|(_, n)| *n > 0).map(|(k, _)| (*k).clone()));
            }
            if page.len() < PAGE {
                break;
            }
        }
        Ok(purged)
    }

    /// One pass over the index, dropping keys whose entries have expired;
    /// returns how many.
    pub async fn sweep(&self) -> Result<usize, LayerError> {
        self.sweep_members(INDEX, object).await
    }

    /// One pass over the sorted set `set`, dropping the members whose Redis
    /// key (`key_of`) has expired; returns how many. Batches of `PAGE`,
    /// each a `ZSCAN` then one pipeline: never the keyspace.
    async fn sweep_members(&self, set: &str, key_of: fn(&str) -> String) -> Result<usize, LayerError> {
        let mut c = self.conn()?;
        let mut cursor: u64 = 0;
        let mut dropped = 0;
        loop {
            let (next, batch): (u64, Vec<String>) =
                redis::cmd("ZSCAN").arg(set).arg(cursor).arg("COUNT").arg(PAGE).query_async(&mut c).await?;
            // ZSCAN answers member, score, member, score…
            let members: Vec<&String> = batch.iter().step_by(2).collect();
            if !members.is_empty() {
                let mut pipe = redis::pipe();
                for m in &members {
                    pipe.cmd("EXISTS").arg(key_of(m));
                }
                let exists: Vec<u8> = pipe.query_async(&mut c).await?;
                let gone: Vec<&&String> = members.iter().zip(exists).filter(|(_, e)| *e == 0).map(|(m, _)| m).collect();
                if !gone.is_empty() {
                    let _: () = redis::cmd("ZREM").arg(set).arg(&gone).query_async(&mut c).await?;
                    dropped += gone.len();
                }
            }
            if next == 0 {
                return Ok(dropped);
            }
            cursor = next;
        }
    }

    /// Tells the other instances to drop what carries `tag` from memory.
    pub async fn publish_tag(&self, instance: &str, tag: &str) -> Result<(), LayerError> {
        let mut c = self.conn()?;
        let message = format!("{instance} #{tag}");
        redis::cmd("PUBLISH").arg(CHANNEL).arg(message).query_async::<()>(&mut c).await?;
        Ok(())
    }

    /// Tells the other instances to drop `pattern` from memory.
    pub async fn publish(&self, instance: &str, pattern: &Glob) -> Result<(), LayerError> {
        let mut c = self.conn()?;
        let message = format!("{instance} {}", pattern.to_message());
        redis::cmd("PUBLISH").arg(CHANNEL).arg(message).query_async::<()>(&mut c).await?;
        Ok(())
    }

    /// Listens on the invalidation channel for ever, resubscribing after a
    /// loss. `on_pattern` gets each other instance's pattern, `on_tag` its
    /// tags; `on_subscribe` runs each time the subscription starts: what
    /// memory holds may have missed messages sent while nobody listened.
    pub async fn listen(
        &self,
        instance: &str,
        on_pattern: impl Fn(Glob),
        on_tag: impl Fn(String),
        on_subscribe: impl Fn(),
    ) {
        loop {
            let subscribed = async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(CHANNEL).await?;
                Ok::<_, RedisError>(ps)
            };
            match tokio::time::timeout(Duration::from_secs(2), subscribed).await {
                Ok(Ok(ps)) => {
                    info!("cache: listening for invalidations; memory layer dropped (messages may have been missed)");
                    on_subscribe();
                    self.subscribed.store(true, Ordering::Relaxed);
                    let mut messages = ps.into_on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(text) = msg.get_payload::<String>() else { continue };
                        match text.split_once(' ') {
                            Some((from, tag)) if from != instance && tag.starts_with('#') => {
                                on_tag(tag[1..].to_string())
                            }
                            Some((from, pattern)) if from != instance => on_pattern(Glob::from_message(pattern)),
                            _ => {}
                        }
                    }
                    self.subscribed.store(false, Ordering::Relaxed);
                    warn!("cache: invalidation channel lost; resubscribing");
                }
                Ok(Err(e)) => debug!(error = %e, "cache: cannot subscribe yet"),
                Err(_) => debug!("cache: subscribing timed out"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn object(key: &str) -> String {
    let mut s = String::with_capacity(OBJECT_PREFIX.len() + key.len());
    s.push_str(OBJECT_PREFIX);
    s.push_str(key);
    s
}

fn tag_set(tag: &str) -> String {
    let mut s = String::with_capacity(TAG_PREFIX.len() + tag.len());
    s.push_str(TAG_PREFIX);
    s.push_str(tag);
    s
}
