//! The protocol settings: `upstream_protocol`, the `[http2]` limits of the
//! inbound HTTP/2 listener and `[grpc]` (which gRPC statuses count as
//! errors), as written and as validated.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::wire::grpc::Code;

/// Where the upstream is: host (name or IP) and port, plus the authority used
/// for requests that arrive without a `Host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddr {
    pub host: String,
    pub port: u16,
    pub authority: http::uri::Authority,
    /// `https://`: TLS to the upstream (`[upstream_tls]`).
    pub tls: bool,
}

/// How requests reach the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 for everything.
    Http1,
    /// HTTP/2 over cleartext (prior knowledge) for everything.
    H2c,
    /// gRPC (`content-type: application/grpc*`) over h2c, the rest over HTTP/1.1.
    Auto,
}

impl UpstreamProtocol {
    pub fn parse(key: &str, v: &str) -> Result<UpstreamProtocol, ConfigError> {
        match v {
            "http1" => Ok(UpstreamProtocol::Http1),
            "h2c" => Ok(UpstreamProtocol::H2c),
            "auto" => Ok(UpstreamProtocol::Auto),
            _ => Err(ConfigError::new(key, format!("{v:?}"), "one of \"http1\", \"h2c\", \"auto\"")),
        }
    }

    /// Whether a request goes over h2c; `grpc`: its content type is gRPC's.
    pub fn h2c_for(self, grpc: bool) -> bool {
        match self {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::H2c => true,
            UpstreamProtocol::Auto => grpc,
        }
    }
}

/// The `[http2]` table: limits of the inbound HTTP/2 (h2c) connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http2Settings {
    /// Streams a client may have open at once on one connection.
    pub max_concurrent_streams: u64,
    /// The largest header list (decoded, RFC 9113 §6.5.2) a request may carry.
    pub max_header_list_bytes: u64,
    /// The flow-control window of each stream and of each connection.
    pub initial_window_bytes: u64,
    /// Streams a client may reset before perfproxy has served them, per
    /// connection, before it is told to go away (rapid reset).
    pub max_pending_resets: u64,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            max_concurrent_streams: 100,
            max_header_list_bytes: 65_536,
            initial_window_bytes: 1_048_576,
            max_pending_resets: 20,
        }
    }
}

/// The `[grpc]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcSettings {
    /// gRPC status names (or numbers) that count a call as an error.
    pub error_codes: Vec<String>,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        let codes = [Code::Unknown, Code::DeadlineExceeded, Code::Unimplemented, Code::Internal];
        let more = [Code::Unavailable, Code::DataLoss];
        GrpcSettings { error_codes: codes.iter().chain(&more).map(|c| c.name().to_string()).collect() }
    }
}

/// The validated protocol settings.
#[derive(Debug, Clone)]
pub struct Protocols {
    pub upstream: UpstreamProtocol,
    pub http2: Http2Settings,
    /// Bit `n` set: status `n` counts as an error.
    pub grpc_errors: u32,
}

impl Protocols {
    pub fn validate(upstream: &str, http2: &Http2Settings, grpc: &GrpcSettings) -> Result<Protocols, ConfigError> {
        let upstream = UpstreamProtocol::parse("upstream_protocol", upstream)?;
        let range = |key: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                return Err(ConfigError::new(format!("http2.{key}"), v, format!("a number from {lo} to {hi}")));
            }
            Ok(())
        };
        range("max_concurrent_streams", http2.max_concurrent_streams, 1, 10_000)?;
        range("max_header_list_bytes", http2.max_header_list_bytes, 1024, 1 << 24)?;
        // RFC 9113 §6.9.2: at most 2^31 - 1; below 65 535 a client could not send a default frame.
        range("initial_window_bytes", http2.initial_window_bytes, 65_535, (1 << 31) - 1)?;
        range("max_pending_resets", http2.max_pending_resets, 1, 10_000)?;
        let mut grpc_errors = 0;
        for (i, name) in grpc.error_codes.iter().enumerate() {
            let code = Code::parse(name).ok_or_else(|| {
                ConfigError::new(
                    format!("grpc.error_codes[{i}]"),
                    format!("{name:?}"),
                    "a gRPC status name such as UNAVAILABLE, or its number 0-16",
                )
            })?;
            grpc_errors |= 1 << code as u32;
        }
        Ok(Protocols { upstream, http2: http2.clone(), grpc_errors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_checked_by_key() {
        let (h2, grpc) = (Http2Settings::default(), GrpcSettings::default());
        let p = Protocols::validate("auto", &h2, &grpc).unwrap();
        assert_eq!(p.upstream, UpstreamProtocol::Auto);
        // UNKNOWN 2, DEADLINE_EXCEEDED 4, UNIMPLEMENTED 12, INTERNAL 13, UNAVAILABLE 14, DATA_LOSS 15.
        assert_eq!(p.grpc_errors, (1 << 2) | (1 << 4) | (1 << 12) | (1 << 13) | (1 << 14) | (1 << 15));
        assert_eq!(Protocols::validate("h3", &h2, &grpc).unwrap_err().key, "upstream_protocol");
        let bad = Http2Settings { max_concurrent_streams: 0, ..Http2Settings::default() };
        assert_eq!(Protocols::validate("auto", &bad, &grpc).unwrap_err().key, "http2.max_concurrent_streams");
        let bad = Http2Settings { initial_window_bytes: 1 << 31, ..Http2Settings::default() };
        assert_eq!(Protocols::validate("auto", &bad, &grpc).unwrap_err().key, "http2.initial_window_bytes");
        let bad = GrpcSettings { error_codes: vec!["INTERNAL".into(), "NOPE".into()] };
        assert_eq!(Protocols::validate("auto", &h2, &bad).unwrap_err().key, "grpc.error_codes[1]");
        let numbers = GrpcSettings { error_codes: vec!["14".into(), "unavailable".into()] };
        assert_eq!(Protocols::validate("auto", &h2, &numbers).unwrap().grpc_errors, 1 << 14);
    }
}
