//! Per-answer values made on the spot, the same on both lanes: the `Date`
//! value (rendered once a second per worker), request ids (128 random bits
//! from a per-thread generator), and which client `X-Request-Id` is kept.

thread_local! {
    /// The `Date` value, rendered once a second per worker.
    static DATE_NOW: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// The current `Date` value (IMF-fixdate, always 29 bytes): every answer's
/// own, never a stored one.
pub fn date() -> [u8; 29] {
    let now = std::time::SystemTime::now();
    let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_NOW.with_borrow_mut(|(at, text)| {
        if *at != secs || text.len() != 29 {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        text.as_bytes().try_into().expect("an IMF-fixdate is 29 bytes")
    })
}

thread_local! {
    /// The state of this thread's request-id generator (splitmix64),
    /// seeded once from the process's random hasher keys.
    static ID_STATE: std::cell::Cell<u64> = std::cell::Cell::new({
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id().into());
        h.finish()
    });
}

/// 64 random bits from this thread's generator (splitmix64): request ids
/// and sampling decisions, not secrets.
pub fn random_u64() -> u64 {
    ID_STATE.with(|s| {
        let mut z = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// A new `X-Request-Id`: 128 random bits as 32 lowercase hex digits.
pub fn new_request_id() -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(16).zip([random_u64(), random_u64()]) {
        chunk[..8].copy_from_slice(&hex8((word >> 32) as u32));
        chunk[8..].copy_from_slice(&hex8(word as u32));
    }
    out
}

/// `x` as 8 lowercase hex digits, most significant first: its nibbles
/// spread one per byte, then turned to ASCII all at once (a byte of 10 or
/// more gets `'a' - '0' - 10` more).
fn hex8(x: u32) -> [u8; 8] {
    let x = u64::from(x);
    let mut v = ((x & 0xffff_0000) << 16) | (x & 0xffff);
    v = ((v & 0x0000_ff00_0000_ff00) << 8) | (v & 0x0000_00ff_0000_00ff);
    v = ((v & 0x00f0_00f0_00f0_00f0) << 4) | (v & 0x000f_000f_000f_000f);
    let letters = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (v + 0x3030_3030_3030_3030 + letters * 39).to_be_bytes()
}

/// The longest client `X-Request-Id` kept (longer ones are replaced).
pub const MAX_REQUEST_ID: usize = 128;

/// The client's `X-Request-Id` among the values it sent, if perfproxy keeps
/// it: exactly one field, 1 to [`MAX_REQUEST_ID`] bytes of visible ASCII.
/// Anything else (none, repeated, empty, too long, spaces, control bytes) is
/// replaced by perfproxy's own id, so exactly one reaches the upstream and
/// no client value can bloat or forge an answer or a log line.
pub fn client_request_id<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let first = values.next()?;
    let usable = !first.is_empty() && first.len() <= MAX_REQUEST_ID && first.iter().all(u8::is_ascii_graphic);
    (usable && values.next().is_none()).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_lowercase_hex_digits() {
        for x in [0u32, 1, 9, 10, 15, 16, 0xdead_beef, 0x0123_4567, 0x89ab_cdef, u32::MAX] {
            assert_eq!(std::str::from_utf8(&hex8(x)).unwrap(), format!("{x:08x}"));
        }
        let mut seed = 0x9e37_79b9_u32;
        for _ in 0..10_000 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            assert_eq!(std::str::from_utf8(&hex8(seed)).unwrap(), format!("{seed:08x}"));
        }
        let id = new_request_id();
        assert!(id.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)));
        assert_ne!(new_request_id(), id);
    }

    #[test]
    fn request_ids_are_single_short_and_visible() {
        let one = |v: &[&str]| client_request_id(v.iter().map(|s| s.as_bytes())).map(|v| v.to_vec());
        assert_eq!(one(&["abc-1"]), Some(b"abc-1".to_vec()));
        assert_eq!(one(&["a", "b"]), None);
        assert_eq!(one(&["", "b"]), None);
        assert_eq!(one(&[""]), None);
        assert_eq!(one(&["a b"]), None);
        assert_eq!(one(&["a\"x"]), Some(b"a\"x".to_vec()), "visible ASCII is kept; the text log escapes it");
        assert_eq!(one(&[&"x".repeat(128)]).map(|v| v.len()), Some(128));
        assert_eq!(one(&[&"x".repeat(129)]), None);
    }
}
