//! `GET /performance/history?route=&from=&to=&step=`: a route's (or, without
//! `route`, the total's) time series of count, error rate and p50/p95/p99,
//! merged per step and across instances from the minutes' histograms. From
//! the database when history is on; otherwise, for the total only, from the
//! in-memory series of the last 15 minutes. With `kind=slow_requests`: the
//! slow requests of the range (every instance's from the database, newest
//! first; without history, this instance's last `slow.keep`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use http::StatusCode;
use serde::Serialize;

use crate::observe::history::{epoch_secs, History, TOTAL};
use crate::shared::body::ProxyBody;
use crate::shared::state::Shared;

/// Rows read for one answer at most.
const MAX_ROWS: i64 = 200_000;
/// The longest range one answer covers.
const MAX_RANGE: Duration = Duration::from_secs(31 * 86_400);
/// Slow requests one answer lists at most.
const MAX_SLOW: i64 = 1_000;

/// What is asked for.
#[derive(Debug, PartialEq, Clone, Copy)]
pub enum Kind {
    /// A route's (or the total's) time series.
    Routes,
    /// The slow requests of the range.
    SlowRequests,
}

/// A parsed request.
#[derive(Debug, PartialEq)]
pub struct Query {
    pub route: String,
    pub from: SystemTime,
    pub to: SystemTime,
    pub step: Duration,
    pub kind: Kind,
}

/// A bad parameter: its name and what was expected.
#[derive(Debug, PartialEq)]
pub struct BadParam(pub &'static str, pub String);

impl Query {
    /// From the query string; defaults: the total, the last hour, 60 s steps.
    pub fn parse(query: Option<&str>, now: SystemTime) -> Result<Query, BadParam> {
        let (mut route, mut from, mut to, mut step) = (TOTAL.to_string(), None, None, Duration::from_secs(60));
        let mut kind = Kind::Routes;
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let time = |name: &'static str| {
                humantime::parse_rfc3339_weak(&v).map_err(|_| BadParam(name, format!("{v:?}: an RFC 3339 time")))
            };
            match &*k {
                "route" if !v.is_empty() => route = v.into_owned(),
                "kind" => {
                    kind = match &*v {
                        "routes" => Kind::Routes,
                        "slow_requests" => Kind::SlowRequests,
                        _ => return Err(BadParam("kind", format!("{v:?}: routes or slow_requests"))),
                    }
                }
                "from" => from = Some(time("from")?),
                "to" => to = Some(time("to")?),
                "step" => {
                    step = humantime::parse_duration(&v)
                        .ok()
                        .filter(|s| s.as_secs() >= 1 && s.subsec_nanos() == 0)
                        .ok_or_else(|| BadParam("step", format!("{v:?}: a whole number of seconds, e.g. 60s")))?;
                }
                _ => {}
            }
        }
        let to = to.unwrap_or(now);
        let from = from.unwrap_or(to - Duration::from_secs(3600));
        if from >= to {
            return Err(BadParam("from", "before `to`".into()));
        }
        if to.duration_since(from).unwrap_or_default() > MAX_RANGE {
            return Err(BadParam("from", "at most 31 days before `to`".into()));
        }
        Ok(Query { route, from, to, step, kind })
    }
}

#[derive(Serialize)]
struct Doc {
    route: String,
    step_seconds: u64,
    /// `database` (every instance) or `memory` (this instance, 15 minutes).
    source: &'static str,
    points: Vec<PointView>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

#[derive(Serialize)]
struct PointView {
    t: String,
    count: u64,
    error_rate: f64,
    p50: f64,
    p95: f64,
    p99: f64,
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn rate(errors: u64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        errors as f64 / count as f64
    }
}

/// Answers a history request.
pub async fn answer(shared: &Shared, query: Option<&str>) -> http::Response<ProxyBody> {
    let q = match Query::parse(query, SystemTime::now()) {
        Ok(q) => q,
        Err(BadParam(name, expected)) => {
            return crate::shared::error::json_error(
                StatusCode::BAD_REQUEST,
                "bad_parameter",
                &format!("{name}: {expected}"),
            )
        }
    };
    let history = &shared.history;
    if q.kind == Kind::SlowRequests {
        return slow_requests(shared, &q).await;
    }
    let doc = if history.pool().is_some() {
        match tokio::time::timeout(crate::observe::history::DB_TIMEOUT, from_database(history, &q)).await {
            Ok(Ok(doc)) => doc,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "history: query failed");
                return crate::shared::error::json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "history_unavailable",
                    "the database did not answer",
                );
            }
            Err(_) => {
                return crate::shared::error::json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "history_unavailable",
                    "the database did not answer in time",
                )
            }
        }
    } else if q.route == TOTAL {
        from_memory(history, &q)
    } else {
        return crate::shared::error::json_error(
            StatusCode::NOT_FOUND,
            "history_unavailable",
            "per-route history needs DATABASE_URL and `perfproxy migrate`; without them only the total's last 15 \
             minutes are kept",
        );
    };
    crate::shared::error::json(StatusCode::OK, serde_json::to_vec(&doc).expect("plain data"))
}

/// The slow requests of the range: every instance's from the database
/// when history is on, else this instance's kept in memory.
async fn slow_requests(shared: &Shared, q: &Query) -> http::Response<ProxyBody> {
    let route = (q.route != TOTAL).then_some(q.route.as_str());
    let within = |at: &str| humantime::parse_rfc3339(at).is_ok_and(|t| t >= q.from && t < q.to);
    let from_memory = || -> Vec<serde_json::Value> {
        crate::admin::performance::slow_requests(shared)
            .iter()
            .filter(|s| within(&s.request.at) && route.is_none_or(|r| r == s.route))
            .map(|s| serde_json::to_value(s).expect("plain data"))
            .collect()
    };
    let (source, listed) = match shared.history.pool() {
        Some(pool) => {
            let read = crate::observe::history::slow_requests_between(pool, (q.from, q.to), route, MAX_SLOW);
            match tokio::time::timeout(crate::observe::history::DB_TIMEOUT, read).await {
                Ok(Ok(rows)) => ("database", rows),
                // No table yet (`perfproxy migrate` not run since upgrading).
                Ok(Err(e)) if missing_table(&*e) => ("memory", from_memory()),
                _ => {
                    return crate::shared::error::json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "history_unavailable",
                        "the database did not answer in time",
                    )
                }
            }
        }
        None => ("memory", from_memory()),
    };
    let doc = serde_json::json!({
        "kind": "slow_requests",
        "source": source,
        "from": humantime::format_rfc3339_seconds(q.from).to_string(),
        "to": humantime::format_rfc3339_seconds(q.to).to_string(),
        "slow_requests": listed,
    });
    crate::shared::error::json(StatusCode::OK, serde_json::to_vec(&doc).expect("plain data"))
}

fn missing_table(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    let code = e.downcast_ref::<tokio_postgres::Error>().and_then(tokio_postgres::Error::code);
    code == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
}

fn from_memory(history: &History, q: &Query) -> Doc {
    let (secs, points) = history.memory_points(epoch_secs(q.from), epoch_secs(q.to));
    Doc {
        route: q.route.clone(),
        step_seconds: secs,
        source: "memory",
        points: points
            .into_iter()
            .filter(|p| p.count > 0)
            .map(|p| PointView {
                t: rfc3339(p.at),
                count: p.count,
                error_rate: rate(p.errors, p.count),
                p50: p.p50,
                p95: p.p95,
                p99: p.p99,
            })
            .collect(),
        truncated: false,
    }
}

async fn from_database(history: &History, q: &Query) -> Result<Doc, Box<dyn std::error::Error + Send + Sync>> {
    let pool = history.pool().ok_or("history is off")?;
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT minute, requests, errors, histogram, max_ms FROM perfproxy.route_minutes \
             WHERE route = $1 AND minute >= $2 AND minute < $3 ORDER BY minute LIMIT $4",
            &[&q.route, &q.from, &q.to, &MAX_ROWS],
        )
        .await?;
    let step = q.step.as_secs().max(1);
    // Per step: requests, errors, the merged histogram and the largest
    // maximum recorded (ms), which no percentile exceeds.
    let mut steps: BTreeMap<u64, (u64, u64, Histogram<u64>, f64)> = BTreeMap::new();
    for row in &rows {
        let minute: SystemTime = row.get(0);
        let (requests, errors): (i64, i64) = (row.get(1), row.get(2));
        let bytes: Option<Vec<u8>> = row.get(3);
        let max_ms: Option<f32> = row.get(4);
        let at = epoch_secs(minute) / step * step;
        let entry = steps.entry(at).or_insert_with(|| {
            let mut h = Histogram::new(3).expect("3 significant digits are supported");
            h.auto(true);
            (0, 0, h, 0.0)
        });
        entry.3 = entry.3.max(max_ms.map_or(f64::INFINITY, f64::from));
        entry.0 += requests.max(0) as u64;
        entry.1 += errors.max(0) as u64;
        if let Some(h) = bytes.and_then(|b| Deserializer::new().deserialize::<u64, _>(&mut &b[..]).ok()) {
            let _ = entry.2.add(&h);
        }
    }
    let ms = |h: &Histogram<u64>, q: f64, max: f64| {
        if h.is_empty() {
            0.0
        } else {
            (h.value_at_quantile(q) as f64 / 1000.0).min(max)
        }
    };
    Ok(Doc {
        route: q.route.clone(),
        step_seconds: step,
        source: "database",
        points: steps
            .into_iter()
            .map(|(at, (count, errors, h, max))| PointView {
                t: rfc3339(at),
                count,
                error_rate: rate(errors, count),
                p50: ms(&h, 0.5, max),
                p95: ms(&h, 0.95, max),
                p99: ms(&h, 0.99, max),
            })
            .collect(),
        truncated: rows.len() as i64 == MAX_ROWS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_have_defaults_and_bad_ones_are_named() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let q = Query::parse(None, now).expect("defaults");
        assert_eq!((q.route.as_str(), q.step, q.to), (TOTAL, Duration::from_secs(60), now));
        assert_eq!(q.to.duration_since(q.from).ok(), Some(Duration::from_secs(3600)));
        let q = Query::parse(
            Some("route=GET%20/api/users/:id&from=2026-11-28T10:00:00Z&to=2026-11-28T11:00:00Z&step=5m"),
            now,
        )
        .expect("valid");
        assert_eq!((q.route.as_str(), q.step), ("GET /api/users/:id", Duration::from_secs(300)));
        let bad = |s: &str| Query::parse(Some(s), now).expect_err("invalid").0;
        assert_eq!(bad("from=yesterday"), "from");
        assert_eq!(bad("step=0s"), "step");
        assert_eq!(bad("step=1.5s"), "step");
        assert_eq!(bad("from=2026-11-28T12:00:00Z&to=2026-11-28T11:00:00Z"), "from");
        assert_eq!(bad("from=2026-01-01T00:00:00Z&to=2026-11-28T11:00:00Z"), "from");
        assert_eq!(bad("kind=everything"), "kind");
        assert_eq!(Query::parse(Some("kind=slow_requests"), now).expect("valid").kind, Kind::SlowRequests);
    }
}
