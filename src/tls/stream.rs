//! The byte streams the lanes and the upstream pool read and write: plain
//! TCP or TLS over it, one type each way ([`ClientStream`],
//! [`UpstreamStream`]), so one request path serves both. A plain stream
//! costs one predictable branch per call; the TLS side is boxed, so the
//! plain one stays as small as a `TcpStream`.
//!
//! Besides reading and writing, the express lane waits for input without
//! holding a buffer ([`ClientStream::poll_read_ready`]), reads what is there
//! without waiting ([`ClientStream::try_read_buf`]) and peeks for a closed
//! client; over TLS these look at rustls's decrypted bytes first, then at
//! the socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::send_clock::SendClock;

/// A client connection: plain TCP, or TLS accepted by the TLS listener.
#[derive(Debug)]
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// A connection to the upstream: plain TCP, or TLS for an `https://` upstream.
#[derive(Debug)]
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// A TCP socket read as `std::io::Read` without waiting (`WouldBlock` when
/// empty), for rustls to take records from.
struct SocketReader<'a>(&'a TcpStream);

impl io::Read for SocketReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// Whether the socket has bytes (or an end) not read yet: a peek without waiting.
fn socket_readable(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut byte = [0u8; 1];
    stream.poll_peek(&mut cx, &mut ReadBuf::new(&mut byte)).is_ready()
}

impl ClientStream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(s) => s.get_ref().0,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// The client and perfproxy agreed on HTTP/2 (ALPN `h2`).
    pub fn alpn_h2(&self) -> bool {
        match self {
            ClientStream::Plain(_) => false,
            ClientStream::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }

    /// rustls holds decrypted bytes (or the client's close) not read yet.
    fn tls_buffered(&self) -> bool {
        match self {
            ClientStream::Plain(_) => false,
            ClientStream::Tls(s) => !s.get_ref().1.wants_read(),
        }
    }

    /// Ready when a read may give bytes (or the end); the stream's own waker slot.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.tls_buffered() {
            return Poll::Ready(Ok(()));
        }
        self.tcp().poll_read_ready(cx)
    }

    /// Reads what is there without waiting (`WouldBlock` when nothing is).
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.try_read_buf(buf),
            ClientStream::Tls(s) => match s.read_buf(buf).now_or_never() {
                Some(read) => read,
                None => Err(io::ErrorKind::WouldBlock.into()),
            },
        }
    }

    /// Watches for the client leaving while nothing is read from it:
    /// `Ready(true)` when it closed (an end, a reset; over TLS its
    /// close_notify too), `Ready(false)` when it sent bytes instead (a
    /// pipelined request: left unread, over TLS decrypted and kept by
    /// rustls for the next read). The socket's own waker slot.
    pub fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        match self {
            ClientStream::Plain(s) => {
                let mut byte = [0u8; 1];
                match s.poll_peek(cx, &mut ReadBuf::new(&mut byte)) {
                    Poll::Ready(Ok(0) | Err(_)) => Poll::Ready(true),
                    Poll::Ready(Ok(_)) => Poll::Ready(false),
                    Poll::Pending => Poll::Pending,
                }
            }
            ClientStream::Tls(s) => loop {
                let (tcp, conn) = s.get_mut();
                if !conn.wants_read() {
                    // Plaintext waiting, or the client's close_notify.
                    let gone = match conn.process_new_packets() {
                        Ok(io) => io.plaintext_bytes_to_read() == 0 && io.peer_has_closed(),
                        Err(_) => true,
                    };
                    return Poll::Ready(gone);
                }
                if tcp.poll_read_ready(cx).is_pending() {
                    return Poll::Pending;
                }
                match conn.read_tls(&mut SocketReader(tcp)) {
                    Ok(0) => return Poll::Ready(true),
                    Ok(_) => {
                        if conn.process_new_packets().is_err() {
                            return Poll::Ready(true);
                        }
                    }
                    // Readiness cleared: the next look waits for the socket.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Poll::Ready(true),
                }
            },
        }
    }

    /// Ends a TLS connection cleanly (close_notify, then the FIN), giving
    /// a client that stopped reading at most a second; plain TCP needs
    /// nothing before it is dropped.
    pub async fn close(&mut self) {
        if let ClientStream::Tls(s) = self {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), s.shutdown()).await;
        }
    }

    /// Writes all of `buf` to the client and, over TLS, flushes it (rustls
    /// may hold encrypted bytes the socket did not take yet, which nothing
    /// else would push out before the next write). A wait of `timeout`
    /// with none of the bytes taken fails ([`SendTimedOut`](super::send_clock::SendTimedOut)).
    pub async fn send(&mut self, buf: &[u8], timeout: std::time::Duration) -> io::Result<()> {
        let mut clock = SendClock::new(timeout);
        let mut sent = 0;
        std::future::poll_fn(|cx| loop {
            if sent < buf.len() {
                let polled = Pin::new(&mut *self).poll_write(cx, &buf[sent..]);
                match std::task::ready!(clock.watch(cx, polled)) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => sent += n,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            } else if self.is_tls() {
                let polled = Pin::new(&mut *self).poll_flush(cx);
                return clock.watch(cx, polled);
            } else {
                return Poll::Ready(Ok(()));
            }
        })
        .await
    }

    /// Whether the client has sent bytes not read yet, or closed.
    pub fn has_unread(&self) -> bool {
        self.tls_buffered() || socket_readable(self.tcp())
    }
}

impl UpstreamStream {
    /// Writes all of `buf` and, over TLS, flushes it: rustls may hold
    /// encrypted bytes the socket did not take yet, which nothing else
    /// would push out before the next write.
    pub async fn write_all_flushed(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all(buf).await?;
        if let UpstreamStream::Tls(s) = self {
            s.flush().await?;
        }
        Ok(())
    }

    /// An idle connection is open unless the reactor saw it become readable
    /// (a FIN, a reset, or bytes nobody asked for) and a read confirms it.
    /// Plain: `try_read` asks the reactor's readiness first, with no system
    /// call while nothing was seen. TLS: records that arrived meanwhile
    /// (session tickets) are taken in; the stream is open while no
    /// application byte and no end came.
    pub fn is_open(&mut self) -> bool {
        match self {
            UpstreamStream::Plain(s) => {
                matches!(s.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            UpstreamStream::Tls(s) => s.read(&mut [0u8; 1]).now_or_never().is_none(),
        }
    }
}

macro_rules! delegate_io {
    ($t:ident) => {
        impl AsyncRead for $t {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $t::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    $t::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
                }
            }
        }

        impl AsyncWrite for $t {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $t::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    $t::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $t::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    $t::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $t::Plain(s) => s.is_write_vectored(),
                    $t::Tls(s) => s.is_write_vectored(),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $t::Plain(s) => Pin::new(s).poll_flush(cx),
                    $t::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $t::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    $t::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
                }
            }
        }
    };
}

delegate_io!(ClientStream);
delegate_io!(UpstreamStream);
