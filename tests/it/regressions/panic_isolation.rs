//! 5: one deployment's bug never stops the others.

use super::*;

#[test]
fn a_panic_in_one_deployment_is_reported_and_the_others_are_renewed() {
    let case = Case::new("panic");
    let (first_id, other_id) = ("t-panic-a", "t-panic-b");
    let (first_dom, other_dom) = ("t-panic-a.example.test", "t-panic-b.example.test");
    // The earlier deadline goes first, so the panic comes before the other deployment is handled. Only a
    // sequential pass makes "first" certain (in a concurrent one, either may reach the failpoint first).
    case.deployment(first_id, "one-way", Some(from_now(Duration::days(5))));
    case.deployment(other_id, "one-way", due());
    let config = case
        .config()
        .schedule_raw("concurrency", "1")
        .deployment(first_id, &[first_dom])
        .deployment(other_id, &[other_dom])
        .write();

    let exclusive = bed().exclusive();
    let run = run_with_env(
        &config,
        &["renew"],
        &[("FAILPOINTS", "issued-saved=1*panic")],
    );
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(failure(&run, first_id).contains("internal error"), "{run}");
    assert!(run.failures_of(other_id).is_empty(), "{run}");
    assert_deployed(&case, other_id, &[other_dom]);

    // Everything before the panic was persisted: the next pass pushes the saved certificate.
    let again = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);
    assert_eq!(again.code(), Some(0), "{again}");
    assert_deployed(&case, first_id, &[first_dom]);
    assert_eq!(acme.issued, 2, "one certificate per deployment: {acme:?}");
    case.assert_invariants();
}
