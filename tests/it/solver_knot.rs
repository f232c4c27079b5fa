//! The RFC 2136 solver against a real Knot DNS server.
//!
//! One knotd serves the whole file: started on first use from a thread that lives as long as the test binary
//! (so `PR_SET_PDEATHSIG` does not fire early), stopped at exit by an `atexit` hook, and killed by the kernel
//! if the binary dies without exiting. Tests run in parallel against it, so each uses its own owner names.
//!
//! knotd serves `example.test.` and its child zone `sub.example.test.` on 127.0.0.1 at a free port. Key
//! `acme-update.` may update TXT records at the owners in `ALLOWED_OWNERS`; key `other-key.` is known to the
//! server but in no ACL.

use std::fs;
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use certkeeper::solver::{
    Dns01Solver, Rfc2136Error, Rfc2136Settings, Rfc2136Solver, SolverError, TsigAlgorithm,
    TsigErrorCode, TxtRecord,
};
use secrecy::SecretSlice;
use tempfile::TempDir;

/// Owners the ACL lets `acme-update.` update, relative to the zone being updated (Knot's `update-owner-name`).
/// Knot 3.2 has no wildcard owner match, so every name a test uses is listed.
const ALLOWED_OWNERS: &[&str] = &[
    "_acme-challenge",
    "_acme-challenge.present",
    "_acme-challenge.absent",
    "_acme-challenge.discovered",
    "_acme-challenge.deep",
    "_acme-challenge.badsecret",
    "_acme-challenge.otherkey",
    "_acme-challenge.hidden.sub",
];

/// The running knotd, as the tests see it.
struct Knot {
    /// `127.0.0.1:port`
    server: String,
    port: u16,
    /// Secret of `acme-update.`, the key in the ACL.
    secret: Vec<u8>,
    /// Secret of `other-key.`, a key the server knows but no ACL names.
    other_secret: Vec<u8>,
}

/// What must outlive the tests and go at exit: the process and its directory.
struct KnotGuard {
    child: Child,
    _dir: TempDir,
}

impl Drop for KnotGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static KNOT: OnceLock<Knot> = OnceLock::new();
static KNOT_GUARD: Mutex<Option<KnotGuard>> = Mutex::new(None);

extern "C" fn stop_knot() {
    if let Ok(mut guard) = KNOT_GUARD.lock() {
        guard.take();
    }
}

/// Returns the shared knotd, starting it on first use.
fn knot() -> &'static Knot {
    KNOT.get_or_init(|| {
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("knotd-keeper".into())
            .spawn(move || {
                let started = start_knot();
                let failed = started.is_err();
                sender
                    .send(started)
                    .expect("the test thread waits for knotd");
                if !failed {
                    // knotd dies with this thread (PR_SET_PDEATHSIG): keep it alive for the whole binary.
                    loop {
                        std::thread::park();
                    }
                }
            })
            .expect("spawn the knotd keeper thread");
        let (knot, guard) = receiver
            .recv()
            .expect("the keeper thread answers")
            .unwrap_or_else(|err| panic!("{err}"));
        *KNOT_GUARD
            .lock()
            .expect("no test panics while holding the guard") = Some(guard);
        // SAFETY: registers a plain function with no captured state; it runs once at process exit.
        unsafe { libc::atexit(stop_knot) };
        knot
    })
}

/// Writes the zones, keys and config into a temporary directory, starts knotd and waits until it answers.
fn start_knot() -> Result<(Knot, KnotGuard), String> {
    let dir = tempfile::tempdir().map_err(|err| format!("tempdir: {err}"))?;
    let port = free_port();
    let secret: Vec<u8> = rand::random::<[u8; 32]>().to_vec();
    let other_secret: Vec<u8> = rand::random::<[u8; 32]>().to_vec();
    let path = dir.path();
    for sub in ["run", "db"] {
        fs::create_dir(path.join(sub)).map_err(|err| format!("mkdir {sub}: {err}"))?;
    }
    let write = |name: &str, text: &str| {
        fs::write(path.join(name), text).map_err(|err| format!("write {name}: {err}"))
    };
    write(
        "example.test.zone",
        "$ORIGIN example.test.\n$TTL 300\n\
         @ SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60\n\
         @ NS ns1\nns1 A 127.0.0.1\n",
    )?;
    write(
        "sub.example.test.zone",
        "$ORIGIN sub.example.test.\n$TTL 300\n\
         @ SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60\n\
         @ NS ns1.example.test.\n",
    )?;
    write("knot.conf", &knot_conf(path, port, &secret, &other_secret))?;
    let log =
        fs::File::create(path.join("knotd.log")).map_err(|err| format!("knotd.log: {err}"))?;
    let log_err = log.try_clone().map_err(|err| format!("knotd.log: {err}"))?;

    let mut command = Command::new("/usr/sbin/knotd");
    command
        .arg("-c")
        .arg(path.join("knot.conf"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|err| format!("spawn knotd: {err}"))?;
    let mut guard = KnotGuard { child, _dir: dir };

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = guard.child.try_wait() {
            let log = fs::read_to_string(guard._dir.path().join("knotd.log")).unwrap_or_default();
            return Err(format!("knotd exited with {status}:\n{log}"));
        }
        if !kdig(port, "SOA", "example.test.").is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err("knotd did not answer SOA example.test. within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let knot = Knot {
        server: format!("127.0.0.1:{port}"),
        port,
        secret,
        other_secret,
    };
    Ok((knot, guard))
}

/// The knotd configuration: everything inside `dir`, two keys, one ACL, two zones.
fn knot_conf(dir: &Path, port: u16, secret: &[u8], other_secret: &[u8]) -> String {
    let dir = dir.display();
    let owners = ALLOWED_OWNERS.join(", ");
    let (secret, other_secret) = (BASE64.encode(secret), BASE64.encode(other_secret));
    format!(
        r#"server:
    rundir: "{dir}/run"
    listen: 127.0.0.1@{port}

log:
  - target: stderr
    any: info

database:
    storage: "{dir}/db"

key:
  - id: acme-update.
    algorithm: hmac-sha256
    secret: {secret}
  - id: other-key.
    algorithm: hmac-sha256
    secret: {other_secret}

acl:
  - id: acme-update
    key: acme-update.
    action: update
    update-type: [TXT]
    update-owner: name
    update-owner-match: equal
    update-owner-name: [{owners}]

template:
  - id: default
    storage: "{dir}"
    file: "%s.zone"
    acl: acme-update

zone:
  - domain: example.test.
  - domain: sub.example.test.
"#
    )
}

/// Returns a port free for both UDP and TCP on 127.0.0.1 (free at the time of asking).
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
        let port = tcp.local_addr().expect("local address").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Asks knotd with kdig; returns the answer's records, one per line (`+short`).
fn kdig(port: u16, record_type: &str, name: &str) -> Vec<String> {
    let output = Command::new("kdig")
        .args([
            "@127.0.0.1".into(),
            format!("-p{port}"),
            "+short".into(),
            "+norec".into(),
            "+time=1".into(),
            "+retry=0".into(),
            record_type.into(),
            name.into(),
        ])
        .output()
        .expect("run kdig");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.starts_with(';'))
        .map(str::to_owned)
        .collect()
}

/// The TXT values knotd has at `owner`, unquoted.
fn txt_values(owner: &str) -> Vec<String> {
    let mut values: Vec<String> = kdig(knot().port, "TXT", owner)
        .into_iter()
        .map(|line| line.trim_matches('"').to_owned())
        .collect();
    values.sort();
    values
}

/// A fresh value shaped like a real one (43 base64url characters).
fn token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn knot_settings(zone: Option<&str>) -> Rfc2136Settings {
    let knot = knot();
    let mut settings = Rfc2136Settings::new(
        knot.server.clone(),
        "acme-update.",
        TsigAlgorithm::HmacSha256,
        SecretSlice::from(knot.secret.clone()),
    );
    settings.zone = zone.map(str::to_owned);
    settings.propagation_timeout = Duration::from_secs(10);
    settings
}

fn challenge(fqdn: &str) -> TxtRecord {
    TxtRecord {
        fqdn: fqdn.into(),
        value: token(),
    }
}

#[tokio::test]
async fn present_makes_the_value_visible() {
    let solver = Rfc2136Solver::new(knot_settings(Some("example.test.")));
    let record = challenge("_acme-challenge.present.example.test.");
    solver.present(&record).await.unwrap();
    assert_eq!(txt_values(&record.fqdn), [record.value.as_str()]);
    solver.cleanup(&record).await.unwrap();
    assert!(txt_values(&record.fqdn).is_empty());
}

#[tokio::test]
async fn values_at_one_owner_coexist_and_cleanup_removes_only_its_own() {
    // A certificate for example.test and *.example.test: two values at one owner.
    let solver: Box<dyn Dns01Solver> =
        Box::new(Rfc2136Solver::new(knot_settings(Some("example.test."))));
    let apex = TxtRecord::for_domain("example.test", token());
    let wildcard = TxtRecord::for_domain("*.example.test", token());
    assert_eq!(apex.fqdn, "_acme-challenge.example.test.");
    assert_eq!(apex.fqdn, wildcard.fqdn);

    let (first, second) = tokio::join!(solver.present(&apex), solver.present(&wildcard));
    first.unwrap();
    second.unwrap();
    let mut both = vec![apex.value.clone(), wildcard.value.clone()];
    both.sort();
    assert_eq!(txt_values(&apex.fqdn), both);

    solver.cleanup(&apex).await.unwrap();
    assert_eq!(txt_values(&apex.fqdn), [wildcard.value.as_str()]);
    solver.cleanup(&wildcard).await.unwrap();
    assert!(txt_values(&apex.fqdn).is_empty());
}

#[tokio::test]
async fn cleanup_of_an_absent_record_is_ok() {
    let solver = Rfc2136Solver::new(knot_settings(Some("example.test.")));
    let record = challenge("_acme-challenge.absent.example.test.");
    solver.cleanup(&record).await.unwrap();
    solver.present(&record).await.unwrap();
    solver.cleanup(&record).await.unwrap();
    solver.cleanup(&record).await.unwrap();
    assert!(txt_values(&record.fqdn).is_empty());
}

#[tokio::test]
async fn zone_is_discovered_when_not_configured() {
    let solver = Rfc2136Solver::new(knot_settings(None));
    // In example.test. itself, and in the child zone sub.example.test. that the same server hosts: an update
    // naming the parent zone would land where queries never look, and the present would time out.
    for fqdn in [
        "_acme-challenge.discovered.example.test.",
        "_acme-challenge.deep.sub.example.test.",
    ] {
        let record = challenge(fqdn);
        solver.present(&record).await.unwrap();
        assert_eq!(txt_values(fqdn), [record.value.as_str()], "{fqdn}");
        solver.cleanup(&record).await.unwrap();
        assert!(txt_values(fqdn).is_empty(), "{fqdn}");
    }
}

#[tokio::test]
async fn discovery_fails_clearly_for_a_zone_the_server_lacks() {
    let solver = Rfc2136Solver::new(knot_settings(None));
    let err = solver
        .present(&challenge("_acme-challenge.nowhere.invalid."))
        .await
        .unwrap_err();
    assert!(matches!(err, SolverError::ZoneNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("_acme-challenge.nowhere.invalid."),
        "{err}"
    );
}

#[tokio::test]
async fn owner_outside_the_configured_zone_is_caught_before_sending() {
    let solver = Rfc2136Solver::new(knot_settings(Some("sub.example.test.")));
    let err = solver
        .present(&challenge("_acme-challenge.example.test."))
        .await
        .unwrap_err();
    assert!(matches!(err, SolverError::NotZone { .. }), "{err}");
}

#[tokio::test]
async fn a_value_the_server_never_answers_times_out_naming_owner_and_server() {
    // Forcing the parent zone puts the record under the child zone's apex, where knotd never answers from.
    let mut settings = knot_settings(Some("example.test."));
    settings.propagation_timeout = Duration::from_millis(300);
    let solver = Rfc2136Solver::new(settings);
    let record = challenge("_acme-challenge.hidden.sub.example.test.");
    let started = Instant::now();
    let err = solver.present(&record).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, SolverError::PropagationTimeout { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&record.fqdn) && text.contains(&knot().server),
        "{text}"
    );
    solver.cleanup(&record).await.unwrap();
}

#[tokio::test]
async fn wrong_secret_is_a_tsig_rejection() {
    let mut settings = knot_settings(Some("example.test."));
    settings.secret = SecretSlice::from(rand::random::<[u8; 32]>().to_vec());
    let solver = Rfc2136Solver::new(settings);
    let record = challenge("_acme-challenge.badsecret.example.test.");
    let err = solver.present(&record).await.unwrap_err();
    assert!(
        matches!(
            err,
            SolverError::Rfc2136(Rfc2136Error::TsigRejected {
                code: TsigErrorCode::BadSig,
                ..
            })
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("`acme-update.` (BADSIG)") && text.contains("secret"),
        "{text}"
    );
    assert!(txt_values(&record.fqdn).is_empty());
}

#[tokio::test]
async fn key_outside_the_acl_is_rejected() {
    // Knot answers an ACL denial of a signed update with NOTAUTH/BADKEY (BIND would say REFUSED).
    let mut settings = knot_settings(Some("example.test."));
    settings.key_name = "other-key.".into();
    settings.secret = SecretSlice::from(knot().other_secret.clone());
    let solver = Rfc2136Solver::new(settings);
    let record = challenge("_acme-challenge.otherkey.example.test.");
    let err = solver.present(&record).await.unwrap_err();
    assert!(
        matches!(
            err,
            SolverError::Rfc2136(Rfc2136Error::TsigRejected {
                code: TsigErrorCode::BadKey,
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("ACL"), "{err}");
    assert!(txt_values(&record.fqdn).is_empty());

    // Same for the right key at an owner outside its rule.
    let solver = Rfc2136Solver::new(knot_settings(Some("example.test.")));
    let err = solver
        .present(&challenge("www.example.test."))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SolverError::Rfc2136(Rfc2136Error::TsigRejected {
                code: TsigErrorCode::BadKey,
                ..
            })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn server_down_is_unreachable_at_once() {
    let server = format!("127.0.0.1:{}", free_port());
    for zone in [Some("example.test."), None] {
        let mut settings = Rfc2136Settings::new(
            server.clone(),
            "acme-update.",
            TsigAlgorithm::HmacSha256,
            SecretSlice::from(b"not used".to_vec()),
        );
        settings.zone = zone.map(str::to_owned);
        let solver = Rfc2136Solver::new(settings);
        let started = Instant::now();
        let err = solver
            .present(&challenge("_acme-challenge.example.test."))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(err, SolverError::Unreachable { .. }), "{err}");
        assert!(err.is_transient());
        let text = err.to_string();
        assert!(
            text.contains(&format!("{server} unreachable (connection refused)")),
            "{text}"
        );
        assert!(!text.contains("not used"), "{text}");
    }
}
