//! What a `Host` (or an HTTP/2 `:authority`) may be: `uri-host [":" port]`,
//! checked byte by byte before a request goes anywhere.

/// Whether a `Host` value (or an HTTP/2 `:authority`) is `uri-host [":"
/// port]` (RFC 9112 §3.2, RFC 3986 §3.2.2): a registered name of
/// unreserved characters, `%XX` escapes and sub-delimiters other than `,`
/// (a list is not a host), or a bracketed IP literal; then, optionally, a
/// port of 1 to 5 digits from 1 to 65535. No userinfo, no path, no spaces,
/// and never empty (an http URI's host is not: RFC 9110 §4.2.1).
pub fn valid_host(value: &[u8]) -> bool {
    if value.first() == Some(&b'[') {
        return valid_ip_literal_host(value);
    }
    // One pass, a table lookup a byte (this runs on every request).
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if REG_NAME[usize::from(b)] {
            i += 1;
            continue;
        }
        match b {
            b'%' if value.get(i + 1..i + 3).is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) => i += 3,
            b':' => return i > 0 && valid_port(&value[i + 1..]),
            _ => return false,
        }
    }
    i > 0
}

/// The bytes of a registered name (RFC 3986 §3.2.2): unreserved and
/// sub-delimiters but `,` (a list is not a host); `%` escapes apart.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b';' | b'='
            );
        b += 1;
    }
    table
};

/// A port: 1 to 5 digits, 1 to 65535.
fn valid_port(p: &[u8]) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.iter().all(u8::is_ascii_digit)
        && (1..=65535).contains(&p.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
}

/// `[` IP-literal `]` and an optional port: an IPv6 address, or IPvFuture
/// (`v` HEXDIG+ "." then unreserved, sub-delimiters or `:`).
fn valid_ip_literal_host(value: &[u8]) -> bool {
    let Some(end) = value.iter().position(|&b| b == b']') else { return false };
    let (inner, rest) = (&value[1..end], &value[end + 1..]);
    let port_ok = match rest {
        [] => true,
        [b':', port @ ..] => valid_port(port),
        _ => false,
    };
    let literal_ok = match inner {
        [b'v' | b'V', rest @ ..] => rest.iter().position(|&b| b == b'.').is_some_and(|dot| {
            let (version, address) = (&rest[..dot], &rest[dot + 1..]);
            !version.is_empty()
                && version.iter().all(u8::is_ascii_hexdigit)
                && !address.is_empty()
                && address.iter().all(|&b| REG_NAME[usize::from(b)] || b == b':')
        }),
        _ => std::str::from_utf8(inner).is_ok_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
    };
    port_ok && literal_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_uri_host_and_port() {
        for good in
            ["a.example", "a.example:8080", "127.0.0.1:1", "[::1]:65535", "[::1]", "x_y-z~", "%41b", "A", "[v1.x]"]
        {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "user@a.example",
            "a, b",
            "a,b",
            "a.example/x",
            "a.example:0",
            "a.example:65536",
            "a.example:x",
            "a.example:",
            "a.example:123456",
            "a b",
            ":80",
            "[]",
            "[::1",
            "a%4",
            "a\\b",
            "a?b",
            "a#b",
            "",
            "[.]",
            "[%]",
            "[vvv]",
            "[1]",
            "[:]",
            "[a]:80",
            "[v1.]",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }
}
