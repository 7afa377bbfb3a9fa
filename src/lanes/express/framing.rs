//! Where an upstream response's body ends (RFC 9112 §6.3). Bodies pass
//! through as bytes, chunked ones included: [`Chunks`] follows the chunk
//! boundaries to find the last chunk, so the upstream connection can be
//! reused exactly at the end of the message, and hands the chunks' data to
//! whoever keeps a copy (the cache).

pub use crate::wire::http1::Framing;

/// Why a chunked body could not be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct BadChunk;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

/// A chunked body's position, fed the bytes as they arrive.
#[derive(Debug, Default)]
pub struct Chunks {
    state: State,
    size: u64,
    digits: u8,
}

impl Chunks {
    /// How many of `bytes` belong to the body, and whether it ends there;
    /// `data` gets the chunks' data among them, in order. Kept out of the
    /// relay loop it is called from (a chunked body is the rarer kind; inlined
    /// there, it changed how the loop's other copies were compiled).
    #[inline(never)]
    pub fn scan(&mut self, bytes: &[u8], mut data: impl FnMut(&[u8])) -> Result<(usize, bool), BadChunk> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                State::Size => match (b as char).to_digit(16) {
                    Some(d) if self.digits < 15 => {
                        self.size = self.size * 16 + u64::from(d);
                        self.digits += 1;
                        State::Size
                    }
                    None if self.digits > 0 => match b {
                        b';' | b' ' | b'\t' => State::Extension,
                        b'\r' => State::SizeLf,
                        _ => return Err(BadChunk),
                    },
                    _ => return Err(BadChunk),
                },
                // Read as hyper reads them: anything to the line's end.
                State::Extension => match b {
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(BadChunk),
                    _ => State::Extension,
                },
                State::SizeLf if b == b'\n' => {
                    if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    }
                }
                State::Data => {
                    let n = (self.size.min((bytes.len() - i) as u64)) as usize;
                    data(&bytes[i..i + n]);
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => {
                    self.digits = 0;
                    State::Size
                }
                // Trailer fields as a head's fields (RFC 9112 §7.1.2): a
                // token, `:`, a value without controls; no obs-fold.
                State::TrailerStart if b == b'\r' => State::FinalLf,
                State::TrailerStart | State::TrailerName if is_tchar(b) => State::TrailerName,
                State::TrailerName if b == b':' => State::TrailerValue,
                State::TrailerValue if b == b'\r' => State::TrailerLf,
                State::TrailerValue if !is_ctl(b) => State::TrailerValue,
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::FinalLf if b == b'\n' => {
                    self.state = State::Done;
                    return Ok((i + 1, true));
                }
                State::Done => return Ok((i, true)),
                _ => return Err(BadChunk),
            };
            i += 1;
        }
        Ok((i, self.state == State::Done))
    }
}

/// A control byte a field value or chunk extension may not carry (HTAB may).
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// A byte of a token (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_of_a_chunked_body_fed_in_any_pieces() {
        let body =
            b"5;ext=1;q=\"a \\\" b\"\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\t2\r\n\r\nHTTP/1.1 200";
        let end = body.len() - "HTTP/1.1 200".len();
        for piece in [1, 2, 3, 7, body.len()] {
            let mut chunks = Chunks::default();
            let mut at = 0;
            let mut done = false;
            let mut data = Vec::new();
            for part in body.chunks(piece) {
                let (n, d) = chunks.scan(part, |d| data.extend_from_slice(d)).unwrap();
                at += n;
                if d {
                    done = true;
                    break;
                }
                assert_eq!(n, part.len());
            }
            assert!(done, "piece {piece}");
            assert_eq!(at, end, "piece {piece}");
            assert_eq!(data, b"hello0123456789abcdef", "the chunks' data, piece {piece}");
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        let bad_ends = [
            &b"0\r\nnot a header\r\n\r\n"[..],
            b"0\r\nX: a\x00b\r\n\r\n",
            b"0\r\nX: a\r\n folded\r\n\r\n",
            b"0\r\n: no name\r\n\r\n",
        ];
        for bad in
            [&b"x\r\n"[..], b"5\r\nhelloX", b"\r\n", b"5\nhello", b"fffffffffffffffff\r\n"].into_iter().chain(bad_ends)
        {
            assert_eq!(Chunks::default().scan(bad, |_| {}), Err(BadChunk), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
