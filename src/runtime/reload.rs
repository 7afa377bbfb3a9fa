//! Live reload: on SIGHUP the configuration is read again (the
//! same command line, so flags and environment keep their precedence over
//! the file) and validated; the route patterns, cache rules, rate limits, compression, alert
//! thresholds and health settings swap atomically (arc-swap) under running
//! connections. Keys that need a restart (listeners, upstream, limits,
//! backends, the metrics window) are logged and not applied. A broken file
//! is logged, naming the key, and the running configuration stays. The TLS
//! listener's certificate, key and client CA are read again too, whatever
//! became of the rest (a bad one keeps the certificate in use).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::config::{self, ConfigError, LoadError, Settings};
use crate::shared::state::{Live, Shared};

/// Tables whose changes apply live (`alerts.window_ms` excepted).
const LIVE_KEYS: [&str; 6] = ["routes", "cache", "health", "alerts", "rate_limits", "compression"];

/// Re-reads the configuration and applies what can change live. Returns
/// the keys that changed but need a restart.
pub fn reload(shared: &Shared) -> Result<Vec<String>, ConfigError> {
    let next = match config::reload_from_args(shared.config.args.clone()) {
        Ok(config) => config,
        Err(e) => match *e {
            LoadError::Invalid(e) => return Err(e),
            LoadError::Usage(e) => return Err(ConfigError::new("command line", "", e.to_string().trim().to_string())),
        },
    };
    let restart = restart_needed(&shared.config.settings, &next.settings);
    let mut live = Live::from(&next.settings);
    // The window shapes the metrics' slots, fixed at start.
    live.alerts.window_ms = shared.config.settings.alerts.window_ms;
    // Declared by rules or not as the running process discovers routes or
    // not (`[route_discovery]` itself needs a restart).
    shared.routes.set_patterns(shared.routes.patterns_for(&next.routes, &next.declared));
    shared.metrics.set_slow(Duration::from_millis(live.alerts.slow_request_ms));
    if let Some(db) = &shared.database {
        db.set_threshold(Duration::from_millis(live.alerts.slow_query_ms));
    }
    shared.cache.configure(&live.cache);
    shared.limits.replace(&next.rate_limits);
    shared.compression.replace(next.compression.clone());
    shared.live.store(Arc::new(live));
    Ok(restart)
}

/// The keys outside [`LIVE_KEYS`] (and `alerts.window_ms`) that differ.
fn restart_needed(old: &Settings, new: &Settings) -> Vec<String> {
    let as_table = |s: &Settings| match toml::Value::try_from(s) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::map::Map::new(),
    };
    let (a, b) = (as_table(old), as_table(new));
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut changed: Vec<String> =
        keys.into_iter().filter(|k| !LIVE_KEYS.contains(&k.as_str()) && a.get(*k) != b.get(*k)).cloned().collect();
    if old.alerts.window_ms != new.alerts.window_ms {
        changed.push("alerts.window_ms".into());
    }
    // The memory layer's capacity is fixed when it is built.
    if old.cache.memory_bytes != new.cache.memory_bytes {
        changed.push("cache.memory_bytes".into());
    }
    changed
}

/// Reloads on every SIGHUP until `shutdown` resolves.
pub async fn on_sighup(shared: Arc<Shared>, shutdown: impl std::future::Future<Output = ()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGHUP: reload disabled");
            return;
        }
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            got = hup.recv() => if got.is_none() { return },
        }
        if let Some(tls) = &shared.config.tls {
            tls.config.reload("SIGHUP");
        }
        match reload(&shared) {
            Ok(restart) => {
                for key in &restart {
                    warn!(key = %key, "configuration change needs a restart; not applied");
                }
                let file = shared.config.source.as_deref().map_or_else(String::new, |p| p.display().to_string());
                info!(file = %file, "configuration reloaded");
            }
            Err(e) => {
                error!(key = %e.key, value = %e.value, expected = %e.expected, "reload refused: keeping the running configuration")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_restart_keys_are_reported() {
        let old = Settings::default();
        let mut new = Settings::default();
        new.alerts.error_rate = 0.5;
        new.routes.push(crate::config::RouteRule { pattern: "/x/*".into() });
        new.health.interval_ms = 10;
        assert!(restart_needed(&old, &new).is_empty());
        new.listen = "0.0.0.0:1".into();
        new.alerts.window_ms = 1000;
        new.database.poll_interval_ms = 5;
        assert_eq!(restart_needed(&old, &new), ["database", "listen", "alerts.window_ms"]);
    }
}
