//! One client connection on its worker, from the acceptor's hand-off to
//! its end: registered with the worker's reactor, its client's addresses
//! and rights worked out ([`start`]), the TLS handshake on the TLS
//! listener, then served: the express lane first, hyper for what it hands
//! over (and for the admin listener, and HTTP/2 agreed by ALPN). It counts
//! open in the worker's drain until it ends.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http::HeaderValue;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, warn};

use crate::admit::access::Peer;
use crate::lanes::drain::Drain;
use crate::lanes::express::{Ended, Rewind};
use crate::shared::state::{Client, Worker};
use crate::tls::ClientStream;

/// A connection on its way from the acceptor to a worker.
pub(super) struct Accepted {
    pub(super) stream: std::net::TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) from: Listener,
    pub(super) _permit: OwnedSemaphorePermit,
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listener {
    Proxy,
    Admin,
    /// `tls_listen`: a TLS handshake first.
    Tls,
}

/// A connection counted open in its worker's [`Drain`] until dropped.
struct Open {
    drain: Rc<Drain>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.drain.open.set(self.drain.open.get() - 1);
        self.drain.closed.notify_one();
    }
}

/// A client connection ready to serve.
struct Started {
    client: Rc<Client>,
    stream: TcpStream,
    id: u64,
    /// The express lane takes it first (else hyper's lanes from the start).
    express: bool,
}

/// A TLS listener's connection once its handshake is done (`None`: it
/// failed, counted by reason).
async fn accept_tls(client: &Client, stream: TcpStream) -> Option<ClientStream> {
    let config = &client.worker.shared.config;
    let listener = &config.tls.as_ref().expect("TLS connections come from the TLS listener").config;
    let tls = listener.accept(stream, config.header_read_timeout).await?;
    Some(ClientStream::Tls(Box::new(tls)))
}

/// A client connection served to its end: the express lane first; hyper
/// for the admin listener and for whatever the express lane hands over:
/// its HTTP/2 server when the connection starts with the HTTP/2 preface,
/// else its HTTP/1.1 server. The connection is set up before the future,
/// which holds only what serving needs: all an idle keep-alive connection
/// costs is its task.
pub(super) fn serve_connection(
    worker: Rc<Worker>,
    accepted: Accepted,
    servers: Rc<crate::lanes::service::Servers>,
    drain: Rc<Drain>,
) -> impl Future<Output = ()> {
    let Accepted { stream, peer, from, _permit } = accepted;
    let started = start(worker, stream, peer, from, &drain);
    let open = Open { drain, _permit };
    async move {
        let Some(s) = started else { return };
        let stream = match s.client.tls {
            // Boxed: a plain connection's task reserves no room for a
            // handshake. The worker's stop ends one still in progress.
            true => {
                let drain = &open.drain;
                let stream = tokio::select! {
                    stream = Box::pin(accept_tls(&s.client, s.stream)) => stream,
                    () = drain.stopped(s.id) => None,
                };
                drain.unregister(s.id);
                stream
            }
            false => Some(ClientStream::Plain(s.stream)),
        };
        let Some(stream) = stream else { return };
        // HTTP/2 agreed by ALPN: hyper's HTTP/2 server from the start.
        let (io, first) = if s.express && !stream.alpn_h2() {
            match crate::lanes::express::serve(s.client.clone(), stream, open.drain.clone(), s.id).await {
                Ended::Closed => return,
                // Boxed, as the rare paths are; the connection stays counted meanwhile.
                Ended::Linger(stream) => return Box::pin(crate::lanes::linger::discard(stream)).await,
                Ended::Handoff(io, first) => (io, first),
            }
        } else {
            (Rewind::new(Bytes::new(), stream), true)
        };
        // Boxed: hyper's servers are large state machines an express
        // connection's task would otherwise reserve room for.
        Box::pin(crate::lanes::service::serve(s.client, io, first, &servers, &open.drain, s.id)).await
    }
}

/// The connection registered with the worker's reactor and its client's
/// addresses worked out; `None` when it cannot be served.
fn start(
    worker: Rc<Worker>,
    stream: std::net::TcpStream,
    peer: SocketAddr,
    from: Listener,
    drain: &Drain,
) -> Option<Started> {
    let admin = from == Listener::Admin;
    let stream = match TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(e) => {
            warn!(error = %e, "could not register a connection");
            return None;
        }
    };
    let config = &worker.shared.config;
    if admin && !config.admin_allow.contains(peer.ip()) {
        debug!(%peer, "admin listener: peer not in endpoints.admin_allow");
        return None;
    }
    let access = Peer {
        trusted: config.trusted_proxies.contains(peer.ip()),
        admin_allowed: config.admin_allow_proxy.contains(peer.ip()),
    };
    // With every request over h2c upstream, hyper's path serves them all.
    let express =
        !admin && config.settings.express_lane && config.protocols.upstream != crate::config::UpstreamProtocol::H2c;
    let addr = peer.ip().to_canonical();
    let ip = HeaderValue::from_str(&addr.to_string()).expect("an IP address is a valid header value");
    let tls = from == Listener::Tls;
    let client = Rc::new(Client { worker, ip, addr, admin_only: admin, peer: access, tls });
    let id = drain.next_id.get();
    drain.next_id.set(id + 1);
    Some(Started { client, stream, id, express })
}
