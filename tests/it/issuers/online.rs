//! `certkeeper check --online`: every broken part reported, nothing ordered, no TXT left.

use super::*;

#[test]
fn check_online_reports_each_broken_part_and_orders_nothing() {
    let _serial = serial();
    let long = long_pebble();
    let case = Case::new("iss-online");
    let id = "t-iss-online";
    let domain = "t-iss-online.example.test";
    case.deployment(id, "one-way", due());
    let wrong_tsig = case.dir.path().join("wrong.tsig");
    write_private(
        &wrong_tsig,
        b"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MDA=\n",
    )
    .unwrap();
    let extra = fallback(
        "long",
        &long.directory_url,
        &long.ca_pem,
        Some(&eab_key(&case)),
    );
    let broken = case
        .config_with_secret("wrong-secret-0123456789")
        .acme("profile", "nosuch")
        .dns("tsig_secret_file", wrong_tsig.to_str().unwrap())
        .deployment(id, &[domain]);
    let config = write_with(&broken, &extra);

    let guard = bed().exclusive();
    let (main0, long0) = (guard.delta(), long.counts());
    let run = case.run(&config, &["check", "--online"]);
    let main = guard.delta();
    drop(guard);
    assert_eq!(run.code(), Some(1), "{run}");
    let line = |prefix: &str| line_in(&run, prefix);
    assert!(line("ok: issuer acme directory:").contains(&bed().pebble.directory_url));
    assert!(
        line("FAILED: issuer acme profile `nosuch`:").contains("not offered"),
        "{run}"
    );
    assert!(line("ok: issuer long directory:").contains("reachable"));
    assert!(
        line("ok: issuer long account:").contains("External Account Binding accepted"),
        "{run}"
    );
    let dns = line("FAILED: dns bed:");
    assert!(
        dns.to_lowercase().contains("tsig") || dns.contains("BADSIG") || dns.contains("NOTAUTH"),
        "{dns}"
    );
    assert!(line("FAILED: emqx standin:").contains("401"), "{run}");
    assert!(
        !run.stdout.contains("wrong-secret") && !run.stderr.contains("wrong-secret"),
        "{run}"
    );
    assert_eq!(
        (main.orders - main0.orders, main.issued - main0.issued),
        (0, 0),
        "{run}"
    );
    assert_eq!(delta(long.counts(), long0), (0, 0), "{run}");
    assert_eq!(
        case.requests("GET"),
        1,
        "one GET per API key: {}",
        case.request_summary()
    );
    assert_eq!(case.requests("PUT") + case.requests("POST"), 0);
    assert_no_txt(&[domain]);

    passes_once_fixed(&case, id, domain, &extra);
}

/// With the good secrets every check passes; the test record was added and removed.
fn passes_once_fixed(case: &Case, id: &str, domain: &str, extra: &str) {
    let good = case.config().deployment(id, &[domain]);
    let config = write_with(&good, extra);
    let run = case.run(&config, &["check", "--online"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        line_in(&run, "ok: dns bed:").contains("credentials accepted"),
        "{run}"
    );
    assert!(
        line_in(&run, "ok: issuer long account:").contains("exists"),
        "{run}"
    );
    assert!(
        line_in(&run, "ok: emqx standin:").contains("accepted"),
        "{run}"
    );
    assert_no_txt(&[domain]);
    case.assert_invariants();
}

fn line_in<'r>(run: &'r Run, prefix: &str) -> &'r str {
    run.stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?}:\n{run}"))
}
