//! A raw-socket upstream for wire-level tests: it parses each request itself
//! (head with httparse, body by `Content-Length` or chunked), records what
//! arrived as requests (method, target, body), and answers with whatever
//! bytes the test scripted for that target, malformed ones included.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the raw upstream parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSeen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the raw upstream does for a target.
#[derive(Debug, Clone)]
pub enum RawAnswer {
    /// These bytes, then keep the connection.
    Bytes(Vec<u8>),
    /// These bytes, then close.
    BytesThenClose(Vec<u8>),
    /// These bytes before the request body is read, then close.
    Early(Vec<u8>),
    /// Never answer (the connection stays open).
    Hang,
    /// These bytes (a head and part of its body), then nothing more for 60 s.
    Stall(Vec<u8>),
    /// These bytes after this many milliseconds, then keep the connection.
    Late(u64, Vec<u8>),
    /// These bytes on a fresh connection; on one that already carried a
    /// request, close without answering (an upstream that timed out a
    /// keep-alive connection just as it was reused).
    CloseIfReused(Vec<u8>),
    /// These bytes, then this many milliseconds reading nothing more, then
    /// close (a request that came meanwhile, unread, makes it a reset): a
    /// keep-alive timeout racing the next request.
    ThenCloseUnread(u64, Vec<u8>),
    /// A cacheable page built from `X-Forwarded-Proto`/`-Host`, as web
    /// frameworks build absolute URLs.
    ReflectForwarded,
    /// A cacheable page that says what the request's field of this name
    /// held (a backend routing on `X-Original-URL`, say).
    ReflectField(&'static str),
    /// The first bytes to a request with `If-None-Match`, the second to
    /// one without; then keep the connection.
    IfNoneMatch(Vec<u8>, Vec<u8>),
}

#[derive(Clone)]
pub struct RawUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<RawSeen>>>,
    pub answers: Arc<Mutex<HashMap<String, RawAnswer>>>,
}

impl RawUpstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn answer(&self, target: &str, answer: RawAnswer) {
        self.answers.lock().unwrap().insert(target.to_string(), answer);
    }
    /// The answer scripted for the longest prefix of `target` (so `/a?q`
    /// and `/a/%7E` get `/a`'s), else a small 200.
    fn answer_for(&self, target: &str) -> RawAnswer {
        let answers = self.answers.lock().unwrap();
        let best = answers.iter().filter(|(k, _)| target.starts_with(k.as_str())).max_by_key(|(k, _)| k.len());
        best.map_or_else(|| ok("ok"), |(_, a)| a.clone())
    }
    /// Requests received, perfproxy's health probes left out.
    pub fn seen(&self) -> Vec<RawSeen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| !s.headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("user-agent") && v == "perfproxy-health"))
            .cloned()
            .collect()
    }
}

/// A small valid answer with this body.
pub fn ok(body: &str) -> RawAnswer {
    RawAnswer::Bytes(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes())
}

pub async fn spawn_raw_upstream() -> RawUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = RawUpstream { addr: listener.local_addr().unwrap(), seen: Arc::default(), answers: Arc::default() };
    let u = up.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(u.clone(), s));
        }
    });
    up
}

async fn serve(up: RawUpstream, mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut served = 0;
    loop {
        let Some((seen, head_len, body_len)) = next_request(&mut s, &mut buf).await else { return };
        served += 1;
        let answer = up.answer_for(&seen.target);
        if let RawAnswer::Early(bytes) = &answer {
            up.seen.lock().unwrap().push(RawSeen { body: Vec::new(), ..seen });
            let _ = s.write_all(bytes).await;
            return;
        }
        let Some(body) = read_body(&mut s, &mut buf, head_len, body_len).await else { return };
        up.seen.lock().unwrap().push(RawSeen { body, ..seen });
        match answer {
            RawAnswer::Bytes(b) => {
                if s.write_all(&b).await.is_err() {
                    return;
                }
            }
            RawAnswer::BytesThenClose(b) => {
                let _ = s.write_all(&b).await;
                return;
            }
            RawAnswer::CloseIfReused(_) if served > 1 => return,
            RawAnswer::CloseIfReused(b) => {
                if s.write_all(&b).await.is_err() {
                    return;
                }
            }
            RawAnswer::Hang => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            RawAnswer::ThenCloseUnread(ms, b) => {
                let _ = s.write_all(&b).await;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                return;
            }
            RawAnswer::Late(ms, b) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if s.write_all(&b).await.is_err() {
                    return;
                }
            }
            RawAnswer::Stall(b) => {
                let _ = s.write_all(&b).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            RawAnswer::ReflectForwarded => {
                let get = |name: &str| {
                    let seen = up.seen.lock().unwrap();
                    let last = seen.last().unwrap();
                    last.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
                };
                let page = format!(
                    "<script src=\"{}://{}/app.js\"></script>",
                    get("x-forwarded-proto").unwrap_or_default(),
                    get("x-forwarded-host").unwrap_or_default()
                );
                let head = format!(
                    "HTTP/1.1 200 OK\r\nCache-Control: public, max-age=60\r\nContent-Length: {}\r\n\r\n",
                    page.len()
                );
                if s.write_all(format!("{head}{page}").as_bytes()).await.is_err() {
                    return;
                }
            }
            RawAnswer::ReflectField(name) => {
                let seen = up.seen.lock().unwrap().last().cloned().unwrap();
                let value = seen.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
                let page = format!("page for {}", value.unwrap_or_default());
                let head = format!(
                    "HTTP/1.1 200 OK\r\nCache-Control: public, max-age=60\r\nContent-Length: {}\r\n\r\n",
                    page.len()
                );
                if s.write_all(format!("{head}{page}").as_bytes()).await.is_err() {
                    return;
                }
            }
            RawAnswer::IfNoneMatch(conditional, plain) => {
                let seen = up.seen.lock().unwrap().last().cloned().unwrap();
                let has = seen.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("if-none-match"));
                if s.write_all(if has { &conditional } else { &plain }).await.is_err() {
                    return;
                }
            }
            RawAnswer::Early(_) => unreachable!(),
        }
    }
}

/// How a request body is framed.
enum BodyLen {
    Length(usize),
    Chunked,
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

async fn next_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(RawSeen, usize, BodyLen)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                let get =
                    |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
                let len = if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
                    BodyLen::Chunked
                } else {
                    BodyLen::Length(get("content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0))
                };
                let seen = RawSeen {
                    method: req.method.unwrap_or("").to_string(),
                    target: req.path.unwrap_or("").to_string(),
                    headers,
                    body: Vec::new(),
                };
                return Some((seen, n, len));
            }
            Ok(httparse::Status::Partial) => {
                if !fill(s, buf).await {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}

async fn read_body(s: &mut TcpStream, buf: &mut Vec<u8>, head_len: usize, len: BodyLen) -> Option<Vec<u8>> {
    buf.drain(..head_len);
    match len {
        BodyLen::Length(n) => {
            while buf.len() < n {
                if !fill(s, buf).await {
                    return None;
                }
            }
            Some(buf.drain(..n).collect())
        }
        BodyLen::Chunked => read_chunked(s, buf).await,
    }
}

/// A chunked body off `s` (`buf` holding what was read past the head):
/// its data, trailers skipped; `None` if it ends early or is malformed.
pub async fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
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
            // Trailers, then the blank line.
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
