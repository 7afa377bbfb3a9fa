//! HTTP/2 over cleartext (h2c, prior knowledge) on the proxy listener: a
//! connection whose first bytes are the HTTP/2 preface is served by hyper's
//! HTTP/2 server, every other one by the HTTP/1.1 lanes. Each stream runs
//! the same request path as an HTTP/1.1 request ([`service`](crate::lanes::service)) on the
//! connection's worker (a local executor: nothing crosses threads).
//!
//! HTTP/2's own attacks are bounded by the `[http2]` limits: concurrent
//! streams, the decoded header list (which also ends a CONTINUATION flood:
//! h2 stops at the limit, not at the end of the block), flow-control
//! windows, and streams reset before they were served (rapid reset,
//! CVE-2023-44487: past `max_pending_resets` the connection gets a GOAWAY).
//! Streams reset after they were forwarded, while the upstream works on
//! them, are counted too ([`Cancels`]): a connection whose client cancels
//! most of what it asks, past [`CANCELS_TOLERATED`], gets a GOAWAY, so
//! one connection cannot keep more requests upstream than its stream limit
//! by cancelling and reopening (Envoy's "premature reset" rule).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hyper::server::conn::http2;
use hyper::service::{service_fn, Service};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tracing::debug;

use crate::config::Config;
use crate::lanes::drain::{Drain, Drainable};
use crate::lanes::express::Rewind;
use crate::lanes::linger::{Activity, ClientIo};
use crate::lanes::stream_clock::StreamExec;
use crate::shared::state::Client;

/// Streams a client may cancel while in progress before the rule below applies.
pub const CANCELS_TOLERATED: u32 = 100;

/// A connection's streams begun and cancelled by the client while their
/// answer was still being made (the handler dropped before it ended). Past
/// [`CANCELS_TOLERATED`] cancels, at least half of all its streams, the
/// connection is told to go (`too_many`).
#[derive(Default)]
struct Cancels {
    begun: Cell<u32>,
    cancelled: Cell<u32>,
    too_many: tokio::sync::Notify,
}

/// Counts its stream as cancelled unless it [`ended`](InProgress::ended).
struct InProgress(Rc<Cancels>, bool);

impl InProgress {
    fn ended(&mut self) {
        self.1 = true;
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if self.1 {
            return;
        }
        let c = &self.0;
        c.cancelled.set(c.cancelled.get().saturating_add(1));
        if c.cancelled.get() >= CANCELS_TOLERATED && c.cancelled.get().saturating_mul(2) >= c.begun.get() {
            c.too_many.notify_one();
        }
    }
}

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// hyper's HTTP/2 server with the `[http2]` limits.
pub fn server(config: &Config) -> http2::Builder<StreamExec> {
    let limits = &config.protocols.http2;
    let window = limits.initial_window_bytes as u32;
    let mut b = http2::Builder::new(StreamExec { send_timeout: config.send_timeout });
    b.timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams as u32)
        .max_header_list_size(limits.max_header_list_bytes as u32)
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .max_pending_accept_reset_streams(limits.max_pending_resets as usize)
        // Streams perfproxy itself resets (protocol errors a client provokes).
        .max_local_error_reset_streams(1024)
        // A connection that stops answering PINGs is closed.
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Whether the connection starts with the HTTP/2 preface. Reads (within
/// `header_read_timeout`) only while what arrived could still be one; the
/// bytes read are replayed to whichever server takes the connection.
/// `None`: the client sent nothing more within the timeout, or closed, while
/// what it sent could still be a preface (the connection is closed: the
/// timeout is the head's, not restarted for hyper).
pub async fn sniff(io: Rewind, timeout: Duration, stopped: impl Future<Output = ()>) -> Option<(Rewind, bool)> {
    let (prefix, mut stream) = io.into_parts();
    let mut buf = BytesMut::from(&prefix[..]);
    let read = async {
        while buf.len() < PREFACE.len() && PREFACE.starts_with(&buf) {
            if stream.read_buf(&mut buf).await? == 0 {
                break;
            }
        }
        Ok::<_, io::Error>(())
    };
    // The worker stopping ends the wait: nothing is in progress yet.
    let done = tokio::select! {
        read = tokio::time::timeout(timeout, read) => matches!(read, Ok(Ok(()))),
        () = stopped => false,
    };
    let h2 = buf.starts_with(PREFACE);
    let undecided = !h2 && PREFACE.starts_with(&buf);
    if !done || undecided {
        return None;
    }
    Some((Rewind::new(buf.freeze(), stream), h2))
}

/// Serves an h2c connection to the end; `true` if it ended in an error. A connection on which no stream
/// has begun for `header_read_timeout` (none at all since the preface, or
/// none since the last) gets a GOAWAY: streams still open finish, then it
/// closes, as an idle HTTP/1.1 connection is closed after the same time.
pub async fn serve(
    client: Rc<Client>,
    io: ClientIo<Rewind>,
    activity: Arc<Activity>,
    server: &http2::Builder<StreamExec>,
    drain: &Rc<Drain>,
    id: u64,
) -> bool {
    let peer: SocketAddr = (client.addr, 0).into();
    let idle = client.worker.shared.config.header_read_timeout;
    let send_timeout = client.worker.shared.config.send_timeout;
    let last_stream = Rc::new(Cell::new(Instant::now()));
    let seen = last_stream.clone();
    let streams = crate::lanes::service::service(client, activity.clone());
    let cancels = Rc::new(Cancels::default());
    let counted = cancels.clone();
    let service = service_fn(move |req| {
        seen.set(Instant::now());
        counted.begun.set(counted.begun.get().saturating_add(1));
        let mut in_progress = InProgress(counted.clone(), false);
        let answer = streams.call(req);
        async move {
            let answer = answer.await;
            in_progress.ended();
            answer
        }
    });
    let conn = server.serve_connection(TokioIo::new(io), service);
    let mut conn = Drainable::new(conn, drain.clone(), id, activity.clone());
    let ended = loop {
        tokio::select! {
            ended = &mut conn => break ended,
            () = tokio::time::sleep_until((last_stream.get() + idle).into()) => {
                if last_stream.get().elapsed() >= idle {
                    conn.close_gracefully();
                    break finish(&mut conn, &activity, send_timeout).await;
                }
            }
            () = cancels.too_many.notified() => {
                debug!(peer = %peer.ip(), cancelled = cancels.cancelled.get(), begun = cancels.begun.get(),
                    "HTTP/2 client cancels most streams in progress: GOAWAY");
                conn.close_gracefully();
                break finish(&mut conn, &activity, send_timeout).await;
            }
        }
    };
    if let Err(e) = &ended {
        debug!(error = %e, peer = %peer.ip(), "HTTP/2 client connection ended");
    }
    ended.is_err()
}

/// A connection told to go (`GOAWAY`) finishes its streams. Once nothing
/// is in progress (every answer handed to h2), one still open after
/// `send_timeout` holds only what its client will not take (the end of an
/// answer its window keeps in h2, or the `PING` a graceful close waits
/// for): it is closed.
async fn finish<F>(conn: &mut F, activity: &Activity, send_timeout: Duration) -> Result<(), hyper::Error>
where
    F: Future<Output = Result<(), hyper::Error>> + Unpin,
{
    loop {
        tokio::select! {
            ended = &mut *conn => return ended,
            () = tokio::time::sleep(send_timeout) => {
                if !activity.in_progress() {
                    debug!("HTTP/2 connection told to go took nothing for send_timeout_ms: closed");
                    return Ok(());
                }
            }
        }
    }
}
