//! Field for field: the two lanes give a client the same answer and the
//! upstream the same request. Generated well-formed exchanges (methods,
//! request fields perfproxy reads or rewrites, upstream answers of many
//! statuses, framings and fields, the same URL asked again on the same
//! connection so hits and revalidations come into it) run through the
//! express lane and through hyper, each in front of its own raw upstream.
//! Compared: every answer's status line, fields (names in order of first
//! appearance, each name's values in order), framing and body, whether the
//! connection stayed open; and every request the upstream saw (method,
//! target, fields, body). Values that differ by nature are masked: `Date`,
//! an `X-Request-Id` perfproxy made, `Server-Timing` durations, `Age` and
//! `ttl=` seconds, each side's own addresses.
//!
//! `PERFPROXY_ALIKE_CASES` (default 400) and `PERFPROXY_ALIKE_SEED` set the
//! run; a failure prints its seed and case.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::raw::{spawn_raw_upstream, RawAnswer, RawUpstream};
use support::spawn_proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request of a case: its head's extra fields, and a body.
#[derive(Debug, Clone)]
struct Ask {
    method: &'static str,
    target: String,
    fields: Vec<(&'static str, String)>,
    body: Option<String>,
}

#[derive(Debug, Clone)]
struct Case {
    asks: Vec<Ask>,
    /// What the upstream answers to the case's path.
    answer: String,
    close_after: bool,
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
        ("Connection", &["keep-alive", "x-hop", "TE"]),
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
    Ask { method, target, fields, body }
}

fn generate(rng: &mut fastrand::Rng, n: usize) -> Case {
    let path = format!("/alike{n}-");
    let (answer, close_after) = answer(rng);
    let count = rng.usize(1..=3);
    let asks = (0..count).map(|i| ask(rng, &path, i == 0)).collect();
    Case { asks, answer, close_after }
}

impl Ask {
    fn bytes(&self) -> Vec<u8> {
        let mut h = format!("{} {} HTTP/1.1\r\nHost: a\r\n", self.method, self.target);
        for (name, value) in &self.fields {
            h += &format!("{name}: {value}\r\n");
        }
        if let Some(body) = &self.body {
            h += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
        } else {
            h += "\r\n";
        }
        h.into_bytes()
    }
}

/// One answer as the client read it.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    status_line: String,
    fields: Vec<(String, Vec<String>)>,
    framing: &'static str,
    body: Vec<u8>,
}

/// Fields grouped by name (lower case), names in order of first appearance.
fn grouped(pairs: impl Iterator<Item = (String, String)>) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in pairs {
        let name = name.to_ascii_lowercase();
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => out.push((name, vec![value])),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16384];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

/// Reads answers to one request (interim ones included) off `s`; `None`
/// for what could not be read as one.
async fn read_replies(s: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Vec<Option<Reply>> {
    let mut replies = Vec::new();
    loop {
        let (status, status_line, pairs, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let code = resp.code.unwrap_or(0);
                    let line = format!("{code} {}", resp.reason.unwrap_or(""));
                    let pairs: Vec<(String, String)> = resp
                        .headers
                        .iter()
                        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect();
                    break (code, line, pairs, n);
                }
                Ok(httparse::Status::Partial) if fill(s, buf).await => {}
                _ => {
                    replies.push(None);
                    return replies;
                }
            }
        };
        buf.drain(..head_len);
        let fields = grouped(pairs.into_iter());
        let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.join(", "));
        let (framing, body) = if (100..200).contains(&status) {
            ("none", Vec::new())
        } else if head_request || status == 204 || status == 304 {
            ("none", Vec::new())
        } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            let Some(body) = read_chunked(s, buf).await else {
                replies.push(None);
                return replies;
            };
            ("chunked", body)
        } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            while buf.len() < n {
                if !fill(s, buf).await {
                    replies.push(None);
                    return replies;
                }
            }
            ("length", buf.drain(..n).collect())
        } else {
            while fill(s, buf).await {}
            ("close", std::mem::take(buf))
        };
        replies.push(Some(Reply { status_line, fields, framing, body }));
        if !(100..200).contains(&status) || status == 101 {
            return replies;
        }
    }
}

async fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if !fill(s, buf).await {
                return None;
            }
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        if size == 0 {
            loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    buf.drain(..i + 2);
                    if i == 0 {
                        return Some(body);
                    }
                    continue;
                }
                if !fill(s, buf).await {
                    return None;
                }
            }
        }
        while buf.len() < size + 2 {
            if !fill(s, buf).await {
                return None;
            }
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// Everything the client read, request by request, and whether the
/// connection was open at the end.
async fn run(addr: SocketAddr, case: &Case) -> (Vec<Vec<Option<Reply>>>, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let mut all = Vec::new();
    for ask in &case.asks {
        if s.write_all(&ask.bytes()).await.is_err() {
            break;
        }
        let replies = read_replies(&mut s, &mut buf, ask.method == "HEAD").await;
        let closing = replies.iter().any(|r| {
            r.as_ref().is_none_or(|r| {
                r.framing == "close"
                    || r.fields.iter().any(|(n, v)| n == "connection" && v.iter().any(|v| v.contains("close")))
            })
        });
        all.push(replies);
        if closing {
            return (all, false);
        }
    }
    let mut probe = [0u8; 1];
    let open = matches!(tokio::time::timeout(Duration::from_millis(50), s.read(&mut probe)).await, Err(_));
    (all, open)
}

/// Masks what differs by nature between two runs: the clock, ids
/// perfproxy made, durations, each side's addresses.
struct Masks {
    addresses: Vec<(String, &'static str)>,
    client_ids: Vec<String>,
}

impl Masks {
    fn value(&self, name: &str, value: &str) -> String {
        let mut v = value.to_string();
        for (addr, label) in &self.addresses {
            v = v.replace(addr.as_str(), label);
        }
        match name {
            "date" => "<date>".into(),
            "x-request-id" | "traceparent" if !self.client_ids.iter().any(|c| c == value) => "<made>".into(),
            "server-timing" | "age" | "cache-status" | "x-cache" => digits_masked(&v),
            _ => v,
        }
    }
    fn fields(&self, fields: &[(String, Vec<String>)]) -> Vec<(String, Vec<String>)> {
        fields.iter().map(|(n, vs)| (n.clone(), vs.iter().map(|v| self.value(n, v)).collect())).collect()
    }
}

/// Numbers become `N` (durations, ages, `ttl=` seconds).
fn digits_masked(v: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in v.chars() {
        if c.is_ascii_digit() || (in_number && c == '.') {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

type Seen = Vec<(String, String, Vec<(String, Vec<String>)>, Vec<u8>)>;

fn seen_for(up: &RawUpstream, path: &str, masks: &Masks) -> Seen {
    up.seen()
        .into_iter()
        .filter(|r| r.target.starts_with(path))
        .map(|r| (r.method, r.target, masks.fields(&grouped(r.headers.into_iter())), r.body))
        .collect()
}

async fn lanes_alike(config: &str, seed_salt: u64) {
    let cases: usize = std::env::var("PERFPROXY_ALIKE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    let seed: u64 =
        std::env::var("PERFPROXY_ALIKE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| fastrand::u64(..))
            ^ seed_salt;
    println!("lanes alike: {cases} cases, seed {seed}");
    let (up_e, up_h) = (spawn_raw_upstream().await, spawn_raw_upstream().await);
    let config = support::write_config(config);
    let express = spawn_proxy(&up_e.url(), &["--express-lane", "true", "--config", &config]).await;
    let hyper = spawn_proxy(&up_h.url(), &["--express-lane", "false", "--config", &config]).await;
    let masks_e = Masks {
        addresses: vec![(up_e.addr.to_string(), "<upstream>"), (express.addr.to_string(), "<proxy>")],
        client_ids: vec!["client-id-1".into(), "second-id".into()],
    };
    let masks_h = Masks {
        addresses: vec![(up_h.addr.to_string(), "<upstream>"), (hyper.addr.to_string(), "<proxy>")],
        client_ids: masks_e.client_ids.clone(),
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let all: Vec<Case> = (0..cases).map(|n| generate(&mut rng, n)).collect();
    for (n, case) in all.iter().enumerate() {
        let path = format!("/alike{n}-");
        let answer = case.answer.clone().into_bytes();
        let answer = if case.close_after { RawAnswer::BytesThenClose(answer) } else { RawAnswer::Bytes(answer) };
        up_e.answer(&path, answer.clone());
        up_h.answer(&path, answer);
    }
    let mut failures: Vec<(usize, Case, Vec<(String, String)>)> = Vec::new();
    for (batch_no, batch) in all.chunks(16).enumerate() {
        let runs: Vec<_> = batch
            .iter()
            .cloned()
            .map(|case| {
                let (e, h) = (express.addr, hyper.addr);
                tokio::spawn(async move {
                    let (a, b) = tokio::join!(run(e, &case), run(h, &case));
                    (case, a, b)
                })
            })
            .collect();
        for (i, r) in runs.into_iter().enumerate() {
            let (case, (on_e, open_e), (on_h, open_h)) = r.await.unwrap();
            let n = batch_no * 16 + i;
            let path = format!("/alike{n}-");
            let client = |replies: &Vec<Vec<Option<Reply>>>, masks: &Masks| -> Vec<Vec<Option<Reply>>> {
                replies
                    .iter()
                    .map(|rs| {
                        rs.iter()
                            .map(|r| {
                                r.as_ref().map(|r| Reply {
                                    status_line: r.status_line.clone(),
                                    fields: masks.fields(&r.fields),
                                    framing: r.framing,
                                    body: r.body.clone(),
                                })
                            })
                            .collect()
                    })
                    .collect()
            };
            let (ce, ch) = (client(&on_e, &masks_e), client(&on_h, &masks_h));
            let (se, sh) = (seen_for(&up_e, &path, &masks_e), seen_for(&up_h, &path, &masks_h));
            let mut diffs = differences(&ce, &ch);
            if open_e != open_h {
                diffs.push(("connection open after".into(), format!("express {open_e}, hyper {open_h}")));
            }
            diffs.extend(upstream_differences(&se, &sh));
            if !diffs.is_empty() {
                failures.push((n, case, diffs));
            }
        }
    }
    for proxy in [&express, &hyper] {
        assert_eq!(support::get(&proxy.url("/after")).await.status, 200, "still serving");
    }
    express.shutdown().await;
    hyper.shutdown().await;
    if failures.is_empty() {
        return;
    }
    // Each kind of difference once, with the first cases that show it.
    let mut kinds: Vec<(String, usize, Vec<String>)> = Vec::new();
    for (n, case, diffs) in &failures {
        for (kind, detail) in diffs {
            let at = match kinds.iter().position(|(k, _, _)| k == kind) {
                Some(at) => at,
                None => {
                    kinds.push((kind.clone(), 0, Vec::new()));
                    kinds.len() - 1
                }
            };
            kinds[at].1 += 1;
            if kinds[at].2.len() < 2 {
                kinds[at].2.push(format!("case {n}: {detail}\n      {}", case.summary()));
            }
        }
    }
    let report: Vec<String> =
        kinds.iter().map(|(k, count, examples)| format!("{k} ({count}):\n    {}", examples.join("\n    "))).collect();
    panic!("{} of {cases} cases differ between the lanes (seed {seed}):\n{}", failures.len(), report.join("\n"));
}

/// What differs between the lanes' answers: (kind, detail).
fn differences(e: &[Vec<Option<Reply>>], h: &[Vec<Option<Reply>>]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if e.len() != h.len() {
        out.push(("requests answered".into(), format!("express {}, hyper {}", e.len(), h.len())));
    }
    for (i, (re, rh)) in e.iter().zip(h).enumerate() {
        if re.len() != rh.len() {
            let lines = |rs: &Vec<Option<Reply>>| -> Vec<String> {
                rs.iter().map(|r| r.as_ref().map_or("-".into(), |r| r.status_line.clone())).collect()
            };
            out.push((
                "answers to one request".into(),
                format!("#{i}: express {:?}, hyper {:?}", lines(re), lines(rh)),
            ));
            continue;
        }
        for (a, b) in re.iter().zip(rh) {
            let (a, b) = match (a, b) {
                (Some(a), Some(b)) => (a, b),
                (None, None) => continue,
                _ => {
                    out.push((
                        "unreadable answer".into(),
                        format!("#{i}: express {:?}, hyper {:?}", a.is_some(), b.is_some()),
                    ));
                    continue;
                }
            };
            if a.status_line != b.status_line {
                out.push((
                    "status line".into(),
                    format!("#{i}: express {:?}, hyper {:?}", a.status_line, b.status_line),
                ));
            }
            if a.framing != b.framing {
                out.push((
                    "framing".into(),
                    format!("#{i} {}: express {}, hyper {}", a.status_line, a.framing, b.framing),
                ));
            }
            if a.body != b.body {
                out.push(("body".into(), format!("#{i}: express {} bytes, hyper {}", a.body.len(), b.body.len())));
            }
            let names = a.fields.iter().chain(&b.fields).map(|(n, _)| n.clone());
            let mut seen = Vec::new();
            for name in names {
                if seen.contains(&name) {
                    continue;
                }
                let get = |r: &Reply| r.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
                let (va, vb) = (get(a), get(b));
                if va != vb {
                    out.push((
                        format!("field {name}"),
                        format!("#{i} {}: express {va:?}, hyper {vb:?}", a.status_line),
                    ));
                }
                seen.push(name);
            }
        }
    }
    out
}

/// What differs between the requests the two upstreams saw.
fn upstream_differences(e: &Seen, h: &Seen) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let line = |s: &Seen| -> Vec<String> { s.iter().map(|(m, t, _, _)| format!("{m} {t}")).collect() };
    if line(e) != line(h) {
        out.push(("upstream requests".into(), format!("express {:?}, hyper {:?}", line(e), line(h))));
        return out;
    }
    for (i, (a, b)) in e.iter().zip(h).enumerate() {
        if a.3 != b.3 {
            out.push(("upstream body".into(), format!("#{i}: express {:?}, hyper {:?}", a.3, b.3)));
        }
        let mut seen = Vec::new();
        for (name, _) in a.2.iter().chain(&b.2) {
            if seen.contains(name) {
                continue;
            }
            let get = |f: &Vec<(String, Vec<String>)>| f.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
            let (va, vb) = (get(&a.2), get(&b.2));
            if va != vb {
                out.push((format!("upstream field {name}"), format!("#{i} {}: express {va:?}, hyper {vb:?}", a.0)));
            }
            seen.push(name.clone());
        }
    }
    out
}

impl Case {
    /// The requests (method, target, fields) and the answer's head, on one line.
    fn summary(&self) -> String {
        let asks: Vec<String> = self
            .asks
            .iter()
            .map(|a| {
                let fields: Vec<String> = a.fields.iter().map(|(n, v)| format!("{n}: {v}")).collect();
                let body = if a.body.is_some() { " +body" } else { "" };
                format!("{} {} [{}]{body}", a.method, a.target, fields.join("; "))
            })
            .collect();
        let head = self.answer.split("\r\n\r\n").filter(|h| h.starts_with("HTTP/")).collect::<Vec<_>>().join(" || ");
        let close = if self.close_after { " (then close)" } else { "" };
        format!("asks {asks:?}\n      answer {:?}{close}", head.replace("\r\n", " | "))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_lanes_answer_alike_field_for_field_cache_on() {
    lanes_alike("upstream_timeout_ms = 3000\n[cache]\nenabled = true\n", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_lanes_answer_alike_field_for_field_compression_on() {
    lanes_alike(
        "upstream_timeout_ms = 3000\n[cache]\nenabled = true\n[compression]\nenabled = true\nmin_bytes = 64\n",
        0x5eed,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_lanes_answer_alike_field_for_field_cache_off() {
    lanes_alike("upstream_timeout_ms = 3000\n[cache]\nenabled = false\n", 0xcafe).await;
}
