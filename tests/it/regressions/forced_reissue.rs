//! 2: after a forced re-issue, an interrupted push.

use super::*;

#[test]
fn a_forced_reissue_whose_push_was_lost_is_pushed_again_not_taken_as_running() {
    let case = Case::new("lostput");
    let id = "t-lostput";
    let domains = ["t-lostput.example.test"];
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .emqx("request_timeout", "2s")
        .deployment(id, &domains)
        .write();

    let exclusive = bed().exclusive();
    let first = case.run(&config, &["renew", "--now"]);
    assert_eq!(first.code(), Some(0), "{first}");
    let old = deployed_serial(&case, id);

    // The second forced renewal's PUT never gets an answer and is not applied: the vendor still runs `old`,
    // whose expiry is within a day of the new certificate's.
    case.standin.settings(&json!({"hang_writes": 1}));
    let second = case.run(&config, &["renew", "--now"]);
    assert_eq!(second.code(), Some(1), "{second}");
    assert_eq!(
        deployed_serial(&case, id),
        old,
        "the hung PUT was not applied"
    );
    let new = bundle_serial(&case, id);
    assert_ne!(new, old);

    let third = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(third.code(), Some(0), "{third}");
    assert!(
        !third
            .stderr
            .contains("the vendor already has this certificate"),
        "expire cannot tell the two apart: {third}"
    );
    assert_eq!(
        deployed_serial(&case, id),
        new,
        "the vendor runs the new certificate"
    );
    assert_eq!(case.requests("PUT"), 3, "{}", case.request_summary());
    assert_eq!(acme.issued, 2, "{acme:?}");
    assert!(!bundle_path(&case, id).exists());
    case.assert_invariants();
}
