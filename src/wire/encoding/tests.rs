//! Unit tests of `encoding`.

use super::*;

fn rank(ae: &str) -> Vec<Coding> {
    let r = Accepted::parse([ae.as_bytes()]).rank(&Coding::COMPRESSED, true);
    r.codings[..r.len].iter().flatten().copied().collect()
}

#[test]
fn accept_encoding_is_ranked_by_q_then_the_configured_order() {
    use Coding::*;
    assert_eq!(rank("gzip, br"), [Br, Gzip]);
    assert_eq!(rank("gzip;q=1.0, br;q=0.9"), [Gzip, Br]);
    assert_eq!(rank("GZIP , Zstd;Q=0.5"), [Gzip, Zstd]);
    assert_eq!(rank("*"), [Zstd, Br, Gzip]);
    assert_eq!(rank("zstd;q=0, *;q=0.5"), [Br, Gzip]);
    assert_eq!(rank("identity"), [Identity]);
    assert_eq!(rank(""), [Identity]);
    assert_eq!(rank("gzip;q=0"), [Identity]);
    assert_eq!(rank("gzip;q=0.5, identity"), [Identity, Gzip], "the client prefers identity");
    assert_eq!(rank("x-gzip, deflate"), [Gzip]);
    assert_eq!(rank("gzip;q=2, br;q=abc, zstd;q=0.001"), [Zstd], "malformed weights are ignored");
    assert_eq!(rank("*;q=0"), [Identity], "nothing acceptable: identity anyway");
    let none = Accepted::parse(std::iter::empty::<&[u8]>()).rank(&Coding::COMPRESSED, true);
    assert_eq!(none, Ranked::identity());
    let head = Accepted::parse([&b"gzip"[..]]).rank(&Coding::COMPRESSED, false);
    assert_eq!(head, Ranked::identity());
    let only_gzip = Accepted::parse([&b"br, gzip"[..]]).rank(&[Gzip], true);
    assert_eq!(only_gzip.best(), Gzip);
    assert_eq!(only_gzip.position(Br), None);
}

#[test]
fn weighted_lists_and_weak_forms() {
    let items: Vec<_> = weighted(b"en, de;q=0.5 ,, fr;Q=0.25;x=1, it;q=, *;q=0").collect();
    let want: Vec<(&[u8], Option<u16>)> =
        vec![(b"en", Some(1000)), (b"de", Some(500)), (b"fr", Some(250)), (b"it", None), (b"*", Some(0))];
    assert_eq!(items, want);
    let strong = HeaderValue::from_static("\"v1\"");
    assert!(holds_weak_form(&[HeaderValue::from_static("\"v0\", W/\"v1\"")], &strong));
    assert!(!holds_weak_form(&[HeaderValue::from_static("\"v1\"")], &strong), "the client holds the strong one");
    assert!(!holds_weak_form(&[HeaderValue::from_static("W/\"v1\"")], &HeaderValue::from_static("W/\"v1\"")));
}

#[test]
fn content_types_match_by_type_subtype_and_suffix() {
    let defaults = ["text/*", "application/json", "image/svg+xml", "+json", "+xml"].map(String::from);
    let t = ContentTypes::parse(&defaults).unwrap();
    for yes in ["text/html; charset=utf-8", "Application/JSON", "application/problem+json", "image/svg+xml"] {
        assert!(t.matches(yes.as_bytes()), "{yes}");
    }
    for no in ["image/png", "application/octet-stream", "json", "application/jsonx"] {
        assert!(!t.matches(no.as_bytes()), "{no}");
    }
    assert_eq!(ContentTypes::parse(&["text/".into()]), Err(0));
    assert_eq!(ContentTypes::parse(&["text/html".into(), "+".into()]), Err(1));
}

#[test]
fn compressed_heads_say_so() {
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5000"));
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    mark_compressed(&mut h, Coding::Br);
    assert_eq!(h[header::ETAG], "W/\"v1\"");
    assert_eq!(h[header::CONTENT_ENCODING], "br");
    assert!(!h.contains_key(header::CONTENT_LENGTH) && !h.contains_key(header::ACCEPT_RANGES));
    let vary: Vec<_> = h.get_all(header::VARY).iter().collect();
    assert_eq!(vary, ["Origin", "Accept-Encoding"]);
    add_vary(&mut h);
    assert_eq!(h.get_all(header::VARY).iter().count(), 2, "once");
    let mut weak = HeaderMap::new();
    weak.insert(header::ETAG, HeaderValue::from_static("W/\"v1\""));
    mark_compressed(&mut weak, Coding::Gzip);
    assert_eq!(weak[header::ETAG], "W/\"v1\"");
}

#[test]
fn what_may_be_compressed() {
    let types = ContentTypes::parse(&["text/*".into()]).unwrap();
    let head = |fields: &[(&'static str, &'static str)]| {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    };
    let text = head(&[("content-type", "text/plain"), ("content-length", "2000")]);
    assert!(compressible(200, &text, Some(2000), 1024, &types));
    assert!(compressible(404, &text, Some(2000), 1024, &types));
    for status in [101, 204, 206, 304] {
        assert!(!compressible(status, &text, Some(2000), 1024, &types), "{status}");
    }
    assert!(!compressible(200, &text, Some(2000), 4096, &types), "under min_bytes");
    assert!(compressible(200, &head(&[("content-type", "text/plain")]), None, 4096, &types), "unknown length");
    let encoded = head(&[("content-type", "text/plain"), ("content-encoding", "gzip")]);
    assert!(!compressible(200, &encoded, None, 0, &types));
    let identity = head(&[("content-type", "text/plain"), ("content-encoding", "identity")]);
    assert!(compressible(200, &identity, None, 0, &types));
    let kept = head(&[("content-type", "text/plain"), ("cache-control", "public, No-Transform")]);
    assert!(!compressible(200, &kept, None, 0, &types));
    assert!(!compressible(200, &head(&[("content-type", "image/png")]), None, 0, &types));
    assert!(!compressible(200, &head(&[]), None, 0, &types), "no type");
    let all = ContentTypes::parse(&["*/*".into()]).unwrap();
    assert!(!compressible(200, &head(&[("content-type", "application/grpc+proto")]), None, 0, &all), "gRPC");
}
