//! Reading answers off a raw connection (interim ones, every framing) and
//! telling what differs between the lanes, kind by kind.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::support::raw::read_chunked;
use super::Seen;

/// One answer as the client read it.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status_line: String,
    pub fields: Vec<(String, Vec<String>)>,
    pub framing: &'static str,
    pub body: Vec<u8>,
}

/// Fields grouped by name (lower case), names in order of first appearance.
pub fn grouped(pairs: impl Iterator<Item = (String, String)>) -> Vec<(String, Vec<String>)> {
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
pub async fn read_replies(s: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Vec<Option<Reply>> {
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
        let (framing, body) = if (100..200).contains(&status) || head_request || status == 204 || status == 304 {
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

/// What differs between the lanes' answers: (kind, detail).
pub fn differences(e: &[Vec<Option<Reply>>], h: &[Vec<Option<Reply>>]) -> Vec<(String, String)> {
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
pub fn upstream_differences(e: &Seen, h: &Seen) -> Vec<(String, String)> {
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
