//! The upstream's side: an `https://` upstream verified against the system
//! roots (or `[upstream_tls] ca_file`) under its URL's host name (or
//! `server_name`), with an optional client certificate. One rustls
//! `ClientConfig` per ALPN protocol (`http/1.1` for the pool, `h2` for the
//! multiplexed connection) is shared by every worker, and with it the
//! session cache: a new pooled connection resumes a session (TLS 1.3
//! tickets, TLS 1.2 ids) instead of paying a full handshake.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tracing::warn;

use super::files;
use super::stats::UpstreamHandshakes;
use crate::settings::{ConfigError, UpstreamTlsSettings};

/// TLS to the upstream.
pub struct UpstreamTls {
    http1: tokio_rustls::TlsConnector,
    h2: tokio_rustls::TlsConnector,
    /// The HTTP/1.1 configuration, for the health probe's client.
    pub http1_config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    /// The client certificate presented (`client_cert_file`), leaf first.
    pub client_certificates: Vec<files::CertificateInfo>,
    pub handshakes: UpstreamHandshakes,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

fn client_config(
    roots: Arc<rustls::RootCertStore>,
    identity: Option<(Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>)>,
    alpn: &[u8],
    key_file: &str,
) -> Result<ClientConfig, ConfigError> {
    let builder = ClientConfig::builder_with_provider(super::listener::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("upstream_tls", "", format!("usable TLS versions ({e})")))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            ConfigError::new(
                "upstream_tls.client_key_file",
                format!("{key_file:?}"),
                format!("a key for client_cert_file ({e})"),
            )
        })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

impl UpstreamTls {
    /// Reads `[upstream_tls]` for an upstream named `host`; errors name the key.
    pub fn new(s: &UpstreamTlsSettings, host: &str) -> Result<UpstreamTls, ConfigError> {
        let file_error = |key: &str| {
            let key = format!("upstream_tls.{key}");
            move |e: files::FileError| {
                ConfigError::new(key.clone(), format!("{:?}", e.file), format!("a usable PEM file: {}", e.why))
            }
        };
        let roots = match s.ca_file.as_deref().filter(|f| !f.is_empty()) {
            Some(ca) => files::roots(ca).map_err(file_error("ca_file"))?,
            None => system_roots("upstream_tls.ca_file")?,
        };
        let server_name = UpstreamTls::check_keys(s, host)?;
        let identity = match (s.client_cert_file.as_deref(), s.client_key_file.as_deref()) {
            (Some(cert), Some(key)) => Some((
                files::certificates(cert).map_err(file_error("client_cert_file"))?,
                files::private_key(key).map_err(file_error("client_key_file"))?,
            )),
            _ => None,
        };
        let roots = Arc::new(roots);
        let key_file = s.client_key_file.clone().unwrap_or_default();
        let http1_config = Arc::new(client_config(
            roots.clone(),
            identity.as_ref().map(|(c, k)| (c.clone(), k.clone_key())),
            b"http/1.1",
            &key_file,
        )?);
        let client_certificates = match (&identity, s.client_cert_file.as_deref()) {
            (Some((chain, _)), Some(file)) => files::describe(file, chain),
            _ => Vec::new(),
        };
        let h2_config = Arc::new(client_config(roots, identity, b"h2", &key_file)?);
        Ok(UpstreamTls {
            http1: tokio_rustls::TlsConnector::from(http1_config.clone()),
            h2: tokio_rustls::TlsConnector::from(h2_config),
            http1_config,
            server_name,
            client_certificates,
            handshakes: UpstreamHandshakes::default(),
        })
    }

    /// Checks `[upstream_tls]`'s keys without reading its files (the
    /// client certificate and key go together, the name is one); the name
    /// the upstream is verified under.
    pub fn check_keys(s: &UpstreamTlsSettings, host: &str) -> Result<ServerName<'static>, ConfigError> {
        match (s.client_cert_file.as_deref(), s.client_key_file.as_deref()) {
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "upstream_tls.client_key_file",
                    "unset",
                    "a PEM key (client_cert_file is set)",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "upstream_tls.client_cert_file",
                    "unset",
                    "a PEM chain (client_key_file is set)",
                ))
            }
            _ => {}
        }
        let name = s.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_string()).map_err(|_| {
            ConfigError::new("upstream_tls.server_name", format!("{name:?}"), "a DNS name or an IP address")
        })
    }

    /// The name the upstream is verified under.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// A TLS handshake on `tcp` (`h2`: ALPN `h2`, else `http/1.1`), counted.
    pub async fn connect(&self, tcp: TcpStream, h2: bool) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let connector = if h2 { &self.h2 } else { &self.http1 };
        match connector.connect(self.server_name.clone(), tcp).await {
            Ok(stream) if h2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") => {
                self.handshakes.failed.fetch_add(1, Ordering::Relaxed);
                warn!(server_name = ?self.server_name, "the upstream did not agree on HTTP/2 over TLS (ALPN h2)");
                Err(io::Error::other("the upstream did not agree on HTTP/2 (ALPN h2)"))
            }
            Ok(stream) => {
                let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                let counter = if resumed { &self.handshakes.resumed } else { &self.handshakes.full };
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(stream)
            }
            Err(e) => {
                self.handshakes.failed.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, server_name = ?self.server_name, "TLS handshake with the upstream failed");
                Err(e)
            }
        }
    }
}

/// A client configuration that trusts nothing (for clients that speak
/// plain HTTP only, where a type wants TLS too).
pub fn no_roots() -> ClientConfig {
    ClientConfig::builder_with_provider(super::listener::provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// The system's CA certificates (`/etc/ssl/certs` and the like); `key`
/// names the CA file setting that would replace them.
fn system_roots(key: &str) -> Result<rustls::RootCertStore, ConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(ConfigError::new(
            key,
            "unset",
            "a CA file: no system root certificates were found (install ca-certificates, or name the peer's CA)",
        ));
    }
    Ok(roots)
}

/// The client configuration for an `https://` peer perfproxy calls on its
/// own (an alert webhook, a `[[health.http]]` dependency): its certificate
/// verified against `ca_file` or, without one, the system's CAs; no ALPN
/// (the caller's connector sets it). `ca_key` names the CA file setting in errors.
pub fn verified_client(ca_key: &str, ca_file: Option<&str>) -> Result<ClientConfig, ConfigError> {
    let roots = match ca_file.filter(|f| !f.is_empty()) {
        Some(ca) => files::roots(ca)
            .map_err(|e| ConfigError::new(ca_key, format!("{:?}", e.file), format!("a usable PEM file: {}", e.why)))?,
        None => system_roots(ca_key)?,
    };
    Ok(ClientConfig::builder_with_provider(super::listener::provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth())
}
