//! `status` as a health check and `status --json` (issue 12, "## Status and logs"): exit codes for healthy,
//! failing and near-expiry deployments, the JSON schema, no secrets needed, an unprivileged reader, and the
//! syslog priority prefix under journald.

use crate::common;
use crate::common::probe::due;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::Duration;

use common::daemon::Daemon;
use common::{Case, bed};
use serde_json::Value;

fn json_of(run: &common::Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{run}"))
}

#[test]
fn status_exits_0_when_healthy_and_1_when_failing_or_near_expiry_with_a_stable_json() {
    let case = Case::new("health");
    let (good, bad) = ("t-health-good", "t-health-bad");
    case.deployment(good, "one-way", due());
    case.deployment(bad, "one-way", due());
    let healthy = case
        .config()
        .deployment(good, &["t-health-good.example.test"])
        .write();
    let run = case.run(&healthy, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");

    let status = case.run(&healthy, &["status", "--json"]);
    assert_eq!(status.code(), Some(0), "{status}");
    let doc = json_of(&status);
    assert_eq!(doc["schema"], 1, "{doc}");
    assert_eq!(doc["healthy"], true, "{doc}");
    let d = &doc["deployments"][0];
    assert_eq!(d["id"], good);
    assert_eq!(d["target"], "emqx");
    assert_eq!(d["health"], "ok");
    assert_eq!(d["domains"][0], "t-health-good.example.test");
    assert_eq!(d["last"]["ok"], true, "{d}");
    assert!(
        d["expires"].as_str().is_some_and(|e| e.ends_with('Z')),
        "{d}"
    );
    assert!(
        d["renewal"]["at"].is_string() && d["renewal"]["rule"].is_string(),
        "{d}"
    );
    assert!(d["at_risk"].is_null() && d["error"].is_null(), "{d}");
    let account = &doc["accounts"][0];
    assert_eq!(account["name"], "standin");
    assert_eq!(account["get_limit"], 60);
    assert!(account["gets_left"].as_u64().unwrap() < 60, "{account}");

    // The pushed certificate lasts years: with a warning longer than that it "expires soon".
    let warned = case
        .config()
        .deployment(good, &["t-health-good.example.test"])
        .toml()
        + "\n[alerts]\nexpiry_warning = \"3650d\"\n";
    let warned_path = case.dir.path().join("warned.toml");
    common::bed::write_private(&warned_path, warned.as_bytes()).unwrap();
    let status = case.run(&warned_path, &["status", "--json"]);
    assert_eq!(status.code(), Some(1), "{status}");
    assert_eq!(json_of(&status)["deployments"][0]["health"], "expiring");
    let text = case.run(&warned_path, &["status"]);
    assert_eq!(text.code(), Some(1), "{text}");
    assert!(text.stdout.contains("EXPIRES SOON"), "{text}");

    // A deployment whose renewal fails (401): exit 1, health "failing", its error line; the other stays ok
    // and can be checked alone.
    let failing = case
        .config_with_secret("not-the-secret")
        .deployment(bad, &["t-health-bad.example.test"])
        .write();
    let failed = case.run(&failing, &["renew"]);
    assert_eq!(failed.code(), Some(1), "{failed}");
    let status = case.run(&failing, &["status", "--json"]);
    assert_eq!(status.code(), Some(1), "{status}");
    let doc = json_of(&status);
    assert_eq!(doc["healthy"], false);
    let d = &doc["deployments"][0];
    assert_eq!(d["health"], "failing", "{d}");
    assert!(
        d["last"]["message"].as_str().unwrap().contains("401"),
        "{d}"
    );
    assert!(!status.stdout.contains("not-the-secret"), "{status}");
    case.assert_invariants();
}

#[test]
fn status_reads_no_secret_and_works_for_a_user_who_can_only_read() {
    let case = Case::new("statusro");
    let id = "t-statusro";
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .deployment(id, &["t-statusro.example.test"])
        .write();
    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");

    // Without the secret file (as from a shell without systemd's credentials) `check` refuses, `status` works.
    fs::remove_file(case.dir.path().join("emqx.secret")).unwrap();
    let check = case.run(&config, &["check"]);
    assert_eq!(check.code(), Some(2), "{check}");
    let status = case.run(&config, &["status"]);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(status.stdout.contains(id), "{status}");
    let before: Vec<_> = fs::read_dir(case.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "not root: the unprivileged-reader half of this test needs root to switch users; skipped"
        );
        return;
    }
    // A reader who is not the owner: a copy of the state and config it may read, run as `nobody`.
    let shared = tempfile::Builder::new()
        .prefix("certkeeper-ro-")
        .tempdir()
        .unwrap();
    fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let state = shared.path().join("state");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(case.state_dir())
        .arg(&state)
        .status()
        .unwrap();
    assert!(copied.success());
    let readable = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(readable.success());
    let text = fs::read_to_string(&config).unwrap().replace(
        &case.state_dir().display().to_string(),
        &state.display().to_string(),
    );
    let ro_config = shared.path().join("config.toml");
    fs::write(&ro_config, text).unwrap();
    fs::set_permissions(&ro_config, fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&bed().binaries.certkeeper)
        .arg("--config")
        .arg(&ro_config)
        .arg("status")
        .env_clear()
        .output()
        .expect("setpriv runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(id), "{stdout}\n{stderr}");
    let after: Vec<_> = fs::read_dir(case.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "status wrote nothing");
}

#[test]
fn under_journald_each_line_carries_its_syslog_priority() {
    let case = Case::new("journal");
    let id = "t-journal";
    case.deployment(id, "one-way", due());
    let config = case
        .config_with_secret("not-the-secret")
        .schedule("cron", "*/2 * * * * *")
        .schedule("jitter", "0s")
        .deployment(id, &["t-journal.example.test"])
        .write();
    let mut daemon = Daemon::start(
        bed(),
        &config,
        &[("JOURNAL_STREAM", "8:12345")],
        &case.dir.path().join("daemon.log"),
    );
    daemon.wait_for("401", 1, Duration::from_secs(30));
    daemon.wait_for("sleeping until the next pass", 2, Duration::from_secs(30));
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(Duration::from_secs(10));
    let log = daemon.text();
    let failure = log
        .lines()
        .find(|l| l.contains("401"))
        .unwrap_or_else(|| panic!("no failure line:\n{log}"));
    assert!(failure.starts_with("<3>"), "an error: {failure}");
    let sleeping = log
        .lines()
        .find(|l| l.contains("sleeping until the next pass"))
        .unwrap();
    assert!(sleeping.starts_with("<6>"), "info: {sleeping}");
    assert!(
        log.lines().all(|l| l.starts_with('<')),
        "every line has a priority:\n{log}"
    );
}
