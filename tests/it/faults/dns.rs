//! The fault matrix, fault matrix: DNS.

use super::*;

/// Runs a renewal whose `[dns.bed]` is changed by `dns`, expecting a DNS failure: returns the failure line and
/// Pebble's orders.
fn dns_failure(
    short: &str,
    dns: impl FnOnce(common::ConfigBuilder, &Path) -> common::ConfigBuilder,
) -> (String, usize) {
    let case = Case::new(short);
    let id = format!("t-{short}");
    let domain = format!("{id}.example.test");
    case.deployment(&id, "one-way", due());
    let config = dns(case.config(), case.dir.path())
        .deployment(&id, &[&domain])
        .write();

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(1), "{run}");
    assert_eq!(acme.issued, 0, "{acme:?}");
    assert_eq!(writes(&case), [], "nothing pushed");
    assert_no_txt(&[&domain]);
    case.assert_invariants();
    (failure(&run, &id), acme.orders)
}

#[test]
fn dns_server_down_fails_as_unreachable() {
    let port = closed_dns_port();
    let (line, orders) = dns_failure("dns-down", |c, _| {
        c.dns("server", &format!("127.0.0.1:{port}"))
    });
    assert!(
        line.contains("unreachable") && line.contains(&format!("127.0.0.1:{port}")),
        "{line}"
    );
    assert!(
        orders <= 1,
        "no CA order left dangling beyond one: {orders} orders"
    );
}

#[test]
fn dns_wrong_tsig_secret_is_named() {
    let (line, orders) = dns_failure("tsig-secret", |c, dir| {
        let path = dir.join("wrong-tsig.secret");
        testbed::write_private(
            &path,
            base64::engine::general_purpose::STANDARD
                .encode([7u8; 32])
                .as_bytes(),
        )
        .unwrap();
        c.dns("tsig_secret_file", path.to_str().unwrap())
    });
    // Knot answers a MAC that does not verify with BADSIG (an unknown key name would be BADKEY).
    assert!(
        line.contains("rejected TSIG key `acme-update.` (BADSIG)") && line.contains("secret"),
        "{line}"
    );
    assert_eq!(orders, 1, "a rejected key is not retried");
}

#[test]
fn dns_unknown_tsig_key_is_badkey() {
    let (line, orders) = dns_failure("tsig-key", |c, _| c.dns("tsig_key", "nobody."));
    assert!(
        line.contains("rejected TSIG key `nobody.` (BADKEY)"),
        "{line}"
    );
    assert_eq!(orders, 1, "a rejected key is not retried");
}

#[test]
fn dns_update_refused_by_the_acl_is_named() {
    let (line, orders) = dns_failure("acl", |c, dir| {
        let path = dir.join("intruder.secret");
        testbed::write_private(&path, bed().knot.intruder_secret.as_bytes()).unwrap();
        c.dns("tsig_key", testbed::INTRUDER_KEY)
            .dns("tsig_secret_file", path.to_str().unwrap())
    });
    // Knot reports an ACL denial as NOTAUTH/BADKEY.
    assert!(
        line.contains("rejected TSIG key `intruder.` (BADKEY)") && line.contains("ACL"),
        "{line}"
    );
    assert_eq!(orders, 1, "a refusal is not retried");
}
