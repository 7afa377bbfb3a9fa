//! [`RequestBody`]: what goes to the upstream (the client's streamed body,
//! its gRPC messages counted as they pass, or nothing). Not boxed, not
//! buffered: frames pass through as they arrive.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::wire::grpc::MessageCount;

/// A body sent to the upstream.
#[derive(Debug)]
pub enum RequestBody {
    /// The client's body, streamed.
    Client(Incoming),
    /// A gRPC client's body, its messages counted as they pass.
    Grpc(Incoming, Rc<Cell<MessageCount>>),
    /// No body (probes, revalidations).
    Empty,
}

impl RequestBody {
    /// The same body, its gRPC messages counted into `count`.
    pub fn counted(self, count: Rc<Cell<MessageCount>>) -> RequestBody {
        match self {
            RequestBody::Client(b) | RequestBody::Grpc(b, _) => RequestBody::Grpc(b, count),
            RequestBody::Empty => RequestBody::Empty,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Client(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Grpc(b, count) => {
                let polled = Pin::new(b).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    if let Some(data) = frame.data_ref() {
                        let mut c = count.get();
                        c.feed(data);
                        count.set(c);
                    }
                }
                polled
            }
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(b) | RequestBody::Grpc(b, _) => b.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(b) | RequestBody::Grpc(b, _) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
