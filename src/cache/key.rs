//! Cache keys and the patterns that select them. A primary key is
//! `path[?query sorted by name] host`: the path first, so a purge pattern's literal
//! prefix is a range in Redis' sorted index (no `KEYS`, no full scan). The
//! `X-Forwarded-Host`/`-Proto` sent upstream are part of it when they differ
//! from perfproxy's own view, so a page built from a client's forwarding
//! headers is only served to requests that send the same. The request
//! headers a response names in `Vary` pick a variant within it.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::wire::http1::Forwarded;

/// The primary key of a request: `path[?query] host`, query parameters
/// sorted by name (repeated names in the order sent) and those matching `ignore` (globs such as `utm_*`) dropped, then
/// `\n<forwarded host>\n<forwarded proto>` unless they are `host` and `http`
/// (a newline never occurs in a field value, so keys cannot collide).
pub fn primary(host: &str, path: &str, query: Option<&str>, ignore: &[Glob], forwarded: Forwarded<'_>) -> String {
    let mut key = String::with_capacity(path.len() + host.len() + query.map_or(0, str::len) + 2);
    key.push_str(path);
    if let Some(q) = query {
        let mut params: Vec<&str> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let name = p.split_once('=').map_or(*p, |(n, _)| n);
                !ignore.iter().any(|g| g.matches(name))
            })
            .collect();
        if !params.is_empty() {
            // By name only, and stable: repeated names keep their order
            // (`?a=1&a=2` is not `?a=2&a=1`: a server may read either one).
            params.sort_by_key(|p| p.split_once('=').map_or(*p, |(n, _)| n));
            key.push('?');
            for (i, p) in params.iter().enumerate() {
                if i > 0 {
                    key.push('&');
                }
                key.push_str(p);
            }
        }
    }
    key.push(' ');
    let at = key.len();
    key.push_str(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        key[at..].make_ascii_lowercase();
    }
    if !forwarded.is_default_for(host.as_bytes()) {
        for part in [forwarded.host, forwarded.proto] {
            key.push('\n');
            key.push_str(&escaped(part));
        }
    }
    key
}

/// `key` with the forwarding fields a trusted peer sent that are not
/// already in it (see [`Field::ForwardedOther`](crate::wire::http1::Field)):
/// `X-Original-URL`, `X-Rewrite-URL`, `X-Host`, `X-Forwarded-Server`,
/// `-Port`, `-Ssl`, `-Scheme`, `-Prefix`, and `Forwarded`'s `host` and
/// `proto` (its `for` and `by` name the client and the proxy, not the
/// page). A backend may route on or build its page from any of them, so an
/// answer is only served to requests that sent the same; sorted by name,
/// each `\n<name>:<value>`. Untrusted peers' are removed before this.
pub fn forwarding_fields(key: &mut String, headers: &HeaderMap) {
    let mut fields: Vec<(&str, String)> = Vec::new();
    for (name, value) in headers {
        if crate::wire::http1::field(name.as_str().as_bytes()) != crate::wire::http1::Field::ForwardedOther {
            continue;
        }
        let value = match name.as_str() {
            "forwarded" => forwarded_host_proto(value.as_bytes()),
            _ => escaped(value.as_bytes()),
        };
        fields.push((name.as_str(), value));
    }
    fields.sort();
    for (name, value) in fields {
        key.push('\n');
        key.push_str(name);
        key.push(':');
        key.push_str(&value);
    }
}

/// `Forwarded`'s `host=` and `proto=` parameters, in the order sent (RFC 7239).
fn forwarded_host_proto(value: &[u8]) -> String {
    let params = value.split(|&b| b == b',' || b == b';').map(<[u8]>::trim_ascii);
    let kept: Vec<&[u8]> = params
        .filter(|p| {
            let name = p.split(|&b| b == b'=').next().unwrap_or(b"");
            name.eq_ignore_ascii_case(b"host") || name.eq_ignore_ascii_case(b"proto")
        })
        .collect();
    escaped(&kept.join(&b';'))
}

/// A field value in a key: bytes past ASCII and `%` escaped (one spelling per value).
fn escaped(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if b.is_ascii() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path part of a primary key.
pub fn path_of(key: &str) -> &str {
    let end = key.find(['?', ' ']).unwrap_or(key.len());
    &key[..end]
}

/// A `*` wildcard pattern (`*` matches any run of characters, `/` too), or
/// an exact path ([`Glob::exact`]: a `*` in it is a character, so a
/// client's `POST /*` invalidates the path `/*`, not the whole cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    exact: bool,
}

impl Glob {
    /// An operator's pattern (config, purge): `*` is a wildcard.
    pub fn new(text: &str) -> Glob {
        Glob { text: text.to_string(), exact: false }
    }

    /// A path as a client wrote it: matched literally.
    pub fn exact(path: &str) -> Glob {
        Glob { text: path.to_string(), exact: true }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Matches one path only.
    pub fn is_exact(&self) -> bool {
        self.exact || !self.text.contains('*')
    }

    /// What every match starts with: the text before the first `*`.
    pub fn literal_prefix(&self) -> &str {
        if self.exact {
            return &self.text;
        }
        self.text.split('*').next().unwrap_or("")
    }

    /// The form sent to other instances: `=` before an exact path.
    pub fn to_message(&self) -> String {
        if self.exact {
            format!("={}", self.text)
        } else {
            self.text.clone()
        }
    }

    /// The pattern a [`Glob::to_message`] text stands for.
    pub fn from_message(text: &str) -> Glob {
        match text.strip_prefix('=') {
            Some(path) => Glob::exact(path),
            None => Glob::new(text),
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        if self.exact {
            return self.text == text;
        }
        crate::wire::glob::matches(&self.text, text)
    }

    /// Whether this path pattern selects the entries under `key`.
    pub fn selects(&self, key: &str) -> bool {
        self.matches(path_of(key))
    }
}

/// The request header values a stored response was selected by (its
/// `Vary`), in the response's order: `(name, value)`, absent as `None`.
pub type VaryValues = Vec<(HeaderName, Option<HeaderValue>)>;

/// The values of `names` in `request`; several fields of one name are
/// joined with `, ` as HTTP allows. `Surrogate-Capability` is left out:
/// perfproxy sends its own, the same on every request, and never a
/// client's, so it tells no variants apart (and both lanes agree).
pub fn vary_values(names: impl Iterator<Item = String>, request: &HeaderMap) -> VaryValues {
    names
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .filter(|name| *name != super::policy::SURROGATE_CAPABILITY)
        .map(|name| {
            let mut values = request.get_all(&name).iter();
            let value = match (values.next(), values.next()) {
                (None, _) => None,
                (Some(one), None) => Some(super::entry::owned(one)),
                (Some(a), Some(b)) => {
                    let mut joined = a.as_bytes().to_vec();
                    for v in std::iter::once(b).chain(values) {
                        joined.extend_from_slice(b", ");
                        joined.extend_from_slice(v.as_bytes());
                    }
                    HeaderValue::from_bytes(&joined).ok()
                }
            };
            (name, value)
        })
        .collect()
}

/// Whether `request` carries the header values a variant was stored for
/// (whitespace around list items does not count; nor does the case of
/// `Accept-Language`'s tags, RFC 4647 §2). `content_language`: the stored
/// response's `Content-Language`, when it names one language: a request
/// whose `Accept-Language` ranks that language first gets it too (what
/// the origin would answer it), whatever else the list says.
pub fn vary_matches(stored: &VaryValues, request: &HeaderMap, content_language: Option<&HeaderValue>) -> bool {
    stored.iter().all(|(name, want)| {
        let got = vary_values(std::iter::once(name.as_str().to_string()), request).pop().and_then(|(_, v)| v);
        let languages = *name == http::header::ACCEPT_LANGUAGE;
        match (want, got) {
            (None, None) => true,
            (Some(a), Some(b)) if languages => {
                normalised(a, true) == normalised(&b, true)
                    || content_language
                        .is_some_and(|c| first_language(&b).is_some_and(|l| l.eq_ignore_ascii_case(c.as_bytes())))
            }
            (Some(a), Some(b)) => normalised(a, false) == normalised(&b, false),
            _ => false,
        }
    })
}

fn normalised(v: &HeaderValue, lowercase: bool) -> Vec<u8> {
    let items = v.as_bytes().split(|b| *b == b',').flat_map(|item| item.trim_ascii().iter().copied().chain([b',']));
    items.map(|b| if lowercase { b.to_ascii_lowercase() } else { b }).collect()
}

/// The language an `Accept-Language` value ranks first: the highest q,
/// the earliest of equal ones. `None` when that is not one language: `*`
/// weighs as much or more, a weight is malformed (origins read those
/// differently), or nothing is accepted.
fn first_language(v: &HeaderValue) -> Option<&[u8]> {
    let mut best: Option<(u16, &[u8])> = None;
    for (tag, q) in crate::wire::encoding::weighted(v.as_bytes()) {
        let q = q?;
        if best.is_none_or(|(b, _)| q > b || (tag == b"*" && q >= b)) {
            best = Some((q, tag));
        }
    }
    best.filter(|(q, tag)| *q > 0 && *tag != b"*").map(|(_, tag)| tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_the_query_and_drop_ignored_parameters() {
        let ignore = [Glob::new("utm_*")];
        let own = |host: &'static str| Forwarded::decide(false, false, host.as_bytes(), None, None);
        let key = primary("Example.COM", "/a", Some("b=2&a=1&utm_source=x"), &ignore, own("Example.COM"));
        assert_eq!(key, "/a?a=1&b=2 example.com");
        assert_eq!(primary("h", "/a", Some("utm_x=1"), &ignore, own("h")), "/a h");
        assert_eq!(primary("h", "/a", None, &ignore, own("h")), primary("h", "/a", Some(""), &ignore, own("h")));
        let evil_first = primary("h", "/a", Some("lang=EVIL&lang=en"), &ignore, own("h"));
        let en_first = primary("h", "/a", Some("lang=en&lang=EVIL"), &ignore, own("h"));
        assert_ne!(evil_first, en_first, "repeated names keep their order");
        assert_eq!(
            primary("h", "/a", Some("z=1&lang=en&a=0&lang=EVIL"), &ignore, own("h")),
            "/a?a=0&lang=en&lang=EVIL&z=1 h"
        );
    }

    #[test]
    fn forwarding_headers_sent_upstream_are_keyed() {
        let fwd = |h: &'static str, p: &'static str| {
            Forwarded::decide(true, false, b"shop", Some(h.as_bytes()), Some(p.as_bytes()))
        };
        let plain = primary("shop", "/home", None, &[], fwd("shop", "http"));
        assert_eq!(plain, "/home shop");
        let evil = primary("shop", "/home", None, &[], fwd("evil.example", "https"));
        assert_eq!(evil, "/home shop\nevil.example\nhttps");
        assert_eq!(path_of(&evil), "/home");
        assert_ne!(
            primary("shop", "/home", None, &[], fwd("a%C3", "http")),
            primary("shop", "/home", None, &[], fwd("a\u{c3}", "http"))
        );
        assert_eq!(path_of("/a/b?x=1 h"), "/a/b");
        assert_eq!(path_of("/a/b h"), "/a/b");
    }

    fn g_clone() -> Glob {
        Glob::new("/a/*")
    }

    #[test]
    fn globs() {
        let g = Glob::new("/api/users/*");
        assert!(g.matches("/api/users/1") && g.matches("/api/users/1/orders") && g.matches("/api/users/"));
        assert!(!g.matches("/api/users") && !g.matches("/api/other/1"));
        assert!(Glob::new("/a").matches("/a") && !Glob::new("/a").matches("/ab"));
        assert!(Glob::new("*.json").matches("/x/y.json"));
        assert!(Glob::new("/a/*/b").matches("/a/1/2/b") && !Glob::new("/a/*/b").matches("/a/1/c"));
        assert!(Glob::new("/a/*/b").selects("/a/1/b?q=1 host"));
        assert_eq!(g.literal_prefix(), "/api/users/");
        let star = Glob::exact("/*");
        assert!(star.matches("/*") && !star.matches("/a") && star.is_exact());
        assert_eq!((star.literal_prefix(), star.to_message().as_str()), ("/*", "=/*"));
        assert_eq!(Glob::from_message("=/*"), star);
        assert_eq!(Glob::from_message("/a/*"), g_clone());
    }

    #[test]
    fn vary_matching_ignores_list_whitespace() {
        let mut req = HeaderMap::new();
        req.insert("accept-language", HeaderValue::from_static("en,  fr"));
        let stored = vary_values(["accept-language".to_string(), "x-absent".to_string()].into_iter(), &req);
        let mut other = HeaderMap::new();
        other.insert("accept-language", HeaderValue::from_static("en, fr"));
        assert!(vary_matches(&stored, &other, None));
        other.insert("x-absent", HeaderValue::from_static("1"));
        assert!(!vary_matches(&stored, &other, None));
        other.remove("x-absent");
        other.insert("accept-language", HeaderValue::from_static("de"));
        assert!(!vary_matches(&stored, &other, None));
    }

    #[test]
    fn accept_language_ignores_case_and_finds_the_stored_language_ranked_first() {
        let mut req = HeaderMap::new();
        req.insert("accept-language", HeaderValue::from_static("en, de"));
        let stored = vary_values(["accept-language".to_string()].into_iter(), &req);
        let asks = |al: &'static str, content_language: Option<&'static str>| {
            let mut other = HeaderMap::new();
            other.insert("accept-language", HeaderValue::from_static(al));
            let cl = content_language.map(HeaderValue::from_static);
            vary_matches(&stored, &other, cl.as_ref())
        };
        assert!(asks("EN, De", None), "language tags are case-insensitive");
        assert!(!asks("de, en", None), "order is a preference: another variant");
        assert!(asks("de, en", Some("de")), "the stored language is the one ranked first");
        assert!(asks("fr;q=0.5, de;q=1.0", Some("DE")));
        assert!(!asks("fr;q=0.5, de;q=0.4", Some("de")), "fr ranks first");
        assert!(!asks("de;q=0, fr", Some("de")), "refused");
        assert!(!asks("*", Some("de")));
        assert_eq!(first_language(&HeaderValue::from_static("en;q=0.8, fr;q=0.9, de;q=0.9")), Some(&b"fr"[..]));
        assert_eq!(first_language(&HeaderValue::from_static("en;q=2, de")), None, "a malformed weight: no shortcut");
        assert_eq!(first_language(&HeaderValue::from_static("de, *")), None, "* weighs as much");
        assert_eq!(first_language(&HeaderValue::from_static("*;q=0.5, de")), Some(&b"de"[..]));
        assert!(!asks("*, de;q=0.5", Some("de")), "anything ranked first: the origin's default");
    }
}
