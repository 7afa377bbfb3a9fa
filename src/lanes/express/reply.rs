//! Writing a [`Response<ProxyBody>`] on an express-lane connection: the
//! answers perfproxy makes itself (its endpoints, cache hits, errors) and
//! everything that went through the cache. Framing as hyper does it: the
//! response's `Content-Length`, else the body's exact size, else chunked.

use std::io;
use std::pin::Pin;
use std::task::Poll;

use crate::tls::ClientStream;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::Response;
use http_body::Body;
use http_body_util::BodyExt;

use super::head::field;
use crate::shared::body::ProxyBody;

/// Output buffered past this is written at once.
const FLUSH_AT: usize = 16 * 1024;

/// Writes `resp` to the client (each write bounded by `send_timeout`);
/// `Ok(true)` if the connection may carry another request.
pub async fn write(
    stream: &mut ClientStream,
    out: &mut Vec<u8>,
    resp: Response<ProxyBody>,
    head_request: bool,
    mut close: bool,
    send_timeout: std::time::Duration,
) -> io::Result<bool> {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    // The upstream's own reason phrase when it had one (hyper keeps it as
    // an extension), as hyper writes it.
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>().map(|r| r.as_bytes());
    out.extend_from_slice(reason.unwrap_or(status.canonical_reason().unwrap_or("").as_bytes()));
    out.extend_from_slice(b"\r\n");
    let (mut has_date, mut has_length) = (false, false);
    for (name, value) in &parts.headers {
        if name == CONNECTION {
            close |= crate::wire::http1::tokens(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close"));
            continue;
        }
        if name == TRANSFER_ENCODING {
            continue;
        }
        has_date |= name == DATE;
        has_length |= name == CONTENT_LENGTH;
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !has_date {
        field(out, b"date", &crate::wire::http1::date());
    }
    let bodiless = crate::wire::http1::bodiless(head_request, status.as_u16());
    let mut chunked = false;
    if !has_length {
        match body.size_hint().exact() {
            // As hyper does: a HEAD answer names the length its GET would
            // have, when known and not 0 (never on a 204 or 304).
            Some(n) if bodiless => {
                if head_request && n > 0 && !matches!(status.as_u16(), 100..=199 | 204 | 304) {
                    field(out, b"content-length", itoa::Buffer::new().format(n).as_bytes());
                }
            }
            Some(n) => field(out, b"content-length", itoa::Buffer::new().format(n).as_bytes()),
            None if bodiless => {}
            None => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                chunked = true;
            }
        }
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if bodiless {
        stream.send(out, send_timeout).await?;
        return Ok(!close);
    }
    loop {
        // A frame not ready yet: the client gets what there is meanwhile.
        let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                stream.send(out, send_timeout).await?;
                out.clear();
                body.frame().await
            }
        };
        let Some(frame) = frame else { break };
        let Ok(data) = frame.map_err(io::Error::other)?.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if data.len() >= FLUSH_AT {
            stream.send(out, send_timeout).await?;
            out.clear();
            stream.send(&data, send_timeout).await?;
        } else {
            out.extend_from_slice(&data);
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= FLUSH_AT {
            stream.send(out, send_timeout).await?;
            out.clear();
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    stream.send(out, send_timeout).await?;
    out.clear();
    Ok(!close)
}
