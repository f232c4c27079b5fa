//! The hosted-DNS stand-ins (crates/dns-standins) for the tests: `acmedns-standin` and `cloudflare-standin`
//! on free ports, publishing into the bed's knotd, plus their admin APIs and a CNAME helper.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::bed::{self, Bed, Knot, TSIG_KEY, ZONE, http, kill_group, spawn_owned};

/// A running stand-in; killed on drop.
pub struct DnsStandin {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its stderr: one line per request.
    pub log: PathBuf,
}

/// The stand-in binaries sit beside the test binary's profile directory, as `emqx-standin` does
/// (`cargo test --workspace` builds them).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/PROFILE/deps")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the suite as `cargo test --workspace --all-features` (it builds crates/dns-standins)",
        path.display()
    );
    path
}

impl DnsStandin {
    /// Starts `name` (`acmedns-standin` or `cloudflare-standin`) publishing into `knot`, with `args` after the
    /// common ones; its stderr goes to `log`.
    ///
    /// # Panics
    /// When it does not start or announce its address.
    pub fn start(name: &str, knot: &Knot, args: &[&str], log: &Path) -> Self {
        let stderr = fs::File::create(log).expect("create the stand-in's log");
        let mut cmd = Command::new(binary(name));
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--dns-server",
            &knot.server(),
            "--zone",
            ZONE,
        ])
        .args(["--tsig-key", TSIG_KEY, "--tsig-secret-file"])
        .arg(&knot.tsig_secret_file)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
        bed::scrub_env(&mut cmd);
        let mut child = spawn_owned(cmd).unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        // Unwrap: stdout was set to piped above.
        let line = bed::first_line(child.stdout.take().unwrap(), Duration::from_secs(20));
        let prefix = format!("{name} listening on http://");
        let addr = line
            .as_deref()
            .and_then(|l| l.trim().strip_prefix(&prefix))
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Self {
                child,
                addr,
                log: log.to_path_buf(),
            },
            None => {
                kill_group(&mut child);
                panic!(
                    "{name} did not announce its address: {line:?}; stderr: {}",
                    bed::tail(log)
                );
            }
        }
    }

    /// An admin request that must answer `want`; the body as JSON (`Null` when empty).
    pub fn admin(&self, method: &str, path: &str, body: Option<&Value>, want: u16) -> Value {
        let (status, bytes) = http(self.addr, method, path, body, None)
            .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"));
        assert_eq!(
            status,
            want,
            "admin {method} {path}: {}",
            String::from_utf8_lossy(&bytes)
        );
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    /// The API requests so far (`GET /_admin/log`).
    pub fn requests(&self) -> Vec<Value> {
        match self.admin("GET", "/_admin/log", None, 200) {
            Value::Array(entries) => entries,
            other => panic!("the log is not an array: {other}"),
        }
    }
}

impl Drop for DnsStandin {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Adds `owner CNAME target` to the bed's main zone through knotd's control socket (the bed's TSIG key may
/// only update TXT records, as a real operator's key for certkeeper should).
///
/// # Panics
/// When knotc fails.
pub fn add_cname(bed: &Bed, owner: &str, target: &str) {
    // knotd allows one zone transaction at a time: tests in parallel take turns.
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let socket = bed.dir().join("knot").join("knot.sock");
    let knotc = |args: &[&str]| {
        let out = Command::new(bed::sbin("knotc"))
            .arg("-s")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run knotc: {e}"));
        assert!(
            out.status.success(),
            "knotc {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    knotc(&["zone-begin", ZONE]);
    knotc(&["zone-set", ZONE, owner, "60", "CNAME", target]);
    knotc(&["zone-commit", ZONE]);
}
