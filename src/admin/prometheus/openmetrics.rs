//! The OpenMetrics 1.0 text format, for scrapers that ask for it
//! (`Accept: application/openmetrics-text`), written from the same metric
//! families as the classic format. What it adds: exemplars, the sampled
//! traces kept per bucket of `http_server_request_duration_seconds`. (The
//! `prometheus` crate's encoder writes neither the format nor exemplars.)
//!
//! The format's rules followed here: a counter family is named without its
//! `_total` suffix, which its samples carry; label values and help text are
//! escaped; an exemplar follows its bucket as `# {trace_id="…",span_id="…"}
//! value timestamp`; the exposition ends with `# EOF`.

use std::fmt::Write;

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

use crate::observe::metrics::semconv::{Exemplar, BOUNDS};

/// The content type of OpenMetrics output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Per metric of one family, per bucket, the exemplar to write.
pub type Exemplars<'a> = (&'a str, Vec<Option<&'a [Option<Exemplar>; BOUNDS.len() + 1]>>);

fn escape(out: &mut String, s: &str, quote: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn labels(out: &mut String, pairs: &[LabelPair], extra: Option<(&str, &str)>) {
    if pairs.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let all = pairs.iter().map(|p| (p.name(), p.value())).chain(extra);
    for (i, (k, v)) in all.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape(out, v, true);
        out.push('"');
    }
    out.push('}');
}

/// A float as OpenMetrics writes it.
fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn exemplar(out: &mut String, e: &Exemplar) {
    let hex = |bytes: &[u8]| {
        bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    };
    let _ = write!(
        out,
        " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {}.{:03}",
        hex(&e.trace_id),
        hex(&e.span_id),
        number(f64::from(e.micros) / 1e6),
        e.unix_ms / 1000,
        e.unix_ms % 1000
    );
}

fn sample(out: &mut String, name: &str, suffix: &str, m: &Metric, extra: Option<(&str, &str)>, value: f64) {
    out.push_str(name);
    out.push_str(suffix);
    labels(out, m.get_label(), extra);
    out.push(' ');
    out.push_str(&number(value));
}

/// The families in OpenMetrics text, with `exemplars` for the family it names.
pub fn encode(families: &[MetricFamily], exemplars: &Exemplars<'_>) -> String {
    let mut out = String::with_capacity(16 * 1024);
    for f in families {
        let full = f.name();
        let (name, kind) = match f.get_field_type() {
            MetricType::COUNTER => (full.strip_suffix("_total").unwrap_or(full), "counter"),
            MetricType::GAUGE => (full, "gauge"),
            MetricType::HISTOGRAM => (full, "histogram"),
            MetricType::SUMMARY => (full, "summary"),
            MetricType::UNTYPED => (full, "unknown"),
        };
        let _ = writeln!(out, "# TYPE {name} {kind}");
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        escape(&mut out, f.help(), false);
        out.push('\n');
        let kept = (exemplars.0 == full).then_some(&exemplars.1);
        for (i, m) in f.get_metric().iter().enumerate() {
            match f.get_field_type() {
                MetricType::COUNTER => {
                    sample(&mut out, name, "_total", m, None, m.get_counter().get_value());
                    out.push('\n');
                }
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let per_bucket = kept.and_then(|k| k.get(i).copied().flatten());
                    for (j, b) in h.get_bucket().iter().enumerate() {
                        let le = number(b.upper_bound());
                        sample(&mut out, name, "_bucket", m, Some(("le", &le)), b.cumulative_count() as f64);
                        if let Some(e) = per_bucket.and_then(|p| p[j].as_ref()) {
                            exemplar(&mut out, e);
                        }
                        out.push('\n');
                    }
                    let inf = per_bucket.and_then(|p| p[BOUNDS.len()].as_ref());
                    sample(&mut out, name, "_bucket", m, Some(("le", "+Inf")), h.get_sample_count() as f64);
                    if let Some(e) = inf {
                        exemplar(&mut out, e);
                    }
                    out.push('\n');
                    sample(&mut out, name, "_count", m, None, h.get_sample_count() as f64);
                    out.push('\n');
                    sample(&mut out, name, "_sum", m, None, h.get_sample_sum());
                    out.push('\n');
                }
                _ => {
                    sample(&mut out, name, "", m, None, m.get_gauge().get_value());
                    out.push('\n');
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::routes::RouteId;

    #[test]
    fn counters_lose_their_suffix_in_the_family_and_exemplars_follow_buckets() {
        let mut c = MetricFamily::default();
        c.set_name("x_requests_total".into());
        c.set_help("Requests \\ with \"quotes\"\nand lines".into());
        c.set_field_type(MetricType::COUNTER);
        let mut m = Metric::default();
        let mut l = LabelPair::default();
        l.set_name("route".into());
        l.set_value("GET /a\"b".into());
        m.set_label(vec![l]);
        let mut v = prometheus::proto::Counter::default();
        v.set_value(3.0);
        m.set_counter(v);
        c.set_metric(vec![m]);

        let mut h = MetricFamily::default();
        h.set_name("d_seconds".into());
        h.set_help("d".into());
        h.set_field_type(MetricType::HISTOGRAM);
        let mut hist = prometheus::proto::Histogram::default();
        let buckets = BOUNDS
            .iter()
            .map(|le| {
                let mut b = prometheus::proto::Bucket::default();
                b.set_upper_bound(*le);
                b.set_cumulative_count(1);
                b
            })
            .collect();
        hist.set_bucket(buckets);
        hist.set_sample_count(1);
        hist.set_sample_sum(0.004);
        let mut hm = Metric::default();
        hm.set_histogram(hist);
        h.set_metric(vec![hm]);

        let e = Exemplar {
            route: RouteId(0),
            status: 200,
            micros: 4_000,
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            unix_ms: 1_700_000_000_123,
        };
        let mut per_bucket = [None; BOUNDS.len() + 1];
        per_bucket[0] = Some(e);
        let text = encode(&[c, h], &("d_seconds", vec![Some(&per_bucket)]));
        assert!(
            text.contains("# TYPE x_requests counter\n# HELP x_requests Requests \\\\ with \"quotes\"\\nand lines\n")
        );
        assert!(text.contains("x_requests_total{route=\"GET /a\\\"b\"} 3.0\n"), "{text}");
        let trace = "ab".repeat(16);
        let bucket = format!(
            "d_seconds_bucket{{le=\"0.005\"}} 1.0 # {{trace_id=\"{trace}\",span_id=\"0101010101010101\"}} 0.004 1700000000.123\n"
        );
        assert!(text.contains(&bucket), "{text}");
        assert!(text.contains("d_seconds_bucket{le=\"+Inf\"} 1.0\nd_seconds_count 1.0\nd_seconds_sum 0.004\n"));
        assert!(text.ends_with("# EOF\n"));
    }
}
