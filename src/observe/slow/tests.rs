//! Unit tests of `slow`.

use super::*;

fn backend(pid: i32, since_ms: f64, wait: &str) -> Backend {
    Backend {
        pid,
        query: Some("SELECT pg_sleep($1)".into()),
        query_id: Some(7),
        state: "active".into(),
        wait_event_type: Some("Timeout".into()),
        wait_event: Some(wait.into()),
        calls: None,
        mean_ms: None,
        since_ms,
    }
}

fn ended(started: Instant, duration: Duration, id: &[u8]) -> Ended {
    Ended {
        route: RouteId(1),
        status: 200,
        started,
        duration,
        upstream: Some(duration),
        overhead: Duration::from_micros(150),
        trace: None,
        request_id: String::from_utf8_lossy(id).into_owned(),
        client: Some("10.0.0.7".parse().expect("an address")),
    }
}

fn look(server_now_ms: f64, backends: Vec<Backend>) -> Activity {
    Activity { server_now_ms, backends }
}

#[test]
fn a_slow_request_gets_each_backend_seen_while_it_ran_once_longest_first() {
    let slow = SlowRequests::default();
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    // Before the request: not its evidence.
    slow.sampled(at(0), look(1000.0, vec![backend(9, 900.0, "PgSleep")]), None);
    slow.sampled(at(300), look(1300.0, vec![backend(1, 0.0, "PgSleep"), backend(2, 1200.0, "PgSleep")]), Some(t0));
    // pid 2 moved on to another statement: one entry for it, the longer.
    let three = vec![backend(1, 0.0, "Other"), backend(2, 1550.0, "PgSleep"), backend(3, 1500.0, "PgSleep")];
    slow.sampled(at(600), look(1600.0, three), Some(t0));
    slow.ended(ended(at(100), Duration::from_millis(600), b"rid-1"));
    // A look after it ended counts only as far as the request's end.
    slow.sampled(at(900), look(1900.0, vec![backend(1, 0.0, "Later")]), Some(t0));
    let kept = slow.latest();
    assert_eq!(kept.len(), 1);
    let seen: Vec<(i32, f64, Option<&str>)> =
        kept[0].database.iter().map(|s| (s.backend.pid, s.running_ms, s.backend.wait_event.as_deref())).collect();
    assert_eq!(seen, [(1, 1700.0, Some("Later")), (2, 100.0, Some("PgSleep")), (3, 100.0, Some("PgSleep"))]);
    assert_eq!((kept[0].request_id.as_str(), kept[0].client.as_str()), ("rid-1", "10.0.0.7"));
    assert_eq!(kept[0].latency_ms, 600.0);
}

#[test]
fn keep_bounds_the_list_and_statements_before_the_oldest_request_go() {
    let slow = SlowRequests::default();
    slow.set_keep(3);
    let t0 = Instant::now();
    for i in 0..5 {
        slow.ended(ended(t0, Duration::from_millis(i), &[b'x'; 100]));
    }
    let kept = slow.latest();
    assert_eq!(kept.iter().map(|r| r.latency_ms).collect::<Vec<_>>(), [4.0, 3.0, 2.0]);
    assert_eq!(kept[0].request_id.len(), 100, "a long id is kept whole");
    for i in 0..10u64 {
        let at = t0 + Duration::from_millis(i * 10);
        slow.sampled(at, look(0.0, vec![backend(i as i32, i as f64, "PgSleep")]), Some(t0));
    }
    assert_eq!(slow.held().0, 10);
    slow.sampled(t0 + Duration::from_millis(200), Activity::default(), Some(t0 + Duration::from_millis(45)));
    assert_eq!(slow.held().0, 5, "statements last seen before the oldest request in flight are dropped");
    // A slow request still waiting keeps what it may need.
    slow.ended(ended(t0, Duration::from_millis(5), b"w"));
    slow.sampled(t0 + Duration::from_millis(300), Activity::default(), None);
    assert_eq!(slow.held().0, 5);
    slow.forget_samples();
    assert_eq!(slow.held().0, 0);
}
