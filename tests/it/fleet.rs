//! The fleet pass (issue 11, "## Tests"): deployments renewed concurrently, every API key's budget shared by
//! all of its tasks and by other processes, deployment locks instead of one lock for the whole pass, and a
//! SIGKILL in the middle of it all.
//!
//! Overlap is judged from the stand-in's request log (when each deployment's first and last request arrived),
//! never from a wall-clock limit.

use crate::common;
use crate::common::probe::{due, not_due};

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::bed::{kill_group, scrub_env, spawn_owned};
use common::daemon::{Daemon, wait_until};
use common::{Case, ConfigBuilder, assert_deployed, assert_no_txt, bed};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A second API key the stand-in knows, for `[emqx.second]`.
const KEY2: &str = "second-key";
const SECRET2: &str = "second-secret";

/// One logged vendor request of deployment `id`.
fn requests_of<'a>(log: &'a [Value], id: &str) -> Vec<&'a Value> {
    let path = format!("/api/v1/deployments/{id}/tls");
    log.iter().filter(|e| e["path"] == path.as_str()).collect()
}

fn at(entry: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(entry["at"].as_str().expect("a time"), &Rfc3339).expect("RFC 3339")
}

/// When the stand-in saw deployment `id`'s first and last request.
fn span_of(log: &[Value], id: &str) -> (OffsetDateTime, OffsetDateTime) {
    let times: Vec<OffsetDateTime> = requests_of(log, id).into_iter().map(at).collect();
    let first = *times
        .iter()
        .min()
        .unwrap_or_else(|| panic!("{id}: no request"));
    let last = *times
        .iter()
        .max()
        .unwrap_or_else(|| panic!("{id}: no request"));
    (first, last)
}

fn assert_no_429(case: &Case) {
    assert!(
        case.standin.log().iter().all(|e| e["status"] != 429),
        "the vendor answered 429:\n{}",
        case.request_summary()
    );
}

/// The most GETs of `key` the stand-in saw inside any `window` (a sliding window, as the vendor counts).
fn max_gets_in_window(log: &[Value], key: &str, window: time::Duration) -> usize {
    let gets: Vec<OffsetDateTime> = log
        .iter()
        .filter(|e| e["method"] == "GET" && e["key"] == key)
        .map(at)
        .collect();
    gets.iter()
        .map(|&t| gets.iter().filter(|&&u| u >= t && u - t < window).count())
        .max()
        .unwrap_or(0)
}

/// `ids` on the case's stand-in, all due, each deployment naming its account.
fn fleet(case: &Case, config: ConfigBuilder, ids: &[(&str, &str)]) -> ConfigBuilder {
    ids.iter().fold(config, |config, (id, account)| {
        case.deployment(id, "one-way", due());
        config
            .deployment(id, &[&format!("{id}.example.test")])
            .with("emqx", account)
    })
}

#[test]
fn two_keys_three_due_deployments_each_renew_at_the_same_time() {
    let case = Case::new("fleet");
    case.standin.put_key(KEY2, SECRET2, None);
    case.standin.settings(&json!({"pending": 2000}));
    let ids = [
        ("t-fleet-a1", "standin"),
        ("t-fleet-a2", "standin"),
        ("t-fleet-a3", "standin"),
        ("t-fleet-b1", "second"),
        ("t-fleet-b2", "second"),
        ("t-fleet-b3", "second"),
    ];
    let config = fleet(
        &case,
        case.config().emqx_account("second", KEY2, SECRET2),
        &ids,
    )
    .write();

    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(
        run.stdout.lines().count(),
        ids.len(),
        "one line each:\n{run}"
    );
    let log = case.standin.log();
    let spans: Vec<_> = ids.iter().map(|(id, _)| span_of(&log, id)).collect();
    for ((id, _), _) in ids.iter().zip(&spans) {
        assert!(run.stdout.contains(&format!("{id}: renewed")), "{run}");
        assert_deployed(&case, id, &[&format!("{id}.example.test")]);
    }
    // Each deployment waits at least 2 s for `running`: one after another they would take the sum of their
    // spans; at the same time, about the longest one.
    let sum: time::Duration = spans.iter().map(|(a, b)| *b - *a).sum();
    let whole = spans.iter().map(|s| s.1).max().unwrap() - spans.iter().map(|s| s.0).min().unwrap();
    assert!(
        whole < sum * 0.5,
        "the pass took {whole} for deployments that took {sum} in all: not concurrent\n{}",
        case.request_summary()
    );
    // And the keys did not take turns: a deployment of the second key was at work while one of the first was.
    let overlaps = spans[..3]
        .iter()
        .any(|a| spans[3..].iter().any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(
        overlaps,
        "the two keys never overlapped:\n{}",
        case.request_summary()
    );
    assert_no_429(&case);
    case.assert_invariants();
}

/// `concurrency` bounds each API key, not the pass (issue 11: "different API keys proceed fully in parallel"):
/// at `concurrency = 1` the deployments of one key take turns, and the two keys still work at the same time.
#[test]
fn concurrency_one_takes_turns_within_a_key_and_keys_still_run_in_parallel() {
    let case = Case::new("fleet-per-key");
    case.standin.put_key(KEY2, SECRET2, None);
    case.standin.settings(&json!({"pending": 1500}));
    let ids = [
        ("t-perkey-a1", "standin"),
        ("t-perkey-a2", "standin"),
        ("t-perkey-b1", "second"),
        ("t-perkey-b2", "second"),
    ];
    let config = fleet(
        &case,
        case.config()
            .emqx_account("second", KEY2, SECRET2)
            .schedule_raw("concurrency", "1"),
        &ids,
    )
    .write();

    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");
    // From the push to the last poll: the inspections all come first, before any task starts.
    let log = case.standin.log();
    let spans: Vec<_> = ids
        .iter()
        .map(|(id, _)| {
            let requests = requests_of(&log, id);
            let push = requests
                .iter()
                .find(|e| e["method"] != "GET")
                .unwrap_or_else(|| panic!("{id} was never pushed"));
            (at(push), requests.iter().map(|e| at(e)).max().unwrap())
        })
        .collect();
    let overlap = |a: &(OffsetDateTime, OffsetDateTime), b: &(OffsetDateTime, OffsetDateTime)| {
        a.0 < b.1 && b.0 < a.1
    };
    assert!(
        !overlap(&spans[0], &spans[1]) && !overlap(&spans[2], &spans[3]),
        "one key's deployments overlapped at concurrency 1:\n{}",
        case.request_summary()
    );
    assert!(
        spans[..2]
            .iter()
            .any(|a| spans[2..].iter().any(|b| overlap(a, b))),
        "the two keys took turns at concurrency 1:\n{}",
        case.request_summary()
    );
    for (id, _) in ids {
        assert_deployed(&case, id, &[&format!("{id}.example.test")]);
    }
    assert_no_429(&case);
    case.assert_invariants();
}

#[test]
fn waits_for_running_slow_down_instead_of_exceeding_a_nearly_spent_get_budget() {
    // 12 GETs per 15 s on both sides; an earlier pass spent 7 of them, and two renewals then poll every 100 ms
    // while the vendor shows `pending` for 3 s.
    let case = Case::new("getbudget");
    case.standin
        .settings(&json!({"pending": 3000, "get_limit": 12, "window": 15}));
    let config = case
        .config()
        .emqx_raw("get_limit", "12")
        .emqx("rate_window", "15s")
        .emqx("wait_timeout", "60s");
    let ids: Vec<String> = (0..7).map(|i| format!("t-getbudget-{i}")).collect();
    let config = ids.iter().fold(config, |config, id| {
        case.deployment(id, "one-way", not_due());
        config.deployment(id, &[&format!("{id}.example.test")])
    });
    let config = config.write();
    let first = case.run(&config, &["renew"]);
    assert_eq!(first.code(), Some(0), "{first}");
    assert_eq!(case.requests("GET"), 7, "{}", case.request_summary());

    let run = case.run(
        &config,
        &[
            "renew",
            "--now",
            "--deployment",
            &ids[0],
            "--deployment",
            &ids[1],
        ],
    );
    assert_eq!(run.code(), Some(0), "{run}");
    for id in &ids[..2] {
        assert!(run.stdout.contains(&format!("{id}: renewed")), "{run}");
    }
    assert_no_429(&case);
    let log = case.standin.log();
    let most = max_gets_in_window(&log, common::KEY, time::Duration::seconds(15));
    assert!(
        most <= 12,
        "{most} GETs inside 15 s:\n{}",
        case.request_summary()
    );
    case.assert_invariants();
}

#[test]
fn a_hand_run_renew_of_one_deployment_runs_while_the_daemon_waits_on_another() {
    let case = Case::new("handrun");
    let (x, y) = ("t-handrun-x", "t-handrun-y");
    // The daemon's pass stays on Y (pending) for 6 s after its PUT.
    case.standin.settings(&json!({"pending": 6000}));
    case.deployment(x, "one-way", not_due());
    case.deployment(y, "one-way", due());
    let config = case
        .config()
        .schedule("cron", "*/2 * * * * *")
        .schedule("jitter", "0s")
        .emqx("wait_timeout", "30s")
        .deployment(x, &[&format!("{x}.example.test")])
        .deployment(y, &[&format!("{y}.example.test")])
        .write();

    let mut daemon = Daemon::start(bed(), &config, &[], &case.dir.path().join("daemon.log"));
    wait_until(
        "the daemon's PUT of Y",
        Duration::from_secs(30),
        || {
            requests_of(&case.standin.log(), y)
                .iter()
                .any(|e| e["method"] == "PUT")
        },
        || format!("{}\n{}", case.request_summary(), daemon.text()),
    );
    assert_eq!(daemon.count("certificate running"), 0, "{}", daemon.text());

    let run = case.run(&config, &["renew", "--now", "--deployment", x]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(run.stdout.contains(&format!("{x}: renewed")), "{run}");
    // Y's pass was still on: the hand-run renew did not wait for the daemon.
    let log = case.standin.log();
    let y_running = requests_of(&log, y).last().map(|e| at(e)).unwrap();
    let x_put = requests_of(&log, x)
        .into_iter()
        .find(|e| e["method"] == "PUT")
        .map(at)
        .expect("X was pushed");
    assert!(
        x_put < y_running,
        "X was pushed only after Y was done:\n{}",
        case.request_summary()
    );

    daemon.wait_for("certificate running", 1, Duration::from_secs(30));
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(Duration::from_secs(10));
    assert_deployed(&case, x, &[&format!("{x}.example.test")]);
    assert_deployed(&case, y, &[&format!("{y}.example.test")]);
    assert_eq!(case.requests("PUT"), 2, "{}", case.request_summary());
    case.assert_invariants();
}

#[test]
fn two_processes_on_one_key_share_its_budget_without_losing_a_request() {
    // Five writes per hour for six due deployments, renewed by two processes at once: five renewals and one
    // deferral between them, and certkeeper's request log matching the vendor's to the request.
    let case = Case::new("twoproc");
    case.standin
        .settings(&json!({"pending": 300, "write_limit": 5}));
    let ids: Vec<String> = (0..6).map(|i| format!("t-twoproc-{i}")).collect();
    let config = ids
        .iter()
        .fold(case.config().emqx_raw("write_limit", "5"), |c, id| {
            case.deployment(id, "one-way", due());
            c.deployment(id, &[&format!("{id}.example.test")])
        });
    let config = config.write();
    let half = |ids: &[String]| -> Vec<String> {
        let mut args = vec!["renew".to_owned()];
        for id in ids {
            args.extend(["--deployment".to_owned(), id.clone()]);
        }
        args
    };
    let (args1, args2) = (half(&ids[..3]), half(&ids[3..]));
    let (run1, run2) = thread::scope(|s| {
        let one = s.spawn(|| {
            case.run(
                &config,
                &args1.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        });
        let two = s.spawn(|| {
            case.run(
                &config,
                &args2.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        });
        (one.join().unwrap(), two.join().unwrap())
    });
    assert_eq!(run1.code(), Some(0), "{run1}");
    assert_eq!(run2.code(), Some(0), "{run2}");
    let out = format!("{}{}", run1.stdout, run2.stdout);
    assert_eq!(out.matches(": renewed").count(), 5, "{out}");
    assert_eq!(out.matches(": deferred until").count(), 1, "{out}");
    assert_no_429(&case);

    let log = case.standin.log();
    let sent = |m: &[&str]| {
        log.iter()
            .filter(|e| m.contains(&e["method"].as_str().unwrap()))
            .count()
    };
    let budget: Value = serde_json::from_slice(
        &std::fs::read(case.state_dir().join("budget.json")).expect("budget.json"),
    )
    .expect("budget.json is JSON");
    let usage = &budget[common::KEY];
    assert_eq!(sent(&["PUT", "POST"]), 5, "{}", case.request_summary());
    assert_eq!(usage["writes_ms"].as_array().unwrap().len(), 5, "{budget}");
    assert_eq!(
        usage["reads_ms"].as_array().unwrap().len(),
        sent(&["GET"]),
        "every GET either process sent is in the request log: {budget}\n{}",
        case.request_summary()
    );
    case.assert_invariants();
}

/// `certkeeper renew` as a child, output to files, to be killed.
fn spawn_renew(case: &Case, config: &Path) -> std::process::Child {
    let mut cmd = Command::new(&bed().binaries.certkeeper);
    cmd.arg("--config").arg(config).arg("renew");
    scrub_env(&mut cmd);
    cmd.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(case.dir.path().join("killed.stdout")).unwrap())
        .stderr(std::fs::File::create(case.dir.path().join("killed.stderr")).unwrap());
    spawn_owned(cmd).expect("spawn certkeeper")
}

/// Stops a concurrent `renew` of four due deployments with `signal` once two are pushed (waiting for
/// `running`) and the others are somewhere before; then one `renew` must finish them all, with exactly one
/// issuance each across the two runs.
fn stop_mid_pass_then_finish(name: &str, signal: i32) {
    let case = Case::new(name);
    case.standin.settings(&json!({"pending": 3000}));
    let ids: Vec<String> = (0..4).map(|i| format!("t-{name}-{i}")).collect();
    let config = ids.iter().fold(case.config(), |c, id| {
        case.deployment(id, "one-way", due());
        c.deployment(id, &[&format!("{id}.example.test")])
    });
    let config = config.write();

    let exclusive = bed().exclusive();
    let mut child = spawn_renew(&case, &config);
    let started = Instant::now();
    while case.requests("PUT") < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no two PUTs in 60 s:\n{}",
            case.request_summary()
        );
        thread::sleep(Duration::from_millis(10));
    }
    if signal == libc::SIGKILL {
        kill_group(&mut child);
    } else {
        // SAFETY: a plain syscall on our own, unreaped child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "still running 20 s after the signal"
            );
            thread::sleep(Duration::from_millis(20));
        };
        let out = std::fs::read_to_string(case.dir.path().join("killed.stdout")).unwrap();
        assert_eq!(
            status.code(),
            Some(0),
            "stopped at safe points, nothing failed:\n{out}"
        );
    }
    let _ = child.wait();

    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");
    for id in &ids {
        let domain = format!("{id}.example.test");
        assert_deployed(&case, id, &[&domain]);
        assert_no_txt(&[&domain]);
    }
    assert_eq!(
        exclusive.delta().issued,
        ids.len(),
        "one issuance per deployment across the stop:\n{run}"
    );
    assert_no_429(&case);
    case.assert_invariants();
}

#[test]
fn sigkill_during_a_concurrent_pass_then_one_pass_finishes_all_with_one_issuance_each() {
    stop_mid_pass_then_finish("fleetkill", libc::SIGKILL);
}

#[test]
fn sigterm_during_a_concurrent_pass_stops_every_task_at_a_safe_point() {
    stop_mid_pass_then_finish("fleetterm", libc::SIGTERM);
}
