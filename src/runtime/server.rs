//! Listeners, workers and shutdown. One acceptor (on the caller's runtime)
//! takes connections, enforces `max_connections` and hands each, round-robin,
//! to a worker thread. A worker is a current-thread runtime with a `LocalSet`
//! that serves its connections to the end: a request never changes thread,
//! so the request path takes no lock and touches no shared atomic. On
//! shutdown the acceptor stops, each worker asks its connections to finish
//! their in-flight request and close, and waits up to `shutdown_grace`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error, info, warn};

use crate::admit::access::Peer;
use crate::config::Config;
use crate::lanes::drain::Drain;
use crate::lanes::express::{Ended, Rewind};
use crate::shared::state::{Client, Shared, Worker};
use crate::tls::ClientStream;

/// Connections the admin listener accepts at once, apart from `max_connections`,
/// so probes still get through when the proxy listener is full.
const ADMIN_MAX_CONNECTIONS: usize = 256;

/// The sockets perfproxy serves on.
#[derive(Debug)]
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: Option<TcpListener>,
    /// `tls_listen`: the same request path over TLS.
    pub tls: Option<TcpListener>,
}

impl Listeners {
    /// Binds the configured addresses (backlog 1024, `SO_REUSEADDR`).
    pub fn bind(config: &Config) -> io::Result<Listeners> {
        Ok(Listeners {
            proxy: bind(config.listen)?,
            admin: config.admin_listen.map(bind).transpose()?,
            tls: config.tls.as_ref().map(|t| bind(t.addr)).transpose()?,
        })
    }
}

/// Binds one listening socket.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A connection on its way from the acceptor to a worker.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    from: Listener,
    _permit: OwnedSemaphorePermit,
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Proxy,
    Admin,
    /// `tls_listen`: a TLS handshake first.
    Tls,
}

/// How perfproxy was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: readiness 503 and `Connection: close` at once, new
    /// connections still served for `shutdown_delay_ms` (while the endpoint
    /// removal spreads), then drain.
    Term,
    /// SIGINT: the same without the delay.
    Interrupt,
}

/// Serves until `shutdown` resolves, then drains and returns.
pub async fn run(listeners: Listeners, config: Config, shutdown: impl Future<Output = Stop>) -> io::Result<()> {
    let grace = config.shutdown_grace;
    let workers = match config.workers {
        // A sidecar shares its pod's CPUs with the app: half of its quota
        // (or of the cores), at least one.
        0 => crate::system::workers_here(),
        n => n,
    };
    let shared = Shared::new(config);
    let (stop_tx, stop_rx) = watch::channel(false);
    let background = crate::runtime::tasks::spawn(&shared, &stop_rx);
    let mut queues = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for i in 0..workers {
        let (tx, rx) = mpsc::unbounded_channel();
        let (shared, stop) = (shared.clone(), stop_rx.clone());
        let thread = std::thread::Builder::new()
            .name(format!("perfproxy-worker-{i}"))
            .spawn(move || worker_main(shared, rx, stop))?;
        threads.push(thread);
        queues.push(tx);
    }
    info!(listen = %listeners.proxy.local_addr()?, upstream = %shared.config.settings.upstream, workers, "perfproxy serving");

    let queues = Arc::new(queues);
    let next = Arc::new(AtomicUsize::new(0));
    let proxy_limit = Arc::new(Semaphore::new(shared.config.max_connections));
    if let Some(tls) = &listeners.tls {
        info!(tls_listen = %tls.local_addr()?, "perfproxy serving TLS");
    }
    let s = &shared.config.settings;
    if s.tls_listen.is_none() && s.tls != Default::default() {
        warn!("[tls] is set but tls_listen is not: no TLS listener");
    }
    if !shared.config.upstream.tls && s.upstream_tls != Default::default() {
        warn!("[upstream_tls] is set but the upstream is not https://: not used");
    }
    let tls_loop =
        listeners.tls.map(|l| accept_loop(l, Listener::Tls, proxy_limit.clone(), queues.clone(), next.clone()));
    let proxy = accept_loop(listeners.proxy, Listener::Proxy, proxy_limit, queues.clone(), next.clone());
    let proxy = async move {
        match tls_loop {
            // Both share max_connections; either ending ends serving.
            Some(tls) => tokio::select! { () = proxy => {}, () = tls => {} },
            None => proxy.await,
        }
    };
    let (admin_queues, admin_next) = (queues.clone(), next.clone());
    let admin = async move {
        match listeners.admin {
            Some(l) => {
                let limit = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
                accept_loop(l, Listener::Admin, limit, admin_queues, admin_next).await
            }
            None => std::future::pending().await,
        }
    };
    {
        // The accept loops end (their listeners close) with this block.
        tokio::pin!(proxy, admin);
        let stop = tokio::select! {
            stop = shutdown => Some(stop),
            _ = &mut proxy => None,
            _ = &mut admin => None,
        };
        if let Some(stop) = stop {
            shared.begin_draining();
            let delay = shared.config.shutdown_delay;
            if stop == Stop::Term && !delay.is_zero() {
                info!(
                    delay_ms = delay.as_millis() as u64,
                    "shutting down: not ready, still serving for shutdown_delay_ms"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {},
                    _ = &mut proxy => {},
                    _ = &mut admin => {},
                }
            }
            info!("shutting down: no new connections, draining in-flight requests");
        }
    }
    let _ = stop_tx.send(true);
    drop(queues);
    let joined = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join())));
    if tokio::time::timeout(grace + Duration::from_secs(1), joined).await.is_err() {
        warn!("workers did not stop within the grace period");
    }
    for task in background {
        let _ = task.await;
    }
    // The workers are done: their last samples are merged.
    shared.history.finish(&*shared).await;
    if let Some(tracer) = shared.tracer.clone() {
        // The last spans, exported within 2 s at most.
        let _ = tokio::task::spawn_blocking(move || tracer.flush(Duration::from_secs(2))).await;
    }
    info!("stopped");
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    from: Listener,
    limit: Arc<Semaphore>,
    queues: Arc<Vec<mpsc::UnboundedSender<Accepted>>>,
    next: Arc<AtomicUsize>,
) {
    loop {
        let permit = limit.clone().acquire_owned().await.expect("the connection semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "could not hand a connection to a worker");
                continue;
            }
        };
        let i = next.fetch_add(1, Ordering::Relaxed) % queues.len();
        if queues[i].send(Accepted { stream, peer, from, _permit: permit }).is_err() {
            return;
        }
    }
}

fn worker_main(shared: Arc<Shared>, rx: mpsc::UnboundedReceiver<Accepted>, stop: watch::Receiver<bool>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime can be built on a fresh thread");
    let local = tokio::task::LocalSet::new();
    // LocalSet polls its main future on every tick: keep that future a cheap
    // JoinHandle and do the work in a task of its own.
    local.block_on(&rt, async move {
        let _ = tokio::task::spawn_local(serve_worker(shared, rx, stop)).await;
    });
}

async fn serve_worker(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Accepted>, mut stop: watch::Receiver<bool>) {
    let config = &shared.config;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_header_size(config.max_header_bytes)
        .keep_alive(true);
    let servers = Rc::new(crate::lanes::service::Servers { http1: http, http2: crate::lanes::http2::server(config) });
    let grace = config.shutdown_grace;
    let worker = Worker::new(shared.clone());
    if let Some(recorder) = worker.recorder.clone() {
        tokio::task::spawn_local(recorder.publish_periodically(Duration::from_millis(50)));
    }
    let drain = Rc::new(Drain::default());
    tokio::task::spawn_local(publish_held(worker.clone(), drain.clone()));
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = rx.recv() => match accepted {
                Some(a) => {
                    drain.open.set(drain.open.get() + 1);
                    tokio::task::spawn_local(serve_connection(worker.clone(), a, servers.clone(), drain.clone()));
                }
                None => break,
            },
        }
    }
    drain.begin();
    let drained = async {
        while drain.open.get() > 0 {
            drain.closed.notified().await;
        }
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        warn!(open = drain.open.get(), "grace period over: closing connections still open");
    }
    if let Some(recorder) = &worker.recorder {
        recorder.publish();
    }
}

/// Publishes the worker's sizes (`memory.held`) once a second.
async fn publish_held(worker: Rc<Worker>, drain: Rc<Drain>) {
    loop {
        worker.publish_held(drain.open.get());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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

/// The client's stream: the TCP connection itself, or TLS once its
/// handshake is done (`None`: it failed, counted by reason).
async fn client_stream(client: &Client, stream: TcpStream) -> Option<ClientStream> {
    if !client.tls {
        return Some(ClientStream::Plain(stream));
    }
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
fn serve_connection(
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
                    stream = Box::pin(client_stream(&s.client, s.stream)) => stream,
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
