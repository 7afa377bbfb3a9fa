//! The cluster view: every instance publishes its figures to Redis each
//! `cluster.publish_ms` (`perfproxy:cluster:<instance>`, TTL three
//! intervals, and its id in the `perfproxy:cluster:instances` sorted set,
//! scored by time, so readers never scan the keyspace), reads every live
//! instance's, and keeps the merge ([`wire::merge`]) for
//! `GET /performance?scope=cluster`. Readers get the latest merge at once:
//! a storm of them never reaches Redis, and Redis being down costs
//! requests nothing (the view falls back to this instance alone).

pub mod wire;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use tracing::{debug, info};

pub use wire::{Instance, Merged};

const KEY_PREFIX: &str = "perfproxy:cluster:";
const INSTANCES: &str = "perfproxy:cluster:instances";
/// One Redis round trip at most this long.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// This instance's place in the cluster view.
#[derive(Debug)]
pub struct Cluster {
    pub instance: String,
    publish: Duration,
    client: Option<redis::Client>,
    latest: ArcSwapOption<Merged>,
    /// Instances seen live at the last exchange (1 without Redis).
    live: std::sync::atomic::AtomicUsize,
}

/// The default instance id: the hostname and the pid (a pod's name, in Kubernetes).
pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "perfproxy".into());
    format!("{host}-{}", std::process::id())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl Cluster {
    pub fn new(instance: String, publish: Duration, redis_url: Option<&str>) -> Arc<Cluster> {
        let client = redis_url.and_then(|u| redis::Client::open(u).ok());
        let live = std::sync::atomic::AtomicUsize::new(1);
        Arc::new(Cluster { instance, publish, client, latest: ArcSwapOption::empty(), live })
    }

    /// The latest merge over the live instances; `None` without Redis (or
    /// while it cannot be reached).
    pub fn view(&self) -> Option<Arc<Merged>> {
        self.latest.load_full()
    }

    /// How many instances were live at the last exchange with Redis (this
    /// one alone without Redis, or while it cannot be reached).
    pub fn live_instances(&self) -> usize {
        if self.latest.load().is_none() {
            return 1;
        }
        self.live.load(std::sync::atomic::Ordering::Relaxed).max(1)
    }

    /// Publishes this instance's `figures` (asked with the time in ms) and
    /// merges every `publish_ms` until `shutdown` resolves.
    pub async fn run(
        self: Arc<Self>,
        figures: impl Fn(u64) -> wire::Published,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let Some(client) = self.client.clone() else { return };
        info!(instance = %self.instance, publish_ms = self.publish.as_millis() as u64, "cluster view: publishing to Redis");
        tokio::pin!(shutdown);
        let mut conn: Option<ConnectionManager> = None;
        let mut tick = tokio::time::interval(self.publish);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            if conn.is_none() {
                conn = tokio::time::timeout(REDIS_TIMEOUT, ConnectionManager::new(client.clone()))
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            let Some(c) = conn.as_mut() else {
                self.latest.store(None);
                continue;
            };
            match tokio::time::timeout(REDIS_TIMEOUT, self.exchange(&figures, c)).await {
                Ok(Ok(merged)) => self.latest.store(Some(Arc::new(merged))),
                Ok(Err(e)) => {
                    debug!(error = %e, "cluster view: redis failed");
                    self.latest.store(None);
                }
                Err(_) => {
                    debug!("cluster view: redis timed out");
                    conn = None;
                    self.latest.store(None);
                }
            }
        }
    }

    /// Publishes this instance's figures, then reads and merges every live one's.
    async fn exchange(
        &self,
        figures: &impl Fn(u64) -> wire::Published,
        conn: &mut ConnectionManager,
    ) -> redis::RedisResult<Merged> {
        let now = now_ms();
        let ttl = 3 * self.publish.as_millis() as u64;
        let doc = figures(now);
        let json = serde_json::to_string(&doc).expect("plain data");
        let (ids,): (Vec<String>,) = redis::pipe()
            .cmd("SET")
            .arg(format!("{KEY_PREFIX}{}", self.instance))
            .arg(json)
            .arg("PX")
            .arg(ttl)
            .ignore()
            .cmd("ZADD")
            .arg(INSTANCES)
            .arg(now)
            .arg(&self.instance)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(INSTANCES)
            .arg("-inf")
            .arg(format!("({}", now.saturating_sub(ttl)))
            .ignore()
            .cmd("ZRANGEBYSCORE")
            .arg(INSTANCES)
            .arg(now.saturating_sub(ttl))
            .arg("+inf")
            .query_async(conn)
            .await?;
        self.live.store(ids.len(), std::sync::atomic::Ordering::Relaxed);
        let keys: Vec<String> = ids.iter().map(|id| format!("{KEY_PREFIX}{id}")).collect();
        let texts: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
        let docs: Vec<wire::Published> = texts.iter().flatten().filter_map(|t| serde_json::from_str(t).ok()).collect();
        Ok(wire::merge(&docs))
    }
}
