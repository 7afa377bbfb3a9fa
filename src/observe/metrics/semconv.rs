//! `http.server.request.duration` as OpenTelemetry's HTTP semantic
//! conventions define it: a histogram in seconds with their fixed bucket
//! boundaries, per method, route template and status code. The label sets
//! are bounded like the routes: past [`MAX_SERIES`] a route's new status
//! codes fold into `other`. Each bucket keeps the latest sampled trace that
//! fell in it, for OpenMetrics exemplars.

use super::Sample;
use crate::wire::routes::RouteId;

/// The boundaries, in seconds (the semantic conventions' advice).
pub const BOUNDS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// Label sets (route and status) kept at most.
pub const MAX_SERIES: usize = 4096;
/// The status recorded for codes past [`MAX_SERIES`].
pub const OTHER_STATUS: u16 = 0;

/// One label set's counts: per bucket (the last is `+Inf`), sum and count.
#[derive(Debug, Clone, Default)]
pub struct Buckets {
    pub counts: [u64; BOUNDS.len() + 1],
    pub sum_micros: u64,
    pub count: u64,
    /// Per bucket, the latest sampled request in it (made on the first).
    pub exemplars: Option<Box<[Option<Exemplar>; BOUNDS.len() + 1]>>,
}

/// A sampled request, as an exemplar of its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exemplar {
    pub route: RouteId,
    pub status: u16,
    pub micros: u32,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// When it ended, in ms since the Unix epoch.
    pub unix_ms: u64,
}

/// The bucket `micros` falls in.
fn bucket(micros: u64) -> usize {
    let secs = micros as f64 / 1e6;
    BOUNDS.iter().position(|le| secs <= *le).unwrap_or(BOUNDS.len())
}

/// Every label set seen, by route and status code.
#[derive(Debug, Clone, Default)]
pub struct Durations {
    /// foldhash: looked up once per request, in the aggregator.
    series: foldhash::HashMap<(RouteId, u16), Buckets>,
}

impl Durations {
    fn series(&mut self, route: RouteId, status: u16) -> &mut Buckets {
        let mut key = (route, status);
        if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
            key.1 = OTHER_STATUS;
        }
        self.series.entry(key).or_default()
    }

    pub fn record(&mut self, s: &Sample) {
        let b = self.series(s.route, s.status);
        let micros = u64::from(s.micros);
        b.counts[bucket(micros)] += 1;
        b.sum_micros += micros;
        b.count += 1;
    }

    /// Keeps `e` as its bucket's exemplar (after its sample was recorded).
    pub fn exemplar(&mut self, e: &Exemplar) {
        let b = self.series(e.route, e.status);
        b.exemplars.get_or_insert_with(Box::default)[bucket(u64::from(e.micros))] = Some(*e);
    }

    /// The label sets, by route and status code.
    pub fn iter(&self) -> impl Iterator<Item = (&(RouteId, u16), &Buckets)> {
        self.series.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(status: u16, micros: u32) -> Sample {
        Sample {
            route: RouteId(1),
            micros,
            status,
            at_secs: 0,
            upstream_micros: None,
            overhead_micros: 0,
            limited: false,
            grpc: None,
        }
    }

    #[test]
    fn buckets_follow_the_boundaries_and_label_sets_are_bounded() {
        let mut d = Durations::default();
        for (status, micros) in [(200, 4_000), (200, 5_000), (200, 9_000), (404, 20_000_000)] {
            d.record(&sample(status, micros));
        }
        let ok = &d.series[&(RouteId(1), 200)];
        assert_eq!((ok.counts[0], ok.counts[1], ok.count), (2, 1, 3), "5 ms is in le=0.005");
        assert_eq!(d.series[&(RouteId(1), 404)].counts[BOUNDS.len()], 1, "20 s is past 10 s: +Inf");
        for code in 0..MAX_SERIES as u16 + 10 {
            d.record(&sample(1000 + code, 1));
        }
        assert_eq!(d.series.len(), MAX_SERIES + 1, "full: new codes fold into `other`");
        assert!(d.series.contains_key(&(RouteId(1), OTHER_STATUS)));
        let e =
            Exemplar { route: RouteId(1), status: 200, micros: 9_000, trace_id: [7; 16], span_id: [1; 8], unix_ms: 1 };
        d.exemplar(&e);
        let kept = d.series[&(RouteId(1), 200)].exemplars.as_ref().expect("made on the first");
        assert_eq!((kept[1], kept[0]), (Some(e), None), "9 ms is in le=0.01");
    }
}
