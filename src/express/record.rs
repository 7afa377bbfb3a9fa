//! What an express request is known by: its `X-Request-Id` (the client's,
//! or a new one) and its recording (route, latency split, and its
//! access-log line when the log samples it).

use bytes::Buf;

use super::Conn;
use crate::http1;
use crate::metrics::Recording;
use crate::trace::{self, SpanRecord};

impl Conn {
    /// The request's recording, begun (when monitoring, tracing or the
    /// access log is on), with its access-log line when the log samples it
    /// (the request id set first) and its trace.
    pub(super) fn begin_recording(&mut self) -> Option<Recording> {
        let worker = self.client.worker.clone();
        let checked_at = self.checked_at.take();
        if !worker.records() {
            return None;
        }
        let started = checked_at.unwrap_or_else(std::time::Instant::now);
        let (head, buf) = (&self.head, &self.buf[..]);
        let route = worker.shared.routes.resolve(&head.method, head.path(), &mut worker.route_cache.borrow_mut());
        let mut recording = Recording::begin_at(worker.recorder.as_ref(), route, started);
        recording.client(&self.client.asker(&head.fields(buf)), &worker.shared.top_clients.spec);
        if let Some(log) = worker.shared.access_log.as_ref().filter(|l| l.sampled()) {
            let client = self.client.ip.to_str().unwrap_or("");
            let label = worker.shared.routes.name(route);
            let mut entry = crate::access_log::Entry::new(log, client, head.method.as_str(), head.target_text(), label);
            entry.request_id = String::from_utf8_lossy(&self.request_id).into_owned();
            entry.user_agent =
                String::from_utf8_lossy(head.field_value(buf, b"user-agent").unwrap_or_default()).into_owned();
            entry.bytes_in = head.content_length;
            recording.log_to(log.clone(), entry);
        }
        if let Some(tracer) = &worker.shared.tracer {
            let context = tracer.begin(head.traceparent(buf));
            recording.traced(context);
            if context.sampled {
                let forwarded = head.forwarded(buf, self.client.peer.trusted);
                let label = worker.shared.routes.name(route);
                let mut span = SpanRecord::new(context, recording.started(), head.method.clone(), label);
                span.path = trace::clipped(head.path(), 1024);
                span.scheme = trace::scheme(true, Some(forwarded.proto));
                span.host = trace::clipped(head.host(), 256);
                span.client = self.client.ip.to_str().unwrap_or("").into();
                recording.trace(tracer.clone(), span);
            }
        }
        Some(recording)
    }

    /// A request the rate limits refused (429, or 400 for an ambiguous
    /// key), recorded; the connection closes after it when the request had
    /// a body (never read).
    pub(super) async fn refused(&mut self, refusal: crate::error::ProxyError) -> bool {
        let head_request = self.head.method == http::Method::HEAD;
        let close = self.closes() || http1::own_answer_closes(self.head.content_length > 0);
        self.set_request_id();
        let mut recording = self.begin_recording();
        self.buf.advance(self.head.len);
        let limited = matches!(refusal, crate::error::ProxyError::RateLimited(_));
        let resp = refusal.into_response();
        if let Some(r) = &mut recording {
            r.refused(resp.status().as_u16(), limited);
        }
        self.write_own(resp, head_request, close).await
    }

    /// Whether this response closes the connection: the client asked, the
    /// worker is stopping, or perfproxy is draining (`Connection: close` on
    /// every response after SIGTERM).
    pub(super) fn closes(&self) -> bool {
        self.head.close || self.drain.stopping() || self.client.worker.shared.draining()
    }

    /// The request's one `X-Request-Id`: the client's when perfproxy keeps
    /// it ([`http1::client_request_id`]), else a new one; it goes upstream
    /// and back.
    pub(super) fn set_request_id(&mut self) {
        self.request_id.clear();
        match self.head.request_id(&self.buf) {
            Some(id) => self.request_id.extend_from_slice(id),
            None => self.request_id.extend_from_slice(&http1::new_request_id()),
        }
    }
}
