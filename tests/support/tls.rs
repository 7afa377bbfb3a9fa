//! Certificates made at test time (rcgen), and TLS clients and servers for
//! the tests: HTTP/1.1 or HTTP/2 over rustls.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// A certificate authority that signs test certificates.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

/// A certificate with its key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    /// Unix seconds.
    pub not_after: i64,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), der: cert.der().clone(), issuer: Issuer::new(params, key) }
    }

    /// A certificate for `names` (DNS names or IPs), valid for `days` from now.
    pub fn leaf(&self, cn: &str, names: &[&str], days: i64) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(days);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), not_after: params.not_after.unix_timestamp() }
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        roots
    }
}

impl Leaf {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()).map(Result::unwrap).collect()
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting `ca`, offering `alpn`, presenting `identity`.
pub fn client_config(ca: &Ca, alpn: &[&[u8]], identity: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots());
    let mut config = match identity {
        Some(leaf) => builder.with_client_auth_cert(leaf.chain(), leaf.key()).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `addr` (verified as `name`).
pub async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

/// The certificate the server presented: its `not_after` (Unix seconds).
pub fn peer_not_after(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> i64 {
    let certs = stream.get_ref().1.peer_certificates().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    cert.validity().not_after.timestamp()
}

/// An answer read whole.
pub struct Got {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// HTTP/1.1 requests on one TLS connection.
pub struct H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl H1 {
    pub async fn over(stream: tokio_rustls::client::TlsStream<TcpStream>) -> H1 {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        H1(sender)
    }

    pub async fn get(&mut self, path: &str) -> Result<Got, hyper::Error> {
        let req = Request::get(path).header("host", "localhost").body(Full::default()).unwrap();
        self.0.ready().await?;
        let resp = self.0.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Got { status: parts.status.as_u16(), headers: parts.headers, body: String::from_utf8_lossy(&body).into() })
    }
}

/// One HTTP/2 request on a new TLS connection.
pub async fn h2_get(stream: tokio_rustls::client::TlsStream<TcpStream>, path: &str) -> Got {
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("https://localhost{path}")).body(Full::<Bytes>::default()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Got { status: parts.status.as_u16(), headers: parts.headers, body: String::from_utf8_lossy(&body).into() }
}

/// Writes `text` to a new file under the test's directory; its path.
pub fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// Replaces `path` by a rename, as cert-manager and certbot do.
pub fn rename_into_place(path: &str, text: &str) {
    let tmp = format!("{path}.new-{}", fastrand::u32(..));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A directory of its own for one test's files.
pub fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("perfproxy-tls-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What an [`serve_https`] server was sent: each request's path, HTTP
/// version and body, in order.
pub type Received = Arc<std::sync::Mutex<Vec<(String, http::Version, Bytes)>>>;

/// An HTTPS server on 127.0.0.1 presenting `leaf`, speaking HTTP/2 to a
/// client that offers `h2` and HTTP/1.1 otherwise; it answers every request
/// `200 ok` and keeps what it was sent. Its port and what it got.
pub async fn serve_https(leaf: &Leaf) -> (u16, Received) {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(leaf.chain(), leaf.key())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Received = Arc::default();
    let kept = got.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, kept) = (acceptor.clone(), kept.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let kept = kept.clone();
                    async move {
                        let (path, version) = (req.uri().path().to_string(), req.version());
                        let body = req.into_body().collect().await?.to_bytes();
                        kept.lock().unwrap().push((path, version, body));
                        Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let io = TokioIo::new(tls);
                if h2 {
                    let _ =
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, svc).await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                }
            });
        }
    });
    (port, got)
}
