//! Unit tests of `alerts`.

use super::*;

fn reading(value: f64) -> Reading {
    Reading {
        rule: "error_rate",
        subject: None,
        value: Some(value),
        threshold: 0.05,
        above: true,
        unit: "",
        ..Reading::default()
    }
}

fn timing(hold: u64, keep: u64) -> Timing {
    Timing { hold: Duration::from_secs(hold), keep_firing: Duration::from_secs(keep) }
}

#[test]
fn fires_after_holding_and_resolves_after_staying_clear() {
    let alerts = Alerts::new(None, None);
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let t = timing(30, 60);
    alerts.evaluate(vec![reading(0.06)], at(0), t);
    assert!(alerts.firing().is_empty(), "pending, not firing");
    alerts.evaluate(vec![reading(0.04)], at(5), t);
    alerts.evaluate(vec![reading(0.06)], at(10), t);
    alerts.evaluate(vec![reading(0.06)], at(35), t);
    assert!(alerts.firing().is_empty(), "a break restarts the hold: 25 s so far");
    alerts.evaluate(vec![reading(0.07)], at(40), t);
    assert_eq!(alerts.firing().len(), 1, "held 30 s at every evaluation");
    let since = alerts.firing()[0].since.clone();
    // A bimodal value jumping across the threshold keeps it firing, once.
    for (s, v) in [(45, 0.01), (50, 0.2), (55, 0.02), (90, 0.09), (100, 0.03), (150, 0.04)] {
        alerts.evaluate(vec![reading(v)], at(s), t);
        let now = alerts.firing();
        assert_eq!(now.len(), 1, "at {s} s");
        assert_eq!(now[0].since, since);
        assert_eq!(now[0].value, Some(v), "the value is current");
        assert!(now[0].message.contains(&format!("{v}")), "the message is current: {}", now[0].message);
    }
    assert_eq!(alerts.firing()[0].severity, "warning");
    alerts.evaluate(vec![reading(0.04)], at(159), t);
    assert_eq!(alerts.firing().len(), 1, "clear for 59 s only");
    alerts.evaluate(vec![reading(0.045)], at(160), t);
    assert!(alerts.firing().is_empty(), "clear for 60 s: resolved");
    assert!(alerts.states.lock().unwrap().is_empty(), "nothing kept for a cleared subject");
}

#[test]
fn severity_follows_and_a_silent_subject_resolves() {
    let alerts = Alerts::new(None, None);
    let t0 = Instant::now();
    alerts.evaluate(vec![reading(0.06)], t0, timing(0, 0));
    assert_eq!(alerts.firing()[0].severity, "warning");
    alerts.evaluate(vec![reading(0.2)], t0 + Duration::from_secs(1), timing(0, 10));
    assert_eq!(alerts.firing()[0].severity, "critical", "severity is current");
    alerts.evaluate(vec![], t0 + Duration::from_secs(2), timing(0, 10));
    assert_eq!(alerts.firing().len(), 1, "not reported for 0 s");
    alerts.evaluate(vec![], t0 + Duration::from_secs(12), timing(0, 10));
    assert!(alerts.firing().is_empty(), "not reported for 10 s: resolved");
}

#[test]
fn an_empty_window_reads_as_no_data_and_a_resolved_alert_carries_the_clearing_value() {
    let alerts = Alerts::new(None, None);
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    alerts.evaluate(vec![reading(0.909)], at(0), timing(0, 10));
    assert_eq!(alerts.firing()[0].value, Some(0.909));
    // Too few requests to judge: no data, not the last value seen.
    let thin = Reading { value: None, ..reading(0.0) };
    alerts.evaluate(vec![thin.clone()], at(1), timing(0, 10));
    let a = &alerts.firing()[0];
    assert_eq!(a.value, None, "{a:?}");
    assert_eq!(a.message, "no data on the error rate: fewer than 20 requests in the window");
    assert_eq!(a.severity, "critical", "severity stays what was last measured");
    let json = serde_json::to_value(a).unwrap();
    assert!(json["value"].is_null(), "{json}");
    // Traffic back, clear: the value follows; it resolves carrying the
    // value that cleared it, not the firing one.
    alerts.evaluate(vec![reading(0.01)], at(2), timing(0, 10));
    assert_eq!(alerts.firing()[0].value, Some(0.01));
    let events = alerts.evaluate(vec![reading(0.02)], at(12), timing(0, 10));
    let [("resolved", resolved)] = &events[..] else { panic!("one resolved event: {events:?}") };
    assert_eq!(resolved.value, Some(0.02), "the clearing value");
    assert!(resolved.message.contains("is 0.02 (below the threshold of 0.05)"), "{}", resolved.message);
    assert!(alerts.firing().is_empty());
    // Resolved by silence: no value, and the message says so.
    let events = alerts.evaluate(vec![reading(0.5)], at(20), timing(0, 10));
    assert_eq!(events[0].0, "firing");
    alerts.evaluate(vec![thin], at(21), timing(0, 10));
    let events = alerts.evaluate(vec![], at(31), timing(0, 10));
    let [("resolved", resolved)] = &events[..] else { panic!("one resolved event: {events:?}") };
    assert_eq!(resolved.value, None);
    assert!(resolved.message.starts_with("no data"), "{}", resolved.message);
}
