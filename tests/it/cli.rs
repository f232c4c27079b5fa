//! The command line around a renewal: `check` without network, `status`, config errors with line and column,
//! unknown deployments.

use crate::common;
use crate::common::probe::due;

use common::{Case, assert_deployed, bed, parse_chain};

#[test]
fn two_way_in_config_without_client_ca_file_is_a_config_error() {
    // Knowable offline: an invalid config, exit 2, nothing touches the network.
    let case = Case::new("twoway-cfg");
    case.deployment("t-twoway-cfg", "two-way", due());
    let config = case
        .config()
        .deployment("t-twoway-cfg", &["t-twoway-cfg.example.test"])
        .with("tls_type", "two-way")
        .write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(2), "{run}");
    assert!(run.stderr.contains("client_ca_file"), "{run}");
    assert!(case.standin.log().is_empty(), "{}", case.request_summary());
    case.assert_invariants();
}

#[test]
fn unknown_deployment_fails_with_a_clear_message() {
    let case = Case::new("ghost");
    // The stand-in knows no deployment t-ghost: GET answers 404.
    let config = case
        .config()
        .deployment("t-ghost", &["t-ghost.example.test"])
        .write();

    let bed = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = bed.delta();
    drop(bed);

    assert_eq!(run.code(), Some(1), "{run}");
    let failures = run.failures_of("t-ghost");
    assert_eq!(failures.len(), 1, "one failure line:\n{run}");
    assert!(failures[0].contains("404"), "{}", failures[0]);
    assert_eq!(acme.orders, 0, "no ACME order: {acme:?}");
    assert_eq!(
        case.requests("GET"),
        1,
        "a 404 is not retried:\n{}",
        case.request_summary()
    );
    assert_eq!(case.standin.log().len(), 1, "{}", case.request_summary());
    case.assert_invariants();
}

#[test]
fn config_errors_exit_2_with_line_and_column() {
    let case = Case::new("config");
    let good = case
        .config()
        .deployment("t-config", &["t-config.example.test"])
        .toml();
    let path = case.dir.path().join("bad.toml");

    // (what to insert after the `[acme]` line, expected column or None to accept any, words the message needs)
    let cases: [(&str, Option<u32>, &str); 3] = [
        ("bogus_key = 1", Some(1), "bogus_key"),
        ("contact = \"mailto:ops@example.test\"", None, ""),
        ("contact = \"mailto:ops@example.test", None, ""),
    ];
    for (insert, column, word) in cases {
        let mut lines: Vec<&str> = good.lines().collect();
        let acme = lines.iter().position(|l| *l == "[acme]").unwrap();
        lines.insert(acme + 1, insert);
        let line = acme + 2; // 1-based line of the inserted text
        common::bed::write_private(&path, lines.join("\n").as_bytes()).unwrap();

        for command in [&["renew"][..], &["check"][..]] {
            let run = case.run(&path, command);
            assert_eq!(run.code(), Some(2), "{insert:?} / {command:?}: {run}");
            let prefix = match column {
                Some(column) => {
                    format!("error: {}: line {line}, column {column}: ", path.display())
                }
                None => format!("error: {}: line {line}, column ", path.display()),
            };
            let error = run
                .stderr
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("{insert:?}: no line starting {prefix:?}:\n{run}"));
            assert!(error.contains(word), "{insert:?}: {error}");
        }
    }

    // An invalid value is reported where it is.
    let bad_value = good.replace("key_type = \"ecdsa-p256\"", "key_type = \"ecdsa-p999\"");
    let line = bad_value
        .lines()
        .position(|l| l.starts_with("key_type"))
        .unwrap()
        + 1;
    common::bed::write_private(&path, bad_value.as_bytes()).unwrap();
    let run = case.run(&path, &["renew"]);
    assert_eq!(run.code(), Some(2), "{run}");
    let prefix = format!("error: {}: line {line}, column ", path.display());
    assert!(
        run.stderr.lines().any(|l| l.starts_with(&prefix)),
        "no line starting {prefix:?}:\n{run}"
    );

    assert!(case.standin.log().is_empty(), "{}", case.request_summary());
    assert!(!case.state_dir().join("account.json").exists());
    case.assert_invariants();
}

#[test]
fn check_lists_the_deployments_without_network() {
    let case = Case::new("check");
    let config = case
        .config()
        .deployment("t-check-a", &["t-check-a.example.test"])
        .deployment(
            "t-check-b",
            &["t-check-b.example.test", "*.t-check-b.example.test"],
        )
        .write();

    let bed = bed().exclusive();
    let run = case.run(&config, &["check"]);
    let acme = bed.delta();
    drop(bed);

    assert_eq!(run.code(), Some(0), "{run}");
    for (id, domain) in [
        ("t-check-a", "t-check-a.example.test"),
        ("t-check-b", "*.t-check-b.example.test"),
    ] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.contains(id) && l.contains(domain)),
            "check must list {id} with {domain}:\n{run}"
        );
    }
    assert!(case.standin.log().is_empty(), "{}", case.request_summary());
    assert_eq!(
        acme,
        common::PebbleCounts::default(),
        "check talked to the CA"
    );
    assert!(!case.state_dir().join("account.json").exists());
    case.assert_invariants();
}

#[test]
fn status_shows_the_renewal() {
    let case = Case::new("status");
    let domains = ["t-status.example.test"];
    case.deployment("t-status", "one-way", due());
    let config = case.config().deployment("t-status", &domains).write();

    let renew = case.run(&config, &["renew"]);
    assert_eq!(renew.code(), Some(0), "{renew}");
    let view = assert_deployed(&case, "t-status", &domains);
    let not_after = parse_chain(view["cert"].as_str().unwrap()).not_after;
    let requests = case.standin.log().len();

    let status = case.run(&config, &["status"]);

    assert_eq!(status.code(), Some(0), "{status}");
    let line = status
        .stdout
        .lines()
        .find(|l| l.contains("t-status"))
        .unwrap_or_else(|| panic!("no line for t-status:\n{status}"));
    assert!(line.contains(domains[0]), "{line}");
    let date = format!(
        "{:04}-{:02}-{:02}",
        not_after.year(),
        u8::from(not_after.month()),
        not_after.day()
    );
    assert!(
        line.contains(&date),
        "status must show the expiry {date}: {line}"
    );
    assert_eq!(case.standin.log().len(), requests, "status is local only");
    case.assert_invariants();
}
