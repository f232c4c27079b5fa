//! The fault matrix, fault matrix: ACME.

use super::*;

/// The share of nonces [`nonce_pebble`] rejects, as the issue asks.
const NONCE_REJECT: u8 = 50;

/// A Pebble rejecting [`NONCE_REJECT`] % of good nonces, started on first use.
fn nonce_pebble() -> &'static testbed::Pebble {
    static PEBBLE: OnceLock<testbed::Pebble> = OnceLock::new();
    PEBBLE.get_or_init(|| {
        bed()
            .extra_pebble_rejecting_nonces("pebble-nonce50", NONCE_REJECT)
            .unwrap_or_else(|e| panic!("the nonce-rejecting Pebble did not start: {e}"))
    })
}

#[test]
fn acme_bad_nonce_bursts_are_retried() {
    // Three deployments, three orders in one run, each at 50 % badNonce: all must come through.
    let case = Case::new("nonce50");
    let ids = ["t-nonce50-a", "t-nonce50-b", "t-nonce50-c"];
    let mut builder = case.config().pebble(nonce_pebble());
    for id in ids {
        case.deployment(id, "one-way", due());
        builder = builder.deployment(id, &[&format!("{id}.example.test")]);
    }
    let config = builder.write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    for id in ids {
        assert_deployed(&case, id, &[&format!("{id}.example.test")]);
        assert_no_txt(&[&format!("{id}.example.test")]);
    }
    assert_eq!(writes(&case).len(), 3, "{}", case.request_summary());
    case.assert_invariants();
}

#[test]
fn acme_ca_unreachable_fails_naming_the_ca() {
    let case = Case::new("ca-down");
    let id = "t-ca-down";
    let directory = format!("https://127.0.0.1:{}/dir", closed_tcp_port());
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .acme("directory", &directory)
        .deployment(id, &["t-ca-down.example.test"])
        .write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, id);
    assert!(line.contains(&format!("ACME CA {directory}")), "{line}");
    assert!(line.to_lowercase().contains("refused"), "{line}");
    assert_eq!(writes(&case), [], "nothing pushed");
    case.assert_invariants();
}

#[test]
fn acme_order_invalid_when_the_txt_record_lands_where_the_ca_does_not_look() {
    // A real misconfiguration: `server` is a (hidden) primary the CA never asks. certkeeper's update and its
    // propagation check succeed there; the CA, resolving at the bed's knotd, finds no TXT and invalidates the order.
    static HIDDEN: OnceLock<testbed::Knot> = OnceLock::new();
    let hidden = HIDDEN.get_or_init(|| {
        bed()
            .extra_knot("knot-hidden")
            .expect("start a second knotd")
    });
    let case = Case::new("invalid");
    let id = "t-invalid";
    let domains = ["t-invalid.example.test"];
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .dns("server", &hidden.server())
        .dns(
            "tsig_secret_file",
            hidden.tsig_secret_file.to_str().unwrap(),
        )
        .deployment(id, &domains)
        .write();

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, id);
    assert!(
        line.contains("could not validate t-invalid.example.test") && line.contains("TXT"),
        "the CA's own words: {line}"
    );
    assert_eq!(
        acme.orders, 1,
        "a validation failure is not retried: {acme:?}"
    );
    assert_eq!(acme.issued, 0, "{acme:?}");
    assert_eq!(writes(&case), [], "nothing pushed");
    let owner = "_acme-challenge.t-invalid.example.test.";
    assert!(
        txt_at(hidden.port, owner).is_empty(),
        "TXT left at the hidden primary"
    );
    assert_no_txt(&domains);
    case.assert_invariants();
}
