//! The TLS listener's side: its certificate, key and client CA read into a
//! rustls `ServerConfig` (ALPN `h2`, `http/1.1`; session tickets on), held
//! behind an `ArcSwap` so a reload swaps it under running connections:
//! each handshake takes the one current when it starts, and a connection
//! keeps what it was accepted with. A reload (SIGHUP, or the files'
//! [`Stamp`]s changed and then held still for one look) that fails keeps the
//! previous configuration and says why.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tracing::{debug, error, info};

use super::files::{self, CertificateInfo, FileError, Stamp};
use super::stats::{Handshakes, Outcome};
use crate::settings::{ConfigError, TlsSettings};

/// The files the listener reads, and its lowest TLS version.
#[derive(Debug, Clone)]
struct Files {
    cert: String,
    key: String,
    client_ca: Option<String>,
    tls13_only: bool,
}

impl Files {
    fn paths(&self) -> impl Iterator<Item = &str> {
        [Some(self.cert.as_str()), Some(self.key.as_str()), self.client_ca.as_deref()].into_iter().flatten()
    }

    fn stamps(&self) -> Vec<Option<Stamp>> {
        self.paths().map(|p| files::stamp(Path::new(p))).collect()
    }
}

/// The session ticket keys and the TLS 1.2 session cache: kept across
/// reloads, so returning clients still resume after one; made anew when
/// clients must present a certificate (resuming skips its check, so a CA
/// taken out of `client_ca_file` must end the sessions it allowed).
#[derive(Debug, Clone)]
struct Sessions {
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    cache: Arc<dyn rustls::server::StoresServerSessions>,
}

impl Sessions {
    fn new() -> Result<Sessions, rustls::Error> {
        let ticketer = rustls::crypto::ring::Ticketer::new()?;
        Ok(Sessions { ticketer, cache: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE) })
    }
}

/// A file that failed, under its key.
struct LoadError {
    key: &'static str,
    error: FileError,
}

/// One reading of the files.
#[derive(Debug)]
struct Loaded {
    config: Arc<ServerConfig>,
    sessions: Sessions,
    certificates: Vec<CertificateInfo>,
    stamps: Vec<Option<Stamp>>,
}

/// The TLS listener's configuration, reloadable, and its handshakes.
#[derive(Debug)]
pub struct TlsListener {
    files: Files,
    current: ArcSwap<Loaded>,
    /// Held while the files are read: a SIGHUP and the watcher never store out of order.
    loading: Mutex<()>,
    /// What the file watcher saw last (a change is loaded once it holds still).
    seen: Mutex<Vec<Option<Stamp>>>,
    pub handshakes: Handshakes,
}

/// TLS 1.2 sessions kept for resumption (rustls' own default).
const SESSION_CACHE: usize = 256;

/// The rustls provider perfproxy uses: *ring*, which builds with a C
/// compiler alone (aws-lc-rs needs cmake). rustls marks it deprecated for
/// one reason: *ring* has no post-quantum key exchange (X25519, P-256 and
/// P-384 are offered).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(files: &Files, sessions: Sessions) -> Result<Loaded, LoadError> {
    let under = |key: &'static str| move |error: FileError| LoadError { key, error };
    // Stamped before reading: a change during the read is seen next time.
    let stamps = files.stamps();
    let chain = files::certificates(&files.cert).map_err(under("tls.cert_file"))?;
    let key = files::private_key(&files.key).map_err(under("tls.key_file"))?;
    let provider = provider();
    let versions: &[&rustls::SupportedProtocolVersion] =
        if files.tls13_only { &[&rustls::version::TLS13] } else { &[&rustls::version::TLS12, &rustls::version::TLS13] };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| FileError::new(&files.cert, format!("no usable TLS version ({e})")))
        .map_err(under("tls.min_version"))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = Arc::new(files::roots(ca).map_err(under("tls.client_ca_file"))?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| FileError::new(ca, format!("not usable to verify clients ({e})")))
                .map_err(under("tls.client_ca_file"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain.clone(), key)
        .map_err(|e| FileError::new(&files.key, format!("not usable with the certificate in {} ({e})", files.cert)))
        .map_err(under("tls.key_file"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = sessions.ticketer.clone();
    config.session_storage = sessions.cache.clone();
    Ok(Loaded { config: Arc::new(config), sessions, certificates: files::describe(&files.cert, &chain), stamps })
}

impl Files {
    /// `[tls]`'s keys (the files unread).
    fn from_settings(s: &TlsSettings) -> Result<Files, ConfigError> {
        let required = |key: &str, v: &Option<String>| {
            v.clone()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| ConfigError::new(format!("tls.{key}"), "unset", "a PEM file (required with tls_listen)"))
        };
        let tls13_only = TlsListener::tls13_only(s)?;
        Ok(Files {
            cert: required("cert_file", &s.cert_file)?,
            key: required("key_file", &s.key_file)?,
            client_ca: s.client_ca_file.clone().filter(|p| !p.is_empty()),
            tls13_only,
        })
    }
}

impl TlsListener {
    /// `tls.min_version`: whether only TLS 1.3 is offered. Checked with or
    /// without `tls_listen`, as every key's range is.
    pub fn tls13_only(s: &TlsSettings) -> Result<bool, ConfigError> {
        match s.min_version.as_deref() {
            None | Some("1.2") => Ok(false),
            Some("1.3") => Ok(true),
            Some(v) => Err(ConfigError::new("tls.min_version", format!("{v:?}"), "\"1.2\" or \"1.3\"")),
        }
    }

    /// Checks `[tls]`'s keys without reading the files.
    pub fn check_keys(s: &TlsSettings) -> Result<(), ConfigError> {
        Files::from_settings(s).map(drop)
    }

    /// Reads `[tls]`; an error names the key of the file at fault, the file and why.
    pub fn new(s: &TlsSettings) -> Result<TlsListener, ConfigError> {
        let files = Files::from_settings(s)?;
        let sessions =
            Sessions::new().map_err(|e| ConfigError::new("tls_listen", "", format!("a session ticket key ({e})")))?;
        let loaded = load(&files, sessions).map_err(|e| {
            ConfigError::new(e.key, format!("{:?}", e.error.file), format!("a usable PEM file: {}", e.error.why))
        })?;
        Ok(TlsListener {
            seen: Mutex::new(loaded.stamps.clone()),
            current: ArcSwap::from_pointee(loaded),
            files,
            loading: Mutex::new(()),
            handshakes: Handshakes::default(),
        })
    }

    /// Reads the files again (`why`: for the log); on success new
    /// handshakes use them. On failure the running configuration stays,
    /// and the log says why.
    pub fn reload(&self, why: &str) {
        self.log_reload(self.load_again(None), why);
    }

    /// The files read again; on failure, `stamps` (when given) become the
    /// loaded ones, so the same files are not tried again: under the load
    /// lock, so a concurrent success is never overwritten.
    fn load_again(&self, stamps: Option<&[Option<Stamp>]>) -> Result<(), FileError> {
        let _one_at_a_time = self.loading.lock().expect("the load lock is never poisoned");
        let sessions = match &self.files.client_ca {
            Some(_) => {
                Sessions::new().map_err(|e| FileError::new(&self.files.cert, format!("a session ticket key ({e})")))?
            }
            None => self.current.load().sessions.clone(),
        };
        let loaded = match load(&self.files, sessions) {
            Ok(loaded) => loaded,
            Err(e) => {
                if let Some(stamps) = stamps {
                    self.current.rcu(|l| Loaded {
                        config: l.config.clone(),
                        sessions: l.sessions.clone(),
                        certificates: l.certificates.clone(),
                        stamps: stamps.to_vec(),
                    });
                }
                return Err(e.error);
            }
        };
        *self.seen.lock().expect("the stamp lock is never poisoned") = loaded.stamps.clone();
        self.current.store(Arc::new(loaded));
        Ok(())
    }

    fn log_reload(&self, result: Result<(), FileError>, why: &str) {
        match result {
            Ok(()) => {
                let not_after = self.certificates().first().map_or(0, |c| c.not_after);
                info!(file = %self.files.cert, not_after, why, "TLS certificate reloaded");
            }
            Err(e) => {
                error!(file = %e.file, error = %e.why, why, "TLS reload failed: keeping the previous certificate")
            }
        }
    }

    /// The certificates now presented, leaf first.
    pub fn certificates(&self) -> Vec<CertificateInfo> {
        self.current.load().certificates.clone()
    }

    /// Looks at the files every `every`; a change that held still since the
    /// last look is loaded (a certificate and its key renamed into place one
    /// after the other load together).
    pub async fn watch_files(self: Arc<Self>, every: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(every) => {}
            }
            let now = self.files.stamps();
            let settled = {
                let mut seen = self.seen.lock().expect("the stamp lock is never poisoned");
                let settled = *seen == now;
                *seen = now.clone();
                settled
            };
            if settled && now != self.current.load().stamps {
                // A failed load is not tried again until the files change again.
                self.log_reload(self.load_again(Some(&now)), "files changed");
            }
        }
    }

    /// A TLS handshake on `tcp` within `timeout`, counted; `None` when it failed.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let started = Instant::now();
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load().config.clone());
        let outcome = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                self.handshakes.count(Outcome::Ok, started.elapsed());
                return Some(stream);
            }
            Ok(Err(e)) => {
                let outcome = Outcome::of_error(&e);
                debug!(error = %e, result = outcome.as_str(), "TLS handshake failed");
                outcome
            }
            Err(_) => Outcome::Timeout,
        };
        self.handshakes.count(outcome, started.elapsed());
        None
    }
}
