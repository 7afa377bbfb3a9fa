//! One answer's compressor: the upstream's bytes in, the coding's bytes
//! out, flushed after every piece (so a stream reaches the client as it
//! comes) and finished at the end. gzip by `flate2`, Brotli by `brotli`,
//! zstd by `zstd`, each writing into a buffer taken after each piece.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use flate2::write::GzEncoder;

use super::stats::Stats;
use crate::wire::encoding::Coding;

/// The largest window a compressor keeps (2^18 = 256 KiB): what one
/// compressed answer in flight may hold, whatever its size.
const MAX_WINDOW_LOG: u32 = 18;
/// The smallest (Brotli's and zstd's lower bounds are 10).
const MIN_WINDOW_LOG: u32 = 10;

/// An answer being compressed.
pub struct Encoder {
    coding: Coding,
    /// `None` once the coding's end is written.
    writer: Option<Box<dyn CodingWriter>>,
    stats: Arc<Stats>,
    bytes_in: u64,
    bytes_out: u64,
}

/// A compressor writing into memory: what it has made so far is taken
/// after each flush, the rest at its end.
trait CodingWriter: Write + Send {
    /// What has been written out so far.
    fn made(&mut self) -> &mut Vec<u8>;
    /// Writes the coding's end; the rest of its output.
    fn end(self: Box<Self>) -> std::io::Result<Vec<u8>>;
}

impl CodingWriter for GzEncoder<Vec<u8>> {
    fn made(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
    fn end(self: Box<Self>) -> std::io::Result<Vec<u8>> {
        self.finish()
    }
}

impl CodingWriter for brotli::CompressorWriter<Vec<u8>> {
    fn made(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
    fn end(self: Box<Self>) -> std::io::Result<Vec<u8>> {
        Ok(self.into_inner())
    }
}

impl CodingWriter for zstd::stream::write::Encoder<'static, Vec<u8>> {
    fn made(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
    fn end(self: Box<Self>) -> std::io::Result<Vec<u8>> {
        self.finish()
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("coding", &self.coding).field("in", &self.bytes_in).finish()
    }
}

/// The window that holds a body of `length` (unknown: the largest).
fn window_log(length: Option<u64>) -> u32 {
    let bits = length.map_or(MAX_WINDOW_LOG, |n| 64 - n.saturating_sub(1).leading_zeros());
    bits.clamp(MIN_WINDOW_LOG, MAX_WINDOW_LOG)
}

impl Encoder {
    /// A compressor for `coding` at `level`; `length`: the body's, when the
    /// upstream said (a smaller window for a small body). Identity is not a
    /// compressing coding: `None`.
    pub fn new(coding: Coding, level: u32, length: Option<u64>, stats: Arc<Stats>) -> std::io::Result<Option<Encoder>> {
        let writer: Box<dyn CodingWriter> = match coding {
            Coding::Identity => return Ok(None),
            Coding::Gzip => Box::new(GzEncoder::new(Vec::new(), flate2::Compression::new(level))),
            Coding::Br => Box::new(brotli::CompressorWriter::new(Vec::new(), 4096, level, window_log(length))),
            Coding::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(Vec::new(), level as i32)?;
                z.window_log(window_log(length))?;
                z.include_checksum(false)?;
                z.set_pledged_src_size(length)?;
                Box::new(z)
            }
        };
        Ok(Some(Encoder { coding, writer: Some(writer), stats, bytes_in: 0, bytes_out: 0 }))
    }

    /// The upstream's bytes compressed so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Whether the coding's end has been written.
    pub fn finished(&self) -> bool {
        self.writer.is_none()
    }

    /// Compresses `data`, then flushes, or finishes when it is the `last`
    /// piece: what the client gets next.
    pub fn encode(&mut self, data: &[u8], last: bool) -> std::io::Result<Bytes> {
        let Some(mut writer) = self.writer.take() else { return Ok(Bytes::new()) };
        self.bytes_in += data.len() as u64;
        writer.write_all(data)?;
        let out = if last {
            writer.end()?
        } else {
            writer.flush()?;
            let out = std::mem::take(writer.made());
            self.writer = Some(writer);
            out
        };
        self.bytes_out += out.len() as u64;
        Ok(Bytes::from(out))
    }
}

impl Drop for Encoder {
    /// An answer dropped before any of its body was compressed (replaced by
    /// a stale one, say) is not counted.
    fn drop(&mut self) {
        if self.bytes_in > 0 || self.bytes_out > 0 {
            self.stats.add(self.coding, self.bytes_in, self.bytes_out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn decode(coding: Coding, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).map(|_| ()),
            Coding::Br => brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out).map(|_| ()),
            Coding::Zstd => {
                zstd::stream::read::Decoder::new(bytes).and_then(|mut d| d.read_to_end(&mut out)).map(|_| ())
            }
            Coding::Identity => unreachable!(),
        }
        .expect("decodes");
        out
    }

    #[test]
    fn each_coding_round_trips_piece_by_piece_and_flushes_each_piece() {
        let text: Vec<u8> =
            (0..4000).flat_map(|i| format!("{{\"id\":{i},\"name\":\"item {i}\"}},").into_bytes()).collect();
        for coding in Coding::COMPRESSED {
            let stats = Arc::new(Stats::default());
            let mut e = Encoder::new(coding, 5, None, stats.clone()).unwrap().unwrap();
            let mut wire = Vec::new();
            let first = e.encode(&text[..100], false).unwrap();
            assert!(!first.is_empty(), "{coding:?}: a flushed piece is sent at once");
            // What has come so far decodes to what went in (a streaming decoder sees it).
            let mut partial = Vec::new();
            match coding {
                Coding::Gzip => {
                    let mut d = flate2::write::GzDecoder::new(&mut partial);
                    d.write_all(&first).unwrap();
                    d.flush().unwrap();
                }
                Coding::Br => {
                    let mut d = brotli::DecompressorWriter::new(&mut partial, 4096);
                    d.write_all(&first).unwrap();
                    d.flush().unwrap();
                }
                Coding::Zstd => {
                    let mut d = zstd::stream::write::Decoder::new(&mut partial).unwrap();
                    d.write_all(&first).unwrap();
                    d.flush().unwrap();
                }
                Coding::Identity => unreachable!(),
            }
            assert_eq!(partial, &text[..100], "{coding:?}");
            wire.extend_from_slice(&first);
            for piece in text[100..].chunks(7000) {
                wire.extend_from_slice(&e.encode(piece, false).unwrap());
            }
            wire.extend_from_slice(&e.encode(&[], true).unwrap());
            assert!(e.finished());
            assert_eq!(decode(coding, &wire), text, "{coding:?}");
            assert!(wire.len() * 5 < text.len(), "{coding:?}: {} of {}", wire.len(), text.len());
            drop(e);
            let f = stats.figures(coding);
            assert_eq!((f.responses, f.bytes_in, f.bytes_out), (1, text.len() as u64, wire.len() as u64));
        }
        let stats = Arc::new(Stats::default());
        assert!(Encoder::new(Coding::Identity, 1, None, stats).unwrap().is_none());
    }

    #[test]
    fn a_known_length_is_finished_in_one_piece() {
        let text = vec![b'a'; 3000];
        for coding in Coding::COMPRESSED {
            let mut e = Encoder::new(coding, 3, Some(3000), Arc::new(Stats::default())).unwrap().unwrap();
            let wire = e.encode(&text, true).unwrap();
            assert_eq!(decode(coding, &wire), text, "{coding:?}");
        }
        assert_eq!(window_log(Some(3000)), 12);
        assert_eq!(window_log(Some(1)), MIN_WINDOW_LOG);
        assert_eq!(window_log(None), MAX_WINDOW_LOG);
    }
}
