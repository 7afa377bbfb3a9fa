//! The generated cases: requests (methods, the fields perfproxy reads or
//! rewrites, bodies) and the upstream's answer to them (statuses, 103s,
//! fields, every framing).

/// One request of a case: its head's extra fields, and a body.
#[derive(Debug, Clone)]
pub struct Ask {
    pub method: &'static str,
    pub target: String,
    pub fields: Vec<(&'static str, String)>,
    pub body: Option<String>,
    /// The body sent chunked, not with a `Content-Length`.
    pub chunked: bool,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub asks: Vec<Ask>,
    /// What the upstream answers to the case's path.
    pub answer: String,
    pub close_after: bool,
    /// The requests written at once (pipelined), not each after its answer.
    pub pipelined: bool,
}

fn pick<T: Clone>(rng: &mut fastrand::Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())].clone()
}

const BODY_SMALL: &str = "hello";

fn body_large() -> String {
    "{\"items\": [1, 2, 3], \"name\": \"perfproxy\"} ".repeat(40)
}

/// The upstream's answer: a status, fields, a framing and a body.
fn answer(rng: &mut fastrand::Rng) -> (String, bool) {
    let (status, reason) = pick(
        rng,
        &[
            (200, "OK"),
            (200, "OK"),
            (200, "OK"),
            (200, "Fine"),
            (203, "Non-Authoritative Information"),
            (204, "No Content"),
            (301, "Moved Permanently"),
            (302, "Found"),
            (304, "Not Modified"),
            (404, "Not Found"),
            (410, "Gone"),
            (500, "Internal Server Error"),
            (503, "Service Unavailable"),
        ],
    );
    let mut head = String::new();
    if rng.u8(..12) == 0 {
        head += "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n";
    }
    head += &format!("HTTP/1.1 {status} {reason}\r\n");
    let mut fields: Vec<String> = Vec::new();
    let cc = [
        "max-age=60",
        "public, max-age=60",
        "s-maxage=30",
        "max-age=0",
        "no-store",
        "private, max-age=60",
        "no-cache",
        "max-age=60, must-revalidate",
        "max-age=0, stale-while-revalidate=30",
        "max-age=60, no-transform",
    ];
    if rng.bool() {
        fields.push(format!("Cache-Control: {}", pick(rng, &cc)));
    }
    let optional: &[&str] = &[
        "ETag: \"e1\"",
        "ETag: W/\"w1\"",
        "Last-Modified: Mon, 01 Jun 2026 10:00:00 GMT",
        "Expires: Thu, 01 Jan 2099 00:00:00 GMT",
        "Vary: Accept-Language",
        "Vary: Accept-Encoding",
        "Vary: Cookie, Accept-Language",
        "Vary: *",
        "Vary: X-Request-Id",
        "Set-Cookie: s=1; Path=/",
        "Connection: keep-alive",
        "Keep-Alive: timeout=5",
        "Proxy-Connection: keep-alive",
        "Server: origin/1.0",
        "Date: Mon, 01 Jun 2026 10:00:00 GMT",
        "Age: 10",
        "Via: 1.1 other",
        "Surrogate-Control: max-age=60",
        "Surrogate-Key: t1 t2",
        "Content-Type: application/json",
        "Content-Type: text/html; charset=utf-8",
        "Content-Encoding: gzip",
        "Content-Language: en",
        "X-Custom: a",
        "X-Custom: b",
        "Location: /elsewhere",
        "Accept-Ranges: bytes",
        "Access-Control-Allow-Origin: *",
        "X-Cache: MISS from origin",
        "Cache-Status: origin; fwd=miss",
        "Upgrade: h2c",
        "Connection: Upgrade",
        "Alt-Svc: h3=\":443\"",
        "Strict-Transport-Security: max-age=60",
    ];
    for f in optional {
        if rng.u8(..7) == 0 {
            fields.push(f.to_string());
        }
    }
    let body = if rng.u8(..3) == 0 { body_large() } else { BODY_SMALL.to_string() };
    let bodyless = matches!(status, 204 | 304);
    let framing = rng.u8(..6);
    let close = framing == 0 && !bodyless;
    match framing {
        // A 204 loses it, a 304 keeps the length its 200 would have had.
        0 | 1 if bodyless => fields.push(format!("Content-Length: {}", body.len())),
        _ if bodyless => {}
        0 => {}
        1 => fields.push("Transfer-Encoding: chunked".into()),
        _ => fields.push(format!("Content-Length: {}", body.len())),
    }
    for f in &fields {
        head += f;
        head += "\r\n";
    }
    head += "\r\n";
    if !bodyless {
        if framing == 1 {
            let (a, b) = body.split_at(body.len() / 2);
            head += &format!("{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len());
        } else {
            head += &body;
        }
    }
    (head, close)
}

fn ask(rng: &mut fastrand::Rng, target: &str, first: bool) -> Ask {
    let method = if first || rng.bool() {
        pick(rng, &["GET", "GET", "GET", "GET", "HEAD", "POST", "DELETE", "OPTIONS"])
    } else {
        "GET"
    };
    let target = match rng.u8(..6) {
        0 => format!("{target}?b=2&a=1"),
        1 => format!("{target}?utm_source=x&a=1"),
        _ => target.to_string(),
    };
    let mut fields: Vec<(&'static str, String)> = Vec::new();
    let optional: &[(&str, &[&str])] = &[
        ("Accept-Language", &["en", "fr", "en-US, fr;q=0.5"]),
        ("Accept-Encoding", &["gzip", "br, gzip", "identity", "gzip;q=0, identity"]),
        ("Cache-Control", &["no-cache", "max-age=0", "no-store", "only-if-cached", "max-stale=10"]),
        ("Pragma", &["no-cache"]),
        ("If-None-Match", &["\"e1\"", "\"other\"", "*", "W/\"w1\""]),
        ("If-Modified-Since", &["Mon, 01 Jun 2026 10:00:00 GMT", "Sat, 01 Jan 2000 00:00:00 GMT"]),
        ("Range", &["bytes=0-1"]),
        ("Authorization", &["Bearer t"]),
        ("Cookie", &["a=1", "a=2"]),
        ("X-Request-Id", &["client-id-1", "with space", "x\u{7f}y"]),
        ("X-Forwarded-For", &["203.0.113.9"]),
        ("Forwarded", &["for=203.0.113.9;proto=https"]),
        ("X-Forwarded-Proto", &["https"]),
        ("X-Forwarded-Host", &["evil.example"]),
        ("Via", &["1.1 edge"]),
        ("Connection", &["keep-alive", "x-hop", "TE", "host, x-request-id"]),
        ("X-Hop", &["1"]),
        ("TE", &["trailers"]),
        ("Max-Forwards", &["0", "5"]),
        ("Surrogate-Capability", &["edge=\"Surrogate/1.0 ESI/1.0\""]),
        ("Proxy-Authorization", &["Basic eDp5"]),
        ("Proxy-Connection", &["keep-alive"]),
        ("Keep-Alive", &["timeout=5"]),
        ("Accept", &["application/json", "*/*"]),
        ("Origin", &["http://o.example"]),
        ("User-Agent", &["alike/1.0"]),
        ("X-Custom", &["c"]),
    ];
    for (name, values) in optional {
        if rng.u8(..8) == 0 {
            fields.push((name, pick(rng, values).to_string()));
        }
    }
    if rng.u8(..20) == 0 {
        fields.push(("X-Request-Id", "second-id".into()));
    }
    let body = match method {
        "POST" => Some(if rng.bool() { "a=1&b=2".to_string() } else { String::new() }),
        "DELETE" if rng.u8(..4) == 0 => Some("x".to_string()),
        _ => None,
    };
    if body.as_ref().is_some_and(|b| !b.is_empty()) && rng.u8(..6) == 0 {
        fields.push(("Expect", "100-continue".into()));
    }
    let chunked = body.is_some() && rng.u8(..4) == 0;
    Ask { method, target, fields, body, chunked }
}

pub fn generate(rng: &mut fastrand::Rng, n: usize) -> Case {
    let path = format!("/alike{n}-");
    let (answer, close_after) = answer(rng);
    let count = rng.usize(1..=3);
    let asks = (0..count).map(|i| ask(rng, &path, i == 0)).collect();
    Case { asks, answer, close_after, pipelined: rng.u8(..5) == 0 }
}

impl Ask {
    pub fn bytes(&self) -> Vec<u8> {
        let mut h = format!("{} {} HTTP/1.1\r\nHost: a\r\n", self.method, self.target);
        for (name, value) in &self.fields {
            h += &format!("{name}: {value}\r\n");
        }
        if let Some(body) = &self.body {
            if self.chunked && body.is_empty() {
                h += "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
            } else if self.chunked {
                h += &format!("Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
            } else {
                h += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
            }
        } else {
            h += "\r\n";
        }
        h.into_bytes()
    }
}

impl Case {
    /// The requests (method, target, fields) and the answer's head, on one line.
    pub fn summary(&self) -> String {
        let asks: Vec<String> = self
            .asks
            .iter()
            .map(|a| {
                let fields: Vec<String> = a.fields.iter().map(|(n, v)| format!("{n}: {v}")).collect();
                let body = match (&a.body, a.chunked) {
                    (Some(_), true) => " +chunked body",
                    (Some(_), false) => " +body",
                    (None, _) => "",
                };
                format!("{} {} [{}]{body}", a.method, a.target, fields.join("; "))
            })
            .collect();
        let head = self.answer.split("\r\n\r\n").filter(|h| h.starts_with("HTTP/")).collect::<Vec<_>>().join(" || ");
        let close = if self.close_after { " (then close)" } else { "" };
        let pipelined = if self.pipelined { "pipelined " } else { "" };
        format!("{pipelined}asks {asks:?}\n      answer {:?}{close}", head.replace("\r\n", " | "))
    }
}
