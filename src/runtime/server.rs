//! Listeners, workers and shutdown. One acceptor (on the caller's runtime)
//! takes connections, enforces `max_connections` and hands each, round-robin,
//! to a worker thread. A worker is a current-thread runtime with a `LocalSet`
//! that serves its connections to the end: a request never changes thread,
//! so the request path takes no lock and touches no shared atomic. On
//! shutdown the acceptor stops, each worker asks its connections to finish
//! their in-flight request and close, and waits up to `shutdown_grace`.
//! What happens to one connection on its worker is in `connection`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{error, info, warn};

use super::connection::{serve_connection, Accepted, Listener};
use crate::config::Config;
use crate::lanes::drain::Drain;
use crate::shared::state::{Shared, Worker};

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
    /// A failure names the listener (`listen`, `admin_listen`, `tls_listen`) and its address.
    pub fn bind(config: &Config) -> io::Result<Listeners> {
        let named = |key: &str, addr: SocketAddr| {
            bind(addr).map_err(|e| io::Error::new(e.kind(), format!("{key} {addr}: {e}")))
        };
        Ok(Listeners {
            proxy: named("listen", config.listen)?,
            admin: config.admin_listen.map(|a| named("admin_listen", a)).transpose()?,
            tls: config.tls.as_ref().map(|t| named("tls_listen", t.addr)).transpose()?,
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
