//! Huawei Cloud / OTC DCS instances (issue 15) against the strict DCS stand-in and a real Redis with TLS:
//! the CA lands in `ca_file` and `redis-cli --tls --cacert ca_file PING` answers; rotations, overlap,
//! hostile archives, SSL off, refused credentials, unvalidated or expiring certificates, the healthy gauge,
//! and the daemon's own pass.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::common::bed::{Run, run_captured, scrub_env};
use crate::common::dcs::{DcsStandin, Redis};

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const AK: &str = "AKSTANDIN0123456789";
const SK: &str = "sk-very-secret-0123456789abcdefghij";
const ID: &str = "6f4a1c2e-0000-4000-8000-000000000001";

/// One DCS test: its directory, stand-in and config.
struct World {
    dir: tempfile::TempDir,
    standin: DcsStandin,
}

impl World {
    fn new(name: &str) -> World {
        let dir = tempfile::Builder::new()
            .prefix(&format!("certkeeper-dcs-{name}-"))
            .tempdir()
            .unwrap();
        let standin = DcsStandin::start(dir.path());
        standin.put_key(AK, SK);
        standin.instance(ID, &json!({"project": PROJECT, "ssl": "on"}));
        World { dir, standin }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca_file(&self) -> PathBuf {
        self.path("dcs-ca.pem")
    }

    /// Writes the config with `extra` lines in the instance, and `sk` as the secret key file.
    fn config(&self, sk: &str, extra: &str) -> PathBuf {
        fs::write(self.path("otc.sk"), sk).unwrap();
        fs::set_permissions(self.path("otc.sk"), fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!(
            "state_dir = \"{state}\"\n[acme]\ndirectory = \"letsencrypt\"\n\n[dcs.otc]\nendpoint = \"{endpoint}\"\n\
             project_id = \"{PROJECT}\"\naccess_key = \"{AK}\"\nsecret_key_file = \"{sk}\"\n\n[[dcs_instance]]\n\
             id = \"{ID}\"\nca_file = \"{ca}\"\n{extra}\n",
            state = self.path("state").display(),
            endpoint = self.standin.endpoint(),
            sk = self.path("otc.sk").display(),
            ca = self.ca_file().display(),
        );
        let path = self.path("config.toml");
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn run(&self, config: &Path, args: &[&str]) -> Run {
        let mut cmd = std::process::Command::new(&crate::common::bed().binaries.certkeeper);
        cmd.arg("--config").arg(config).args(args);
        scrub_env(&mut cmd);
        cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
        let run = run_captured(cmd, std::time::Duration::from_secs(120));
        assert!(
            !run.stdout.contains(SK) && !run.stderr.contains(SK),
            "the SK appears in certkeeper's output"
        );
        run
    }
}

fn certs_in(pem: &str) -> usize {
    pem.matches("BEGIN CERTIFICATE").count()
}

#[test]
fn sync_installs_the_ca_and_redis_answers_pong() {
    let w = World::new("sync");
    w.standin.rotate(ID, &w.path("gen1"));
    let redis = Redis::start(w.dir.path(), &w.path("gen1"));
    // Two 5xx first: retried with backoff, not a failure.
    w.standin.instance(ID, &json!({"fail_next": 2}));
    let config = w.config(SK, &format!("endpoint = \"{}\"", redis.endpoint()));
    let run = w.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("ca_file updated"), "{}", run.stdout);
    assert!(
        redis.ping(&w.ca_file()),
        "PING with the synced ca_file failed"
    );
    assert_eq!(
        fs::metadata(w.ca_file()).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // The next pass asks for the status only.
    let run = w.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert_eq!(w.standin.count("api", "POST", "/ssl-certs/download"), 1);
    assert_eq!(
        w.standin.count("api", "PUT", "/ssl"),
        0,
        "certkeeper must never switch SSL"
    );
    for entry in w
        .standin
        .log()
        .iter()
        .filter(|e| e["listener"] == "storage")
    {
        assert_eq!(
            entry["authorization"], false,
            "the link was fetched with our credentials"
        );
        assert_eq!(entry["status"], 200);
    }
    let status = w.run(&config, &["status", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(report["schema"], 1);
    assert_eq!(report["dcs_instances"][0]["id"], ID);
    assert_eq!(report["dcs_instances"][0]["health"], "ok");
}

#[test]
fn after_a_rotation_the_next_pass_updates_ca_file_and_overlap_keeps_clients_working() {
    let w = World::new("rotate");
    w.standin.rotate(ID, &w.path("gen1"));
    let mut redis = Redis::start(w.dir.path(), &w.path("gen1"));
    let config = w.config(SK, "");
    assert_eq!(w.run(&config, &["renew"]).code(), Some(0));
    // DCS rotates; the instance still serves the old certificate until it restarts.
    w.standin.rotate(ID, &w.path("gen2"));
    let run = w.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let both = fs::read_to_string(w.ca_file()).unwrap();
    assert_eq!(
        certs_in(&both),
        2,
        "ca_overlap keeps the old CA beside the new one"
    );
    assert!(
        redis.ping(&w.ca_file()),
        "the old server certificate still verifies"
    );
    redis.restart(&w.path("gen2"));
    assert!(
        redis.ping(&w.ca_file()),
        "the same file verifies the new server certificate"
    );
    assert!(w.ca_file().with_file_name("dcs-ca.pem.prev").is_file());

    // Without overlap, the next rotation leaves only the new CA, and the endpoint check passes once Redis
    // serves the new certificate.
    let config = w.config(
        SK,
        &format!("ca_overlap = false\nendpoint = \"{}\"", redis.endpoint()),
    );
    w.standin.rotate(ID, &w.path("gen3"));
    redis.restart(&w.path("gen3"));
    let run = w.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert_eq!(certs_in(&fs::read_to_string(w.ca_file()).unwrap()), 1);
    assert!(redis.ping(&w.ca_file()));
}

#[test]
fn hostile_archives_are_refused_and_ca_file_is_untouched() {
    let w = World::new("hostile");
    w.standin.rotate(ID, &w.path("gen1"));
    let config = w.config(SK, "");
    assert_eq!(w.run(&config, &["renew"]).code(), Some(0));
    let before = fs::read(w.ca_file()).unwrap();
    for (i, (shape, expect)) in [
        ("traversal", "unsafe path `../ca.crt`"),
        ("symlink", "symlink entry `ca.crt`"),
        ("bomb", "likely zip bomb"),
        ("no-ca", "holds no ca.crt"),
        ("leaf", "is not a CA"),
    ]
    .into_iter()
    .enumerate()
    {
        w.standin.instance(ID, &json!({"shape": shape}));
        // A rotation changes ssl_expired_at, so the pass downloads.
        w.standin.rotate(ID, &w.path(&format!("hostile{i}")));
        let run = w.run(&config, &["renew"]);
        assert_eq!(run.code(), Some(1), "{shape}: {}", run.stdout);
        assert!(run.stderr.contains(expect), "{shape}: {}", run.stderr);
        assert!(
            run.stderr.contains("ca_file is untouched"),
            "{shape}: {}",
            run.stderr
        );
        assert_eq!(
            fs::read(w.ca_file()).unwrap(),
            before,
            "{shape} changed ca_file"
        );
    }
    let status = w.run(&config, &["status"]);
    assert_eq!(
        status.code(),
        Some(1),
        "a failing instance makes status exit 1"
    );
}

#[test]
fn ssl_off_and_no_ssl_information_are_reported_without_a_download() {
    let w = World::new("off");
    w.standin.rotate(ID, &w.path("gen1"));
    let config = w.config(SK, "");
    for ssl in ["off", "no-content"] {
        w.standin.instance(ID, &json!({"ssl": ssl}));
        let run = w.run(&config, &["renew"]);
        assert_eq!(run.code(), Some(0), "{}", run.stderr);
        assert!(
            run.stdout
                .contains("SSL is off; certkeeper never switches it on"),
            "{}",
            run.stdout
        );
    }
    assert_eq!(w.standin.count("api", "POST", "/ssl-certs/download"), 0);
    assert_eq!(w.standin.count("api", "PUT", "/ssl"), 0);
    assert!(!w.ca_file().exists());
    w.standin.instance(ID, &json!({"ssl": "unsupported"}));
    let run = w.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stderr.contains("does not support SSL"),
        "{}",
        run.stderr
    );
}

#[test]
fn refused_signatures_and_unknown_instances_say_what_to_check() {
    let w = World::new("auth");
    w.standin.rotate(ID, &w.path("gen1"));
    let config = w.config("not-the-secret-key", "");
    let run = w.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stderr
            .contains("DCS rejected the request signature/credentials")
            && run
                .stderr
                .contains("check [dcs.otc] access_key/secret_key and the clock"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("not-the-secret-key"));
    let log = w.standin.log();
    assert!(log.iter().all(|e| e["status"] == 401), "{log:?}");
    // A known key, an instance DCS does not know.
    let text = fs::read_to_string(w.config(SK, ""))
        .unwrap()
        .replace(ID, "6f4a1c2e-dead");
    fs::write(w.path("config.toml"), text).unwrap();
    let run = w.run(&w.path("config.toml"), &["renew"]);
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stderr.contains("DCS knows no instance 6f4a1c2e-dead"),
        "{}",
        run.stderr
    );
    let check = w.run(&w.path("config.toml"), &["check"]);
    assert_eq!(check.code(), Some(0), "{}", check.stderr);
}

#[test]
fn a_new_ca_the_endpoint_does_not_verify_against_is_rolled_back() {
    let w = World::new("rollback");
    w.standin.rotate(ID, &w.path("gen1"));
    let redis = Redis::start(w.dir.path(), &w.path("gen1"));
    let config = w.config(
        SK,
        &format!("ca_overlap = false\nendpoint = \"{}\"", redis.endpoint()),
    );
    assert_eq!(w.run(&config, &["renew"]).code(), Some(0));
    let before = fs::read(w.ca_file()).unwrap();
    // DCS rotates but the instance still serves the old certificate: without overlap the new file would
    // lock every client out, so it goes back.
    w.standin.rotate(ID, &w.path("gen2"));
    let run = w.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(1), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("does not verify against the new ca_file")
            && run.stderr.contains("ca_file was rolled back"),
        "{}",
        run.stderr
    );
    assert_eq!(fs::read(w.ca_file()).unwrap(), before);
    assert!(redis.ping(&w.ca_file()));
}

#[test]
fn a_failing_instance_is_notified_and_its_recovery_too() {
    let w = World::new("notify");
    w.standin.rotate(ID, &w.path("gen1"));
    let receiver = crate::notify::Receiver::start();
    let config = w.config(SK, "");
    crate::notify::with_webhook(&config, receiver.port, "");
    w.standin.instance(ID, &json!({"shape": "no-ca"}));
    assert_eq!(w.run(&config, &["renew"]).code(), Some(1));
    w.standin.instance(ID, &json!({"shape": "honest"}));
    w.standin.rotate(ID, &w.path("gen2"));
    assert_eq!(w.run(&config, &["renew"]).code(), Some(0));
    let events: Vec<serde_json::Value> = receiver
        .got()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds, ["failure", "recovered"], "{events:?}");
    assert_eq!(events[0]["deployment"], format!("dcs:{ID}"));
    assert_eq!(events[0]["target"], "dcs");
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap()
            .contains("holds no ca.crt"),
        "{events:?}"
    );
}

/// The stderr lines of `run` that contain `needle`.
fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn an_unvalidated_certificate_and_an_expiry_within_expiry_warning_are_one_line_failures() {
    let w = World::new("health");
    w.standin.rotate(ID, &w.path("gen1"));
    w.standin.instance(ID, &json!({"validated": false}));
    let config = w.config(SK, "");
    let run = w.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(1), "{}\n{}", run.stdout, run.stderr);
    let said = lines_with(&run.stderr, "ssl_validated = false");
    assert_eq!(
        said.len(),
        1,
        "one line, not {}:\n{}",
        said.len(),
        run.stderr
    );
    assert!(
        said[0].contains(ID) && said[0].contains("check the instance in the console"),
        "{}",
        said[0]
    );
    // The CA is still kept for the clients: the failure is about the instance, not the file.
    assert!(redis_ca_in(&w.ca_file()));
    let status = w.run(&config, &["status"]);
    assert_eq!(
        status.code(),
        Some(1),
        "{}\n{}",
        status.stdout,
        status.stderr
    );
    assert!(
        format!("{}{}", status.stdout, status.stderr).contains("ssl_validated = false"),
        "{}\n{}",
        status.stdout,
        status.stderr
    );

    // Validated again, but the server certificate ends in 10 days, inside the default 30 d.
    w.standin.instance(ID, &json!({"validated": true}));
    let rotated = w.standin.admin(
        "POST",
        &format!("instances/{ID}/rotate"),
        &json!({"dir": w.path("gen2"), "server_days": 10}),
        200,
    );
    let at = rotated["ssl_expired_at"].as_str().unwrap().to_owned();
    let run = w.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(1), "{}\n{}", run.stdout, run.stderr);
    let said = lines_with(&run.stderr, "expiry_warning");
    assert_eq!(
        said.len(),
        1,
        "one line, not {}:\n{}",
        said.len(),
        run.stderr
    );
    assert!(said[0].contains(&at) && said[0].contains(ID), "{}", said[0]);
    assert_eq!(w.run(&config, &["status"]).code(), Some(1));

    // A shorter expiry_warning accepts the same certificate, and status recovers.
    let config = w.config(SK, "expiry_warning = \"5d\"");
    let run = w.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout, run.stderr);
    let status = w.run(&config, &["status"]);
    assert_eq!(
        status.code(),
        Some(0),
        "{}\n{}",
        status.stdout,
        status.stderr
    );
}

/// `path` holds at least one certificate (the CA the stand-in served).
fn redis_ca_in(path: &Path) -> bool {
    fs::read_to_string(path).is_ok_and(|pem| certs_in(&pem) >= 1)
}

const ID2: &str = "6f4a1c2e-0000-4000-8000-000000000002";

/// The value of `certkeeper_dcs_instance_healthy` for instance `id` in exposition `text`.
fn healthy(text: &str, id: &str) -> Option<f64> {
    let label = format!("instance=\"{id}\"");
    text.lines()
        .filter(|l| l.starts_with("certkeeper_dcs_instance_healthy{"))
        .find(|l| l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn the_healthy_gauge_is_1_for_a_synced_instance_and_0_for_a_failing_one() {
    let w = World::new("metrics");
    w.standin.rotate(ID, &w.path("gen1"));
    w.standin
        .instance(ID2, &json!({"project": PROJECT, "ssl": "unsupported"}));
    let textfile = w.path("certkeeper.prom");
    let config = w.config(
        SK,
        &format!(
            "\n[[dcs_instance]]\nid = \"{ID2}\"\nca_file = \"{}\"\n\n[metrics]\ntextfile = \"{}\"",
            w.path("other-ca.pem").display(),
            textfile.display()
        ),
    );
    let run = w.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(1), "{}\n{}", run.stdout, run.stderr);
    let text = fs::read_to_string(&textfile).unwrap();
    assert_eq!(healthy(&text, ID), Some(1.0), "{text}");
    assert_eq!(healthy(&text, ID2), Some(0.0), "{text}");
    assert!(
        text.contains(&format!("instance=\"{ID2}\",dcs=\"otc\"")),
        "{text}"
    );
    // The failing instance recovers on the next pass, and the gauge with it.
    w.standin.instance(ID2, &json!({"ssl": "on"}));
    w.standin.rotate(ID2, &w.path("gen1-other"));
    let run = w.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout, run.stderr);
    let text = fs::read_to_string(&textfile).unwrap();
    assert_eq!(healthy(&text, ID2), Some(1.0), "{text}");
}

#[test]
fn the_daemon_syncs_an_instance_on_its_pass() {
    use crate::common::daemon::{Daemon, wait_until};
    use std::time::Duration;
    let w = World::new("daemon");
    w.standin.rotate(ID, &w.path("gen1"));
    let redis = Redis::start(w.dir.path(), &w.path("gen1"));
    let textfile = w.path("certkeeper.prom");
    let config = w.config(
        SK,
        &format!(
            "endpoint = \"{}\"\n\n[schedule]\ncron = \"*/2 * * * * *\"\njitter = \"0s\"\n\n[metrics]\ntextfile = \"{}\"",
            redis.endpoint(),
            textfile.display()
        ),
    );
    let mut daemon = Daemon::start(crate::common::bed(), &config, &[], &w.path("daemon.log"));
    daemon.wait_for("ca_file updated", 1, Duration::from_secs(60));
    assert!(
        redis.ping(&w.ca_file()),
        "PING with the ca_file the daemon synced failed"
    );
    wait_until(
        "certkeeper_dcs_instance_healthy 1 in the textfile",
        Duration::from_secs(30),
        || fs::read_to_string(&textfile).is_ok_and(|t| healthy(&t, ID) == Some(1.0)),
        || fs::read_to_string(&textfile).unwrap_or_default(),
    );
    // The next pass asks for the status only.
    daemon.wait_for("SSL status unchanged", 1, Duration::from_secs(30));
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(Duration::from_secs(10));
    let log = daemon.text();
    assert_eq!(
        w.standin.count("api", "POST", "/ssl-certs/download"),
        1,
        "{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("ca_file updated"))
            .count(),
        1,
        "one line per instance and pass:\n{log}"
    );
    assert!(!log.contains(SK), "the SK appears in the daemon's log");
}
