//! `certkeeper run` end to end (issue 3, "## Tests"): real processes, real signals, a real unix datagram socket
//! for sd_notify, against the bed's Pebble and knotd and a stand-in per test.
//!
//! The daemons run a 2-second cron without jitter. Every wait polls the daemon's log, the stand-in's request
//! log or the state directory up to a deadline; daemons are killed when their [`Daemon`] drops.

use crate::common;
use crate::common::probe::{due, not_due};

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, wait_until};
use common::{Case, ConfigBuilder, assert_deployed, assert_no_txt, bed};
use serde_json::{Value, json};

/// Logged before each sleep: once at start, after each pass, after each reload.
const SLEEPING: &str = "sleeping until the next pass";
/// Logged when a pass starts an ACME order.
const ORDERING: &str = "renewal due; ordering a certificate";
/// Logged when the vendor runs the pushed certificate.
const RUNNING: &str = "certificate running";
/// Logged for a deployment whose local state answers "not due" without asking the vendor.
const FRESH: &str = "not due (local state is fresh; no API request)";
/// Logged (once per wait) when another process holds the state lock.
const WAITING: &str = "another certkeeper holds the state lock; waiting for it";

/// Generous bounds: a renewal (ACME order, DNS-01, push, pending) takes a second or two on an idle machine.
const RENEWAL: Duration = Duration::from_secs(30);
const START: Duration = Duration::from_secs(15);
const EXIT: Duration = Duration::from_secs(5);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The case's config with a tick every 2 seconds and no jitter.
fn every_two_seconds(case: &Case) -> ConfigBuilder {
    case.config()
        .schedule("cron", "*/2 * * * * *")
        .schedule("jitter", "0s")
}

fn start(case: &Case, config: &Path, env: &[(&str, &str)]) -> Daemon {
    Daemon::start(bed(), config, env, &case.dir.path().join("daemon.log"))
}

/// The deployment's state record (`STATE/deployments/ID.json`).
fn record(case: &Case, id: &str) -> Value {
    let path = case.state_dir().join(format!("deployments/{id}.json"));
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Vendor API requests with `method` for deployment `id`.
fn requests_for(case: &Case, method: &str, id: &str) -> usize {
    let path = format!("/api/v1/deployments/{id}/tls");
    case.standin
        .log()
        .iter()
        .filter(|e| e["method"] == method && e["path"] == path.as_str())
        .count()
}

/// Index of the `n`-th (0-based) log line containing `needle`.
fn nth_line(log: &str, needle: &str, n: usize) -> Option<usize> {
    log.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(n)
        .map(|(i, _)| i)
}

/// Sends `signal` (SIGTERM or SIGINT), then asserts a clean exit (0) within [`EXIT`].
fn stop(daemon: &mut Daemon, signal: i32) {
    daemon.signal(signal);
    let status = daemon.wait_exit(EXIT).unwrap_or_else(|| {
        panic!(
            "still running {EXIT:?} after signal {signal}:\n{}",
            daemon.text()
        )
    });
    assert_eq!(
        status.code(),
        Some(0),
        "exit after signal {signal}: {status}\n{}",
        daemon.text()
    );
}

#[test]
fn daemon_renews_a_due_deployment_on_its_first_tick_and_nothing_on_the_next() {
    let case = Case::new("d-tick");
    let id = "t-d-tick";
    let domains = ["t-d-tick.example.test"];
    case.deployment(id, "one-way", due());
    let config = every_two_seconds(&case).deployment(id, &domains).write();

    let mut daemon = start(&case, &config, &[]);
    daemon.wait_for(RUNNING, 1, RENEWAL);
    let gets_after_renewal = case.requests("GET");
    // Two more ticks: local state knows the pushed certificate, so neither asks the vendor anything.
    let log = daemon.wait_for(FRESH, 2, secs(10));

    // The renewal was the first tick's pass: between the first and the second sleep.
    let ordering = nth_line(&log, ORDERING, 0).unwrap();
    assert!(nth_line(&log, SLEEPING, 0).unwrap() < ordering, "{log}");
    assert!(ordering < nth_line(&log, SLEEPING, 1).unwrap(), "{log}");
    assert_eq!(daemon.count(ORDERING), 1, "{log}");
    assert_eq!(case.requests("PUT"), 1, "{}", case.request_summary());
    assert_eq!(case.requests("POST"), 0, "{}", case.request_summary());
    assert_eq!(
        case.requests("GET"),
        gets_after_renewal,
        "later passes must not ask the vendor (inspect_interval 24h):\n{}",
        case.request_summary()
    );
    assert_eq!(record(&case, id)["step"], "active");

    stop(&mut daemon, libc::SIGTERM);
    assert!(daemon.text().contains("stopping"), "{}", daemon.text());
    assert_deployed(&case, id, &domains);
    assert!(
        !case
            .state_dir()
            .join(format!("deployments/{id}.pem"))
            .exists()
    );
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn sigterm_during_a_pass_exits_0_and_renew_completes_it_without_a_second_issuance() {
    let case = Case::new("d-term");
    let id = "t-d-term";
    let domains = ["t-d-term.example.test"];
    // Long enough that SIGTERM surely arrives while the daemon waits for `running`.
    case.standin.settings(&json!({"pending": 5000}));
    case.deployment(id, "one-way", due());
    let config = every_two_seconds(&case)
        .emqx("poll_interval", "500ms")
        .deployment(id, &domains)
        .write();

    // Exact counts: no other test's ACME traffic while this one runs.
    let exclusive = bed().exclusive();
    let mut daemon = start(&case, &config, &[]);
    wait_until(
        "PUT",
        RENEWAL,
        || case.requests("PUT") == 1,
        || format!("{}\n{}", case.request_summary(), daemon.text()),
    );
    let signalled = Instant::now();
    daemon.signal(libc::SIGTERM);
    let status = daemon
        .wait_exit(EXIT)
        .unwrap_or_else(|| panic!("still running {EXIT:?} after SIGTERM:\n{}", daemon.text()));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}\n{}", daemon.text());
    assert!(
        took < secs(4),
        "the pending phase (5 s) must not delay the stop: {took:?}"
    );
    assert_eq!(daemon.count(RUNNING), 0, "{}", daemon.text());
    assert_eq!(
        record(&case, id)["step"],
        "pushed",
        "the interrupted deployment must be resumable from its step"
    );
    assert!(
        case.state_dir()
            .join(format!("deployments/{id}.pem"))
            .is_file(),
        "the pushed bundle is kept until the vendor runs it"
    );
    drop(daemon);

    let renew = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(renew.code(), Some(0), "{renew}");
    assert!(renew.stdout.contains(&format!("{id}: renewed")), "{renew}");
    assert_eq!(acme.issued, 1, "one certificate in total: {acme:?}");
    assert_eq!(acme.orders, 1, "{acme:?}");
    assert_eq!(case.requests("PUT"), 1, "{}", case.request_summary());
    assert_eq!(case.requests("POST"), 0, "{}", case.request_summary());
    assert_eq!(record(&case, id)["step"], "active");
    assert!(
        !case
            .state_dir()
            .join(format!("deployments/{id}.pem"))
            .exists()
    );
    assert_deployed(&case, id, &domains);
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn sigterm_during_issuance_keeps_the_certificate_for_the_next_renew_to_push() {
    let case = Case::new("d-term-issue");
    let id = "t-d-term-issue";
    let domains = ["t-d-term-issue.example.test"];
    case.deployment(id, "one-way", due());
    let config = every_two_seconds(&case).deployment(id, &domains).write();

    let exclusive = bed().exclusive();
    let mut daemon = start(&case, &config, &[]);
    // The order is under way (DNS-01 takes a while): stop now. Issuance is no safe point, so the certificate
    // is finished and saved, and nothing is pushed.
    daemon.wait_for(ORDERING, 1, RENEWAL);
    stop(&mut daemon, libc::SIGTERM);
    assert_eq!(
        case.requests("PUT") + case.requests("POST"),
        0,
        "{}",
        case.request_summary()
    );
    assert_eq!(record(&case, id)["step"], "issued", "{}", daemon.text());
    assert!(
        case.state_dir()
            .join(format!("deployments/{id}.pem"))
            .is_file()
    );
    assert_no_txt(&domains);
    drop(daemon);

    let renew = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(renew.code(), Some(0), "{renew}");
    assert_eq!(acme.issued, 1, "one certificate in total: {acme:?}");
    assert_eq!(case.requests("PUT"), 1, "{}", case.request_summary());
    assert_deployed(&case, id, &domains);
    assert_eq!(record(&case, id)["step"], "active");
    case.assert_invariants();
}

/// The datagrams a test `NOTIFY_SOCKET` received, with their arrival times.
struct NotifySocket {
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    done: Arc<AtomicBool>,
    reader: Option<thread::JoinHandle<()>>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (messages, done) = (messages.clone(), done.clone());
            thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                while !done.load(Ordering::Relaxed) {
                    if let Ok(len) = socket.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                        messages.lock().unwrap().push((Instant::now(), text));
                    }
                }
            })
        };
        NotifySocket {
            messages,
            done,
            reader: Some(reader),
        }
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    /// Everything but the watchdog pings, in order.
    fn states(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| m != "WATCHDOG=1")
            .collect()
    }

    /// Waits until a non-watchdog message after index `from` matches `pred`; returns its index.
    fn wait(&self, what: &str, from: usize, pred: impl Fn(&str) -> bool) -> usize {
        let mut found = None;
        wait_until(
            what,
            secs(10),
            || {
                found = self
                    .states()
                    .iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, m)| pred(m))
                    .map(|(i, _)| i);
                found.is_some()
            },
            || format!("{:#?}", self.states()),
        );
        found.unwrap()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

#[test]
fn notify_socket_gets_ready_status_reloading_stopping_and_watchdog() {
    let case = Case::new("d-notify");
    let id = "t-d-notify";
    case.deployment(id, "one-way", not_due());
    let config = every_two_seconds(&case)
        .deployment(id, &["t-d-notify.example.test"])
        .write();
    let path = case.dir.path().join("notify.sock");
    let notify = NotifySocket::bind(&path);

    let mut daemon = start(
        &case,
        &config,
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
            // As under systemd: the journal stamps lines, so the daemon must not.
            ("JOURNAL_STREAM", "8:12345"),
        ],
    );
    let ready = notify.wait("READY=1", 0, |m| m.contains("READY=1"));
    let states = notify.states();
    assert_eq!(ready, 0, "READY=1 comes first: {states:#?}");
    let first = &states[0];
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    let status = first
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("READY=1 carries a STATUS=: {first:?}"));
    assert!(status.contains("1 deployments"), "{status:?}");
    assert!(status.contains("next pass"), "{status:?}");

    // After each pass, a STATUS= with its outcome and the next pass.
    let after_pass = notify.wait("STATUS= after a pass", 1, |m| {
        m.starts_with("STATUS=") && m.contains("next pass") && m.contains("last: ok")
    });

    daemon.signal(libc::SIGHUP);
    let reloading = notify.wait("RELOADING=1", after_pass + 1, |m| {
        m.lines().any(|l| l == "RELOADING=1")
    });
    let reloading_msg = notify.states()[reloading].clone();
    assert!(
        reloading_msg.contains("MONOTONIC_USEC="),
        "systemd's reload protocol wants MONOTONIC_USEC: {reloading_msg:?}"
    );
    notify.wait("READY=1 after the reload", reloading + 1, |m| {
        m.lines().any(|l| l == "READY=1")
    });
    daemon.wait_for("configuration reloaded", 1, secs(5));
    // Enough pings to judge their rhythm (about 2 s at the expected 200 ms).
    wait_until(
        "10 watchdog pings",
        secs(10),
        || {
            notify
                .all()
                .iter()
                .filter(|(_, m)| m == "WATCHDOG=1")
                .count()
                >= 10
        },
        || format!("{:#?}", notify.all()),
    );

    stop(&mut daemon, libc::SIGTERM);
    let log = daemon.text();
    assert!(
        log.lines()
            .all(|l| !l.starts_with(|c: char| c.is_ascii_digit())),
        "no timestamps under JOURNAL_STREAM:\n{log}"
    );
    let states = notify.states();
    let stopping = notify.wait("STOPPING=1", reloading + 1, |m| m == "STOPPING=1");
    assert_eq!(
        stopping,
        states.len() - 1,
        "STOPPING=1 is the last message: {states:#?}"
    );

    assert_watchdog_rhythm(&notify);
    case.assert_invariants();
}

/// WATCHDOG=1 at half of WATCHDOG_USEC (200 ms) for as long as the daemon ran.
fn assert_watchdog_rhythm(notify: &NotifySocket) {
    let pings: Vec<Instant> = notify
        .all()
        .into_iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| t)
        .collect();
    assert!(pings.len() >= 10, "{} watchdog pings", pings.len());
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    let max = gaps.iter().max().unwrap();
    let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
    assert!(
        *max < Duration::from_millis(400),
        "a gap of {max:?} between pings would let systemd's watchdog (400 ms) fire; gaps {gaps:?}"
    );
    assert!(
        mean > Duration::from_millis(150) && mean < Duration::from_millis(260),
        "pings every {mean:?} on average, want 200 ms"
    );
}

mod lock;
mod reload;
