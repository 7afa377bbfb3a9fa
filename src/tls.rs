//! TLS at both ends, with rustls on the *ring* provider: the TLS listener's
//! certificates, reloaded live ([`listener`]), the `https://` upstream's
//! verification and session cache ([`upstream`]), the streams the lanes and
//! the pool use over TCP or TLS alike ([`stream`]), the PEM files
//! ([`files`]) and the handshakes counted ([`stats`]).

pub mod files;
pub mod listener;
pub mod send_clock;
pub mod stats;
pub mod stream;
pub mod upstream;

pub use listener::TlsListener;
pub use stream::{ClientStream, UpstreamStream};
pub use upstream::UpstreamTls;
