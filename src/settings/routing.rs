//! The `[route_discovery]` table: how route labels learn which path
//! segments are parameters from the traffic (see `wire::discovery`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteDiscoverySettings {
    /// `false`: the plain normalisation (identifiers become `:id`, every
    /// other segment is kept as sent).
    pub enabled: bool,
    /// Requests a segment value needs before it is part of a label.
    pub literal_after: u64,
    /// Values a position (the label up to it) learns at most; the rest are `:param`.
    pub max_literals: u64,
}

impl Default for RouteDiscoverySettings {
    fn default() -> Self {
        RouteDiscoverySettings { enabled: true, literal_after: 3, max_literals: 20 }
    }
}
