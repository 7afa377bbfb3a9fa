//! An express request forwarded: its head rewritten for the upstream
//! ([`Conn::prepare`], no await), exchanged ([`Exchange`]), the answer
//! relayed and recorded, and stored when it is a miss whose answer may be.
//!
//! The work is split so the future is small: it is boxed per request (an
//! idle keep-alive connection reserves no room for it), and under glibc's
//! per-thread cache size (1 KiB) its box costs a few dozen instructions.
//! Everything not needed across an await (the request id made, the
//! `traceparent`, what the cache made of the request) stays in
//! [`Conn::prepare`]'s frame.

use std::future::Future;
use std::task::Poll;
use std::time::Instant;

use crate::tls::send_clock::is_send_timeout;
use crate::tls::ClientStream;
use bytes::Buf;
use http::{Method, StatusCode};
use tracing::{debug, warn};

use super::exchange::Exchange;
use super::framing::{malformed_from_the_start, Framing};
use super::{cached, Answer, Cached, Conn, Failed};
use crate::cache::Counters;
use crate::observe::metrics::Recording;
use crate::pipeline::answer::Outcome;
use crate::shared::error::ProxyError;
use crate::upstream::UpstreamError;
use crate::wire::http1;

/// What a forwarded request keeps while it is in flight.
struct Forward {
    recording: Option<Recording>,
    /// What the cache made of the request.
    cached: Cached,
    /// An unsafe method with the cache on: the host and path it may
    /// invalidate (boxed: most requests have none).
    written: Option<Box<(String, String)>>,
    /// Body bytes still to come from the client.
    body_left: u64,
    has_body: bool,
    head_request: bool,
    /// A stale pooled connection may be retried: the method is replayable
    /// and the whole request is in `upstream_out`.
    replay: bool,
    close: bool,
}

impl Forward {
    /// The `X-Cache` value (`None`: the cache is off).
    fn x_cache(&self) -> Option<&'static [u8]> {
        match &self.cached {
            Cached::Off => None,
            Cached::Bypass(_) => Some(Outcome::Bypass.as_str().as_bytes()),
            Cached::Miss(_) => Some(Outcome::Miss.as_str().as_bytes()),
        }
    }

    fn is_miss(&self) -> bool {
        matches!(self.cached, Cached::Miss(_))
    }
}

/// Resolves when the client closes its connection (EOF or reset). Bytes it
/// sends meanwhile (a pipelined request, a TLS record) end the watch, as
/// does `None` (the exchange reads the client's body). The socket's own
/// waker slot (no waiter queued), a few bytes of state.
fn client_gone(mut stream: Option<&mut ClientStream>) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        let Some(watched) = stream.as_deref_mut() else { return Poll::Pending };
        match watched.poll_gone(cx) {
            Poll::Ready(true) => Poll::Ready(()),
            Poll::Ready(false) => {
                stream = None;
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    })
}

impl Conn {
    /// A request straight to the upstream and its response back, recorded
    /// (and stored, a miss whose answer may be).
    pub(super) fn express(&mut self, cached: Cached) -> impl Future<Output = bool> + '_ {
        let mut f = self.prepare(cached);
        async move {
            let worker = self.client.worker.clone();
            let sent = Instant::now();
            // The exchange's state (and the answer's fields) end with this
            // block: the relay that follows reserves no room for them.
            let (mut up, resp, took) = 'answered: {
                let x_cache = f.x_cache();
                // The cache's tag headers never reach the client (unless kept).
                let rules = x_cache.is_some().then(|| worker.shared.cache.rules_now());
                let unrelayed =
                    rules.as_deref().filter(|r| !r.keep_tag_headers).map_or(&[][..], |r| &r.tag_headers[..]);
                let (cache_status, pass) = match &f.cached {
                    Cached::Bypass(b) => (Some(b.cache_status), b.pass()),
                    _ => (None, None),
                };
                let answer = Answer {
                    head_request: f.head_request,
                    x_cache,
                    cache_status,
                    keep_fields: f.is_miss() || pass.is_some(),
                    rule_route: pass.is_some_and(|(_, p)| p.rule_ttl.is_some()),
                    drop: unrelayed,
                    // With the cache on, `Surrogate-Control` is perfproxy's, never relayed.
                    strip_surrogate: x_cache.is_some(),
                    close: f.close,
                    sent,
                    request_id: &self.request_id,
                };
                let timeout = worker.shared.config.upstream_timeout;
                // The client's stream to the exchange (a body to read) or to the watch.
                let (client, watched) = match f.body_left {
                    0 => (None, Some(&mut self.stream)),
                    _ => (Some(&mut self.stream), None),
                };
                let exchange = Exchange {
                    worker: &worker,
                    client,
                    buf: &mut self.buf,
                    scratch: &mut self.scratch,
                    body_left: f.body_left,
                    replay: f.replay,
                    answer: &answer,
                };
                // A client that leaves before its answer: the upstream request is
                // dropped (its connection closed), as hyper and nginx do.
                let answer_by = tokio::time::Instant::from_std(sent) + timeout;
                let expired = super::deadline(self.upstream_deadline.as_mut(), answer_by, timeout);
                let e = match tokio::select! {
                    biased;
                    exchanged = exchange.run() => Ok(exchanged),
                    () = expired => Err(()),
                    () = client_gone(watched) => {
                        debug!("client closed its connection before the answer");
                        return false;
                    }
                } {
                    Ok(Ok(v)) => break 'answered v,
                    Ok(Err(Failed::Client)) => {
                        if f.is_miss() {
                            Counters::add(&worker.cache_counters.misses, 1);
                        }
                        if let Some(r) = &mut f.recording {
                            r.upstream(sent, sent.elapsed());
                            r.answered(400);
                        }
                        return false;
                    }
                    Ok(Err(Failed::Upstream(e))) => e,
                    // A reused connection the upstream closed, not to be retried.
                    Ok(Err(Failed::Stale)) => {
                        ProxyError::BadGateway(UpstreamError::Io(std::io::ErrorKind::ConnectionReset.into()))
                    }
                    Err(_) => ProxyError::GatewayTimeout(timeout),
                };
                // Boxed, as the other rare paths: no room reserved in the request's future.
                return Box::pin(self.fail(e, f, sent)).await;
            };
            if resp.framing == Framing::Chunked && malformed_from_the_start(&self.scratch.up_buf[resp.len..]) {
                let malformed = UpstreamError::Malformed(http1::MALFORMED_CHUNKS);
                return Box::pin(self.fail(ProxyError::BadGateway(malformed), f, sent)).await;
            }
            if let Some(written) = f.written.take() {
                let h = resp.fields_map(&self.scratch.up_buf);
                if let Ok(status) = StatusCode::from_u16(resp.status) {
                    let (client, (host, path)) = (&self.client, &*written);
                    Box::pin(crate::pipeline::serve::invalidate_after_write(client, host, path, status, &h)).await;
                }
            }
            let mut fill = None;
            match std::mem::replace(&mut f.cached, Cached::Off) {
                Cached::Miss(m) => {
                    let up_head = (&self.scratch.up_buf[..], &self.scratch.upstream_out[..]);
                    fill = cached::after_head(&worker, m, &resp, up_head, &mut self.scratch.out);
                }
                Cached::Bypass(b) if resp.looked_at => {
                    if let (Some((key, policy)), Ok(status)) = (b.pass(), StatusCode::from_u16(resp.status)) {
                        let h = resp.fields_map(&self.scratch.up_buf);
                        crate::pipeline::serve::forget_pass_if_storable(&worker, key, policy, status, &h);
                    }
                }
                _ => {}
            }
            self.scratch.up_buf.advance(resp.len);
            if let Some(r) = &mut f.recording {
                r.answered(resp.status);
                // Before the upstream, and the head's rewrite: perfproxy's share.
                r.split(sent, took);
            }
            let relayed = self.relay(&mut up, resp.framing, &mut fill).await;
            match (&mut f.recording, &relayed) {
                (Some(r), Ok(n)) => r.sent(*n),
                (_, Err(e)) if is_send_timeout(e) => {}
                (Some(r), Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => r.upstream_stalled(),
                _ => {}
            }
            drop(f.recording.take());
            match relayed {
                Ok(_) => {
                    if let Some(fill) = fill {
                        fill.finish();
                    }
                    if resp.reusable && self.scratch.up_buf.is_empty() {
                        worker.upstream.give_back(up);
                    }
                    !f.close
                }
                Err(e) if is_send_timeout(&e) => {
                    debug!("the client took nothing for send_timeout_ms: connection closed");
                    false
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    warn!("upstream body stalled past upstream_read_timeout_ms: client connection closed");
                    false
                }
                Err(e) => {
                    debug!(error = %e, "response cut off");
                    false
                }
            }
        }
    }

    /// Begins the request's recording and writes its upstream head (and the
    /// body bytes already read) into `upstream_out`.
    fn prepare(&mut self, cached: Cached) -> Forward {
        self.set_request_id();
        // Dropped unanswered (the client left first), the recording says 499.
        let recording = self.begin_recording();
        let head = &self.head;
        let cache_on = !matches!(cached, Cached::Off);
        let written = (cache_on && http1::is_unsafe(&head.method))
            .then(|| Box::new((head.host().to_string(), head.path().to_string())));
        self.scratch.upstream_out.clear();
        let (head, buf) = (&self.head, &self.buf[..]);
        let peer = (self.client.ip.as_bytes(), self.client.peer.trusted, self.client.tls);
        let traceparent = recording.as_ref().and_then(Recording::traceparent);
        let traceparent = traceparent.as_ref().map(|t| &t[..]);
        // An answer the cache may store: the upstream may target it
        // (`Surrogate-Control`). Not a pass: its URL's last answer, to a
        // request that said so, could not be stored.
        let storable = matches!(cached, Cached::Miss(_));
        let ids = (&self.request_id[..], traceparent);
        head.write_upstream(buf, peer, ids, storable, &mut self.scratch.upstream_out);
        let body_here = (buf.len() - head.len).min(usize::try_from(head.content_length).unwrap_or(usize::MAX));
        self.scratch.upstream_out.extend_from_slice(&buf[head.len..head.len + body_here]);
        let body_left = head.content_length - body_here as u64;
        let mut forward = Forward {
            recording,
            cached,
            written,
            body_left,
            has_body: head.content_length > 0,
            head_request: head.method == Method::HEAD,
            replay: http1::replayable(&head.method) && body_left == 0,
            close: self.closes(),
        };
        self.buf.advance(self.head.len + body_here);
        let x_cache = forward.x_cache();
        if let Some(r) = forward.recording.as_mut().filter(|r| r.wants_outcome()) {
            r.cache(x_cache.map_or("", crate::observe::access_log::cache_outcome));
        }
        forward
    }

    /// No response head from the upstream: the error's answer, recorded.
    async fn fail(&mut self, e: ProxyError, mut f: Forward, sent: Instant) -> bool {
        if f.is_miss() {
            Counters::add(&self.client.worker.cache_counters.misses, 1);
        }
        let resp = crate::pipeline::phases::upstream_failed(e, f.recording.as_mut(), sent, f.has_body, false);
        if let Some(mut r) = f.recording {
            r.head_ready();
            r.answered(resp.status().as_u16());
        }
        self.write_own(resp, f.head_request, f.close).await
    }
}
