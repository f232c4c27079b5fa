//! The files target end to end (issue 10): real Pebble and knotd for the certificate, a real mosquitto whose TLS
//! listener reads the target's files and reloads them on SIGHUP.
//!
//! Each test seeds the files with a self-signed certificate that is due (10 days left), starts its own broker,
//! and checks what the listener serves, what the files hold and how many certificates Pebble issued.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::bed::{self as testbed, quote};
use common::mosquitto::{Mosquitto, served_serial};
use common::probe::{serial_of, step};
use common::{Case, ConfigBuilder, bed};

/// A files deployment's world: the case, its files directory and the seeded certificate's serial.
struct FilesCase {
    case: Case,
    id: String,
    domain: String,
    files: PathBuf,
    seed_serial: String,
}

impl FilesCase {
    /// A case whose `files/` holds a self-signed certificate for its domain with 10 days left (renewal due).
    fn new(short: &str) -> FilesCase {
        let case = Case::new(&format!("files-{short}"));
        let id = format!("t-files-{short}");
        let domain = format!("{id}.example.test");
        let files = case.dir.path().join("files");
        fs::create_dir(&files).expect("create files dir");
        let seed_serial = seed(&files, &domain);
        FilesCase {
            case,
            id,
            domain,
            files,
            seed_serial,
        }
    }

    fn cert(&self) -> PathBuf {
        self.files.join("fullchain.pem")
    }

    fn key(&self) -> PathBuf {
        self.files.join("privkey.pem")
    }

    /// A config with this case's files deployment; `reload` and `extra` are TOML values written as is.
    fn config(&self, reload: &[&str], extra: &[(&str, String)]) -> ConfigBuilder {
        let argv: Vec<String> = reload.iter().map(|a| quote(a)).collect();
        let mut table = vec![
            ("cert", quote(&self.cert().display().to_string())),
            ("key", quote(&self.key().display().to_string())),
            ("reload", format!("[{}]", argv.join(", "))),
        ];
        table.extend(extra.iter().cloned());
        self.case
            .config()
            .deployment(&self.id, &[&self.domain])
            .table("files", &table)
    }

    fn cert_serial(&self) -> String {
        serial_of(&fs::read_to_string(self.cert()).expect("read the cert file"))
    }

    /// Asserts the key file holds the key of the certificate file.
    fn assert_pair_matches(&self) {
        let cert = fs::read_to_string(self.cert()).expect("read the cert file");
        let key = fs::read_to_string(self.key()).expect("read the key file");
        let leaf = certkeeper::certs::parse_pem_certs(cert.as_bytes()).expect("PEM")[0].clone();
        assert_eq!(
            certkeeper::certs::key_matches(&key.into(), &leaf),
            Some(true),
            "{}: the key file does not match the certificate file",
            self.case.name
        );
    }
}

/// Writes a self-signed certificate for `domain` (10 days left) and its key into `dir`; returns its serial.
fn seed(dir: &Path, domain: &str) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()]).expect("params");
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(80);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(10);
    let cert = params.self_signed(&key).expect("self-sign");
    fs::write(dir.join("fullchain.pem"), cert.pem()).expect("write cert");
    testbed::write_private(&dir.join("privkey.pem"), key.serialize_pem().as_bytes())
        .expect("write key");
    serial_of(&cert.pem())
}

/// Pebble's root (the issuer of its intermediates), written to `dir/pebble-root.pem` for `mosquitto_pub`.
fn pebble_root(dir: &Path) -> PathBuf {
    let pebble = &bed().pebble;
    let ca = fs::read(&pebble.ca_pem).expect("read the Pebble HTTPS CA");
    let (status, pem) = testbed::https_get(&format!("{}/roots/0", pebble.management_url), &ca)
        .expect("GET Pebble's root");
    assert_eq!(status, 200, "Pebble's root: {pem}");
    let path = dir.join("pebble-root.pem");
    fs::write(&path, pem).expect("write the root");
    path
}

#[test]
fn renewal_replaces_the_files_and_mosquitto_serves_the_new_certificate() {
    let fc = FilesCase::new("renew");
    let broker = Mosquitto::start(fc.case.dir.path(), &fc.cert(), &fc.key());
    assert_eq!(
        served_serial(&broker.addr, &fc.domain).as_deref(),
        Some(fc.seed_serial.as_str())
    );
    let pid = broker.pid().to_string();
    let config = fc
        .config(&["kill", "-HUP", &pid], &[])
        .with("endpoint", &broker.addr)
        .with("verify_timeout", "20s")
        .write();

    let check = fc.case.run(&config, &["check"]);
    assert_eq!(check.code(), Some(0), "{check}");
    assert!(check.stdout.contains("files "), "{check}");
    let exclusive = bed().exclusive();
    let run = fc.case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(
        run.code(),
        Some(0),
        "{run}\n{}",
        broker.logs(fc.case.dir.path())
    );
    assert_eq!(acme.issued, 1, "{acme:?}");
    let serial = fc.cert_serial();
    assert_ne!(serial, fc.seed_serial, "the cert file was not replaced");
    assert_eq!(
        served_serial(&broker.addr, &fc.domain).as_deref(),
        Some(serial.as_str()),
        "mosquitto does not serve the new certificate"
    );
    fc.assert_pair_matches();
    assert_eq!(step(&fc.case, &fc.id).as_deref(), Some("verified"));
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&fc.key()), 0o600);
    assert_eq!(mode(&fc.cert()), 0o644);
    let prev = fs::read_to_string(fc.files.join("fullchain.pem.prev")).expect("the .prev pair");
    assert_eq!(serial_of(&prev), fc.seed_serial);
    assert!(fc.files.join("privkey.pem.prev").is_file());
    let (code, out) = broker.publish(&pebble_root(fc.case.dir.path()));
    assert_eq!(code, Some(0), "mosquitto_pub over TLS: {out}");

    // Not due any more: the next pass reads the files and changes nothing.
    let again = fc.case.run(&config, &["renew"]);
    assert_eq!(again.code(), Some(0), "{again}");
    assert_eq!(fc.cert_serial(), serial);
    fc.case.assert_invariants();
}

#[test]
fn a_failing_reload_rolls_back_and_the_next_pass_orders_nothing() {
    let fc = FilesCase::new("reload-fails");
    let broker = Mosquitto::start(fc.case.dir.path(), &fc.cert(), &fc.key());
    let seed_pem = fs::read_to_string(fc.cert()).expect("read seed");
    let config = fc.config(&["false"], &[]).write();

    let exclusive = bed().exclusive();
    let first = fc.case.run(&config, &["renew"]);
    let second = fc.case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    for run in [&first, &second] {
        assert_eq!(run.code(), Some(1), "{run}");
        let failure = run.failures_of(&fc.id).join("\n");
        assert!(
            failure.contains("reload `false` failed")
                && failure.contains("previous certificate files were restored")
                && failure.contains("kept for the next pass"),
            "{run}"
        );
    }
    assert_eq!(acme.issued, 1, "no second issuance: {acme:?}");
    assert_eq!(fs::read_to_string(fc.cert()).expect("read"), seed_pem);
    fc.assert_pair_matches();
    assert_eq!(
        served_serial(&broker.addr, &fc.domain).as_deref(),
        Some(fc.seed_serial.as_str()),
        "the listener must still serve the old certificate"
    );
    assert_eq!(step(&fc.case, &fc.id).as_deref(), Some("issued"));
    fc.case.assert_invariants();
}

#[test]
fn an_endpoint_that_never_shows_the_new_leaf_rolls_back() {
    let fc = FilesCase::new("no-show");
    let broker = Mosquitto::start(fc.case.dir.path(), &fc.cert(), &fc.key());
    let seed_pem = fs::read_to_string(fc.cert()).expect("read seed");
    // `true` tells mosquitto nothing, so it keeps serving the seeded certificate.
    let config = fc
        .config(&["true"], &[])
        .with("endpoint", &broker.addr)
        .with("verify_timeout", "3s")
        .write();

    let run = fc.case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(1), "{run}");
    let failure = run.failures_of(&fc.id).join("\n");
    assert!(
        failure.contains("still serves certificate") && failure.contains("restored"),
        "{run}"
    );
    assert_eq!(fs::read_to_string(fc.cert()).expect("read"), seed_pem);
    assert_eq!(
        served_serial(&broker.addr, &fc.domain).as_deref(),
        Some(fc.seed_serial.as_str())
    );
    fc.case.assert_invariants();
}

#[test]
fn bad_files_sections_fail_check_naming_the_path() {
    let fc = FilesCase::new("bad");
    let missing = fc.case.dir.path().join("no-such-dir/fullchain.pem");
    let link = fc.files.join("link.pem");
    std::os::unix::fs::symlink(fc.cert(), &link).expect("symlink");
    type Overrides<'a> = Vec<(&'a str, String)>;
    let cases: Vec<(&str, Overrides, String)> = vec![
        (
            "missing directory",
            vec![("cert", quote(&missing.display().to_string()))],
            missing.parent().unwrap().display().to_string(),
        ),
        (
            "path is a directory",
            vec![("cert", quote(&fc.files.display().to_string()))],
            format!("{} is a directory", fc.files.display()),
        ),
        (
            "symlink",
            vec![("cert", quote(&link.display().to_string()))],
            format!("{} is a symlink", link.display()),
        ),
        (
            "unknown owner",
            vec![("owner", quote("no-such-user-certkeeper"))],
            "no-such-user-certkeeper".to_owned(),
        ),
        (
            "missing reload program",
            vec![("reload", "[\"/usr/bin/no-such-reload\"]".to_owned())],
            "/usr/bin/no-such-reload".to_owned(),
        ),
        (
            "key readable by others",
            vec![("mode", quote("0644"))],
            "0644".to_owned(),
        ),
    ];
    for (what, overrides, named) in cases {
        let mut table = vec![
            ("cert", quote(&fc.cert().display().to_string())),
            ("key", quote(&fc.key().display().to_string())),
            ("reload", "[\"true\"]".to_owned()),
        ];
        for (k, v) in overrides {
            match table.iter_mut().find(|(key, _)| *key == k) {
                Some(entry) => entry.1 = v,
                None => table.push((k, v)),
            }
        }
        let config = fc
            .case
            .config()
            .deployment(&fc.id, &[&fc.domain])
            .table("files", &table)
            .write();
        let run = fc.case.run(&config, &["check"]);
        assert_eq!(run.code(), Some(2), "{what}: {run}");
        assert!(
            run.stderr.contains(&named),
            "{what}: the error must name {named}\n{run}"
        );
    }
    // A files deployment is no EMQX deployment.
    let config = fc
        .config(&["true"], &[])
        .with("tls_type", "one-way")
        .write();
    let run = fc.case.run(&config, &["check"]);
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(run.stderr.contains("remove `tls_type`"), "{run}");
    assert_eq!(
        fs::read_to_string(fc.cert()).map(|p| serial_of(&p)).ok(),
        Some(fc.seed_serial.clone())
    );
}

#[cfg(feature = "failpoints")]
mod crash {
    use super::*;
    use std::process::Stdio;
    use std::thread;
    use std::time::{Duration, Instant};

    /// Renews stopping at `point`, SIGKILLs certkeeper there, renews again: the files must end as a matching
    /// pair that the broker serves, with one issuance in all.
    fn crash_and_resume(short: &str, point: &str) {
        let fc = FilesCase::new(short);
        let broker = Mosquitto::start(fc.case.dir.path(), &fc.cert(), &fc.key());
        let marker = fc.case.dir.path().join("reloaded");
        let reload = format!("kill -HUP {} && touch {}", broker.pid(), marker.display());
        let config = fc
            .config(&["sh", "-c", &reload], &[])
            .with("endpoint", &broker.addr)
            .with("verify_timeout", "20s")
            .write();
        let seed_key = fs::read(fc.key()).expect("read seed key");
        let seed_cert = fs::read(fc.cert()).expect("read seed cert");
        let reached = || match point {
            "files-key-written" => fs::read(fc.key()).is_ok_and(|k| k != seed_key),
            "files-written" => fs::read(fc.cert()).is_ok_and(|c| c != seed_cert),
            "files-reloaded" => marker.exists(),
            other => panic!("unknown failpoint {other}"),
        };

        let exclusive = bed().exclusive();
        let mut cmd = Command::new(&bed().binaries.certkeeper);
        cmd.arg("--config").arg(&config).arg("renew");
        testbed::scrub_env(&mut cmd);
        cmd.env("FAILPOINTS", format!("{point}=sleep(60000)"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(fc.case.dir.path().join("crash.stderr")).expect("create"));
        let mut child = testbed::spawn_owned(cmd).expect("spawn certkeeper");
        let start = Instant::now();
        while !reached() {
            let stderr =
                || fs::read_to_string(fc.case.dir.path().join("crash.stderr")).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{point}: certkeeper exited ({status}) before the point\n{}",
                    stderr()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{point}: not reached\n{}",
                stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(Duration::from_millis(300));
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "{point}: certkeeper did not stop at the point (built with --features failpoints?)"
        );
        testbed::kill_group(&mut child);

        let run = fc.case.run(&config, &["renew"]);
        let acme = exclusive.delta();
        drop(exclusive);

        assert_eq!(run.code(), Some(0), "{point}: second run\n{run}");
        assert_eq!(acme.issued, 1, "{point}: one certificate in all: {acme:?}");
        fc.assert_pair_matches();
        let serial = fc.cert_serial();
        assert_ne!(serial, fc.seed_serial, "{point}");
        assert_eq!(
            served_serial(&broker.addr, &fc.domain).as_deref(),
            Some(serial.as_str()),
            "{point}: the broker must serve the new certificate\n{run}"
        );
        assert_eq!(
            step(&fc.case, &fc.id).as_deref(),
            Some("verified"),
            "{point}"
        );
        fc.case.assert_invariants();
    }

    #[test]
    fn sigkill_between_the_key_and_the_certificate() {
        crash_and_resume("crash-key", "files-key-written");
    }

    #[test]
    fn sigkill_after_the_files_before_the_reload() {
        crash_and_resume("crash-written", "files-written");
    }

    #[test]
    fn sigkill_after_the_reload_before_the_endpoint_check() {
        crash_and_resume("crash-reloaded", "files-reloaded");
    }
}
