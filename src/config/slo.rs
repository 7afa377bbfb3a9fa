//! `[[slo]]` and `[slo_alerts]` validated into the objectives and burn-rate
//! rows `observe::slo` counts and alerts on; every error names its key.

use std::collections::HashSet;

use crate::observe::slo::{BurnRow, Objective, MAX_OBJECTIVES};
use crate::settings::{ConfigError, SloAlertSettings, SloRule};
use crate::wire::routes::RoutePattern;

/// What `[[slo]]` and `[slo_alerts]` validate into.
#[derive(Debug)]
pub struct Validated {
    pub objectives: Vec<Objective>,
    pub rows: Vec<BurnRow>,
    /// The route labels the objectives name (declared to route discovery
    /// so that they exist).
    pub declared: Vec<RoutePattern>,
}

/// Checks every objective and row, naming the key of the first bad one
/// (`monitoring`: requests are recorded, which objectives count from).
pub fn validate(rules: &[SloRule], alerts: &SloAlertSettings, monitoring: bool) -> Result<Validated, ConfigError> {
    if !rules.is_empty() && !monitoring {
        return Err(ConfigError::new(
            "slo",
            format!("{} objectives", rules.len()),
            "monitoring_enabled = true (objectives count the requests it records)",
        ));
    }
    if rules.len() > MAX_OBJECTIVES {
        return Err(ConfigError::new("slo", rules.len(), format!("at most {MAX_OBJECTIVES} objectives")));
    }
    let mut names = HashSet::new();
    let mut objectives = Vec::with_capacity(rules.len());
    let mut declared = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let key = |k: &str| format!("slo[{i}].{k}");
        // Printable ASCII: the name is a Prometheus label value and a rule
        // label (Go templates: no braces).
        let printable = r.name.chars().all(|c| (' '..='~').contains(&c) && !"\"\\{}".contains(c));
        if r.name.trim().is_empty() || !printable {
            return Err(ConfigError::new(
                key("name"),
                format!("{:?}", r.name),
                "a name of printable ASCII without quotes, backslashes or braces",
            ));
        }
        if !names.insert(r.name.as_str()) {
            return Err(ConfigError::new(key("name"), format!("{:?}", r.name), "a name no other [[slo]] has"));
        }
        if !(r.objective > 0.0 && r.objective < 1.0) {
            return Err(ConfigError::new(key("objective"), r.objective, "a share above 0 and below 1, e.g. 0.999"));
        }
        if let Some(ms) = r.latency_ms.filter(|ms| !(1..=3_600_000).contains(ms)) {
            return Err(ConfigError::new(key("latency_ms"), ms, "a duration in milliseconds from 1 to 3600000"));
        }
        if !(1..=365).contains(&r.period_days) {
            return Err(ConfigError::new(key("period_days"), r.period_days, "a number of days from 1 to 365"));
        }
        if let Some(route) = &r.route {
            let shape = route.split_once(' ').is_some_and(|(m, p)| !m.is_empty() && p.starts_with('/'));
            if !shape {
                return Err(ConfigError::new(
                    key("route"),
                    format!("{route:?}"),
                    "a route label or glob: METHOD /path, `*` for any run of characters (e.g. \"GET /api/*\")",
                ));
            }
            // A label without `*` is a route: declared, so discovery keeps it.
            if !route.contains('*') {
                if let Ok(p) = RoutePattern::parse(route) {
                    declared.push(p);
                }
            }
        }
        objectives.push(Objective {
            name: r.name.clone(),
            route: r.route.clone(),
            objective: r.objective,
            latency_ms: r.latency_ms,
            period_days: r.period_days,
        });
    }
    if alerts.windows.is_empty() {
        return Err(ConfigError::new(
            "slo_alerts.windows",
            "[]",
            "at least one [long_ms, short_ms, burn, severity] row",
        ));
    }
    let mut rows = Vec::with_capacity(alerts.windows.len());
    for (i, row) in alerts.windows.iter().enumerate() {
        let key = format!("slo_alerts.windows[{i}]");
        let shown = || toml::Value::Array(row.clone()).to_string();
        let bad = |why: &str| ConfigError::new(key.clone(), shown(), why.to_string());
        let [long, short, burn, severity] = row.as_slice() else {
            return Err(bad("[long_ms, short_ms, burn, severity], e.g. [3600000, 300000, 14.4, \"critical\"]"));
        };
        // Whole seconds (a window is a Prometheus range and a /metrics label).
        let ms = |v: &toml::Value| v.as_integer().filter(|&n| n > 0 && n % 1000 == 0).map(|n| n as u64);
        let (Some(long_ms), Some(short_ms)) = (ms(long), ms(short)) else {
            return Err(bad("windows of whole seconds in milliseconds: [long_ms, short_ms, burn, severity]"));
        };
        if long_ms > 365 * 86_400_000 {
            return Err(bad("a long window of at most 365 days"));
        }
        if short_ms >= long_ms {
            return Err(bad("a short window shorter than its long window"));
        }
        let burn =
            burn.as_float().or_else(|| burn.as_integer().map(|n| n as f64)).filter(|b| b.is_finite() && *b > 0.0);
        let Some(burn) = burn else {
            return Err(bad("a burn rate greater than 0 (e.g. 14.4)"));
        };
        let severity = match severity.as_str() {
            Some("critical") => "critical",
            Some("warning") => "warning",
            _ => return Err(bad("a severity of \"critical\" or \"warning\"")),
        };
        rows.push(BurnRow { long_ms, short_ms, burn, severity });
    }
    Ok(Validated { objectives, rows, declared })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, objective: f64) -> SloRule {
        SloRule { name: name.into(), route: None, objective, latency_ms: None, period_days: 28 }
    }

    #[test]
    fn errors_name_the_key() {
        let alerts = SloAlertSettings::default();
        let key =
            |rules: &[SloRule], alerts: &SloAlertSettings| validate(rules, alerts, true).expect_err("invalid").key;
        assert_eq!(key(&[rule("a", 1.0)], &alerts), "slo[0].objective");
        assert_eq!(key(&[rule("a", 0.9), rule("a", 0.99)], &alerts), "slo[1].name");
        let mut routed = rule("a", 0.9);
        routed.route = Some("api".into());
        assert_eq!(key(&[routed], &alerts), "slo[0].route");
        let mut rows = SloAlertSettings::default();
        rows.windows[1][1] = toml::Value::Integer(21_600_000);
        assert_eq!(key(&[rule("a", 0.9)], &rows), "slo_alerts.windows[1]");
        assert_eq!(validate(&[rule("a", 0.9)], &alerts, false).expect_err("no monitoring").key, "slo");
        assert_eq!(key(&[rule("a{{b}}", 0.9)], &alerts), "slo[0].name");
        let mut partial = SloAlertSettings::default();
        partial.windows[0][0] = toml::Value::Integer(3_600_500);
        assert_eq!(key(&[rule("a", 0.9)], &partial), "slo_alerts.windows[0]");
        let v = validate(&[rule("a", 0.999)], &alerts, true).expect("valid");
        assert_eq!((v.objectives.len(), v.rows.len(), v.rows[0].burn, v.rows[2].severity), (1, 3, 14.4, "warning"));
    }
}
