//! TLS handshakes counted: the listener's by result (what
//! `perfproxy_tls_handshakes_total{result}` shows) with their time in fixed
//! buckets, and the upstream's new, resumed and failed. Handshakes happen
//! once per connection, off the per-request path: plain atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How a listener handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Not finished within `header_read_timeout_ms`.
    Timeout,
    /// The client closed or reset the connection mid-handshake.
    Closed,
    /// No common protocol version, cipher suite or ALPN protocol.
    Incompatible,
    /// `client_ca_file` is set and the client sent no certificate, or one it did not sign.
    ClientCertificate,
    /// The client refused perfproxy's certificate (it sent an alert).
    PeerRejected,
    /// Not TLS, or TLS broken.
    Malformed,
    Other,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Timeout,
        Outcome::Closed,
        Outcome::Incompatible,
        Outcome::ClientCertificate,
        Outcome::PeerRejected,
        Outcome::Malformed,
        Outcome::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::Closed => "closed",
            Outcome::Incompatible => "incompatible",
            Outcome::ClientCertificate => "client_certificate",
            Outcome::PeerRejected => "peer_rejected",
            Outcome::Malformed => "malformed",
            Outcome::Other => "other",
        }
    }

    /// Why a handshake failed, from the error tokio-rustls gave.
    pub fn of_error(e: &std::io::Error) -> Outcome {
        use rustls::Error as E;
        match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(E::NoCertificatesPresented | E::InvalidCertificate(_)) => Outcome::ClientCertificate,
            Some(E::PeerIncompatible(_) | E::NoApplicationProtocol) => Outcome::Incompatible,
            Some(E::AlertReceived(_)) => Outcome::PeerRejected,
            Some(E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. }) => {
                Outcome::Malformed
            }
            Some(E::PeerMisbehaved(_)) => Outcome::Malformed,
            Some(_) => Outcome::Other,
            None => match e.kind() {
                std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionAborted => Outcome::Closed,
                std::io::ErrorKind::InvalidData => Outcome::Malformed,
                _ => Outcome::Other,
            },
        }
    }
}

/// Upper bounds (seconds) of the handshake time buckets.
pub const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// The listener's handshakes.
#[derive(Debug, Default)]
pub struct Handshakes {
    by_outcome: [AtomicU64; 8],
    /// Successful handshakes by time, not cumulative; the last is above every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    micros: AtomicU64,
}

/// What [`Handshakes`] counted, read at once.
#[derive(Debug, Clone, Default)]
pub struct HandshakeCounts {
    pub by_outcome: Vec<(&'static str, u64)>,
    /// Cumulative counts per bucket of [`BUCKETS`], then the count of all.
    pub cumulative: Vec<u64>,
    pub seconds_sum: f64,
}

impl Handshakes {
    pub fn count(&self, outcome: Outcome, took: Duration) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).expect("every outcome is in ALL");
        self.by_outcome[i].fetch_add(1, Ordering::Relaxed);
        if outcome == Outcome::Ok {
            let secs = took.as_secs_f64();
            let b = BUCKETS.iter().position(|bound| secs <= *bound).unwrap_or(BUCKETS.len());
            self.buckets[b].fetch_add(1, Ordering::Relaxed);
            self.micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        }
    }

    pub fn read(&self) -> HandshakeCounts {
        let by_outcome =
            Outcome::ALL.iter().zip(&self.by_outcome).map(|(o, n)| (o.as_str(), n.load(Ordering::Relaxed))).collect();
        let mut running = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|n| {
                running += n.load(Ordering::Relaxed);
                running
            })
            .collect();
        HandshakeCounts { by_outcome, cumulative, seconds_sum: self.micros.load(Ordering::Relaxed) as f64 / 1e6 }
    }
}

/// The upstream's handshakes: full, resumed (a session kept from before), failed.
#[derive(Debug, Default)]
pub struct UpstreamHandshakes {
    pub full: AtomicU64,
    pub resumed: AtomicU64,
    pub failed: AtomicU64,
}

impl UpstreamHandshakes {
    pub fn read(&self) -> [(&'static str, u64); 3] {
        [
            ("full", self.full.load(Ordering::Relaxed)),
            ("resumed", self.resumed.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_bucketed_cumulatively_and_failures_by_reason() {
        let h = Handshakes::default();
        h.count(Outcome::Ok, Duration::from_micros(400));
        h.count(Outcome::Ok, Duration::from_millis(3));
        h.count(Outcome::Ok, Duration::from_secs(2));
        h.count(Outcome::ClientCertificate, Duration::from_millis(1));
        let c = h.read();
        assert_eq!(c.by_outcome[0], ("ok", 3));
        assert_eq!(c.by_outcome[4], ("client_certificate", 1));
        assert_eq!(c.cumulative, [1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3]);
        assert!((c.seconds_sum - 2.0034).abs() < 1e-9);
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof");
        assert_eq!(Outcome::of_error(&eof), Outcome::Closed);
        let cert = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::NoCertificatesPresented);
        assert_eq!(Outcome::of_error(&cert), Outcome::ClientCertificate);
    }
}
