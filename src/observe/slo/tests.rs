//! Globs, durations in words, and the burn-rate alert's escalation and resolution.

use super::*;

fn outcomes(route: u32, failed: bool, at_secs: u32, n: usize) -> Vec<Outcome> {
    vec![Outcome { route: RouteId(route), micros: 1_000, failed, at_secs }; n]
}

#[test]
fn a_warning_escalates_to_critical_and_resolves_on_the_row_that_fired() {
    let objective = Objective { name: "api".into(), route: None, objective: 0.9, latency_ms: None, period_days: 1 };
    let rows = vec![
        BurnRow { long_ms: 600_000, short_ms: 60_000, burn: 1.0, severity: "warning" },
        BurnRow { long_ms: 60_000, short_ms: 10_000, burn: 5.0, severity: "critical" },
    ];
    let slos = Slos::new(vec![objective], rows);
    let label = |_| Arc::from("GET /");
    let epoch = 1_800_000_000;
    // 20 % bad for 5 minutes: a burn of 2 over every window: the warning.
    for t in 0..300 {
        let bad = t % 5 == 0;
        slos.record(outcomes(0, bad, t, 1).into_iter(), epoch, label);
    }
    let r = slos.readings(epoch + 299);
    assert_eq!((r[0].severity, r[0].value, r[0].threshold), (Some("warning"), Some(2.0), 1.0));
    // Then everything fails for 20 s: the critical row breaches too.
    slos.record((300..320).flat_map(|t| outcomes(0, true, t, 4)), epoch, label);
    let r = slos.readings(epoch + 319);
    assert_eq!(r[0].severity, Some("critical"), "{:?}", r[0]);
    assert!(r[0].value.is_some_and(|v| v > 5.0));
    // All good for a minute: both short windows clear: resolved (below
    // the row it was firing on).
    slos.record((320..400).flat_map(|t| outcomes(0, false, t, 4)), epoch, label);
    let r = slos.readings(epoch + 399);
    assert!(r[0].value.is_some_and(|v| v <= r[0].threshold), "{:?}", r[0]);
    assert_eq!(lock(&slos.firing)[0], None);
    let view = &slos.views(epoch + 399)[0];
    let bad = 60 + 80;
    assert_eq!((view.total, view.total - view.good), (300 + 80 + 320, bad));
}

#[test]
fn globs_match_labels() {
    assert!(crate::wire::glob::matches("GET /api/*", "GET /api/users/:id"));
    assert!(crate::wire::glob::matches("* /api/orders", "POST /api/orders"));
    assert!(crate::wire::glob::matches("GET /a/*/c*", "GET /a/b/cd"));
    assert!(!crate::wire::glob::matches("GET /api/*", "POST /api/users"));
    assert!(!crate::wire::glob::matches("GET /a/*/c", "GET /a/b/d"));
    assert!(crate::wire::glob::matches("POST /api/orders", "POST /api/orders"));
    assert!(!crate::wire::glob::matches("POST /api/orders", "POST /api/orders/1"));
    assert_eq!(
        (duration_words(300_000), duration_words(259_200_000), duration_words(1_500)),
        ("5m".into(), "3d".into(), "1500ms".into())
    );
}
