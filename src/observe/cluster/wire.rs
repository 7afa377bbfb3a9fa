//! What an instance publishes for the cluster view, and how the published
//! documents merge. Histograms travel in HdrHistogram's V2 + DEFLATE
//! serialisation (base64 in JSON), so the merge adds histograms, never
//! percentiles: the cluster p99 is the p99 of every instance's samples.

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Counter;
use serde::{Deserialize, Serialize};

use crate::observe::metrics::{Hist, Part, Snapshot, Stats};

/// One instance's figures at one moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    pub id: String,
    pub version: String,
    /// When it was published, ms since the Unix epoch.
    pub at_ms: u64,
    pub in_flight: i64,
    pub window_seconds: u64,
    /// How much of the window its recording covers (a young instance less).
    pub covered_ms: u64,
    pub total: Pair,
    pub routes: Vec<(String, Pair)>,
    /// The total's window slots, oldest first.
    pub slots: Vec<Wire>,
    pub slot_seconds: u64,
    pub cache: crate::cache::Stats,
    /// Each service level objective's counts (absent from instances that
    /// predate them).
    #[serde(default)]
    pub slos: Vec<crate::observe::slo::Tally>,
}

/// A series' all-time and recent-window figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pair {
    pub all: Wire,
    pub recent: Wire,
}

/// [`Stats`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wire {
    pub count: u64,
    pub errors: u64,
    pub slow: u64,
    /// Refused by a rate limit (absent from instances that predate it).
    #[serde(default)]
    pub limited: u64,
    pub status: [u64; 6],
    pub sum_micros: u64,
    /// Absent from instances that predate it: the histogram's lowest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_micros: Option<u64>,
    pub max_micros: u64,
    pub hist: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<WirePart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead: Option<WirePart>,
    /// gRPC statuses (by code) and messages, for gRPC routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<(Vec<u64>, u64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WirePart {
    pub count: u64,
    pub sum_micros: u64,
    /// The exact extremes (absent from instances that predate them: the
    /// histogram's lowest and highest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extremes: Option<(u64, u64)>,
    pub hist: String,
}

fn encode<C: Counter>(h: &Hist<C>) -> String {
    let mut bytes = Vec::new();
    match V2DeflateSerializer::new().serialize(&h.to_hdr(), &mut bytes) {
        Ok(_) => base64::engine::general_purpose::STANDARD.encode(bytes),
        Err(_) => String::new(),
    }
}

fn decode(text: &str, sigfig: u8) -> Hist<u64> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default();
    match Deserializer::new().deserialize::<u64, _>(&mut &bytes[..]) {
        Ok(h) => Hist::from_hdr(&h, sigfig),
        Err(_) => Hist::new(sigfig),
    }
}

impl Wire {
    fn of<C: Counter>(s: &Stats<C>, split: bool) -> Wire {
        let part = |p: &Part<C>| WirePart {
            count: p.count,
            sum_micros: p.sum_micros,
            extremes: Some((p.min_micros, p.max_micros)),
            hist: encode(&p.hist),
        };
        Wire {
            count: s.count,
            errors: s.errors,
            slow: s.slow,
            limited: s.limited,
            status: s.status,
            sum_micros: s.sum_micros,
            min_micros: (s.count > 0).then_some(s.min_micros),
            max_micros: s.max_micros,
            hist: encode(&s.hist),
            upstream: (split && s.upstream.count > 0).then(|| part(&s.upstream)),
            overhead: (split && s.overhead.count > 0).then(|| part(&s.overhead)),
            grpc: s.grpc.as_ref().map(|g| (g.codes.to_vec(), g.messages)),
        }
    }

    /// Adds these figures into `into`.
    pub fn add_to(&self, into: &mut Stats, sigfig: u8) {
        let part = |p: &Option<WirePart>| match p {
            Some(p) => {
                let hist = decode(&p.hist, sigfig);
                let extremes = p.extremes.unwrap_or_else(|| (hist.min(), hist.max()));
                Part::of(p.count, p.sum_micros, extremes, hist)
            }
            None => Part::new(sigfig),
        };
        let mut s = Stats::new(sigfig);
        (s.count, s.errors, s.slow, s.status) = (self.count, self.errors, self.slow, self.status);
        s.limited = self.limited;
        (s.sum_micros, s.max_micros) = (self.sum_micros, self.max_micros);
        if self.count > 0 {
            s.hist = decode(&self.hist, sigfig);
            s.min_micros = self.min_micros.unwrap_or_else(|| s.hist.min());
        }
        (s.upstream, s.overhead) = (part(&self.upstream), part(&self.overhead));
        s.grpc = self.grpc.as_ref().map(|(codes, messages)| {
            let mut g = crate::observe::metrics::Grpc { messages: *messages, ..Default::default() };
            g.codes.iter_mut().zip(codes).for_each(|(a, b)| *a = *b);
            Box::new(g)
        });
        into.add(&s);
    }
}

impl Published {
    /// This instance's figures from `snap`, with route labels from `names`.
    pub fn from_snapshot(
        id: &str,
        snap: &Snapshot,
        names: &[std::sync::Arc<str>],
        cache: crate::cache::Stats,
        at_ms: u64,
    ) -> Published {
        let pair = |series: &crate::observe::metrics::Series| Pair {
            all: Wire::of(&series.all, true),
            recent: Wire::of(&series.recent(snap.now_epoch), false),
        };
        let empty = Stats::<u32>::new(2);
        Published {
            id: id.to_string(),
            version: crate::system::VERSION.to_string(),
            at_ms,
            in_flight: snap.in_flight,
            window_seconds: snap.window.as_secs(),
            covered_ms: snap.covered().as_millis() as u64,
            total: pair(&snap.total),
            routes: snap
                .routes
                .iter()
                .map(|(id, series)| {
                    (names.get(id.0 as usize).map_or_else(String::new, |n| n.to_string()), pair(series))
                })
                .collect(),
            slots: snap
                .total
                .slots(snap.now_epoch)
                .into_iter()
                .map(|(_, s)| Wire::of(s.unwrap_or(&empty), false))
                .collect(),
            slot_seconds: snap.slot.as_secs().max(1),
            cache,
            slos: Vec::new(),
        }
    }
}

/// Every live instance's figures merged.
#[derive(Debug)]
pub struct Merged {
    pub instances: Vec<Instance>,
    pub in_flight: i64,
    pub window_seconds: u64,
    pub covered_ms: u64,
    pub total_all: Stats,
    pub total_recent: Stats,
    /// Per route label: all-time and recent.
    pub routes: Vec<(String, Stats, Stats)>,
    /// The total's slots, oldest first, aligned by age.
    pub slots: Vec<Stats>,
    pub slot_seconds: u64,
    pub cache: crate::cache::Stats,
    /// Each objective's counts, summed over the instances.
    pub slos: Vec<crate::observe::slo::Tally>,
}

/// One live instance, as the cluster view lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub id: String,
    pub version: String,
    pub last_seen: String,
    pub requests: u64,
}

/// Merges the documents: counters summed, histograms added.
pub fn merge(docs: &[Published]) -> Merged {
    let mut routes: std::collections::BTreeMap<&str, (Stats, Stats)> = std::collections::BTreeMap::new();
    let (mut total_all, mut total_recent) = (Stats::new(3), Stats::new(3));
    let slot_count = docs.iter().map(|d| d.slots.len()).max().unwrap_or(0);
    let mut slots: Vec<Stats> = (0..slot_count).map(|_| Stats::new(3)).collect();
    let mut cache = crate::cache::Stats::default();
    let mut instances = Vec::new();
    let mut slos: Vec<crate::observe::slo::Tally> = Vec::new();
    for d in docs {
        for t in &d.slos {
            match slos.iter_mut().find(|s| s.name == t.name) {
                Some(sum) => sum.add(t),
                None => slos.push(t.clone()),
            }
        }
        d.total.all.add_to(&mut total_all, 3);
        d.total.recent.add_to(&mut total_recent, 3);
        for (label, pair) in &d.routes {
            let (all, recent) = routes.entry(label).or_insert_with(|| (Stats::new(2), Stats::new(2)));
            pair.all.add_to(all, 2);
            pair.recent.add_to(recent, 2);
        }
        // The newest slots line up: slot i counts back from the end.
        let skip = slot_count - d.slots.len();
        for (slot, wire) in slots[skip..].iter_mut().zip(&d.slots) {
            wire.add_to(slot, 3);
        }
        let c = &d.cache;
        cache.hits += c.hits;
        cache.stale += c.stale;
        cache.misses += c.misses;
        cache.uncacheable += c.uncacheable;
        cache.stores += c.stores;
        cache.bypasses += c.bypasses;
        cache.invalidations += c.invalidations;
        cache.errors += c.errors;
        cache.memory_bytes += c.memory_bytes;
        cache.entries += c.entries;
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(d.at_ms);
        instances.push(Instance {
            id: d.id.clone(),
            version: d.version.clone(),
            last_seen: humantime::format_rfc3339_millis(at).to_string(),
            requests: d.total.all.count,
        });
    }
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    Merged {
        instances,
        in_flight: docs.iter().map(|d| d.in_flight).sum(),
        window_seconds: docs.iter().map(|d| d.window_seconds).max().unwrap_or(0),
        covered_ms: docs.iter().map(|d| d.covered_ms).max().unwrap_or(0),
        total_all,
        total_recent,
        routes: routes.into_iter().map(|(label, (all, recent))| (label.to_string(), all, recent)).collect(),
        slots,
        slot_seconds: docs.iter().map(|d| d.slot_seconds).max().unwrap_or(1),
        slos,
        cache,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(values: &[u64]) -> Stats {
        let mut s = Stats::new(3);
        for v in values {
            s.count += 1;
            s.sum_micros += v;
            s.min_micros = s.min_micros.min(*v);
            s.max_micros = s.max_micros.max(*v);
            s.hist.record(*v);
        }
        s
    }

    fn doc(id: &str, values: &[u64]) -> Published {
        let all = stats(values);
        let pair = Pair { all: Wire::of(&all, true), recent: Wire::of(&all, false) };
        Published {
            id: id.into(),
            version: "t".into(),
            at_ms: 1,
            in_flight: 1,
            window_seconds: 60,
            covered_ms: 60_000,
            total: pair.clone(),
            routes: vec![("GET /a".into(), pair)],
            slots: vec![Wire::of(&all, false)],
            slot_seconds: 10,
            cache: crate::cache::Stats::default(),
            slos: Vec::new(),
        }
    }

    #[test]
    fn percentiles_come_from_merged_histograms_never_averages() {
        // Three instances: 99 fast requests each on two, 99 slow on one.
        let fast: Vec<u64> = (0..99).map(|_| 1_000).collect();
        let slow: Vec<u64> = (0..99).map(|_| 900_000).collect();
        let docs = [doc("a", &fast), doc("b", &fast), doc("c", &slow)];
        let json = serde_json::to_string(&docs[2]).expect("plain data");
        let back: Published = serde_json::from_str(&json).expect("round trip");
        let m = merge(&[docs[0].clone(), docs[1].clone(), back]);
        assert_eq!(m.total_all.count, 297);
        assert_eq!(m.in_flight, 3);
        let p50 = m.total_all.hist.value_at_quantile(0.5);
        let p99 = m.total_all.hist.value_at_quantile(0.99);
        assert!((999..=1_001).contains(&p50), "p50 {p50}: two thirds are fast");
        assert!((899_000..=901_000).contains(&p99), "p99 {p99}, not the mean of p99s (~300 ms)");
        assert_eq!(m.routes.len(), 1);
        assert_eq!(m.routes[0].1.count, 297);
        assert_eq!(m.slots[0].count, 297);
        assert_eq!(m.instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
