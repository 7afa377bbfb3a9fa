//! The `[tls]` and `[upstream_tls]` tables: the TLS listener's certificate,
//! key, client CA and lowest version; the upstream's CA, name and client
//! certificate. Paths only: the files are read (and checked) by the `tls` layer.

use serde::{Deserialize, Serialize};

/// `[tls]`: what the TLS listener (`tls_listen`) presents and asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// PEM CA certificates: clients must present a certificate one of them signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
    /// `"1.2"` (1.2 and 1.3) or `"1.3"` (1.3 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
}

/// `[upstream_tls]`: how an `https://` upstream is verified and what perfproxy presents to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamTlsSettings {
    /// PEM CA certificates to verify the upstream against instead of the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// The name sent (SNI) and verified instead of the upstream URL's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// PEM certificate chain perfproxy presents (mutual TLS); needs `client_key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<String>,
}
