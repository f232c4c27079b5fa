//! Issue 5: never lose a certificate, never waste one. Crash after each persisted step (SIGKILL of a real child
//! stopped at a failpoint, feature `failpoints`), the fault matrix against the real Pebble and knotd and the
//! stand-in, the endpoint check after `running` against a real TLS listener, and secrets in logs and files.
//!
//! Every test has its own names (`t-<test>.example.test`), stand-in and state directory. Tests that count Pebble's
//! orders or issuances hold the bed exclusively ([`common::Bed::exclusive`]) over all of their runs.

use crate::common;

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread;
use std::time::{Duration as StdDuration, Instant};

use base64::Engine as _;
use common::bed::{self as testbed, Run};
use common::probe::{
    bundle_serial, deployed_serial, due, failure, record, serial_of, step, writes,
};
use common::{
    Case, KEY, SECRET, assert_deployed, assert_no_txt, bed, run_with_env, write_client_ca,
};
use serde_json::{Value, json};
use time::Duration;

// ---- helpers ----------------------------------------------------------------------------------------------------

/// A loopback TCP port that was free a moment ago: connections to it are refused.
fn closed_tcp_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A loopback port free for both UDP and TCP a moment ago (a DNS server that is down).
fn closed_dns_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for UDP and TCP");
}

/// TXT strings at `owner` on the knotd listening on `port`.
fn txt_at(port: u16, owner: &str) -> Vec<String> {
    let out = Command::new("kdig")
        .args(["@127.0.0.1", "-p", &port.to_string()])
        .args(["+short", "+norecurse", "+time=2", "+retry=2", "TXT", owner])
        .output()
        .expect("run kdig");
    assert!(out.status.success(), "kdig failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_matches('"').to_owned())
        .collect()
}

/// A loopback HTTP server that answers every request with `response` (a raw HTTP response), or, with `None`,
/// accepts connections and never answers. Counts connections.
struct RawServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl RawServer {
    fn start(response: Option<&'static str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        // Detached: it lives until the test process exits.
        thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                match response {
                    Some(answer) => {
                        let _ = stream.set_read_timeout(Some(StdDuration::from_secs(2)));
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n")
                            && stream.read(&mut byte).unwrap_or(0) == 1
                        {
                            head.push(byte[0]);
                        }
                        let _ = stream.write_all(answer.as_bytes());
                    }
                    None => held.push(stream),
                }
            }
        });
        Self { addr, connections }
    }

    fn url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }
}

// ---- crash after each step ----------------------------------------------------------------------------------------

#[cfg(feature = "failpoints")]
mod crash {
    use super::*;
    use common::probe::{bundle_path, record_serial};
    use std::process::{Child, Stdio};

    /// Spawns `certkeeper --config CONFIG renew` stopping (sleeping) at failpoint `point`; output to files.
    fn spawn_stopping_at(case: &Case, config: &Path, point: &str) -> Child {
        let bed = bed();
        let mut cmd = Command::new(&bed.binaries.certkeeper);
        cmd.arg("--config").arg(config).arg("renew");
        testbed::scrub_env(&mut cmd);
        cmd.env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("FAILPOINTS", format!("{point}=sleep(60000)"))
            .stdin(Stdio::null())
            .stdout(fs::File::create(case.dir.path().join("crash.stdout")).expect("create"))
            .stderr(fs::File::create(case.dir.path().join("crash.stderr")).expect("create"));
        testbed::spawn_owned(cmd).expect("spawn certkeeper")
    }

    fn crash_output(case: &Case) -> String {
        let read = |n: &str| fs::read_to_string(case.dir.path().join(n)).unwrap_or_default();
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            read("crash.stdout"),
            read("crash.stderr")
        )
    }

    /// True once the process stands at `point`, judged from outside.
    fn reached(case: &Case, id: &str, point: &str) -> bool {
        match point {
            "order-saved" | "certificate-downloaded" => case
                .state_dir()
                .join(format!("deployments/{id}.order.json"))
                .is_file(),
            "issued-saved" => bundle_path(case, id).is_file(),
            "issued-recorded" => step(case, id).as_deref() == Some("issued"),
            "push-accepted" => writes(case).iter().any(|(_, status)| *status == 200),
            "pushed-recorded" => step(case, id).as_deref() == Some("pushed"),
            "active-recorded" => step(case, id).as_deref() == Some("active"),
            other => panic!("unknown failpoint {other}"),
        }
    }

    /// Runs `renew` stopping at `point`, SIGKILLs it there, runs `renew` again and checks the deployment runs the
    /// certificate issued by the first run, with exactly one issuance in all. Returns the writes the vendor saw.
    fn crash_and_resume(short: &str, point: &str, has_cert: bool) -> Vec<(String, u64)> {
        let case = Case::new(&format!("crash-{short}"));
        let id = format!("t-crash-{short}");
        let domain = format!("{id}.example.test");
        case.deployment(&id, "one-way", if has_cert { due() } else { None });
        let config = case.config().deployment(&id, &[&domain]).write();

        let exclusive = bed().exclusive();
        let mut child = spawn_stopping_at(&case, &config, point);
        let start = Instant::now();
        while !reached(&case, &id, point) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{point}: certkeeper exited ({status}) before the point\n{}",
                    crash_output(&case)
                );
            }
            if start.elapsed() > StdDuration::from_secs(60) {
                testbed::kill_group(&mut child);
                panic!("{point}: not reached in 60 s\n{}", crash_output(&case));
            }
            thread::sleep(StdDuration::from_millis(20));
        }
        // The point is reached (or its vendor answer is on the way): give the process time to move on if it
        // were not held there, then check it did not.
        thread::sleep(StdDuration::from_millis(400));
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "{point}: certkeeper exited instead of stopping at the point\n{}",
            crash_output(&case)
        );
        let held_step = step(&case, &id);
        let want_step = match point {
            "order-saved" | "certificate-downloaded" | "issued-saved" => None,
            "issued-recorded" | "push-accepted" => Some("issued"),
            "pushed-recorded" => Some("pushed"),
            "active-recorded" => Some("active"),
            _ => unreachable!(),
        };
        assert_eq!(
            held_step.as_deref(),
            want_step,
            "{point}: the process did not stop at the point (is target/debug/certkeeper built with \
             --features failpoints? a concurrent build without it replaces the binary)\n{}",
            crash_output(&case)
        );
        // The bundle is removed before `active` is recorded; the record names the certificate then. Before the
        // bundle exists (finalizing), the certificate is known only to the CA: any serial will do, once.
        let serial = if bundle_path(&case, &id).exists() {
            Some(bundle_serial(&case, &id))
        } else if record(&case, &id)["cert"]["serial"].is_string() {
            Some(record_serial(&case, &id))
        } else {
            None
        };
        testbed::kill_group(&mut child);

        let run = case.run(&config, &["renew"]);
        let acme = exclusive.delta();
        drop(exclusive);

        assert_eq!(run.code(), Some(0), "{point}: second run\n{run}");
        assert!(run.failures_of(&id).is_empty(), "{run}");
        assert_deployed(&case, &id, &[&domain]);
        if let Some(serial) = serial {
            assert_eq!(
                deployed_serial(&case, &id),
                serial,
                "{point}: the deployment must run the certificate issued before the crash"
            );
        }
        assert_eq!(
            acme.issued, 1,
            "{point}: exactly one certificate in all: {acme:?}"
        );
        assert_eq!(
            acme.orders, 1,
            "{point}: exactly one order in all: {acme:?}"
        );
        assert_eq!(step(&case, &id).as_deref(), Some("active"), "{point}");
        assert!(
            !bundle_path(&case, &id).exists(),
            "{point}: the bundle is removed once running"
        );
        assert_no_txt(&[&domain]);
        case.assert_invariants();
        writes(&case)
    }

    #[test]
    fn crash_after_the_order_is_saved_before_finalization() {
        let w = crash_and_resume("finalize", "order-saved", true);
        assert_eq!(w, [("PUT".into(), 200)], "one write in all");
    }

    #[test]
    fn crash_after_the_certificate_is_downloaded_before_it_is_saved() {
        let w = crash_and_resume("download", "certificate-downloaded", true);
        assert_eq!(w, [("PUT".into(), 200)], "one write in all");
    }

    #[test]
    fn crash_after_the_bundle_is_saved() {
        let w = crash_and_resume("saved", "issued-saved", true);
        assert_eq!(w, [("PUT".into(), 200)], "one write in all");
    }

    #[test]
    fn crash_after_issued_is_recorded() {
        let w = crash_and_resume("issued", "issued-recorded", true);
        assert_eq!(w, [("PUT".into(), 200)], "one write in all");
    }

    #[test]
    fn crash_after_the_vendor_accepted_the_push() {
        // The accepted write was not recorded yet: the next pass asks the vendor first, sees the certificate
        // there, and waits for it instead of writing again.
        let w = crash_and_resume("accepted", "push-accepted", true);
        assert_eq!(
            w,
            [("PUT".into(), 200)],
            "the accepted write is not repeated"
        );
    }

    #[test]
    fn crash_after_pushed_is_recorded() {
        let w = crash_and_resume("pushed", "pushed-recorded", true);
        assert_eq!(
            w,
            [("PUT".into(), 200)],
            "the accepted write is waited on, not repeated"
        );
    }

    #[test]
    fn crash_after_active_is_recorded() {
        let w = crash_and_resume("active", "active-recorded", true);
        assert_eq!(
            w,
            [("PUT".into(), 200)],
            "a certificate recorded active must not be pushed again"
        );
    }

    #[test]
    fn crash_after_the_vendor_accepted_a_first_post() {
        // A deployment without a certificate gets a POST. After the crash the vendor holds the certificate, so a
        // second POST is refused (422): the resumed push must be a PUT (or none).
        let w = crash_and_resume("post", "push-accepted", false);
        assert_eq!(w.first(), Some(&("POST".to_owned(), 200)), "{w:?}");
        assert!(w.iter().skip(1).all(|(_, s)| *s == 200), "{w:?}");
    }
}

// ---- fault matrix: EMQX API -------------------------------------------------------------------------------------

#[test]
fn emqx_500_on_every_write_fails_then_the_next_run_pushes_the_same_certificate() {
    let case = Case::new("w500");
    let id = "t-w500";
    let domains = ["t-w500.example.test"];
    // Three attempts answer 500 in the first run; the next run meets the two left, then succeeds.
    case.standin.settings(&json!({"fail_writes": 5}));
    case.deployment(id, "one-way", due());
    let config = case.config().deployment(id, &domains).write();

    let exclusive = bed().exclusive();
    let first = case.run(&config, &["renew"]);
    let line = failure(&first, id);
    assert_eq!(first.code(), Some(1), "{first}");
    assert!(
        line.contains("unavailable") && line.contains("500"),
        "{line}"
    );
    assert_eq!(
        writes(&case),
        vec![("PUT".to_owned(), 500); 3],
        "3 attempts, then give up"
    );
    assert_eq!(step(&case, id).as_deref(), Some("issued"));
    let serial = bundle_serial(&case, id);

    let second = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(second.code(), Some(0), "{second}");
    assert!(
        second
            .stderr
            .contains("resuming: pushing the certificate issued by an earlier pass"),
        "{second}"
    );
    let w = writes(&case);
    assert_eq!(
        &w[3..],
        [
            ("PUT".into(), 500),
            ("PUT".into(), 500),
            ("PUT".into(), 200)
        ],
        "500s are retried within the run"
    );
    assert_deployed(&case, id, &domains);
    assert_eq!(deployed_serial(&case, id), serial, "the same certificate");
    assert_eq!(acme.issued, 1, "no second issuance: {acme:?}");
    assert_eq!(acme.orders, 1, "{acme:?}");
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn emqx_connection_refused_fails_before_any_acme_order() {
    let case = Case::new("refused");
    let id = "t-refused";
    let port = closed_tcp_port();
    let config = case
        .config()
        .emqx("url", &format!("http://127.0.0.1:{port}/api/v1"))
        .deployment(id, &["t-refused.example.test"])
        .write();

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, id);
    assert!(
        line.contains("unavailable") && line.to_lowercase().contains("refused"),
        "the cause must be named: {line}"
    );
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert_eq!(acme.orders, 0, "inspect fails first: {acme:?}");
    assert_eq!(acme.accounts, 0, "{acme:?}");
    case.assert_invariants();
}

#[test]
fn emqx_that_never_answers_times_out() {
    let case = Case::new("hang");
    let id = "t-hang";
    let server = RawServer::start(None);
    let config = case
        .config()
        .emqx("url", &server.url())
        .emqx("request_timeout", "1s")
        .deployment(id, &["t-hang.example.test"])
        .write();

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, id).to_lowercase();
    assert!(
        line.contains("unavailable") && line.contains("timed out"),
        "{line}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 3, "3 attempts");
    assert_eq!(acme.orders, 0, "{acme:?}");
    case.assert_invariants();
}

#[test]
fn emqx_body_that_is_not_json_is_named_and_not_retried() {
    let case = Case::new("notjson");
    let id = "t-notjson";
    let server = RawServer::start(Some(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\nConnection: close\r\n\r\nnot json",
    ));
    let config = case
        .config()
        .emqx("url", &server.url())
        .deployment(id, &["t-notjson.example.test"])
        .write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, id);
    assert!(line.contains("not JSON"), "{line}");
    assert_eq!(server.connections.load(Ordering::SeqCst), 1, "not retried");
    assert!(
        !case.state_dir().join("account.json").exists(),
        "no ACME account was needed"
    );
    case.assert_invariants();
}

#[test]
fn emqx_429_with_a_long_retry_after_defers_and_keeps_the_certificate() {
    let case = Case::new("w429");
    let id = "t-w429";
    let domains = ["t-w429.example.test"];
    // The vendor allows fewer writes than certkeeper's config assumes: 429 with Retry-After of a whole window.
    case.standin.settings(&json!({"write_limit": 0}));
    case.deployment(id, "one-way", due());
    let config = case.config().deployment(id, &domains).write();

    let exclusive = bed().exclusive();
    let first = case.run(&config, &["renew"]);
    assert_eq!(first.code(), Some(0), "deferred is not a failure\n{first}");
    assert!(
        first.stdout.contains(&format!("{id}: deferred until")),
        "{first}"
    );
    assert!(first.stdout.contains("429"), "the cause is named: {first}");
    assert_eq!(
        writes(&case),
        [("PUT".into(), 429)],
        "a long Retry-After is not waited out"
    );
    assert_eq!(step(&case, id).as_deref(), Some("issued"));
    let serial = bundle_serial(&case, id);

    // Right away: the key is blocked until Retry-After; nothing is sent, the deployment stays deferred.
    let requests = case.standin.log().len();
    let second = case.run(&config, &["renew"]);
    assert_eq!(second.code(), Some(0), "{second}");
    assert!(second.stdout.contains("deferred"), "{second}");
    assert_eq!(
        case.standin.log().len(),
        requests,
        "{}",
        case.request_summary()
    );

    // A window later (Retry-After has passed, nothing is counted any more; the vendor admits writes again): the
    // same certificate is pushed. Time passes by forgetting the budget.
    let budget = case.state_dir().join("budget.json");
    assert!(budget.is_file(), "the 429 is persisted in budget.json");
    testbed::write_private(&budget, b"{}").unwrap();
    case.standin.settings(&json!({"write_limit": 6}));
    let third = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(third.code(), Some(0), "{third}");
    assert_deployed(&case, id, &domains);
    assert_eq!(deployed_serial(&case, id), serial);
    assert_eq!(acme.issued, 1, "{acme:?}");
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn emqx_429_with_a_short_retry_after_is_waited_out() {
    let case = Case::new("g429");
    let id = "t-g429";
    let domains = ["t-g429.example.test"];
    // One GET per 4 s: the polls after the push meet 429 with a Retry-After of a few seconds.
    case.standin.settings(&json!({"get_limit": 1, "window": 4}));
    case.deployment(id, "one-way", due());
    let config = case.config().deployment(id, &domains).write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}\n{}", case.request_summary());
    let log = case.standin.log();
    assert!(
        log.iter().any(|e| e["status"] == 429),
        "the test needs a 429:\n{}",
        case.request_summary()
    );
    assert_eq!(writes(&case), [("PUT".into(), 200)]);
    assert_deployed(&case, id, &domains);
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn emqx_422_is_not_retried_and_the_fixed_cause_gets_the_same_certificate() {
    let case = Case::new("w422");
    let id = "t-w422";
    let domains = ["t-w422.example.test"];
    case.standin.settings(&json!({"min_days_left": 100_000}));
    case.deployment(id, "one-way", due());
    let config = case.config().deployment(id, &domains).write();

    let exclusive = bed().exclusive();
    let first = case.run(&config, &["renew"]);
    assert_eq!(first.code(), Some(1), "{first}");
    let line = failure(&first, id);
    assert!(
        line.contains("422") && line.contains("not retried"),
        "{line}"
    );
    assert_eq!(
        writes(&case),
        [("PUT".into(), 422)],
        "a 422 is never retried"
    );
    let serial = bundle_serial(&case, id);

    case.standin.settings(&json!({"min_days_left": 60}));
    let second = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(second.code(), Some(0), "{second}");
    assert_eq!(writes(&case), [("PUT".into(), 422), ("PUT".into(), 200)]);
    assert_deployed(&case, id, &domains);
    assert_eq!(deployed_serial(&case, id), serial);
    assert_eq!(acme.issued, 1, "{acme:?}");
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn emqx_stuck_pending_fails_then_the_next_run_resumes_waiting() {
    let case = Case::new("pending");
    let id = "t-pending";
    let domains = ["t-pending.example.test"];
    case.standin.settings(&json!({"stuck_pending": true}));
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .emqx("wait_timeout", "2s")
        .emqx("poll_interval", "200ms")
        .deployment(id, &domains)
        .write();

    let exclusive = bed().exclusive();
    let first = case.run(&config, &["renew"]);
    assert_eq!(first.code(), Some(1), "{first}");
    let line = failure(&first, id);
    assert!(
        line.contains("still pending") && line.contains("resumes waiting"),
        "{line}"
    );
    assert_eq!(step(&case, id).as_deref(), Some("pushed"));
    let serial = bundle_serial(&case, id);

    case.standin.settings(&json!({"stuck_pending": false}));
    let second = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(second.code(), Some(0), "{second}");
    assert!(second.stderr.contains("resuming: waiting"), "{second}");
    assert_eq!(writes(&case), [("PUT".into(), 200)], "no new push");
    assert_deployed(&case, id, &domains);
    assert_eq!(deployed_serial(&case, id), serial);
    assert_eq!(acme.issued, 1, "{acme:?}");
    assert_eq!(step(&case, id).as_deref(), Some("active"));
    assert_no_txt(&domains);
    case.assert_invariants();
}

/// `final_status: "failed"` after the write: exit 1 naming it; then, running again, the same certificate is pushed
/// once more and succeeds. `has_cert` false starts from a deployment without a certificate (POST).
fn failed_status_case(short: &str, has_cert: bool) -> Vec<(String, u64)> {
    let case = Case::new(short);
    let id = format!("t-{short}");
    let domain = format!("{id}.example.test");
    case.standin
        .settings(&json!({"final_status": "failed", "pending": 200}));
    case.deployment(&id, "one-way", if has_cert { due() } else { None });
    let config = case.config().deployment(&id, &[&domain]).write();

    let exclusive = bed().exclusive();
    let first = case.run(&config, &["renew"]);
    assert_eq!(first.code(), Some(1), "{first}");
    let line = failure(&first, &id);
    assert!(
        line.contains("\"failed\"") && line.contains("not applied"),
        "{line}"
    );
    assert_eq!(step(&case, &id).as_deref(), Some("issued"));
    let serial = bundle_serial(&case, &id);

    // Still failed at the vendor: the same certificate is pushed again (as a PUT: the vendor has one now).
    let again = case.run(&config, &["renew"]);
    assert_eq!(again.code(), Some(1), "{again}");
    assert!(failure(&again, &id).contains("not applied"), "{again}");
    assert_eq!(bundle_serial(&case, &id), serial, "no new certificate");

    // Now the vendor runs it: the next pass sees it running and writes nothing more.
    case.standin.settings(&json!({"final_status": "running"}));
    let second = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(
        second.code(),
        Some(0),
        "{second}\n{}",
        case.request_summary()
    );
    assert_deployed(&case, &id, &[&domain]);
    assert_eq!(deployed_serial(&case, &id), serial, "the same certificate");
    assert_eq!(acme.issued, 1, "{acme:?}");
    assert_no_txt(&[&domain]);
    case.assert_invariants();
    writes(&case)
}

#[test]
fn emqx_unknown_status_failed_then_the_same_certificate_is_pushed_again() {
    let w = failed_status_case("failed", true);
    assert_eq!(w, [("PUT".into(), 200), ("PUT".into(), 200)]);
}

#[test]
fn emqx_unknown_status_failed_after_a_first_post() {
    // The vendor stored the certificate before reporting `failed`: the push again must be a PUT, and once the
    // vendor runs it nothing more is written.
    let w = failed_status_case("failedpost", false);
    assert_eq!(w, [("POST".into(), 200), ("PUT".into(), 200)]);
}

// ---- fault matrix: ACME -----------------------------------------------------------------------------------------

/// The share of nonces [`nonce_pebble`] rejects, as the issue asks.
const NONCE_REJECT: u8 = 50;

/// A Pebble rejecting [`NONCE_REJECT`] % of good nonces, started on first use.
fn nonce_pebble() -> &'static testbed::Pebble {
    static PEBBLE: OnceLock<testbed::Pebble> = OnceLock::new();
    PEBBLE.get_or_init(|| {
        bed()
            .extra_pebble_rejecting_nonces("pebble-nonce50", NONCE_REJECT)
            .unwrap_or_else(|e| panic!("the nonce-rejecting Pebble did not start: {e}"))
    })
}

#[test]
fn acme_bad_nonce_bursts_are_retried() {
    // Three deployments, three orders in one run, each at 50 % badNonce: all must come through.
    let case = Case::new("nonce50");
    let ids = ["t-nonce50-a", "t-nonce50-b", "t-nonce50-c"];
    let mut builder = case.config().pebble(nonce_pebble());
    for id in ids {
        case.deployment(id, "one-way", due());
        builder = builder.deployment(id, &[&format!("{id}.example.test")]);
    }
    let config = builder.write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    for id in ids {
        assert_deployed(&case, id, &[&format!("{id}.example.test")]);
        assert_no_txt(&[&format!("{id}.example.test")]);
    }
    assert_eq!(writes(&case).len(), 3, "{}", case.request_summary());
    case.assert_invariants();
}

#[test]
fn acme_ca_unreachable_fails_naming_the_ca() {
    let case = Case::new("ca-down");
    let id = "t-ca-down";
    let directory = format!("https://127.0.0.1:{}/dir", closed_tcp_port());
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .acme("directory", &directory)
        .deployment(id, &["t-ca-down.example.test"])
        .write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, id);
    assert!(line.contains(&format!("ACME CA {directory}")), "{line}");
    assert!(line.to_lowercase().contains("refused"), "{line}");
    assert_eq!(writes(&case), [], "nothing pushed");
    case.assert_invariants();
}

#[test]
fn acme_order_invalid_when_the_txt_record_lands_where_the_ca_does_not_look() {
    // A real misconfiguration: `server` is a (hidden) primary the CA never asks. certkeeper's update and its
    // propagation check succeed there; the CA, resolving at the bed's knotd, finds no TXT and invalidates the order.
    static HIDDEN: OnceLock<testbed::Knot> = OnceLock::new();
    let hidden = HIDDEN.get_or_init(|| {
        bed()
            .extra_knot("knot-hidden")
            .expect("start a second knotd")
    });
    let case = Case::new("invalid");
    let id = "t-invalid";
    let domains = ["t-invalid.example.test"];
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .dns("server", &hidden.server())
        .dns(
            "tsig_secret_file",
            hidden.tsig_secret_file.to_str().unwrap(),
        )
        .deployment(id, &domains)
        .write();

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, id);
    assert!(
        line.contains("could not validate t-invalid.example.test") && line.contains("TXT"),
        "the CA's own words: {line}"
    );
    assert_eq!(
        acme.orders, 1,
        "a validation failure is not retried: {acme:?}"
    );
    assert_eq!(acme.issued, 0, "{acme:?}");
    assert_eq!(writes(&case), [], "nothing pushed");
    let owner = "_acme-challenge.t-invalid.example.test.";
    assert!(
        txt_at(hidden.port, owner).is_empty(),
        "TXT left at the hidden primary"
    );
    assert_no_txt(&domains);
    case.assert_invariants();
}

// ---- fault matrix: DNS ------------------------------------------------------------------------------------------

/// Runs a renewal whose `[dns.bed]` is changed by `dns`, expecting a DNS failure: returns the failure line and
/// Pebble's orders.
fn dns_failure(
    short: &str,
    dns: impl FnOnce(common::ConfigBuilder, &Path) -> common::ConfigBuilder,
) -> (String, usize) {
    let case = Case::new(short);
    let id = format!("t-{short}");
    let domain = format!("{id}.example.test");
    case.deployment(&id, "one-way", due());
    let config = dns(case.config(), case.dir.path())
        .deployment(&id, &[&domain])
        .write();

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(1), "{run}");
    assert_eq!(acme.issued, 0, "{acme:?}");
    assert_eq!(writes(&case), [], "nothing pushed");
    assert_no_txt(&[&domain]);
    case.assert_invariants();
    (failure(&run, &id), acme.orders)
}

#[test]
fn dns_server_down_fails_as_unreachable() {
    let port = closed_dns_port();
    let (line, orders) = dns_failure("dns-down", |c, _| {
        c.dns("server", &format!("127.0.0.1:{port}"))
    });
    assert!(
        line.contains("unreachable") && line.contains(&format!("127.0.0.1:{port}")),
        "{line}"
    );
    assert!(
        orders <= 1,
        "no CA order left dangling beyond one: {orders} orders"
    );
}

#[test]
fn dns_wrong_tsig_secret_is_named() {
    let (line, orders) = dns_failure("tsig-secret", |c, dir| {
        let path = dir.join("wrong-tsig.secret");
        testbed::write_private(
            &path,
            base64::engine::general_purpose::STANDARD
                .encode([7u8; 32])
                .as_bytes(),
        )
        .unwrap();
        c.dns("tsig_secret_file", path.to_str().unwrap())
    });
    // Knot answers a MAC that does not verify with BADSIG (an unknown key name would be BADKEY).
    assert!(
        line.contains("rejected TSIG key `acme-update.` (BADSIG)") && line.contains("secret"),
        "{line}"
    );
    assert_eq!(orders, 1, "a rejected key is not retried");
}

#[test]
fn dns_unknown_tsig_key_is_badkey() {
    let (line, orders) = dns_failure("tsig-key", |c, _| c.dns("tsig_key", "nobody."));
    assert!(
        line.contains("rejected TSIG key `nobody.` (BADKEY)"),
        "{line}"
    );
    assert_eq!(orders, 1, "a rejected key is not retried");
}

#[test]
fn dns_update_refused_by_the_acl_is_named() {
    let (line, orders) = dns_failure("acl", |c, dir| {
        let path = dir.join("intruder.secret");
        testbed::write_private(&path, bed().knot.intruder_secret.as_bytes()).unwrap();
        c.dns("tsig_key", testbed::INTRUDER_KEY)
            .dns("tsig_secret_file", path.to_str().unwrap())
    });
    // Knot reports an ACL denial as NOTAUTH/BADKEY.
    assert!(
        line.contains("rejected TSIG key `intruder.` (BADKEY)") && line.contains("ACL"),
        "{line}"
    );
    assert_eq!(orders, 1, "a refusal is not retried");
}

// ---- verify after `running` -------------------------------------------------------------------------------------

/// A TLS listener on loopback whose certificate can be switched while it runs.
struct TlsEndpoint {
    addr: SocketAddr,
    state: Arc<Served>,
    runtime: Option<tokio::runtime::Runtime>,
}

#[derive(Debug)]
struct Served {
    key: RwLock<Arc<rustls::sign::CertifiedKey>>,
    handshakes: AtomicUsize,
    sni: Mutex<Vec<String>>,
}

impl rustls::server::ResolvesServerCert for Served {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            self.sni.lock().unwrap().push(name.to_owned());
        }
        self.handshakes.fetch_add(1, Ordering::SeqCst);
        Some(self.key.read().unwrap().clone())
    }
}

/// A certificate chain and key, PEM, as rustls serves them.
fn certified_key(chain_pem: &str, key_pem: &str) -> Arc<rustls::sign::CertifiedKey> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certificates PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).expect("a usable key");
    Arc::new(rustls::sign::CertifiedKey::new(certs, signer))
}

/// A self-signed certificate for `domain`: `(cert_pem, key_pem)`.
fn self_signed(domain: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![domain.to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("self-sign");
    (cert.pem(), key.serialize_pem())
}

impl TlsEndpoint {
    fn start(initial: Arc<rustls::sign::CertifiedKey>) -> Self {
        let state = Arc::new(Served {
            key: RwLock::new(initial),
            handshakes: AtomicUsize::new(0),
            sni: Mutex::new(Vec::new()),
        });
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(state.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                    }
                });
            }
        });
        Self {
            addr,
            state,
            runtime: Some(runtime),
        }
    }

    fn serve(&self, key: Arc<rustls::sign::CertifiedKey>) {
        *self.state.key.write().unwrap() = key;
    }

    fn handshakes(&self) -> usize {
        self.state.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsEndpoint {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Renews `id` with `endpoint` pointing at a listener that serves an old certificate and, `switch_after` once the
/// stand-in reports running, the pushed one (`None`: never). Returns the run, the listener and when it switched.
fn verify_case(
    case: &Case,
    id: &str,
    domain: &str,
    verify_timeout: &str,
    switch_after: Option<StdDuration>,
) -> (Run, TlsEndpoint, String) {
    let (old_cert, old_key) = self_signed(domain);
    let old_serial = serial_of(&old_cert);
    let endpoint = TlsEndpoint::start(certified_key(&old_cert, &old_key));
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .deployment(id, &[domain])
        .with("endpoint", &endpoint.addr.to_string())
        .with("endpoint_sni", &format!("sni.{domain}"))
        .with("verify_timeout", verify_timeout)
        .write();

    let done = AtomicBool::new(false);
    let run = thread::scope(|s| {
        s.spawn(|| {
            let Some(after) = switch_after else { return };
            while !done.load(Ordering::SeqCst) {
                let view = case.standin.deployment(id);
                if view["status"] == "running" && view["writes"].as_u64() >= Some(1) {
                    thread::sleep(after);
                    endpoint.serve(certified_key(
                        view["cert"].as_str().unwrap(),
                        view["key"].as_str().unwrap(),
                    ));
                    return;
                }
                thread::sleep(StdDuration::from_millis(50));
            }
        });
        let run = case.run(&config, &["renew"]);
        done.store(true, Ordering::SeqCst);
        run
    });
    (run, endpoint, old_serial)
}

#[test]
fn verify_waits_until_the_endpoint_serves_the_pushed_certificate() {
    let case = Case::new("verify");
    let id = "t-verify";
    let domain = "t-verify.example.test";
    let started = Instant::now();
    let (run, endpoint, _) = verify_case(&case, id, domain, "20s", Some(StdDuration::from_secs(3)));

    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr
            .contains("the endpoint serves the new certificate"),
        "{run}"
    );
    assert_eq!(step(&case, id).as_deref(), Some("verified"));
    assert!(endpoint.handshakes() >= 2, "it retried until the switch");
    assert!(started.elapsed() >= StdDuration::from_secs(3));
    let snis = endpoint.state.sni.lock().unwrap().clone();
    assert!(
        !snis.is_empty() && snis.iter().all(|n| *n == format!("sni.{domain}")),
        "endpoint_sni is sent: {snis:?}"
    );
    assert_deployed(&case, id, &[domain]);
    case.assert_invariants();
}

#[test]
fn verify_mismatch_fails_with_both_serials() {
    let case = Case::new("mismatch");
    let id = "t-mismatch";
    let domain = "t-mismatch.example.test";
    let (run, endpoint, old_serial) = verify_case(&case, id, domain, "4s", None);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, id);
    let pushed = deployed_serial(&case, id);
    assert!(
        line.contains(&old_serial) && line.contains(&pushed),
        "both serials ({old_serial} served, {pushed} pushed): {line}"
    );
    assert!(endpoint.handshakes() >= 2, "it retried");
    assert_eq!(step(&case, id).as_deref(), Some("active"), "not verified");
    case.assert_invariants();
}

#[test]
fn a_verified_certificate_still_counts_as_the_active_one() {
    // After `verified`, the next pass knows the certificate it pushed exactly as after `active`: not due, from
    // local state, no request to the vendor.
    let case = Case::new("verified2");
    let id = "t-verified2";
    let domain = "t-verified2.example.test";
    let (run, _endpoint, _) = verify_case(&case, id, domain, "20s", Some(StdDuration::ZERO));
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(step(&case, id).as_deref(), Some("verified"));
    let requests = case.standin.log().len();

    let again = case.run(&case.dir.path().join("config.toml"), &["renew"]);

    assert_eq!(again.code(), Some(0), "{again}");
    assert!(
        again.stdout.contains("[from local state, no API request]"),
        "{again}\n{}",
        case.request_summary()
    );
    assert_eq!(
        case.standin.log().len(),
        requests,
        "{}",
        case.request_summary()
    );
    case.assert_invariants();
}

// ---- secrets and files --------------------------------------------------------------------------------------------

#[test]
fn no_secret_in_a_trace_log_of_a_full_two_way_renewal() {
    let case = Case::new("secrets");
    let id = "t-secrets";
    let domains = ["t-secrets.example.test"];
    let ca_path = case.dir.path().join("client-ca.pem");
    write_client_ca(&ca_path);
    case.deployment(id, "two-way", due());
    let config = case
        .config()
        .deployment(id, &domains)
        .with("tls_type", "two-way")
        .with("client_ca_file", ca_path.to_str().unwrap())
        .write();

    let run = run_with_env(&config, &["--verbose", "renew"], &[("RUST_LOG", "trace")]);

    assert_eq!(run.code(), Some(0), "{run}");
    assert!(run.stderr.contains("TRACE"), "a trace log was written");
    let b64 = base64::engine::general_purpose::STANDARD;
    let tsig = bed().knot.tsig_secret.clone();
    let tsig_raw = b64.decode(&tsig).expect("TSIG secret is base64");
    let tsig_hex: String = tsig_raw.iter().map(|b| format!("{b:02x}")).collect();
    let tsig_debug = format!("{:?}", &tsig_raw[..6]);
    let view = assert_deployed(&case, id, &domains);
    let pushed_key = view["key"].as_str().unwrap().to_owned();
    let key_line = pushed_key
        .lines()
        .find(|l| !l.starts_with("-----") && l.len() > 40)
        .expect("a base64 line in the key")
        .to_owned();
    let accounts: Value =
        serde_json::from_slice(&fs::read(case.state_dir().join("account.json")).unwrap()).unwrap();
    let account_key = accounts["accounts"]
        .as_object()
        .and_then(|a| a.values().next())
        .and_then(|a| a["key_pkcs8"].as_str())
        .expect("key_pkcs8 in account.json")
        .to_owned();
    let account_der = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&account_key)
        .expect("key_pkcs8 is base64url");
    let secrets = [
        ("EMQX secret", SECRET.to_owned()),
        ("EMQX basic auth", b64.encode(format!("{KEY}:{SECRET}"))),
        ("TSIG secret (base64)", tsig.clone()),
        ("TSIG secret (hex)", tsig_hex),
        (
            "TSIG secret (bytes)",
            tsig_debug.trim_end_matches(']').to_owned(),
        ),
        ("PEM private key", "PRIVATE KEY".to_owned()),
        ("pushed key (base64 line)", key_line),
        ("account key (key_pkcs8)", account_key.clone()),
        ("account key (part)", account_key[50..80].to_owned()),
        ("account key (base64)", b64.encode(&account_der)),
    ];
    let output = format!("{}\n{}", run.stdout, run.stderr);
    for (what, secret) in &secrets {
        assert!(
            !output.contains(secret.as_str()),
            "the {what} appears in the output (line: {:?})",
            output.lines().find(|l| l.contains(secret.as_str()))
        );
    }
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn inline_secret_in_a_readable_config_is_warned_about() {
    let case = Case::new("inline");
    let toml = case
        .config()
        .deployment("t-inline", &["t-inline.example.test"])
        .toml();
    let toml: String = toml
        .lines()
        .map(|l| {
            if l.starts_with("secret_file = ") {
                format!("secret = {SECRET:?}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = case.dir.path().join("inline.toml");
    fs::write(&config, &toml).unwrap();

    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let readable = case.run(&config, &["check"]);
    assert_eq!(readable.code(), Some(0), "{readable}");
    assert!(
        readable.stderr.contains("WARN")
            && readable.stderr.contains("inline secrets")
            && readable
                .stderr
                .contains(&format!("chmod 600 {}", config.display())),
        "{readable}"
    );
    assert!(!format!("{readable}").contains(SECRET));

    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let private = case.run(&config, &["check"]);
    assert_eq!(private.code(), Some(0), "{private}");
    assert!(!private.stderr.contains("inline secrets"), "{private}");
}

#[test]
fn a_state_dir_writable_by_others_is_refused() {
    let case = Case::new("state777");
    let id = "t-state777";
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .deployment(id, &["t-state777.example.test"])
        .write();
    let state = case.state_dir();
    fs::create_dir_all(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(1), "{run}");
    assert!(
        run.stderr.contains("writable by group or others")
            && run
                .stderr
                .contains(&format!("chmod 700 {}", state.display())),
        "{run}"
    );
    assert!(
        case.standin.log().is_empty(),
        "nothing was asked: {}",
        case.request_summary()
    );
    assert_eq!(
        fs::read_dir(&state).unwrap().count(),
        0,
        "nothing was written there"
    );
}

#[test]
fn the_endpoint_tells_the_lifetime_of_a_certificate_certkeeper_did_not_push() {
    // A 20-day certificate with 8 days left: knowing only `expire`, the 30-day fallback would renew it now; the
    // handshake shows its lifetime, so the lifetime rule (renew with a third left, ~6.7 days) says not yet.
    let case = Case::new("learned");
    let id = "t-learned";
    let domain = "t-learned.example.test";
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("whole second");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()]).expect("params");
    params.not_before = now - Duration::days(12);
    params.not_after = now + Duration::days(8);
    let cert = params.self_signed(&key).expect("self-sign");
    let endpoint = TlsEndpoint::start(certified_key(&cert.pem(), &key.serialize_pem()));
    case.deployment(id, "one-way", Some(now + Duration::days(8)));
    let config = case
        .config()
        .deployment(id, &[domain])
        .with("endpoint", &endpoint.addr.to_string())
        .write();

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(0), "{run}");
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("not due") && line.contains("lifetime rule"),
        "{run}"
    );
    assert_eq!(acme.orders, 0, "{acme:?}");
    assert!(endpoint.handshakes() >= 1, "the endpoint was asked");
    assert!(
        record(&case, id)["served"]["not_before"].is_string(),
        "the lifetime is recorded"
    );
    case.assert_invariants();
}
