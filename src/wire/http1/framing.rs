//! How a message's body is delimited and which upstream answers are
//! refused: `Content-Length` and `Transfer-Encoding` values, status-line
//! validity, RFC 9112 §6.3 framing for a response, and [`Malformed`] (a 502).

use super::tokens;

/// A `Content-Length` value: decimal digits only (RFC 9110 §8.6), at most 18.
pub fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Whether a message's `Transfer-Encoding` values (every field, in order)
/// say `chunked` and nothing else, once. Any other coding (`gzip, chunked`)
/// is one perfproxy would have to decode or name on: it is refused (a
/// `400` in a request, a `502` in an answer, as nginx does), never relayed
/// with its name dropped; `chunked` twice would be decoded once.
/// The last field's last element must itself be `chunked` (hyper reads a
/// trailing empty element, `chunked, `, as another coding: the body would
/// be read to the close, its chunks relayed as content).
pub fn chunked_alone<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let (mut chunked, mut last) = (0, &b""[..]);
    for value in values {
        for coding in tokens(value) {
            if !coding.eq_ignore_ascii_case(b"chunked") {
                return false;
            }
            chunked += 1;
        }
        last = value;
    }
    let last = last.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii();
    chunked == 1 && last.eq_ignore_ascii_case(b"chunked")
}

/// A status an upstream may answer with: three digits from 100 to 599.
pub fn valid_status(code: u16) -> bool {
    (100..=599).contains(&code)
}

/// Checks an upstream answer's status: within 100–599, and a `101` only to
/// a WebSocket upgrade that was forwarded (`upgrade_sent`).
pub fn check_status(code: u16, upgrade_sent: bool) -> Result<(), Malformed> {
    if !valid_status(code) {
        return Err(Malformed("status outside 100-599"));
    }
    if code == 101 && !upgrade_sent {
        return Err(Malformed("101 to a request that asked for no upgrade"));
    }
    Ok(())
}

/// Whether an answer with this status may carry `Content-Length` to the
/// client: never a 1xx or a 204 (RFC 9110 §8.6), which have no body and no
/// length, nor a 304 (it may say what its 200 would have had, and hyper
/// never sends it: one rule for both lanes); a HEAD answer keeps its length.
pub fn relays_length(status: u16) -> bool {
    !matches!(status, 204 | 304) && !(100..200).contains(&status)
}

/// Why an upstream answer is refused (a 502; the connection is discarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed upstream response: {0}")]
pub struct Malformed(pub &'static str);

/// A chunked body that breaks before any of its data (both lanes answer it `502`).
pub const MALFORMED_CHUNKS: Malformed = Malformed("malformed chunked body");

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD, 1xx, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Read until the upstream closes.
    Close,
}

/// RFC 9112 §6.3 for a response: `transfer_encoding` is `Some(`[`chunked_alone`]`)`
/// when the field is present; `length` the agreed `Content-Length`.
/// A `Transfer-Encoding` other than `chunked` alone is refused (a `502` on
/// both lanes), not read to the connection's end nor relayed: what a
/// client would get is coded bytes no field names.
pub fn response_framing(
    head_request: bool,
    status: u16,
    transfer_encoding: Option<bool>,
    length: Option<u64>,
) -> Result<Framing, Malformed> {
    if transfer_encoding == Some(false) {
        return Err(Malformed("Transfer-Encoding other than chunked alone"));
    }
    if bodiless(head_request, status) {
        return Ok(Framing::Empty);
    }
    Ok(match transfer_encoding {
        Some(_) => Framing::Chunked,
        None => length.map_or(Framing::Close, Framing::Length),
    })
}

/// Whether an answer of perfproxy's own (a 502, a 504) closes the client
/// connection: always when the request carried a body, read or not, so
/// what the client sent after it can never be taken for a request (RFC 9112
/// §9.3; both lanes, whatever they had read when the answer was made).
pub fn own_answer_closes(request_had_body: bool) -> bool {
    request_had_body
}

/// Checks the `Content-Length` fields of an upstream response: digits only,
/// all equal (for HEAD and 304 answers too, which hyper does not read).
pub fn check_lengths<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<Option<u64>, Malformed> {
    let mut length = Lengths::default();
    for v in values {
        length.add(v)?;
    }
    Ok(length.0)
}

/// [`check_lengths`] one field at a time, for a lane that reads the fields once.
#[derive(Debug, Default, Clone, Copy)]
pub struct Lengths(pub Option<u64>);

impl Lengths {
    pub fn add(&mut self, value: &[u8]) -> Result<(), Malformed> {
        let n = content_length(value).ok_or(Malformed("bad Content-Length"))?;
        if self.0.is_some_and(|l| l != n) {
            return Err(Malformed("differing Content-Lengths"));
        }
        self.0 = Some(n);
        Ok(())
    }
}

/// A response that has no body whatever its fields say: to HEAD, 1xx, 204, 304.
pub fn bodiless(head_request: bool, status: u16) -> bool {
    head_request || status == 204 || status == 304 || (100..200).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_digits_only() {
        assert_eq!(content_length(b"42"), Some(42));
        for bad in [&b""[..], b"+1", b"-1", b" 1", b"1 ", b"0x1", b"1,1", b"9999999999999999999"] {
            assert_eq!(content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn statuses_and_framing() {
        assert!(valid_status(100) && valid_status(599));
        assert!(!valid_status(99) && !valid_status(600) && !valid_status(0));
        assert_eq!(response_framing(true, 200, Some(true), None), Ok(Framing::Empty));
        assert_eq!(response_framing(false, 304, None, Some(5)), Ok(Framing::Empty));
        assert_eq!(response_framing(false, 200, Some(true), Some(5)), Ok(Framing::Chunked));
        assert!(response_framing(false, 200, Some(false), Some(5)).is_err(), "not ending in chunked");
        assert!(response_framing(true, 200, Some(false), None).is_err(), "on a HEAD answer too");
        assert_eq!(response_framing(false, 200, None, Some(5)), Ok(Framing::Length(5)));
        assert_eq!(response_framing(false, 200, None, None), Ok(Framing::Close));
    }
}
