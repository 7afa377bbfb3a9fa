//! Unit tests of `head`.

use super::*;

#[test]
fn target_bytes_are_unreserved_sub_delims_and_path_marks() {
    for b in 0..=255u8 {
        let expected = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b);
        assert_eq!(target_byte(b), expected, "{b:#x}");
    }
}

pub(super) fn parse(raw: &str) -> (RequestHead, Parsed) {
    let mut head = RequestHead::default();
    let parsed = head.parse(raw.as_bytes());
    (head, parsed)
}

#[test]
fn anything_unusual_goes_to_hyper() {
    for raw in [
        "GET /a HTTP/1.0\r\nHost: a\r\n\r\n",
        "GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a#f HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a HTTP/1.1\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\n\r\n",
        "PUT /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: user@a\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a, b\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a/x\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a:99999\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: \r\n\r\n",
    ] {
        assert_eq!(parse(raw).1, Parsed::Handoff, "{raw}");
    }
    assert_eq!(parse("GET /a HTTP/1.1\r\nHost: a\r\n").1, Parsed::Partial);
    let (head, parsed) = parse("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nConnection: close\r\n\r\n");
    assert_eq!(parsed, Parsed::Complete);
    assert_eq!((head.content_length, head.close), (12, true));
    let raw = "GET /a HTTP/1.1\r\nHost: a\r\nX-Request-Id: one\r\nX-Request-Id: two\r\n\r\n";
    let (head, parsed) = parse(raw);
    assert_eq!((parsed, head.request_id(raw.as_bytes())), (Parsed::Complete, None));
    let raw = "GET /a HTTP/1.1\r\nHost: a\r\nX-Request-Id: one\r\n\r\n";
    let (head, _) = parse(raw);
    assert_eq!(head.request_id(raw.as_bytes()), Some(&b"one"[..]));
    let mut out = Vec::new();
    head.write_upstream(raw.as_bytes(), (b"1.2.3.4", false, false), (b"one", None), false, &mut out);
    assert_eq!(String::from_utf8(out).unwrap().to_ascii_lowercase().matches("x-request-id").count(), 1);
}
