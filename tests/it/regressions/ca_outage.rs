//! 1: a CA outage after finalization.

use super::*;

#[test]
fn a_short_ca_outage_after_finalization_fetches_the_same_certificate() {
    let case = Case::new("dl6");
    let id = "t-dl6";
    let domains = ["t-dl6.example.test"];
    case.deployment(id, "one-way", due());
    let (proxy, config) = through_proxy(&case);
    let config = config.deployment(id, &domains).write();
    // More 503s than one download attempt survives: the old code ordered (and was issued) a second certificate.
    proxy.fail_downloads(6);

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(failed_downloads(&proxy), 6, "the outage happened");
    assert_eq!((acme.orders, acme.issued), (1, 1), "{acme:?}\n{run}");
    assert_deployed(&case, id, &domains);
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn a_long_ca_outage_after_finalization_keeps_the_order_for_the_next_pass() {
    let case = Case::new("dl40");
    let id = "t-dl40";
    let domains = ["t-dl40.example.test"];
    case.deployment(id, "one-way", due());
    let (proxy, config) = through_proxy(&case);
    let config = config.deployment(id, &domains).write();
    proxy.fail_downloads(u32::MAX);

    let exclusive = bed().exclusive();
    let first = case.run(&config, &["renew"]);
    let during = exclusive.delta();
    assert_eq!(first.code(), Some(1), "{first}");
    let line = failure(&first, id);
    assert!(
        line.contains("downloading the certificate") && line.contains("finalized order is kept"),
        "{line}"
    );
    assert_eq!(
        (during.orders, during.issued),
        (1, 1),
        "one pass, one order: {during:?}"
    );
    let order = case
        .state_dir()
        .join(format!("deployments/{id}.order.json"));
    assert!(order.is_file(), "the finalized order is kept");
    assert_eq!(case.requests("PUT") + case.requests("POST"), 0);

    // The CA is back: the next pass fetches the certificate of the kept order; nothing is ordered again.
    proxy.fail_downloads(0);
    let second = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(second.code(), Some(0), "{second}");
    assert!(
        second.stderr.contains("resuming: fetching the certificate"),
        "{second}"
    );
    assert_eq!((acme.orders, acme.issued), (1, 1), "{acme:?}");
    assert!(!order.exists());
    assert_deployed(&case, id, &domains);
    assert_no_txt(&domains);
    case.assert_invariants();
}
