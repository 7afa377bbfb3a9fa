//! PEM files read into what rustls takes: a certificate chain, a private
//! key, a set of CA roots. Every error names the file and says why; the
//! certificates' `not_after` is read for `/performance` and `tls_expiry`.
//! A file's identity (device, inode, size, modification time; symlinks
//! followed) tells the watcher when it was replaced.

use std::path::Path;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

/// A file that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {why}")]
pub struct FileError {
    pub file: String,
    pub why: String,
}

impl FileError {
    pub fn new(file: &str, why: impl Into<String>) -> FileError {
        FileError { file: file.to_string(), why: why.into() }
    }
}

/// One certificate of a chain as reported (`/performance` `tls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateInfo {
    pub file: String,
    pub subject: String,
    /// Unix seconds.
    pub not_after: i64,
}

impl CertificateInfo {
    /// Days until `not_after` from `now` (Unix seconds), to 2 decimals; below 0 once expired.
    pub fn days_left(&self, now: i64) -> f64 {
        ((self.not_after - now) as f64 / 86_400.0 * 100.0).round() / 100.0
    }
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Reads a PEM file's bytes (the error names it).
fn read(file: &str) -> Result<Vec<u8>, FileError> {
    std::fs::read(file).map_err(|e| FileError::new(file, format!("cannot read it ({e})")))
}

/// The certificates of a PEM file, in order; at least one.
pub fn certificates(file: &str) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let bytes = read(file)?;
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        certs.push(cert.map_err(|e| FileError::new(file, format!("not a valid PEM certificate ({e})")))?);
    }
    if certs.is_empty() {
        return Err(FileError::new(file, "no PEM certificate (-----BEGIN CERTIFICATE-----) in it"));
    }
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert)
            .map_err(|e| FileError::new(file, format!("a certificate in it is not valid X.509 ({e})")))?;
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(file: &str) -> Result<PrivateKeyDer<'static>, FileError> {
    let bytes = read(file)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            FileError::new(file, "no PEM private key (-----BEGIN PRIVATE KEY-----) in it")
        }
        e => FileError::new(file, format!("not a valid PEM private key ({e})")),
    })
}

/// A CA file as a root store.
pub fn roots(file: &str) -> Result<rustls::RootCertStore, FileError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(file)? {
        roots.add(cert).map_err(|e| FileError::new(file, format!("a certificate in it is not a usable CA ({e})")))?;
    }
    Ok(roots)
}

/// Each certificate's subject and `not_after`.
pub fn describe(file: &str, certs: &[CertificateDer<'_>]) -> Vec<CertificateInfo> {
    certs
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, cert)| CertificateInfo {
            file: file.to_string(),
            subject: cert.subject().to_string(),
            not_after: cert.validity().not_after.timestamp(),
        })
        .collect()
}

/// What identifies a file's content without reading it: replaced or
/// rewritten, one of these changes. `None` when it cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

/// The stamp of `file` (symlinks followed, as a Kubernetes secret volume swaps them).
pub fn stamp(file: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(file).ok()?;
    Some(Stamp { dev: m.dev(), ino: m.ino(), len: m.len(), modified: m.modified().ok() })
}
