//! Issue 9: the bad days an adversarial review found still wasting a certificate or stalling a deployment —
//! each reproduced against the real Pebble (through a fault-injecting proxy where the CA must fail) and the
//! strict stand-in, then fixed.
//!
//! Every test has its own names (`t-<test>.example.test`), stand-in and state directory; those that count
//! Pebble's orders or issuances hold the bed exclusively over all of their runs.

use crate::common;

use std::fs;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};

use common::ari::AriProxy;
use common::probe::{bundle_path, bundle_serial, deployed_serial, due, failure, step, writes};
use common::{Case, assert_deployed, assert_no_txt, bed, from_now, run_with_env};
use serde_json::json;
use time::Duration;

/// A case whose ACME directory is a fault-injecting proxy in front of the bed's Pebble.
fn through_proxy(case: &Case) -> (AriProxy, common::ConfigBuilder) {
    let proxy = AriProxy::start(&bed().pebble, case.dir.path());
    let config = case
        .config()
        .acme("directory", &proxy.directory_url)
        .acme("trust_roots", proxy.trust_roots.to_str().unwrap());
    (proxy, config)
}

fn failed_downloads(proxy: &AriProxy) -> usize {
    proxy
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/certZ/") && r.status == 503)
        .count()
}

// ---- 1: a CA outage after finalization ---------------------------------------------------------------------------

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

// ---- 2: after a forced re-issue, an interrupted push ---------------------------------------------------------------

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

// ---- 3: a write the vendor accepts but does not apply ----------------------------------------------------------

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

// ---- 5: one deployment's bug never stops the others --------------------------------------------------------------

#[test]
fn a_panic_in_one_deployment_is_reported_and_the_others_are_renewed() {
    let case = Case::new("panic");
    let (first_id, other_id) = ("t-panic-a", "t-panic-b");
    let (first_dom, other_dom) = ("t-panic-a.example.test", "t-panic-b.example.test");
    // The earlier deadline goes first, so the panic comes before the other deployment is handled.
    case.deployment(first_id, "one-way", Some(from_now(Duration::days(5))));
    case.deployment(other_id, "one-way", due());
    let config = case
        .config()
        .deployment(first_id, &[first_dom])
        .deployment(other_id, &[other_dom])
        .write();

    let exclusive = bed().exclusive();
    let run = run_with_env(
        &config,
        &["renew"],
        &[("FAILPOINTS", "issued-saved=1*panic")],
    );
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(failure(&run, first_id).contains("internal error"), "{run}");
    assert!(run.failures_of(other_id).is_empty(), "{run}");
    assert_deployed(&case, other_id, &[other_dom]);

    // Everything before the panic was persisted: the next pass pushes the saved certificate.
    let again = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);
    assert_eq!(again.code(), Some(0), "{again}");
    assert_deployed(&case, first_id, &[first_dom]);
    assert_eq!(acme.issued, 2, "one certificate per deployment: {acme:?}");
    case.assert_invariants();
}

// ---- 6: a deferral that runs past the deadline -------------------------------------------------------------------

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

// ---- 7: a corrupt TXT journal; scarce GETs -----------------------------------------------------------------------

#[test]
fn a_corrupt_txt_journal_is_reported_and_kept() {
    let case = Case::new("journal");
    let id = "t-journal";
    let domains = ["t-journal.example.test"];
    case.deployment(id, "one-way", due());
    let config = case.config().deployment(id, &domains).write();
    let deployments = case.state_dir().join("deployments");
    fs::create_dir_all(&deployments).unwrap();
    for dir in [case.state_dir(), deployments] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    }
    let journal = case.state_dir().join(format!("deployments/{id}.txt.json"));
    common::bed::write_private(&journal, b"[[\"_acme-challenge.t-journal.example.test.\"").unwrap();

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, id);
    assert!(
        line.contains(&journal.display().to_string()) && line.contains("TXT"),
        "the journal is named: {line}"
    );
    assert_eq!(
        fs::read(&journal).unwrap(),
        b"[[\"_acme-challenge.t-journal.example.test.\"",
        "kept as it was"
    );
    assert_eq!(acme.orders, 0, "nothing ordered past an unreadable journal");
    case.assert_invariants();
}

#[test]
fn scarce_gets_go_to_the_most_urgent_deployment_first() {
    let case = Case::new("scarce");
    let ids = ["t-scarce-1", "t-scarce-2", "t-scarce-3", "t-scarce-4"];
    // Not due under the default rule; the last in config order expires first.
    for id in &ids[..3] {
        case.deployment(id, "one-way", Some(from_now(Duration::days(80))));
    }
    case.deployment(ids[3], "one-way", Some(from_now(Duration::days(40))));
    let mut config = case
        .config()
        .emqx_raw("get_limit", "7")
        .emqx("inspect_interval", "0s");
    for id in ids {
        config = config.deployment(id, &[&format!("{id}.example.test")]);
    }
    let config = config.write();

    let first = case.run(&config, &["renew"]);
    assert_eq!(first.code(), Some(0), "{first}");
    let seen = case.standin.log().len();
    assert_eq!(case.requests("GET"), 4, "{}", case.request_summary());

    // Three GETs left for four deployments: the one expiring first is asked first.
    let second = case.run(&config, &["renew"]);
    assert_eq!(second.code(), Some(0), "{second}");
    let asked: Vec<String> = case.standin.log()[seen..]
        .iter()
        .filter(|e| e["method"] == "GET")
        .map(|e| e["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        asked.first().is_some_and(|p| p.contains(ids[3])),
        "the most urgent deployment first: {asked:?}"
    );
    assert_eq!(asked.len(), 3, "{asked:?}");
    case.assert_invariants();
}

// ---- 4: vendor redirects are never followed ----------------------------------------------------------------------

/// Requests certkeeper charged to its budget file, `(reads, writes)`, over all keys.
fn charged(case: &Case) -> (usize, usize) {
    let path = case.state_dir().join("budget.json");
    let Ok(bytes) = fs::read(&path) else {
        return (0, 0);
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    fn count(v: &serde_json::Value, field: &str) -> usize {
        match v {
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    if k == field {
                        v.as_array().map_or(0, Vec::len)
                    } else {
                        count(v, field)
                    }
                })
                .sum(),
            _ => 0,
        }
    }
    (count(&value, "reads_ms"), count(&value, "writes_ms"))
}

#[test]
fn vendor_redirects_are_never_followed_and_each_request_is_charged_once() {
    let case = Case::new("redirect");
    let id = "t-redirect";
    let domains = ["t-redirect.example.test"];
    case.deployment(id, "one-way", due());
    // Where the redirects point: another vendor that would accept the same key, and must see nothing.
    let elsewhere = bed().standin(&case.dir.path().join("elsewhere.log"));
    elsewhere.put_key(common::KEY, common::SECRET, None);
    let location = format!("http://{}", elsewhere.addr);
    let config = case.config().deployment(id, &domains).write();

    for (status, method) in [
        (301, "GET"),
        (302, "GET"),
        (307, "PUT"),
        (308, "PUT"),
        (303, "PUT"),
    ] {
        case.standin.settings(
            &json!({"redirect": {"status": status, "location": location, "method": method}}),
        );
        let sent = case.requests(method);
        let run = case.run(&config, &["renew"]);
        assert_eq!(run.code(), Some(1), "{status} {method}: {run}");
        let line = failure(&run, id);
        assert!(
            line.contains(&format!("HTTP {status} to {location}"))
                && line.contains("never follows redirects"),
            "{line}"
        );
        assert!(!run.stderr.contains(common::SECRET), "{run}");
        assert_eq!(
            case.requests(method),
            sent + 1,
            "not retried: {}",
            case.request_summary()
        );
        let log = case.standin.log();
        let (reads, writes) = charged(&case);
        let count = |m: &str| log.iter().filter(|e| e["method"] == m).count();
        assert_eq!(
            (reads, writes),
            (count("GET"), count("PUT") + count("POST")),
            "one charge per request sent"
        );
    }
    assert!(elsewhere.log().is_empty(), "{:?}", elsewhere.log());
    assert_eq!(case.standin.deployment(id)["writes"], json!(0));

    // Pointed at the real address again, the saved certificate is pushed: nothing was ordered twice.
    let serial = bundle_serial(&case, id);
    case.standin.settings(&json!({"redirect": null}));
    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(deployed_serial(&case, id), serial);
    assert_deployed(&case, id, &domains);
    case.assert_invariants();
}

// ---- 5: expiries outside years 1–9999 ------------------------------------------------------------------------------

#[test]
fn an_expire_in_year_0000_fails_that_deployment_and_the_others_are_renewed() {
    let case = Case::new("year0");
    let (bad, good) = ("t-year0-a", "t-year0-b");
    let (bad_dom, good_dom) = ("t-year0-a.example.test", "t-year0-b.example.test");
    case.deployment(bad, "one-way", due());
    case.deployment(good, "one-way", due());
    case.standin
        .settings(&json!({"expire_override": {bad: "0000-01-02 03:04:05"}}));
    // The bad one comes first in the config: both are unknown, so it is handled first.
    let config = case
        .config()
        .deployment(bad, &[bad_dom])
        .deployment(good, &[good_dom])
        .write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, bad);
    assert!(
        line.contains("0000-01-02 03:04:05") && line.contains("between the years 1 and 9999"),
        "{line}"
    );
    assert!(run.failures_of(good).is_empty(), "{run}");
    assert_deployed(&case, good, &[good_dom]);
    case.assert_invariants();
}

// ---- 6, 7: a state directory that lies, or was tampered with ---------------------------------------------------

/// Creates the case's state directory and `deployments/` as certkeeper would (0700), for files put there first.
fn private_state(case: &Case) -> std::path::PathBuf {
    let deployments = case.state_dir().join("deployments");
    fs::create_dir_all(&deployments).unwrap();
    for dir in [case.state_dir(), deployments.clone()] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    }
    deployments
}

#[test]
fn budget_times_in_the_future_are_read_as_now_and_the_renewal_happens() {
    let case = Case::new("futurebudget");
    let id = "t-futurebudget";
    let domains = ["t-futurebudget.example.test"];
    // Expires in 3 days; a clock that ran a year ahead left six writes and a block "in" that year.
    case.deployment(id, "one-way", Some(from_now(Duration::days(3))));
    let config = case.config().deployment(id, &domains).write();
    private_state(&case);
    let year = (time::OffsetDateTime::now_utc() + Duration::days(365)).unix_timestamp() * 1000;
    let budget = json!({common::KEY: {"reads_ms": [year], "writes_ms": vec![year; 6], "blocked_until_ms": year}});
    common::bed::write_private(
        &case.state_dir().join("budget.json"),
        budget.to_string().as_bytes(),
    )
    .unwrap();

    let run = case.run(&config, &["renew"]);

    // Writes "sent" in a year count as sent now, and the block lasts a day at most: deferred until tomorrow at
    // the latest, inside the deadline (2 days away), never for a year.
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(run.stderr.contains("times in the future"), "{run}");
    let now = time::OffsetDateTime::now_utc();
    let soon = [now, now + Duration::days(1)].map(|t| format!("deferred until {}", t.date()));
    assert!(
        soon.iter().any(|s| run.stdout.contains(s.as_str())),
        "{soon:?}: {run}"
    );
    case.assert_invariants();
}

#[test]
fn a_lock_that_is_a_symlink_is_refused_and_its_target_untouched() {
    let case = Case::new("locklink");
    let id = "t-locklink";
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .deployment(id, &["t-locklink.example.test"])
        .write();
    private_state(&case);
    let victim = case.dir.path().join("victim.txt");
    fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, case.state_dir().join("lock")).unwrap();

    let run = case.run(&config, &["renew"]);

    assert_ne!(run.code(), Some(0), "{run}");
    assert!(run.stderr.contains("is a symbolic link"), "{run}");
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert_eq!(case.requests("PUT"), 0);
}

#[test]
fn a_state_dir_with_a_writable_deployments_dir_or_another_owner_is_refused() {
    let case = Case::new("stateperm");
    let id = "t-stateperm";
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .deployment(id, &["t-stateperm.example.test"])
        .write();
    let deployments = private_state(&case);

    fs::set_permissions(&deployments, fs::Permissions::from_mode(0o777)).unwrap();
    let run = case.run(&config, &["renew"]);
    assert_ne!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr
            .contains(&format!("chmod 700 {}", deployments.display())),
        "{run}"
    );

    fs::set_permissions(&deployments, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(case.state_dir(), Some(4242), None).unwrap();
    let run = case.run(&config, &["renew"]);
    assert_ne!(run.code(), Some(0), "{run}");
    assert!(run.stderr.contains("owned by uid 4242"), "{run}");
    assert_eq!(case.requests("GET"), 0, "refused before any request");
}

#[test]
fn a_fifo_or_a_symlink_to_dev_zero_in_the_state_fails_fast_and_stays() {
    let case = Case::new("fifo");
    let (fifo_id, zero_id) = ("t-fifo-a", "t-fifo-b");
    case.deployment(fifo_id, "one-way", due());
    case.deployment(zero_id, "one-way", due());
    let config = case
        .config()
        .deployment(fifo_id, &["t-fifo-a.example.test"])
        .deployment(zero_id, &["t-fifo-b.example.test"])
        .write();
    let deployments = private_state(&case);
    let fifo = deployments.join(format!("{fifo_id}.json"));
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let zero = deployments.join(format!("{zero_id}.pem"));
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();

    // The bed's run has a timeout: a hang fails the test instead of blocking it.
    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(1), "{run}");
    assert!(
        failure(&run, fifo_id).contains(&fifo.display().to_string())
            && failure(&run, fifo_id).contains("not a regular file"),
        "{run}"
    );
    assert!(
        failure(&run, zero_id).contains(&zero.display().to_string())
            && failure(&run, zero_id).contains("symbolic link"),
        "{run}"
    );
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(
        fs::symlink_metadata(&zero)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn temp_files_a_killed_write_left_are_removed_and_nothing_else() {
    let case = Case::new("staletmp");
    let id = "t-staletmp";
    case.deployment(id, "one-way", Some(from_now(Duration::days(80))));
    let config = case
        .config()
        .deployment(id, &["t-staletmp.example.test"])
        .write();
    let deployments = private_state(&case);
    let stale = [
        case.state_dir().join(".tmpAb12Cd"),
        deployments.join(".tmpXy34Zw"),
    ];
    for path in &stale {
        common::bed::write_private(path, b"{\"half\":").unwrap();
    }
    let keep = deployments.join("notes.txt");
    common::bed::write_private(&keep, b"mine").unwrap();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    for path in &stale {
        assert!(!path.exists(), "{} left", path.display());
    }
    assert_eq!(fs::read(&keep).unwrap(), b"mine");
}

#[test]
fn issue_takes_the_state_lock_like_renew() {
    let case = Case::new("issuelock");
    let id = "t-issuelock";
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .deployment(id, &["t-issuelock.example.test"])
        .write();
    private_state(&case);
    let held = certkeeper::state::Store::open(&case.state_dir())
        .unwrap()
        .try_lock()
        .unwrap();
    let out = case.dir.path().join("issued.pem");
    let out_arg = out.to_str().unwrap();

    let locked = case.run(&config, &["issue", "--deployment", id, "--out", out_arg]);
    assert_eq!(locked.code(), Some(3), "{locked}");
    assert!(locked.stderr.contains("lock"), "{locked}");
    assert!(
        !out.exists(),
        "nothing written while another certkeeper works"
    );

    drop(held);
    let issued = case.run(&config, &["issue", "--deployment", id, "--out", out_arg]);
    assert_eq!(issued.code(), Some(0), "{issued}");
    assert!(
        fs::read_to_string(&out)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert_eq!(case.requests("PUT") + case.requests("POST"), 0);
}

/// Rewrites one line of a config.
type LineEdit = dyn Fn(&str) -> String;

/// Each edit turns a valid config into one that used to pass `check` and fail only at run time.
#[test]
fn configs_that_would_fail_at_run_time_fail_check_with_exit_2() {
    let case = Case::new("badcheck");
    let id = "t-badcheck";
    let config = case
        .config()
        .deployment(id, &["t-badcheck.example.test"])
        .write();
    let good = fs::read_to_string(&config).unwrap();
    let ok = case.run(&config, &["check"]);
    assert_eq!(ok.code(), Some(0), "{ok}");

    let long_id = "x".repeat(300);
    let edits: Vec<(&str, Box<LineEdit>, &str)> = vec![
        (
            "empty inline tsig_secret",
            Box::new(|line| {
                if line.starts_with("tsig_secret_file") {
                    "tsig_secret = \"\"".to_owned()
                } else {
                    line.to_owned()
                }
            }),
            "tsig_secret",
        ),
        (
            "DNS port 99999",
            Box::new(|line| {
                if line.starts_with("server =") {
                    "server = \"127.0.0.1:99999\"".to_owned()
                } else {
                    line.to_owned()
                }
            }),
            "99999",
        ),
        (
            "an IP address as a domain",
            Box::new(|line| line.replace("t-badcheck.example.test", "192.0.2.7")),
            "192.0.2.7",
        ),
        (
            "a 300-character id",
            Box::new(move |line| line.replace("\"t-badcheck\"", &format!("\"{long_id}\""))),
            "id",
        ),
        (
            "a url with a query string",
            Box::new(|line| {
                if line.starts_with("url =") {
                    format!("{}?region=x\"", line.trim_end_matches('"'))
                } else {
                    line.to_owned()
                }
            }),
            "query",
        ),
    ];
    for (what, edit, named) in edits {
        let bad: String = good.lines().map(|l| edit(l) + "\n").collect();
        assert_ne!(bad, good, "{what}: the edit changed nothing");
        let path = case.dir.path().join("bad.toml");
        fs::write(&path, &bad).unwrap();
        let run = case.run(&path, &["check"]);
        assert_eq!(run.code(), Some(2), "{what}:\n{bad}\n{run}");
        assert!(run.stderr.contains(named), "{what}: names {named}:\n{run}");
    }
}

#[test]
fn check_warns_about_a_secret_file_others_can_read() {
    let case = Case::new("secretmode");
    let config = case
        .config()
        .deployment("t-secretmode", &["t-secretmode.example.test"])
        .write();
    let secret = case.dir.path().join("emqx.secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let run = case.run(&config, &["check"]);
    assert_eq!(run.code(), Some(0), "a warning, not an error:\n{run}");
    assert!(
        run.stderr.contains("readable by group or others")
            && run
                .stderr
                .contains(&format!("chmod 600 {}", secret.display())),
        "{run}"
    );
    assert!(!run.stderr.contains(common::SECRET), "{run}");
}
