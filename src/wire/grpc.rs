//! gRPC as the proxy sees it: status codes and their names, the
//! `grpc-timeout` deadline, which requests are gRPC, failures answered as
//! gRPC statuses (a Trailers-Only response: HTTP 200 whose one header block
//! carries `grpc-status`), and a count of the length-prefixed messages a
//! stream carries.

use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};

pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The gRPC status codes (grpc/doc/statuscodes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// Every code's name, by number.
pub const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

const CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl Code {
    pub fn name(self) -> &'static str {
        NAMES[self as usize]
    }

    /// A name (any case) or a number 0–16.
    pub fn parse(text: &str) -> Option<Code> {
        if let Ok(n) = text.parse::<usize>() {
            return CODES.get(n).copied();
        }
        NAMES.iter().position(|n| n.eq_ignore_ascii_case(text)).map(|i| CODES[i])
    }

    /// What a gRPC client makes of a call answered with HTTP `status` and
    /// no `grpc-status` (gRPC's HTTP-to-gRPC mapping; 499: the client left,
    /// cancelling it; 200: the stream broke off).
    pub fn without_status(status: u16) -> Code {
        match status {
            499 => Code::Cancelled,
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }

    /// A `grpc-status` value; a number outside 0–16 is `UNKNOWN`, as gRPC
    /// clients read it.
    pub fn from_header(value: &HeaderValue) -> Option<Code> {
        let n: u32 = std::str::from_utf8(value.as_bytes()).ok()?.trim().parse().ok()?;
        Some(CODES.get(n as usize).copied().unwrap_or(Code::Unknown))
    }
}

/// `grpc-status` in a header block (a Trailers-Only head, or the trailers).
pub fn status_in(headers: &HeaderMap) -> Option<Code> {
    headers.get("grpc-status").and_then(Code::from_header)
}

/// `content-type: application/grpc`, `application/grpc+proto`, … (not
/// `application/grpc-web`, a different wire format served over HTTP/1.1 too).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| is_grpc_type(v.as_bytes()))
}

pub fn is_grpc_type(v: &[u8]) -> bool {
    let Some(rest) = v.get(..16).filter(|p| p.eq_ignore_ascii_case(b"application/grpc")).map(|_| &v[16..]) else {
        return false;
    };
    matches!(rest.first(), None | Some(b'+' | b';'))
}

/// A `grpc-timeout` value: 1–8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn timeout(value: &HeaderValue) -> Option<Duration> {
    let v = value.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A deadline as a `grpc-timeout` value, in milliseconds (at most 8 digits).
pub fn timeout_value(d: Duration) -> HeaderValue {
    let ms = d.as_millis().clamp(1, 99_999_999);
    HeaderValue::try_from(format!("{ms}m")).expect("digits and a unit are a valid header value")
}

/// `grpc-message`'s encoding: bytes outside printable ASCII, and `%`, as `%XX`.
pub fn percent_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b' '..=b'~' if b != b'%' => out.push(char::from(b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Counts the messages of one direction of a gRPC stream from its data
/// frames, however they are split: each message is a 1-byte flag, a 4-byte
/// big-endian length, then that many bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct MessageCount {
    pub messages: u64,
    /// Bytes of the current prefix read so far (0–4), or 5 inside a message.
    prefix_read: u8,
    length: u32,
    /// Bytes of the current message still to come.
    left: u64,
}

impl MessageCount {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = (self.left.min(data.len() as u64)) as usize;
                self.left -= n as u64;
                data = &data[n..];
                continue;
            }
            // Inside the 5-byte prefix: byte 0 is the flag, 1–4 the length.
            if self.prefix_read > 0 {
                self.length = (self.length << 8) | u32::from(data[0]);
            } else {
                self.length = 0;
            }
            self.prefix_read += 1;
            data = &data[1..];
            if self.prefix_read == 5 {
                self.prefix_read = 0;
                self.messages += 1;
                self.left = u64::from(self.length);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_timeouts_and_types() {
        assert_eq!(Code::parse("unavailable"), Some(Code::Unavailable));
        assert_eq!(Code::parse("4"), Some(Code::DeadlineExceeded));
        assert_eq!(Code::parse("17"), None);
        assert_eq!(Code::from_header(&HeaderValue::from_static("99")), Some(Code::Unknown));
        assert_eq!(Code::from_header(&HeaderValue::from_static("x")), None);
        assert_eq!(timeout(&HeaderValue::from_static("250m")), Some(Duration::from_millis(250)));
        assert_eq!(timeout(&HeaderValue::from_static("2S")), Some(Duration::from_secs(2)));
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S"] {
            assert_eq!(timeout(&HeaderValue::from_str(bad).unwrap()), None, "{bad}");
        }
        assert_eq!(timeout_value(Duration::from_secs(3)), "3000m");
        assert_eq!(percent_encoded("over \"POST /a/*\" 100%\n"), "over \"POST /a/*\" 100%25%0A");
        assert!(is_grpc_type(b"application/grpc") && is_grpc_type(b"application/grpc+proto"));
        assert!(is_grpc_type(b"Application/GRPC; charset=x"));
        assert!(!is_grpc_type(b"application/grpc-web") && !is_grpc_type(b"application/json"));
    }

    #[test]
    fn messages_are_counted_however_frames_split_them() {
        let mut stream = Vec::new();
        for len in [0u32, 3, 70_000] {
            stream.push(0);
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for split in [1, 2, 5, 6, 1000, stream.len()] {
            let mut count = MessageCount::default();
            stream.chunks(split).for_each(|c| count.feed(c));
            assert_eq!(count.messages, 3, "split {split}");
        }
    }
}
