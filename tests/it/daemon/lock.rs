//! The state lock between the daemon and a manual `renew`: exit 3, `--wait-lock`, and a daemon that waits for
//! a manual pass instead of failing.

use super::*;

#[test]
fn renew_while_the_daemon_holds_the_lock_exits_3_or_waits_with_wait_lock() {
    let case = Case::new("d-lock");
    let id = "t-d-lock";
    let domains = ["t-d-lock.example.test"];
    // The daemon is mid-pass (holding the lock) for the whole pending phase after its PUT.
    case.standin.settings(&json!({"pending": 4000}));
    case.deployment(id, "one-way", due());
    let config = every_two_seconds(&case)
        .emqx("poll_interval", "500ms")
        .deployment(id, &domains)
        .write();

    let mut daemon = start(&case, &config, &[]);
    wait_until(
        "PUT",
        RENEWAL,
        || case.requests("PUT") == 1,
        || format!("{}\n{}", case.request_summary(), daemon.text()),
    );
    let holder = format!("pid {}", daemon.pid());

    let locked = case.run(&config, &["renew"]);
    assert_eq!(locked.code(), Some(3), "{locked}");
    assert!(
        locked.stderr.contains(&holder),
        "the message names the holder ({holder}):\n{locked}"
    );

    let started = Instant::now();
    let short = case.run(&config, &["renew", "--wait-lock", "1s"]);
    assert_eq!(short.code(), Some(3), "{short}");
    assert!(short.stderr.contains(&holder), "{short}");
    assert!(
        started.elapsed() >= secs(1),
        "gave up after {:?}",
        started.elapsed()
    );
    assert_eq!(
        daemon.count(RUNNING),
        0,
        "the daemon's pass must still be running:\n{}",
        daemon.text()
    );

    let waited = case.run(&config, &["renew", "--wait-lock", "30s"]);
    assert_eq!(waited.code(), Some(0), "{waited}");
    assert!(waited.stderr.contains(WAITING), "{waited}");
    assert_eq!(
        daemon.count(RUNNING),
        1,
        "renew --wait-lock ran only after the daemon's pass:\n{}\n{waited}",
        daemon.text()
    );
    assert!(
        waited.stdout.contains(&format!("{id}: not due")),
        "{waited}"
    );

    stop(&mut daemon, libc::SIGTERM);
    assert_eq!(case.requests("PUT"), 1, "{}", case.request_summary());
    assert_deployed(&case, id, &domains);
    case.assert_invariants();
}

/// Takes the state lock in this process as another certkeeper would: `STATE/lock`, an OS file lock, a PID.
fn hold_lock(case: &Case, pid: &str) -> fs::File {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(case.state_dir())
        .unwrap();
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(case.state_dir().join("lock"))
        .unwrap();
    file.try_lock().expect("take the state lock");
    write!(file, "{pid}").unwrap();
    file
}

#[test]
fn daemon_waits_for_a_manual_pass_instead_of_failing() {
    let case = Case::new("d-wait");
    let id = "t-d-wait";
    let domains = ["t-d-wait.example.test"];
    case.deployment(id, "one-way", due());
    let config = every_two_seconds(&case).deployment(id, &domains).write();
    let fake_pid = "4194000";
    let lock = hold_lock(&case, fake_pid);

    // SIGTERM while waiting for the lock: a prompt, clean exit.
    let mut daemon = start(&case, &config, &[]);
    let log = daemon.wait_for(WAITING, 1, START);
    assert!(log.contains(fake_pid), "the wait names the holder:\n{log}");
    stop(&mut daemon, libc::SIGTERM);
    drop(daemon);

    let mut daemon = start(&case, &config, &[]);
    daemon.wait_for(WAITING, 1, START);
    // It keeps waiting, across the next tick, and neither fails nor touches the vendor or the CA.
    let waiting_since = Instant::now();
    while waiting_since.elapsed() < Duration::from_millis(2500) {
        assert!(case.standin.log().is_empty(), "{}", case.request_summary());
        assert!(daemon.try_status().is_none(), "{}", daemon.text());
        thread::sleep(Duration::from_millis(100));
    }
    let log = daemon.text();
    assert_eq!(daemon.count(WAITING), 1, "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    assert!(!case.state_dir().join("account.json").exists());

    drop(lock);
    daemon.wait_for(RUNNING, 1, RENEWAL);
    assert_eq!(
        fs::read_to_string(case.state_dir().join("lock")).unwrap(),
        daemon.pid().to_string(),
        "the lock file names its last holder"
    );
    stop(&mut daemon, libc::SIGINT);
    assert_eq!(case.requests("PUT"), 1, "{}", case.request_summary());
    assert_deployed(&case, id, &domains);
    assert_no_txt(&domains);
    case.assert_invariants();
}
