//! 5: expiries outside years 1–9999.

use super::*;

#[test]
fn an_expire_in_year_0000_fails_that_deployment_and_the_others_are_renewed() {
    let case = Case::new("year0");
    let (bad, good) = ("t-year0-a", "t-year0-b");
    let (bad_dom, good_dom) = ("t-year0-a.example.test", "t-year0-b.example.test");
    case.deployment(bad, "one-way", due());
    case.deployment(good, "one-way", due());
    case.standin
        .settings(&json!({"expire_override": {bad: "0000-01-02 03:04:05"}}));
    // The bad one comes first in the config: both are unknown, so it is handled first.
    let config = case
        .config()
        .deployment(bad, &[bad_dom])
        .deployment(good, &[good_dom])
        .write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, bad);
    assert!(
        line.contains("0000-01-02 03:04:05") && line.contains("between the years 1 and 9999"),
        "{line}"
    );
    assert!(run.failures_of(good).is_empty(), "{run}");
    assert_deployed(&case, good, &[good_dom]);
    case.assert_invariants();
}
