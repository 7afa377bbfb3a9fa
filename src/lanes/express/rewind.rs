//! A client connection handed to hyper: the bytes the express lane already
//! read are replayed first, then reads go to the stream (TCP or TLS).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::tls::ClientStream;
use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug)]
pub struct Rewind {
    prefix: Bytes,
    inner: ClientStream,
}

impl Rewind {
    pub fn new(prefix: Bytes, inner: ClientStream) -> Rewind {
        Rewind { prefix, inner }
    }

    /// The bytes still to replay, and the socket.
    pub fn into_parts(self) -> (Bytes, ClientStream) {
        (self.prefix, self.inner)
    }

    /// Resolves when there is input (or the client closed): at once while
    /// bytes are still to replay.
    pub async fn readable(&self) -> io::Result<()> {
        if !self.prefix.is_empty() {
            return Ok(());
        }
        std::future::poll_fn(|cx| self.inner.poll_read_ready(cx)).await
    }

    /// Whether input is waiting: bytes still to replay, or in the socket.
    pub fn has_unread(&self) -> bool {
        !self.prefix.is_empty() || self.inner.has_unread()
    }
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
