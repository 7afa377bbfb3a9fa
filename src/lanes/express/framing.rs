//! Where an upstream response's body ends (RFC 9112 §6.3). Bodies pass
//! through as bytes, chunked ones included: [`Chunks`] follows the chunk
//! boundaries to find the last chunk, so the upstream connection can be
//! reused exactly at the end of the message, and hands the chunks' data to
//! whoever keeps a copy (the cache). Trailer fields are read and checked but
//! not relayed (as hyper's lane, nginx and Envoy by default): [`Chunks::cut`]
//! says which bytes they were.

pub use crate::wire::http1::Framing;

/// Why a chunked body could not be followed: the byte `at` which the
/// scan's bytes stopped being a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct BadChunk {
    pub at: usize,
}

/// Whether `bytes`, the first of a chunked body (read with its head), break
/// its framing before any of its data: the answer is then a `502` (its head
/// has not gone), as on hyper's lane.
pub fn malformed_from_the_start(bytes: &[u8]) -> bool {
    let mut data = false;
    Chunks::default().scan(bytes, |_| data = true).is_err() && !data
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    SizeLws,
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
    /// The trailer fields among the last scan's bytes.
    cut: Option<std::ops::Range<usize>>,
    /// hyper's limits, so both lanes take the same bodies: extension bytes
    /// over the whole body, trailer section bytes, trailer fields.
    extension_bytes: u32,
    trailer_bytes: u32,
    trailer_fields: u8,
}

/// hyper's limits on a chunked body (its `CHUNKED_EXTENSIONS_LIMIT`,
/// `TRAILER_LIMIT` and default field count).
const MAX_EXTENSION_BYTES: u32 = 16 * 1024;
const MAX_TRAILER_BYTES: u32 = 16 * 1024;
const MAX_TRAILER_FIELDS: u8 = 100;

impl Chunks {
    /// How many of `bytes` belong to the body, and whether it ends there;
    /// `data` gets the chunks' data among them, in order. Kept out of the
    /// relay loop it is called from (a chunked body is the rarer kind; inlined
    /// there, it changed how the loop's other copies were compiled).
    #[inline(never)]
    pub fn scan(&mut self, bytes: &[u8], mut data: impl FnMut(&[u8])) -> Result<(usize, bool), BadChunk> {
        let mut i = 0;
        self.cut = None;
        while i < bytes.len() {
            let b = bytes[i];
            let field = matches!(self.state, State::TrailerName | State::TrailerValue | State::TrailerLf)
                || (self.state == State::TrailerStart && b != b'\r');
            if field {
                let start = self.cut.as_ref().map_or(i, |c| c.start);
                self.cut = Some(start..i + 1);
                self.trailer_bytes += 1;
                if self.trailer_bytes >= MAX_TRAILER_BYTES {
                    return Err(BadChunk { at: i });
                }
            }
            self.state = match self.state {
                // Any number of digits while the size fits (hyper's reading).
                State::Size => match (b as char).to_digit(16) {
                    Some(d) => {
                        let size = self.size.checked_mul(16).and_then(|s| s.checked_add(u64::from(d)));
                        self.size = size.ok_or(BadChunk { at: i })?;
                        self.digits = self.digits.saturating_add(1);
                        State::Size
                    }
                    None if self.digits > 0 => match b {
                        b';' => State::Extension,
                        b' ' | b'\t' => State::SizeLws,
                        b'\r' => State::SizeLf,
                        _ => return Err(BadChunk { at: i }),
                    },
                    None => return Err(BadChunk { at: i }),
                },
                // Whitespace after the size, then only `;` or the line's end (`5 5` is no size).
                State::SizeLws => match b {
                    b' ' | b'\t' => State::SizeLws,
                    b';' => State::Extension,
                    b'\r' => State::SizeLf,
                    _ => return Err(BadChunk { at: i }),
                },
                // Read as hyper reads them: anything to the line's end.
                State::Extension => match b {
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(BadChunk { at: i }),
                    _ => {
                        self.extension_bytes += 1;
                        if self.extension_bytes >= MAX_EXTENSION_BYTES {
                            return Err(BadChunk { at: i });
                        }
                        State::Extension
                    }
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
                State::TrailerLf if b == b'\n' => {
                    if self.trailer_fields >= MAX_TRAILER_FIELDS {
                        return Err(BadChunk { at: i });
                    }
                    self.trailer_fields += 1;
                    State::TrailerStart
                }
                State::FinalLf if b == b'\n' => {
                    self.state = State::Done;
                    return Ok((i + 1, true));
                }
                State::Done => return Ok((i, true)),
                _ => return Err(BadChunk { at: i }),
            };
            i += 1;
        }
        Ok((i, self.state == State::Done))
    }

    /// The bytes of the last [`scan`](Chunks::scan) that were trailer
    /// fields (one run: they come just before the final CRLF), if any.
    pub fn cut(&mut self) -> Option<std::ops::Range<usize>> {
        self.cut.take()
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
    fn trailer_fields_are_cut_wherever_the_pieces_split_them() {
        let body = b"3\r\nabc\r\n0\r\nX-One: 1\r\nX-Two: 2\r\n\r\n";
        for piece in 1..=body.len() {
            let mut chunks = Chunks::default();
            let mut relayed = Vec::new();
            for part in body.chunks(piece) {
                let (n, _) = chunks.scan(part, |_| {}).unwrap();
                let cut = chunks.cut().unwrap_or(n..n);
                relayed.extend_from_slice(&part[..cut.start]);
                relayed.extend_from_slice(&part[cut.end..n]);
            }
            assert_eq!(relayed, b"3\r\nabc\r\n0\r\n\r\n", "piece {piece}");
        }
        let mut chunks = Chunks::default();
        assert_eq!(chunks.scan(b"0\r\n\r\n", |_| {}), Ok((5, true)));
        assert_eq!(chunks.cut(), None);
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
            assert!(Chunks::default().scan(bad, |_| {}).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(Chunks::default().scan(b"2\r\nok\r\nzz", |_| {}), Err(BadChunk { at: 7 }));
        // As hyper reads them: whitespace after a size ends it; no overflow.
        assert_eq!(Chunks::default().scan(b"5 5\r\n", |_| {}), Err(BadChunk { at: 2 }));
        assert!(Chunks::default().scan(b"5 \t;x\r\nhello\r\n", |_| {}).is_ok());
        assert!(Chunks::default().scan(b"0000000000000005\r\nhello\r\n", |_| {}).is_ok(), "leading zeros");
        assert!(Chunks::default().scan(b"10000000000000000\r\n", |_| {}).is_err(), "over u64");
        assert_eq!(Chunks::default().scan(b"0\r\nX: a\x00", |_| {}), Err(BadChunk { at: 7 }));
    }

    #[test]
    fn hyper_s_limits_hold_here_too() {
        let ext = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(16 * 1024));
        assert!(Chunks::default().scan(ext.as_bytes(), |_| {}).is_err(), "extensions over 16 KiB");
        let fields = |n: usize| format!("0\r\n{}\r\n", "X-A: b\r\n".repeat(n));
        assert_eq!(Chunks::default().scan(fields(100).as_bytes(), |_| {}).map(|(_, done)| done), Ok(true));
        assert!(Chunks::default().scan(fields(101).as_bytes(), |_| {}).is_err(), "101 trailer fields");
        let long = format!("0\r\nX: {}\r\n\r\n", "v".repeat(17_000));
        assert!(Chunks::default().scan(long.as_bytes(), |_| {}).is_err(), "a trailer section over 16 KiB");
    }

    #[test]
    fn a_502_only_when_nothing_of_the_body_was_good() {
        assert!(malformed_from_the_start(b"zz\r\n"));
        assert!(malformed_from_the_start(b"0\r\nnot a field\r\n\r\n"));
        assert!(!malformed_from_the_start(b"2\r\nok\r\nzz"), "data came first: the head goes, then the cut");
        assert!(!malformed_from_the_start(b"2\r\no"), "not malformed yet");
        assert!(!malformed_from_the_start(b""));
    }
}
