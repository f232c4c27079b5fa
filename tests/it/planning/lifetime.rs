//! Lifetime rule and local state.

use super::*;

#[test]
fn lifetime_rule_for_six_and_ninety_day_certificates() {
    // Records say certkeeper pushed these certificates; the stand-in runs them (same expiry). A 6-day certificate
    // renews at half its life (3 days left), a 90-day one at a third (30 days left); the 30-day rule for unknown
    // certificates would renew the 6-day one with 4 days left, the lifetime rule must not.
    let case = Case::new("life");
    case.standin.settings(&json!({"pending": 0}));
    let now = OffsetDateTime::now_utc();
    // (id, lifetime in days, days left, due, renewal planned at)
    let cases = [
        ("t-life6-due", 6, 2, true),
        ("t-life6-far", 6, 4, false),
        ("t-life90-due", 90, 29, true),
        ("t-life90-far", 90, 31, false),
    ];
    let mut config = case.config();
    let mut expiries = Vec::new();
    for (id, lifetime, left, _) in cases {
        let domain = format!("{id}.example.test");
        let not_after = now + Duration::days(left);
        let not_before = not_after - Duration::days(lifetime);
        craft_record(&case, id, &[domain.as_str()], not_before, not_after);
        case.deployment(id, "one-way", Some(not_after));
        config = config.deployment(id, &[domain.as_str()]);
        expiries.push(not_after);
    }
    let config = config.write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    for ((id, lifetime, _, due), not_after) in cases.into_iter().zip(expiries) {
        assert!(run.failures_of(id).is_empty(), "{run}");
        let requests = requests_for(&case, id);
        if due {
            assert!(line_of(&run, id).contains("renewed"), "{id}:\n{run}");
            assert!(
                log_of(&run, id)
                    .iter()
                    .any(|l| l.contains("renewal due; ordering a certificate")
                        && l.contains("rule=lifetime rule")),
                "{id} must be due by the lifetime rule:\n{run}"
            );
            let puts = requests.iter().filter(|e| e["method"] == "PUT").count();
            assert_eq!(puts, 1, "{id}: {requests:?}");
            assert_deployed(&case, id, &[&format!("{id}.example.test")]);
        } else {
            let left = if lifetime <= 10 {
                lifetime / 2
            } else {
                lifetime / 3
            };
            let planned = not_after - Duration::days(left);
            let line = line_of(&run, id);
            assert!(
                line.contains(&format!(
                    "not due: expires {}, renewal planned {} (lifetime rule) [from local state, no API request]",
                    day(not_after),
                    day(planned)
                )),
                "{id}: {line}"
            );
            assert!(requests.is_empty(), "{id}: no vendor request: {requests:?}");
            assert!(case.standin.deployment(id)["cert"].is_null());
        }
    }
    assert_no_txt(&["t-life6-due.example.test", "t-life90-due.example.test"]);
    case.assert_invariants();
}

#[test]
fn not_due_with_fresh_local_state_makes_no_vendor_request() {
    let case = Case::new("fresh");
    case.standin.settings(&json!({"pending": 0}));
    let id = "t-fresh";
    let domains = ["t-fresh.example.test"];
    case.deployment(id, "one-way", due());
    let builder = case.config().deployment(id, &domains);
    let config = builder.write();
    let first = case.run(&config, &["renew"]);
    assert_ok(&first, id);
    assert!(line_of(&first, id).contains("renewed"), "{first}");
    let after_first = case.standin.log().len();

    let bed = bed().exclusive();
    let second = case.run(&config, &["renew"]);
    let acme = bed.delta();
    drop(bed);

    assert_ok(&second, id);
    assert!(
        line_of(&second, id).contains("not due")
            && line_of(&second, id).contains("(lifetime rule) [from local state, no API request]"),
        "{second}"
    );
    assert_eq!(
        case.standin.log().len(),
        after_first,
        "zero vendor requests:\n{}",
        case.request_summary()
    );
    assert_eq!((acme.orders, acme.issued), (0, 0), "{acme:?}");

    // Local state is trusted only for inspect_interval: after it, one GET notices outside changes.
    let config = builder.emqx("inspect_interval", "1s").write();
    std::thread::sleep(StdDuration::from_millis(1100));
    let third = case.run(&config, &["renew"]);
    assert_ok(&third, id);
    let line = line_of(&third, id);
    assert!(
        line.contains("not due") && !line.contains("no API request"),
        "{third}"
    );
    let log = case.standin.log();
    assert_eq!(log.len(), after_first + 1, "{}", case.request_summary());
    assert_eq!(log[after_first]["method"], "GET");
    case.assert_invariants();
}
