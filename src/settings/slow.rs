//! The `[slow]` table: the evidence kept for slow requests (what the
//! database was doing while they were in flight; see `observe::slow`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowSettings {
    /// How often `pg_stat_activity` is sampled while a request is slow (ms).
    pub sample_interval_ms: u64,
    /// Slow requests `/performance` lists at most (the latest).
    pub keep: u64,
    /// A link to a trace for the dashboard, `{trace_id}` replaced by the
    /// request's trace id (e.g. `http://jaeger:16686/trace/{trace_id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
}

impl Default for SlowSettings {
    fn default() -> Self {
        SlowSettings { sample_interval_ms: 250, keep: 50, trace_url: None }
    }
}
