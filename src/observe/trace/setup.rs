//! Tracing's settings as they take effect: `[tracing]` under the standard
//! `OTEL_*` variables (which win, argument by argument), each checked and
//! named when bad (exit 2), resolved once at start into a [`Setup`].

use std::time::Duration;

use opentelemetry_sdk::trace::Sampler;

use crate::settings::{ConfigError, TracingSettings};

/// Tracing as configured: on when an endpoint is named, here or by the
/// environment, and `OTEL_SDK_DISABLED` is not `true`.
#[derive(Debug, Clone)]
pub struct Setup {
    /// `[tracing] endpoint` as the traces URL (`/v1/traces` appended), when
    /// no `OTEL_EXPORTER_OTLP_*ENDPOINT` variable names one (the exporter
    /// reads those itself).
    pub endpoint: Option<String>,
    pub service_name: String,
    pub sampler: Sampler,
    /// Records queued for export at most (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub queue: usize,
    /// How long records wait for a batch (`OTEL_BSP_SCHEDULE_DELAY`).
    pub delay: Duration,
    /// Records per export at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub batch: usize,
}

const ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// An `http://` URL with a host and a valid port, no query: this build
/// exports without TLS (send to a collector or agent beside perfproxy).
fn http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = value.parse::<http::Uri>().is_ok_and(|u| {
        u.scheme_str() == Some("http")
            && u.host().is_some_and(|h| !h.is_empty())
            && u.authority().is_some_and(|a| {
                // `Authority::port` reads an out-of-range port as none: check the text.
                let after_host = a.as_str().rsplit_once(']').map_or(a.as_str(), |(_, rest)| rest);
                after_host.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_ok_and(|p| p > 0))
            })
            && u.query().is_none()
    });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("{value:?}"),
            "an http:// URL with a host, no query (no TLS: use a local collector)",
        ))
    }
}

fn ratio(key: &str, value: &str) -> Result<f64, ConfigError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| ConfigError::new(key, format!("{value:?}"), "a number from 0 to 1"))
}

/// A variable's count, else the file's (`file`: its key and value), else `default`.
fn count(
    key: &str,
    value: Option<String>,
    file: (&str, Option<u64>),
    default: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(v) = value else {
        return match file.1 {
            Some(n) if !(1..=max).contains(&n) => {
                Err(ConfigError::new(file.0, n, format!("a whole number from 1 to {max}")))
            }
            Some(n) => Ok(n),
            None => Ok(default),
        };
    };
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ConfigError::new(key, format!("{v:?}"), format!("a whole number from 1 to {max}")))
}

impl Setup {
    /// Resolves `[tracing]` and the environment (`var` reads a variable);
    /// `None`: tracing is off.
    pub fn resolve(t: &TracingSettings, var: impl Fn(&str) -> Option<String>) -> Result<Option<Setup>, ConfigError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if let Some(e) = &t.endpoint {
            http_url("tracing.endpoint", e)?;
        }
        if let Some(r) = t.sample_ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err(ConfigError::new("tracing.sample_ratio", r, "a number from 0 to 1"));
            }
        }
        let mut from_env = false;
        for name in ENDPOINT_VARS {
            if let Some(v) = var(name) {
                http_url(name, &v)?;
                from_env = true;
            }
        }
        // Every key is checked, tracing on or off (a bad value waits for no
        // endpoint); the variables only when it is on (they may be set for
        // another process of the pod).
        if t.service_name.as_deref() == Some("") {
            return Err(ConfigError::new("tracing.service_name", "\"\"", "a non-empty name"));
        }
        count("", None, ("tracing.queue_size", t.queue_size), 2048, 1 << 20)?;
        count("", None, ("tracing.batch_delay_ms", t.batch_delay_ms), 5000, 3_600_000)?;
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if !from_env && t.endpoint.is_none() {
            return Ok(None);
        }
        let endpoint =
            if from_env { None } else { t.endpoint.as_ref().map(|e| format!("{}/v1/traces", e.trim_end_matches('/'))) };
        // The environment before the file: the variable, then the resource
        // attributes' `service.name`, then the key.
        let service_name = var("OTEL_SERVICE_NAME")
            .or_else(|| {
                let attrs = var("OTEL_RESOURCE_ATTRIBUTES")?;
                attrs.split(',').find_map(|kv| kv.trim().strip_prefix("service.name=").map(str::to_string))
            })
            .or_else(|| t.service_name.clone())
            .unwrap_or_else(|| "perfproxy".to_string());
        // A ratio: the variable's argument, else the file's.
        let arg = match var("OTEL_TRACES_SAMPLER_ARG") {
            Some(a) => Some(ratio("OTEL_TRACES_SAMPLER_ARG", &a)?),
            None => t.sample_ratio,
        };
        let sampler = match var("OTEL_TRACES_SAMPLER") {
            Some(name) => sampler(&name, arg)?,
            None => Sampler::ParentBased(Box::new(arg.map_or(Sampler::AlwaysOn, Sampler::TraceIdRatioBased))),
        };
        Ok(Some(Setup {
            endpoint,
            service_name,
            sampler,
            queue: count(
                "OTEL_BSP_MAX_QUEUE_SIZE",
                var("OTEL_BSP_MAX_QUEUE_SIZE"),
                ("tracing.queue_size", t.queue_size),
                2048,
                1 << 20,
            )? as usize,
            delay: Duration::from_millis(count(
                "OTEL_BSP_SCHEDULE_DELAY",
                var("OTEL_BSP_SCHEDULE_DELAY"),
                ("tracing.batch_delay_ms", t.batch_delay_ms),
                5000,
                3_600_000,
            )?),
            batch: count(
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
                ("", None),
                512,
                1 << 20,
            )? as usize,
        }))
    }
}

/// `OTEL_TRACES_SAMPLER` and its ratio (default 1), as the specification names them.
fn sampler(name: &str, arg: Option<f64>) -> Result<Sampler, ConfigError> {
    let ratio = arg.unwrap_or(1.0);
    Ok(match name.trim() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio),
        "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
        other => {
            return Err(ConfigError::new(
                "OTEL_TRACES_SAMPLER",
                format!("{other:?}"),
                "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or \
                 parentbased_traceidratio",
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(file: TracingSettings, env: &[(&str, &str)]) -> Result<Option<Setup>, ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Setup::resolve(&file, |k| env.get(k).cloned())
    }

    #[test]
    fn off_without_an_endpoint_and_when_disabled() {
        assert!(resolve(TracingSettings::default(), &[]).expect("valid").is_none());
        // Off, its keys are still checked (not its variables).
        let bad = TracingSettings { queue_size: Some(0), ..Default::default() };
        assert_eq!(resolve(bad, &[]).expect_err("queue_size 0").key, "tracing.queue_size");
        let bad = TracingSettings { service_name: Some(String::new()), ..Default::default() };
        assert_eq!(resolve(bad, &[]).expect_err("an empty name").key, "tracing.service_name");
        assert!(resolve(TracingSettings::default(), &[("OTEL_BSP_SCHEDULE_DELAY", "x")]).expect("off").is_none());
        let file = TracingSettings { endpoint: Some("http://collector:4318".into()), ..Default::default() };
        let on = resolve(file.clone(), &[]).expect("valid").expect("on");
        assert_eq!(on.endpoint.as_deref(), Some("http://collector:4318/v1/traces"));
        assert_eq!(on.service_name, "perfproxy");
        assert!(resolve(file, &[("OTEL_SDK_DISABLED", "TRUE")]).expect("valid").is_none());
    }

    #[test]
    fn the_environment_wins_and_bad_values_are_named() {
        let file = TracingSettings {
            endpoint: Some("http://file:4318/".into()),
            service_name: Some("from-file".into()),
            sample_ratio: Some(0.5),
            ..Default::default()
        };
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ];
        let s = resolve(file.clone(), &env).expect("valid").expect("on");
        assert_eq!(s.endpoint, None, "the exporter reads the variable itself");
        assert_eq!(s.service_name, "from-env");
        assert!(matches!(s.sampler, Sampler::TraceIdRatioBased(r) if r == 0.01));
        let s = resolve(file.clone(), &[]).expect("valid").expect("on");
        assert_eq!((s.endpoint.as_deref(), s.service_name.as_str()), (Some("http://file:4318/v1/traces"), "from-file"));
        let named = |env: &[(&str, &str)]| resolve(file.clone(), env).expect_err("invalid").key;
        assert_eq!(named(&[("OTEL_TRACES_SAMPLER", "sometimes")]), "OTEL_TRACES_SAMPLER");
        assert_eq!(
            named(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "2")]),
            "OTEL_TRACES_SAMPLER_ARG"
        );
        assert_eq!(named(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]), "OTEL_EXPORTER_OTLP_ENDPOINT");
        assert_eq!(named(&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")]), "OTEL_BSP_MAX_QUEUE_SIZE");
        let bad = TracingSettings { sample_ratio: Some(1.5), ..Default::default() };
        assert_eq!(resolve(bad, &[]).expect_err("invalid").key, "tracing.sample_ratio");
        for endpoint in ["ftp://x", "https://collector:4318", "http://h:99999", "http://h/otlp?x=1", "collector"] {
            let bad = TracingSettings { endpoint: Some(endpoint.into()), ..Default::default() };
            assert_eq!(resolve(bad, &[]).expect_err(endpoint).key, "tracing.endpoint");
        }
        // The environment wins over the file, argument by argument.
        let ratio = TracingSettings { sample_ratio: Some(0.0), ..file.clone() };
        let s = resolve(ratio.clone(), &[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")]).expect("valid");
        assert!(format!("{:?}", s.expect("on").sampler).contains("TraceIdRatioBased(0.0)"), "the file's ratio");
        let s = resolve(ratio, &[("OTEL_TRACES_SAMPLER_ARG", "0.5")]).expect("valid");
        assert!(format!("{:?}", s.expect("on").sampler).contains("TraceIdRatioBased(0.5)"), "the variable's ratio");
        let s = resolve(file.clone(), &[("OTEL_RESOURCE_ATTRIBUTES", "service.name=attrs")]).expect("valid");
        assert_eq!(s.expect("on").service_name, "attrs", "the environment's resource attributes beat the file");
        let attrs = [("OTEL_RESOURCE_ATTRIBUTES", "team=core, service.name=checkout"), ENDPOINT_ENV];
        let s = resolve(TracingSettings::default(), &attrs).expect("valid").expect("on");
        assert_eq!(s.service_name, "checkout");
    }

    const ENDPOINT_ENV: (&str, &str) = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces");
}
