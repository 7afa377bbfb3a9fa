//! `perfproxy_tls_*`: the TLS listener's handshakes (by result, and their
//! time) and certificates' expiry; the upstream's handshakes (full,
//! resumed, failed).

use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};

use super::{counter, family, gauge, labels};
use crate::shared::state::Shared;
use crate::tls::stats::BUCKETS;

pub(super) fn families(families: &mut Vec<MetricFamily>, shared: &Shared) {
    if let Some(tls) = &shared.config.tls {
        let counts = tls.config.handshakes.read();
        families.push(family(
            "perfproxy_tls_handshakes_total",
            "TLS handshakes on tls_listen by result (ok, timeout, closed, incompatible, client_certificate, peer_rejected, malformed, other)",
            MetricType::COUNTER,
            counts.by_outcome.iter().map(|(result, n)| counter(&[("result", result)], *n)).collect(),
        ));
        let mut h = Histogram::default();
        let ok = counts.cumulative.last().copied().unwrap_or(0);
        h.set_sample_count(ok);
        h.set_sample_sum(counts.seconds_sum);
        h.set_bucket(
            BUCKETS
                .iter()
                .zip(&counts.cumulative)
                .map(|(le, n)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(*le);
                    b.set_cumulative_count(*n);
                    b
                })
                .collect(),
        );
        let mut m = Metric::from_label(labels(&[]));
        m.set_histogram(h);
        families.push(family(
            "perfproxy_tls_handshake_duration_seconds",
            "Time of the successful TLS handshakes on tls_listen, from when the worker takes the connection to the handshake's end",
            MetricType::HISTOGRAM,
            vec![m],
        ));
        let certs = tls.config.certificates();
        families.push(family(
            "perfproxy_tls_certificate_not_after_seconds",
            "When each certificate tls_listen presents expires (Unix seconds)",
            MetricType::GAUGE,
            certs.iter().map(|c| gauge(&[("file", &c.file), ("subject", &c.subject)], c.not_after as f64)).collect(),
        ));
    }
    let Some(up) = &shared.config.upstream_tls else { return };
    if !up.client_certificates.is_empty() {
        families.push(family(
            "perfproxy_tls_client_certificate_not_after_seconds",
            "When each certificate perfproxy presents to the https:// upstream (client_cert_file) expires (Unix seconds)",
            MetricType::GAUGE,
            up.client_certificates
                .iter()
                .map(|c| gauge(&[("file", &c.file), ("subject", &c.subject)], c.not_after as f64))
                .collect(),
        ));
    }
    families.push(family(
        "perfproxy_tls_upstream_handshakes_total",
        "TLS handshakes with an https:// upstream: full, resumed (a session kept from before), failed",
        MetricType::COUNTER,
        up.handshakes.read().iter().map(|(result, n)| counter(&[("result", result)], *n)).collect(),
    ));
}
