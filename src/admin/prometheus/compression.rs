//! `perfproxy_compression_*`: per coding, the answers compressed and the
//! bytes that went in (the upstream's) and out (to the client).

use prometheus::proto::{MetricFamily, MetricType};

use super::{counter, family};
use crate::shared::state::Shared;
use crate::wire::encoding::Coding;

pub(super) fn families(families: &mut Vec<MetricFamily>, shared: &Shared) {
    let stats = &shared.compression.stats;
    let figures: Vec<_> = Coding::COMPRESSED.iter().map(|c| (c.token(), stats.figures(*c))).collect();
    families.push(family(
        "perfproxy_compression_responses_total",
        "Answers compressed, by algorithm (gzip, br, zstd); hits on stored encodings are not compressed again",
        MetricType::COUNTER,
        figures.iter().map(|(a, f)| counter(&[("algorithm", a)], f.responses)).collect(),
    ));
    families.push(family(
        "perfproxy_compression_bytes_total",
        "Bytes through the compressors, by algorithm and direction (in: the upstream's, out: to the client)",
        MetricType::COUNTER,
        figures
            .iter()
            .flat_map(|(a, f)| {
                [
                    counter(&[("algorithm", a), ("direction", "in")], f.bytes_in),
                    counter(&[("algorithm", a), ("direction", "out")], f.bytes_out),
                ]
            })
            .collect(),
    ));
}
