//! What an express request is known by: its `X-Request-Id` (the client's,
//! or a new one) and its recording (begun by the request path's one
//! `pipeline::begin_recording`), and its refusal.

use bytes::Buf;

use super::Conn;
use crate::observe::metrics::Recording;
use crate::wire::http1;

impl Conn {
    /// The request's recording, begun ([`crate::pipeline::phases::begin_recording`]),
    /// its clock read when the rate limits read it, if they did.
    pub(super) fn begin_recording(&mut self) -> Option<Recording> {
        let started = self.checked_at.take();
        let view = self.head.fields(&self.buf);
        crate::pipeline::phases::begin_recording(&self.client, &view, &self.request_id, false, started)
    }

    /// A request the rate limits refused (429, or 400 for an ambiguous
    /// key), recorded; the connection closes after it when the request had
    /// a body (never read).
    pub(super) async fn refused(&mut self, refusal: crate::shared::error::ProxyError) -> bool {
        let head_request = self.head.method == http::Method::HEAD;
        let close = self.closes();
        self.set_request_id();
        let recording = self.begin_recording();
        self.buf.advance(self.head.len);
        let had_body = self.head.content_length > 0;
        let resp = crate::pipeline::phases::refuse(refusal, recording, had_body, false);
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
