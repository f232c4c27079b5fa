//! Profiles and External Account Binding.

use super::*;

fn profile_case(name: &str, configure: impl FnOnce(ConfigBuilder) -> ConfigBuilder, profile: &str) {
    let case = Case::new(name);
    let id = format!("t-{name}");
    case.deployment(&id, "one-way", due());
    let config = configure(
        case.config()
            .deployment(&id, &[&format!("{id}.example.test")]),
    )
    .write();

    let bed = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = bed.delta();
    drop(bed);

    assert_eq!(run.code(), Some(2), "{run}");
    assert!(
        run.stderr
            .contains(&format!("ACME profile `{profile}` is not offered")),
        "{run}"
    );
    assert!(run.stdout.is_empty(), "{run}");
    assert_eq!((acme.orders, acme.issued), (0, 0), "{acme:?}");
    assert!(case.standin.log().is_empty(), "{}", case.request_summary());
    case.assert_invariants();
}

#[test]
fn a_profile_the_ca_does_not_offer_is_a_config_error() {
    profile_case("profile", |c| c.acme("profile", "shortlived"), "shortlived");
    profile_case(
        "profile-dep",
        |c| c.with("profile", "tlsserver"),
        "tlsserver",
    );
}

#[test]
fn external_account_binding() {
    let pebble = eab_pebble();
    let before = pebble.counts();

    // Without EAB the CA refuses the account: one clear failure, nothing pushed.
    let case = Case::new("eab-none");
    let id = "t-eab-none";
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .pebble(pebble)
        .deployment(id, &["t-eab-none.example.test"])
        .write();
    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(1), "{run}");
    let failures = run.failures_of(id);
    assert_eq!(failures.len(), 1, "{run}");
    assert!(
        failures[0].contains("registering an account failed")
            && failures[0].contains("externalAccountRequired"),
        "{}",
        failures[0]
    );
    assert_eq!(case.requests("PUT") + case.requests("POST"), 0);
    assert!(!case.state_dir().join("account.json").exists());
    assert_eq!(pebble.counts(), before, "no account, no order");
    case.assert_invariants();

    // With the kid and HMAC key from the CA's console: renewed.
    let case = Case::new("eab");
    let id = "t-eab";
    let domains = ["t-eab.example.test"];
    case.deployment(id, "one-way", due());
    let key_file = case.dir.path().join("eab.key");
    write_private(&key_file, format!("{EAB_HMAC_KEY}\n").as_bytes()).unwrap();
    let config = case
        .config()
        .pebble(pebble)
        .acme("eab_kid", EAB_KID)
        .acme("eab_hmac_key_file", key_file.to_str().unwrap())
        .deployment(id, &domains)
        .write();
    let run = case.run(&config, &["renew"]);
    assert_ok(&run, id);
    assert!(line_of(&run, id).contains("renewed"), "{run}");
    let after = pebble.counts();
    assert_eq!(
        (
            after.accounts - before.accounts,
            after.orders - before.orders,
            after.issued - before.issued
        ),
        (1, 1, 1)
    );
    assert_deployed(&case, id, &domains);
    assert!(case.state_dir().join("account.json").is_file());
    assert_no_txt(&domains);
    case.assert_invariants();
}
