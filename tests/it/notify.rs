//! Failure notifications through a webhook (issue 12, "## Notifications"): one message per change of state,
//! the JSON schema and its HMAC signature, nothing secret in it, and delivery that survives a receiver that
//! is down. The receiver is the test's own HTTP server on a free port.

use crate::common;
use crate::common::probe::due;

use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;

use common::Case;
use serde_json::Value;

const HMAC_KEY: &str = "webhook-hmac-key";

/// One request the receiver got: its headers (lower-case names) and body.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// A webhook receiver answering 200 to everything, until dropped with the test.
pub(crate) struct Receiver {
    pub(crate) port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start_on(listener: TcpListener) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = got.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut headers = Vec::new();
                let mut line = String::new();
                let _ = reader.read_line(&mut line); // the request line
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.push((k.to_ascii_lowercase(), v.trim().to_owned()));
                    }
                }
                let length: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                seen.lock().unwrap().push(Received { headers, body });
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Receiver { port, got }
    }

    pub(crate) fn start() -> Receiver {
        Receiver::start_on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    pub(crate) fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// Appends a `[[notify]]` webhook to the config at `path`.
pub(crate) fn with_webhook(path: &Path, port: u16, extra: &str) {
    let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
    write!(
        file,
        "\n[[notify]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hooks/T0KEN\"\nsecret = \"{HMAC_KEY}\"\n{extra}\n"
    )
    .unwrap();
}

#[test]
fn a_failing_deployment_is_notified_once_then_recovered_with_a_signed_json() {
    let case = Case::new("notify");
    let id = "t-notify";
    case.deployment(id, "one-way", due());
    let receiver = Receiver::start();
    let failing = case
        .config_with_secret("not-the-secret")
        .deployment(id, &["t-notify.example.test"])
        .write();
    with_webhook(&failing, receiver.port, "");

    let run = case.run(&failing, &["renew"]);
    assert_eq!(run.code(), Some(1), "{run}");
    let got = receiver.got();
    assert_eq!(
        got.len(),
        1,
        "one message for the new failure: {got:?}\n{run}"
    );
    let message = got[0].json();
    assert_eq!(message["schema"], 1);
    assert_eq!(message["event"], "failure");
    assert_eq!(message["deployment"], id);
    assert_eq!(message["target"], "emqx");
    assert_eq!(message["domains"][0], "t-notify.example.test");
    assert!(
        message["message"].as_str().unwrap().contains("401"),
        "{message}"
    );
    assert!(message["at"].is_string(), "{message}");
    let signature = certkeeper::notify::webhook_signature(HMAC_KEY.as_bytes(), &got[0].body);
    assert_eq!(
        got[0].header("x-certkeeper-signature"),
        Some(signature.as_str())
    );
    let body = String::from_utf8_lossy(&got[0].body);
    assert!(
        !body.contains("not-the-secret") && !body.contains(HMAC_KEY),
        "{body}"
    );
    assert!(
        !run.stderr.contains("T0KEN"),
        "the webhook URL's token is in a log:\n{run}"
    );

    let again = case.run(&failing, &["renew"]);
    assert_eq!(again.code(), Some(1), "{again}");
    assert_eq!(
        receiver.got().len(),
        1,
        "no second message while it keeps failing"
    );

    let fixed = case
        .config()
        .deployment(id, &["t-notify.example.test"])
        .write();
    with_webhook(&fixed, receiver.port, "");
    let run = case.run(&fixed, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");
    let got = receiver.got();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].json()["event"], "recovered", "{:?}", got[1].json());
    case.assert_invariants();
}

#[test]
fn a_receiver_that_is_down_loses_nothing_and_fails_no_renewal() {
    let case = Case::new("notifydown");
    let id = "t-notifydown";
    case.deployment(id, "one-way", due());
    // A port nobody listens on yet.
    let reserved = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = reserved.local_addr().unwrap().port();
    drop(reserved);
    let config = case
        .config()
        .deployment(id, &["t-notifydown.example.test"])
        .write();
    with_webhook(&config, port, "on = [\"renewed\"]");

    let test = case.run(&config, &["notify", "test"]);
    assert_eq!(test.code(), Some(1), "{test}");
    assert!(test.stderr.contains("not delivered"), "{test}");

    let run = case.run(&config, &["renew"]);
    assert_eq!(
        run.code(),
        Some(0),
        "the renewal does not depend on the receiver:\n{run}"
    );
    let log: Value =
        serde_json::from_slice(&fs::read(case.state_dir().join("notify.json")).unwrap()).unwrap();
    assert_eq!(log["queue"].as_array().unwrap().len(), 1, "{log}");

    let receiver = Receiver::start_on(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let test = case.run(&config, &["notify", "test"]);
    assert_eq!(test.code(), Some(0), "{test}");
    assert_eq!(receiver.got()[0].json()["event"], "test");
    let next = case.run(&config, &["renew"]);
    assert_eq!(next.code(), Some(0), "{next}");
    let got = receiver.got();
    assert_eq!(got.len(), 2, "{got:?}");
    let renewed = got[1].json();
    assert_eq!(renewed["event"], "renewed", "{renewed}");
    assert_eq!(renewed["deployment"], id);
    let log: Value =
        serde_json::from_slice(&fs::read(case.state_dir().join("notify.json")).unwrap()).unwrap();
    assert!(log["queue"].as_array().unwrap().is_empty(), "{log}");
    case.assert_invariants();
}

/// A real SMTP server (Debian `python3-aiosmtpd`) requiring STARTTLS with a throwaway CA, storing what it
/// receives in a Maildir.
struct Smtp {
    port: u16,
    mbox: std::path::PathBuf,
    ca_file: std::path::PathBuf,
    child: std::process::Child,
}

impl Smtp {
    fn start(dir: &Path) -> Smtp {
        let tls = common::ThrowawayTls::new("certkeeper SMTP test CA (throwaway)");
        let (cert, key, ca_file) = (
            dir.join("smtp.crt"),
            dir.join("smtp.key"),
            dir.join("smtp-ca.pem"),
        );
        fs::write(&cert, &tls.leaf_pem).unwrap();
        fs::write(&key, &tls.key_pem).unwrap();
        fs::write(&ca_file, &tls.ca_pem).unwrap();
        let [port] = common::bed::free_tcp_ports::<1>().unwrap();
        let mbox = dir.join("maildir");
        // Debian's python3, where python3-aiosmtpd lives (another python3 may come first in PATH).
        let mut cmd = std::process::Command::new("/usr/bin/python3");
        cmd.args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--tlscert")
            .arg(&cert)
            .arg("--tlskey")
            .arg(&key)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&mbox)
            .stdin(std::process::Stdio::null())
            .stdout(fs::File::create(dir.join("smtp.log")).unwrap())
            .stderr(fs::File::create(dir.join("smtp.err")).unwrap());
        let child =
            common::bed::spawn_owned(cmd).expect("aiosmtpd runs (Debian package python3-aiosmtpd)");
        common::daemon::wait_until(
            "aiosmtpd listens",
            std::time::Duration::from_secs(20),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            || fs::read_to_string(dir.join("smtp.err")).unwrap_or_default(),
        );
        Smtp {
            port,
            mbox,
            ca_file,
            child,
        }
    }

    /// The messages received, oldest first.
    fn messages(&self) -> Vec<String> {
        let mut files: Vec<(std::time::SystemTime, std::path::PathBuf)> =
            fs::read_dir(self.mbox.join("new"))
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| (e.metadata().unwrap().modified().unwrap(), e.path()))
                        .collect()
                })
                .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .map(|(_, path)| fs::read_to_string(path).unwrap())
            .collect()
    }

    /// Their subjects.
    fn subjects(&self) -> Vec<String> {
        self.messages()
            .iter()
            .filter_map(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
            })
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        common::bed::kill_group(&mut self.child);
    }
}

fn with_email(path: &Path, smtp: &Smtp) {
    let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
    write!(
        file,
        "\n[[notify]]\nkind = \"email\"\nsmtp = \"127.0.0.1:{}\"\nfrom = \"certkeeper@example.test\"\nto = [\"ops@example.test\"]\nca_file = {:?}\n",
        smtp.port,
        smtp.ca_file.display().to_string()
    )
    .unwrap();
}

#[test]
fn a_failure_is_one_email_over_starttls_and_recovery_another() {
    let case = Case::new("email");
    let id = "t-email";
    case.deployment(id, "one-way", due());
    let smtp = Smtp::start(case.dir.path());
    let failing = case
        .config_with_secret("not-the-secret")
        .deployment(id, &["t-email.example.test"])
        .write();
    with_email(&failing, &smtp);

    let test = case.run(&failing, &["notify", "test"]);
    assert_eq!(test.code(), Some(0), "{test}");
    assert!(
        test.stdout
            .contains("e-mail to ops@example.test: delivered"),
        "{test}"
    );

    for _ in 0..2 {
        let run = case.run(&failing, &["renew"]);
        assert_eq!(run.code(), Some(1), "{run}");
    }
    let fixed = case
        .config()
        .deployment(id, &["t-email.example.test"])
        .write();
    with_email(&fixed, &smtp);
    let run = case.run(&fixed, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");

    let subjects = smtp.subjects();
    assert_eq!(
        subjects,
        [
            "certkeeper [test] certkeeper".to_owned(),
            format!("certkeeper [failure] {id}"),
            format!("certkeeper [recovered] {id}"),
        ],
        "one e-mail per change of state"
    );
    let mbox = smtp.messages().join("\n");
    assert!(
        mbox.contains("401"),
        "the failure says what failed:\n{mbox}"
    );
    assert!(
        !mbox.contains("not-the-secret"),
        "the API secret is in an e-mail:\n{mbox}"
    );
    case.assert_invariants();
}
