//! 6: a deferral that runs past the deadline.

use super::*;

#[test]
fn a_deferral_past_the_deadline_is_a_failure() {
    let case = Case::new("latedefer");
    let id = "t-latedefer";
    let domains = ["t-latedefer.example.test"];
    // Expires in 12 hours: its deadline has passed. The vendor admits no write for an hour (429).
    case.deployment(id, "one-way", Some(from_now(Duration::hours(12))));
    case.standin.settings(&json!({"write_limit": 0}));
    let config = case.config().deployment(id, &domains).write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, id);
    assert!(line.contains("cannot renew before the deadline"), "{line}");
    assert!(line.contains("429"), "the cause is named: {line}");
    assert_eq!(
        step(&case, id).as_deref(),
        Some("issued"),
        "the certificate is kept"
    );
    case.assert_invariants();
}
