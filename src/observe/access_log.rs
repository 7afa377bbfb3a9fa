//! The access log (`[access_log]`): one line per request, JSON or text, to
//! stdout or a file. The request path only fills an [`Entry`] when the log
//! is on and the request is sampled, and hands it to one writer thread
//! through a bounded queue (`buffer_lines`); when the queue is full the line
//! is dropped and counted (`perfproxy_access_log_dropped_total`), so a slow
//! disk or a stuck pipe never blocks a request. Lines are formatted on the
//! writer thread.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::settings::AccessLogSettings;

/// What one request's line says, taken on the request path.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub client: String,
    pub method: String,
    /// The route label (`GET /api/users/:id`).
    pub route: Arc<str>,
    /// The target, its query dropped unless `include_query`.
    pub path: String,
    pub status: u16,
    pub duration: Duration,
    pub upstream: Option<Duration>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// `HIT`, `MISS`, `BYPASS`, `STALE`, or empty (cache off, own answers).
    pub cache: &'static str,
    pub request_id: String,
    pub user_agent: String,
    /// The request's trace (when tracing is on), sampled or not.
    pub trace_id: Option<String>,
}

impl Entry {
    /// A request's line as far as its head tells: the rest is filled in
    /// as it is answered.
    pub fn new(log: &AccessLog, client: &str, method: &str, target: &str, route: Arc<str>) -> Entry {
        let path = if log.include_query { target } else { target.split('?').next().unwrap_or(target) };
        Entry { client: client.into(), method: method.into(), route, path: path.into(), ..Entry::default() }
    }
}

/// The `X-Cache` value an answer carries, as the log writes it.
pub fn cache_outcome(x_cache: &[u8]) -> &'static str {
    match x_cache {
        b"HIT" => "HIT",
        b"MISS" => "MISS",
        b"BYPASS" => "BYPASS",
        b"STALE" => "STALE",
        _ => "",
    }
}

/// The access log: its settings and the queue to the writer thread.
#[derive(Debug)]
pub struct AccessLog {
    queue: SyncSender<(SystemTime, Entry)>,
    sample: f64,
    slow_only: bool,
    pub include_query: bool,
    dropped: AtomicU64,
}

impl AccessLog {
    /// Starts the writer thread; `None` when the log is off. The file (or
    /// stdout) is opened by the writer, so an unwritable path never delays
    /// start-up: its lines are dropped and counted.
    pub fn start(settings: &AccessLogSettings) -> Option<Arc<AccessLog>> {
        if !settings.enabled {
            return None;
        }
        let (queue, lines) = sync_channel(settings.buffer_lines.max(1) as usize);
        let (path, json) = (settings.path.clone(), settings.format == "json");
        std::thread::Builder::new()
            .name("perfproxy-access-log".into())
            .spawn(move || write_lines(&path, json, lines))
            .expect("a thread can be started at start-up");
        Some(Arc::new(AccessLog {
            queue,
            sample: settings.sample,
            slow_only: settings.slow_only,
            include_query: settings.include_query,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Whether this request is to be logged, as far as is known when it
    /// begins (`sample`).
    pub fn sampled(&self) -> bool {
        self.sample >= 1.0 || (crate::wire::http1::random_u64() as f64 / u64::MAX as f64) < self.sample
    }

    /// Queues a finished request's line; never waits. `slow`: it took
    /// longer than `SLOW_REQUEST_THRESHOLD`.
    pub fn log(&self, entry: Entry, slow: bool) {
        if self.slow_only && !slow {
            return;
        }
        match self.queue.try_send((SystemTime::now(), entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped so far (a full queue, or a writer that could not open its file).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A line as JSON.
#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    client: &'a str,
    method: &'a str,
    route: &'a str,
    path: &'a str,
    status: u16,
    duration_ms: f64,
    upstream_ms: Option<f64>,
    bytes_in: u64,
    bytes_out: u64,
    cache: &'a str,
    /// `null` when tracing is off.
    trace_id: Option<&'a str>,
    request_id: &'a str,
    user_agent: &'a str,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn format(at: SystemTime, e: &Entry, json: bool) -> String {
    let time = humantime::format_rfc3339_millis(at).to_string();
    if json {
        let line = JsonLine {
            time,
            client: &e.client,
            method: &e.method,
            route: &e.route,
            path: &e.path,
            status: e.status,
            duration_ms: ms(e.duration),
            upstream_ms: e.upstream.map(ms),
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            cache: e.cache,
            trace_id: e.trace_id.as_deref(),
            request_id: &e.request_id,
            user_agent: &e.user_agent,
        };
        return serde_json::to_string(&line).expect("plain fields serialise");
    }
    let upstream = e.upstream.map_or_else(|| "-".to_string(), |d| ms(d).to_string());
    let cache = if e.cache.is_empty() { "-" } else { e.cache };
    let mut line = format!("{time} {} \"", e.client);
    quoted_into(&mut line, &e.method);
    line.push(' ');
    quoted_into(&mut line, &e.path);
    line.push_str(&format!("\" {} {} {upstream} {} {} {cache} \"", e.status, ms(e.duration), e.bytes_in, e.bytes_out));
    for (i, value) in [&*e.route, &e.request_id, &e.user_agent].into_iter().enumerate() {
        if i > 0 {
            line.push_str("\" \"");
        }
        quoted_into(&mut line, value);
    }
    line.push('"');
    line
}

/// Appends a value for the inside of a text line's quotes: `"`, `\` and
/// control bytes escaped as `\xHH` (`"` is `\x22`), so no client value can
/// end its field or the line and forge another.
fn quoted_into(line: &mut String, value: &str) {
    for c in value.chars() {
        if c == '"' || c == '\\' || c.is_control() {
            for b in c.to_string().bytes() {
                line.push_str(&format!("\\x{b:02X}"));
            }
        } else {
            line.push(c);
        }
    }
}

/// The writer thread: opens its output, then writes lines as they come,
/// flushing whenever the queue is empty.
fn write_lines(path: &str, json: bool, lines: Receiver<(SystemTime, Entry)>) {
    let out: Box<dyn Write> = if path == "stdout" {
        Box::new(std::io::stdout())
    } else {
        match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Box::new(f),
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "access log cannot be opened: its lines are dropped");
                return;
            }
        }
    };
    let mut out = std::io::BufWriter::new(out);
    while let Ok((at, entry)) = lines.recv() {
        let _ = writeln!(out, "{}", format(at, &entry, json));
        let mut more = lines.try_iter();
        for (at, entry) in more.by_ref() {
            let _ = writeln!(out, "{}", format(at, &entry, json));
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_quote_and_escape_what_clients_control() {
        let entry = Entry {
            client: "10.0.0.1".into(),
            method: "GET".into(),
            route: "GET /a".into(),
            path: "/a\"b".into(),
            status: 200,
            request_id: "x\" 500 \"forged\\\n".into(),
            user_agent: "ua \"q\"\u{7f}".into(),
            ..Entry::default()
        };
        let line = format(SystemTime::UNIX_EPOCH, &entry, false);
        assert!(line.contains(" \"GET /a\\x22b\" 200 "), "{line}");
        assert!(line.ends_with(" \"GET /a\" \"x\\x22 500 \\x22forged\\x5C\\x0A\" \"ua \\x22q\\x22\\x7F\""), "{line}");
        assert_eq!(line.matches('"').count(), 8, "four quoted fields: {line}");
        assert!(!line.contains('\n'));
    }
}
