//! The body types that cross the proxy. [`RequestBody`] is what goes to the
//! upstream (the client's streamed body, or nothing); [`ProxyBody`] is what
//! goes to the client (the upstream's streamed body, or bytes perfproxy made
//! itself). Neither is boxed, and neither buffers: frames pass through as
//! they arrive.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::Lease;

/// A body sent to the upstream.
#[derive(Debug)]
pub enum RequestBody {
    /// The client's body, streamed.
    Client(Incoming),
    /// No body (probes, revalidations).
    Empty,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Client(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(b) => b.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A body sent to the client.
#[derive(Debug)]
pub enum ProxyBody {
    /// The upstream's body, streamed; its connection returns to the pool
    /// once the body has been read to the end.
    Upstream {
        body: Incoming,
        lease: Option<Lease>,
    },
    /// A body perfproxy produced (errors, its own endpoints).
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub fn upstream(body: Incoming, lease: Lease) -> ProxyBody {
        let mut b = ProxyBody::Upstream {
            body,
            lease: Some(lease),
        };
        b.release_if_done();
        b
    }

    pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }

    fn release_if_done(&mut self) {
        if let ProxyBody::Upstream { body, lease } = self {
            if body.is_end_stream() {
                if let Some(lease) = lease.take() {
                    lease.release();
                }
            }
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        self.release_if_done();
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match this {
            ProxyBody::Upstream { body, lease } => {
                let polled = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(None) = polled {
                    if let Some(lease) = lease.take() {
                        lease.release();
                    }
                }
                polled
            }
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
