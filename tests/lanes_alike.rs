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

#[path = "lanes_alike/cases.rs"]
mod cases;
#[path = "lanes_alike/compare.rs"]
mod compare;

use cases::{generate, Case};
use compare::{differences, grouped, read_replies, upstream_differences, Reply};

/// Everything the client read, request by request, and whether the
/// connection was open at the end.
async fn run(addr: SocketAddr, case: &Case) -> (Vec<Vec<Option<Reply>>>, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let mut all = Vec::new();
    if case.pipelined {
        let stream: Vec<u8> = case.asks.iter().flat_map(|a| a.bytes()).collect();
        let _ = s.write_all(&stream).await;
    }
    for ask in &case.asks {
        if !case.pipelined && s.write_all(&ask.bytes()).await.is_err() {
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
    let open = tokio::time::timeout(Duration::from_millis(50), s.read(&mut probe)).await.is_err();
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

/// What differs: (kind, detail) pairs.
type Diffs = Vec<(String, String)>;

type Seen = Vec<(String, String, Vec<(String, Vec<String>)>, Vec<u8>)>;

/// What the upstream saw for one case, in a set order: a background
/// revalidation (`stale-while-revalidate`) races the case's next request
/// to the upstream, on either lane.
fn seen_for(up: &RawUpstream, path: &str, masks: &Masks) -> Seen {
    let mut seen: Seen = up
        .seen()
        .into_iter()
        .filter(|r| r.target.starts_with(path))
        .map(|r| (r.method, r.target, masks.fields(&grouped(r.headers.into_iter())), r.body))
        .collect();
    seen.sort_by_cached_key(|s| format!("{s:?}"));
    seen
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
    let mut failures: Vec<(usize, Case, Diffs)> = Vec::new();
    for (batch_no, batch) in all.chunks(16).enumerate() {
        let runs = support::on_both_lanes(batch, (express.addr, hyper.addr), |addr, case: Case| async move {
            run(addr, &case).await
        });
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
