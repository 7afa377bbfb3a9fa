//! `[[slo]]` (service level objectives) and `[slo_alerts]` (their
//! multiwindow, multi-burn-rate alert rows), as an operator writes them;
//! validated into `observe::slo::Objective`s by `config::validate`.

use serde::{Deserialize, Serialize};

/// One objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloRule {
    /// Required and unique: the label everywhere.
    pub name: String,
    /// A route label or a glob (`GET /api/*`); omitted: all traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The share of good requests, below 1 (e.g. 0.999).
    pub objective: f64,
    /// Good = not a 5xx and faster than this; omitted: availability only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default = "default_period")]
    pub period_days: u64,
}

fn default_period() -> u64 {
    28
}

/// The `[slo_alerts]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SloAlertSettings {
    /// Rows of `[long_ms, short_ms, burn, severity]`: `slo_burn` fires when
    /// both windows of a row burn faster than its rate.
    pub windows: Vec<Vec<toml::Value>>,
}

impl Default for SloAlertSettings {
    /// Google's SRE workbook: 14.4x over 1 h and 5 m, 6x over 6 h and
    /// 30 m (critical), 1x over 3 d and 6 h (warning).
    fn default() -> Self {
        let row = |long: i64, short: i64, burn: f64, severity: &str| {
            vec![long.into(), short.into(), burn.into(), toml::Value::String(severity.into())]
        };
        SloAlertSettings {
            windows: vec![
                row(3_600_000, 300_000, 14.4, "critical"),
                row(21_600_000, 1_800_000, 6.0, "critical"),
                row(259_200_000, 21_600_000, 1.0, "warning"),
            ],
        }
    }
}
