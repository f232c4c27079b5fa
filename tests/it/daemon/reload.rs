//! SIGHUP: a broken or unacceptable config keeps the old one, a valid one is picked up, and the state directory
//! cannot move under a running daemon.

use super::*;

#[test]
fn sighup_keeps_the_old_config_when_the_new_one_is_broken_and_picks_up_a_valid_one() {
    let case = Case::new("d-hup");
    let (old, added) = ("t-d-hup-old", "t-d-hup-new");
    let added_domains = ["t-d-hup-new.example.test"];
    case.deployment(old, "one-way", not_due());
    case.deployment(added, "one-way", due());
    let builder = every_two_seconds(&case).deployment(old, &["t-d-hup-old.example.test"]);
    let config = builder.write();

    let mut daemon = start(&case, &config, &[]);
    // The old deployment is not certkeeper's certificate: every pass asks the vendor once ("not due").
    daemon.wait_for("not due", 1, START);

    let broken: [(&str, String); 2] = [
        ("TOML syntax", "state_dir = [\n".to_owned()),
        (
            "unknown key",
            builder
                .toml()
                .replace("[acme]\n", "[acme]\nbogus_key = 1\n"),
        ),
    ];
    for (n, (what, text)) in broken.iter().enumerate() {
        common::bed::write_private(&config, text.as_bytes()).unwrap();
        daemon.signal(libc::SIGHUP);
        let log = daemon.wait_for("reload failed", n + 1, secs(5));
        let line = log
            .lines()
            .filter(|l| l.contains("reload failed"))
            .nth(n)
            .unwrap();
        assert!(
            line.contains(&config.display().to_string()),
            "{what}: the error names the file: {line}"
        );
        assert!(
            daemon.try_status().is_none(),
            "{what}: the daemon died:\n{log}"
        );
        // Later ticks still run, on the old config.
        let passes = daemon.count("not due");
        daemon.wait_for("not due", passes + 1, secs(5));
    }
    assert_eq!(
        requests_for(&case, "GET", added),
        0,
        "{}",
        case.request_summary()
    );

    builder.clone().deployment(added, &added_domains).write();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("configuration reloaded", 1, secs(5));
    daemon.wait_for(RUNNING, 1, RENEWAL);

    stop(&mut daemon, libc::SIGTERM);
    assert_eq!(
        requests_for(&case, "PUT", added),
        1,
        "{}",
        case.request_summary()
    );
    assert_eq!(
        requests_for(&case, "PUT", old),
        0,
        "{}",
        case.request_summary()
    );
    assert_deployed(&case, added, &added_domains);
    assert_no_txt(&added_domains);
    case.assert_invariants();
}

#[test]
fn sighup_with_an_acme_profile_the_ca_does_not_offer_keeps_the_old_config() {
    let case = Case::new("d-hup-profile");
    let id = "t-d-hup-profile";
    case.deployment(id, "one-way", not_due());
    let builder = every_two_seconds(&case).deployment(id, &["t-d-hup-profile.example.test"]);
    let config = builder.write();
    // The bed's Pebble offers no profiles: at start, this config is an error.
    let unoffered = builder.clone().acme("profile", "shortlived");
    unoffered.write();
    let run = case.run(&config, &["run"]);
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(run.stderr.contains("shortlived"), "{run}");

    builder.write();
    let mut daemon = start(&case, &config, &[]);
    daemon.wait_for("not due", 1, START);
    unoffered.write();
    daemon.signal(libc::SIGHUP);
    let log = daemon.wait_for("reload", 1, secs(5));
    assert_eq!(daemon.count("configuration reloaded"), 0, "{log}");
    assert_eq!(daemon.count("reload failed"), 1, "{log}");
    stop(&mut daemon, libc::SIGTERM);
    case.assert_invariants();
}

#[test]
fn sighup_that_moves_state_dir_is_refused_and_the_old_state_kept() {
    let case = Case::new("d-hup-state");
    let id = "t-d-hup-state";
    case.deployment(id, "one-way", not_due());
    let builder = every_two_seconds(&case).deployment(id, &["t-d-hup-state.example.test"]);
    let config = builder.write();
    let mut daemon = start(&case, &config, &[]);
    daemon.wait_for("not due", 1, START);

    let elsewhere = case.dir.path().join("other-state");
    builder
        .clone()
        .top("state_dir", elsewhere.to_str().unwrap())
        .write();
    daemon.signal(libc::SIGHUP);
    let log = daemon.wait_for("reload failed", 1, secs(5));
    assert!(log.contains("state_dir cannot change on reload"), "{log}");
    assert!(log.contains("restart the service"), "{log}");
    assert_eq!(daemon.count("configuration reloaded"), 0, "{log}");
    // The daemon goes on with the directory it holds the lock of.
    daemon.wait_for("not due", 2, secs(10));
    assert!(!elsewhere.exists(), "nothing written to the new state_dir");
    stop(&mut daemon, libc::SIGTERM);
    case.assert_invariants();
}
