//! What compression did, per coding: answers compressed, bytes in (the
//! upstream's) and out (to the client). Each compressed answer adds its
//! figures once, when it ends; `/performance` and `/metrics` read them.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::encoding::Coding;

/// One coding's counts.
#[derive(Debug, Default)]
struct Counts {
    responses: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// The counts of every compressing coding.
#[derive(Debug, Default)]
pub struct Stats {
    gzip: Counts,
    br: Counts,
    zstd: Counts,
}

/// One coding's figures as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub responses: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Stats {
    fn counts(&self, coding: Coding) -> Option<&Counts> {
        match coding {
            Coding::Gzip => Some(&self.gzip),
            Coding::Br => Some(&self.br),
            Coding::Zstd => Some(&self.zstd),
            Coding::Identity => None,
        }
    }

    /// One answer compressed with `coding` has ended.
    pub fn add(&self, coding: Coding, bytes_in: u64, bytes_out: u64) {
        if let Some(c) = self.counts(coding) {
            c.responses.fetch_add(1, Ordering::Relaxed);
            c.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
            c.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        }
    }

    pub fn figures(&self, coding: Coding) -> Figures {
        self.counts(coding).map_or_else(Figures::default, |c| Figures {
            responses: c.responses.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
        })
    }
}
