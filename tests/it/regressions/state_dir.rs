//! 6, 7: a state directory that lies, or was tampered with.

use super::*;

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
