//! What perfproxy records about the traffic: [`metrics`] (per-route
//! HdrHistograms, windows, the semantic-convention histogram), [`trace`] (W3C
//! Trace Context, OTLP spans), [`access_log`], [`alerts`] (thresholds, the
//! webhook), [`history`] (per-minute rollups, the in-memory series), [`slow`] (slow
//! requests and what the database was doing meanwhile), [`slo`] (service
//! level objectives, their budgets and burn rates) and [`cluster`]
//! (figures shared between instances through Redis).

pub(crate) mod access_log;
pub(crate) mod alerts;
pub(crate) mod cluster;
pub(crate) mod history;
pub(crate) mod metrics;
pub mod slo;
pub(crate) mod slow;
pub mod trace;
