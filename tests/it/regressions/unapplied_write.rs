//! 3: a write the vendor accepts but does not apply.

use super::*;

#[test]
fn a_write_accepted_but_not_applied_is_pushed_again_bounded_then_fails_loudly() {
    let case = Case::new("unapplied");
    let id = "t-unapplied";
    let domains = ["t-unapplied.example.test"];
    case.deployment(id, "one-way", due());
    case.standin.settings(&json!({"ignore_writes": 3}));
    let config = case
        .config()
        .emqx("wait_timeout", "1s")
        .deployment(id, &domains)
        .write();

    let exclusive = bed().exclusive();
    let first = case.run(&config, &["renew"]);
    assert_eq!(first.code(), Some(1), "{first}");
    let line = failure(&first, id);
    assert!(
        line.contains("still runs the previous one") && line.contains("next pass pushes"),
        "{line}"
    );
    assert_eq!(
        step(&case, id).as_deref(),
        Some("issued"),
        "stepped back to push again"
    );
    let serial = bundle_serial(&case, id);

    for n in 2..=3 {
        let again = case.run(&config, &["renew"]);
        assert_eq!(again.code(), Some(1), "{again}");
        assert_eq!(case.requests("PUT"), n, "{}", case.request_summary());
    }
    assert!(failure(&case.run(&config, &["renew"]), id).contains("stops pushing"));
    assert_eq!(
        case.requests("PUT"),
        3,
        "bounded: no fourth push without --now"
    );

    // The operator looked; `--now` pushes the same certificate once more, and this time it is applied.
    let fixed = case.run(&config, &["renew", "--now"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(fixed.code(), Some(0), "{fixed}");
    assert_eq!(
        writes(&case),
        vec![("PUT".to_owned(), 200); 4],
        "{}",
        case.request_summary()
    );
    assert_eq!(deployed_serial(&case, id), serial);
    assert_eq!(acme.issued, 1, "{acme:?}");
    assert_deployed(&case, id, &domains);
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn renew_now_does_not_wait_again_for_a_push_stuck_as_pushed() {
    let case = Case::new("nowpushed");
    let id = "t-nowpushed";
    let domains = ["t-nowpushed.example.test"];
    case.deployment(id, "one-way", due());
    case.standin.settings(&json!({"stuck_pending": true}));
    let config = case
        .config()
        .emqx("wait_timeout", "1s")
        .deployment(id, &domains)
        .write();

    let exclusive = bed().exclusive();
    let first = case.run(&config, &["renew"]);
    assert_eq!(first.code(), Some(1), "{first}");
    assert_eq!(step(&case, id).as_deref(), Some("pushed"));

    case.standin.settings(&json!({"stuck_pending": false}));
    let now = case.run(&config, &["renew", "--now"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(now.code(), Some(0), "{now}");
    assert!(now.stderr.contains("--now: checking"), "{now}");
    assert_eq!(acme.issued, 1, "{acme:?}");
    assert_deployed(&case, id, &domains);
    case.assert_invariants();
}
