//! Validation of `tls_listen` with `[tls]`, and of `[upstream_tls]` for an
//! `https://` upstream: the files are read here, so a bad one stops the
//! start (exit 2) naming its key, the file and why.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{ConfigError, Settings, TlsFiles};
use crate::settings::UpstreamAddr;
use crate::tls::{TlsListener, UpstreamTls};

/// The TLS listener's address and configuration.
#[derive(Debug, Clone)]
pub struct Listener {
    pub addr: SocketAddr,
    pub config: Arc<TlsListener>,
}

/// `tls_listen` with its certificates; TLS to the upstream when it is
/// `https://`. With [`TlsFiles::Skip`] only the keys are checked (both `None`).
pub fn validate(
    s: &Settings,
    upstream: &UpstreamAddr,
    files: TlsFiles,
) -> Result<(Option<Listener>, Option<Arc<UpstreamTls>>), ConfigError> {
    let addr: Option<SocketAddr> = match s.tls_listen.as_deref() {
        Some(v) => Some(
            v.parse().map_err(|_| ConfigError::new("tls_listen", format!("{v:?}"), "IP:PORT, e.g. 0.0.0.0:4443"))?,
        ),
        None => None,
    };
    TlsListener::tls13_only(&s.tls)?;
    if files == TlsFiles::Skip {
        if addr.is_some() {
            TlsListener::check_keys(&s.tls)?;
        }
        if upstream.tls {
            UpstreamTls::check_keys(&s.upstream_tls, &upstream.host)?;
        }
        return Ok((None, None));
    }
    let listener = match addr {
        Some(addr) => Some(Listener { addr, config: Arc::new(TlsListener::new(&s.tls)?) }),
        None => None,
    };
    let upstream_tls = match upstream.tls {
        true => Some(Arc::new(UpstreamTls::new(&s.upstream_tls, &upstream.host)?)),
        false => None,
    };
    Ok((listener, upstream_tls))
}
