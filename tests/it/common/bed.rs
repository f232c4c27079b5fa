//! The end-to-end test bed: a real DNS server (knotd), a real ACME server (Pebble) and strict stand-ins of the
//! EMQX Cloud TLS API, all on free loopback ports, plus helpers to write certkeeper configs and run the binary.
//!
//! Used by the integration tests (`tests/common/mod.rs` starts one [`Bed`] per test binary) and by the README
//! sandbox (`examples/sandbox.rs` includes this file with `#[path]`). It therefore takes the paths of the
//! binaries as input ([`Binaries`]) instead of `env!("CARGO_BIN_EXE_…")`, which only integration tests have.
//!
//! What the bed avoids, and why:
//! - Fixed ports: tests of several checkouts or CI jobs may run on one machine; every port is chosen free.
//! - Orphans: every child runs in its own process group, is spawned from one long-lived thread and gets
//!   `PR_SET_PDEATHSIG(SIGKILL)`, so a killed or crashed test process takes knotd and Pebble with it.
//! - Shortcuts in validation: Pebble resolves the challenges at the bed's knotd (`-dnsserver`), never with
//!   `PEBBLE_VA_ALWAYS_VALID`, so a renewal that passes here really published and removed its TXT records.

#![allow(dead_code)] // Each test binary and the sandbox use a different subset of the helpers.

use std::cell::Cell;
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::ops::Sub;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

/// Errors of the bed itself (a missing binary, a server that did not come up), as human-readable text.
pub type BedError = Box<dyn std::error::Error + Send + Sync>;

/// The zone knotd serves; every test domain lives below it.
pub const ZONE: &str = "example.test.";
/// The TSIG key allowed to update TXT records in [`ZONE`].
pub const TSIG_KEY: &str = "acme-update.";
/// A TSIG key knotd knows but no ACL allows: updates signed with it are refused.
pub const INTRUDER_KEY: &str = "intruder.";

/// The share of good nonces [`Bed::bad_nonce_pebble`] rejects: high enough that most renewals meet one, low
/// enough that four rejections in a row (a client's retries exhausted) stay improbable (1e-4 per request).
pub const BAD_NONCE_PERCENT: u8 = 10;

/// How long a server may take to come up before the bed gives up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one certkeeper run may take before the bed kills it (a hang is a failure, not a stuck CI job).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Paths of the binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The `certkeeper` binary.
    pub certkeeper: PathBuf,
    /// The `emqx-standin` binary.
    pub standin: PathBuf,
}

impl Binaries {
    /// Finds both binaries next to the running executable's profile directory (`target/<profile>/`), as for an
    /// example in `target/<profile>/examples/`. `CERTKEEPER_BIN` and `EMQX_STANDIN_BIN` override the guesses.
    ///
    /// # Errors
    /// When a binary does not exist (then run `cargo build --bins` first).
    pub fn beside_current_exe() -> Result<Self, BedError> {
        let exe = std::env::current_exe()?;
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("the current executable has no grandparent directory")?
            .to_path_buf();
        let find = |var: &str, name: &str| -> Result<PathBuf, BedError> {
            let path = std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| profile_dir.join(name));
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!(
                    "{} not found (set {var} or run `cargo build --bins` first)",
                    path.display()
                )
                .into())
            }
        };
        Ok(Self {
            certkeeper: find("CERTKEEPER_BIN", "certkeeper")?,
            standin: find("EMQX_STANDIN_BIN", "emqx-standin")?,
        })
    }
}

/// Where the bed keeps its files.
#[derive(Debug, Clone)]
pub enum BedDir {
    /// A fresh temporary directory, removed by [`Bed::shutdown`] unless `CERTKEEPER_KEEP_BED` is set.
    Temporary,
    /// This directory (created if missing, kept afterwards): the sandbox keeps its logs for the reader.
    Keep(PathBuf),
}

/// The running knotd: zone [`ZONE`] with TSIG-authorized TXT updates.
#[derive(Debug)]
pub struct Knot {
    /// Loopback port, free for both UDP and TCP when chosen.
    pub port: u16,
    /// Base64 secret of [`TSIG_KEY`] (hmac-sha256).
    pub tsig_secret: String,
    /// File holding [`Knot::tsig_secret`] (base64, no trailing newline), mode 0600.
    pub tsig_secret_file: PathBuf,
    /// Base64 secret of [`INTRUDER_KEY`] (hmac-sha256).
    pub intruder_secret: String,
    /// knotd's combined stdout and stderr.
    pub log: PathBuf,
}

impl Knot {
    /// `127.0.0.1:PORT`, as certkeeper's `[dns.*] server` wants it.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// The running Pebble.
#[derive(Debug)]
pub struct Pebble {
    /// The ACME directory URL, `https://127.0.0.1:PORT/dir`.
    pub directory_url: String,
    /// The management interface, `https://127.0.0.1:PORT` (roots, cert status).
    pub management_url: String,
    /// The throwaway CA that signed Pebble's HTTPS certificate: certkeeper's `trust_roots`.
    pub ca_pem: PathBuf,
    /// Pebble's combined stdout and stderr: one line per request and per issuance.
    pub log: PathBuf,
}

impl Pebble {
    /// Counts this Pebble's new accounts, new orders and issued certificates so far, from its log (see
    /// [`Bed::pebble_counts`]).
    pub fn counts(&self) -> PebbleCounts {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let mut counts = PebbleCounts::default();
        for line in log.lines() {
            if line.contains("There are now ") && line.contains(" accounts in memory") {
                counts.accounts += 1;
            } else if line.contains("Added order ") {
                counts.orders += 1;
            } else if line.contains("Issued certificate serial ") {
                counts.issued += 1;
            }
        }
        counts
    }
}

/// knotd + Pebble, started once and shared; stand-ins are per test ([`Bed::standin`]).
pub struct Bed {
    dir: PathBuf,
    remove_dir: bool,
    /// The binaries under test.
    pub binaries: Binaries,
    /// The DNS server.
    pub knot: Knot,
    /// The ACME server.
    pub pebble: Pebble,
    bad_nonce_pebble: OnceLock<Pebble>,
    children: Mutex<Vec<Child>>,
}

impl fmt::Debug for Bed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bed")
            .field("dir", &self.dir)
            .field("knot_port", &self.knot.port)
            .field("pebble", &self.pebble.directory_url)
            .finish_non_exhaustive()
    }
}

impl Bed {
    /// Starts knotd, then Pebble resolving through it, and waits until both answer.
    ///
    /// # Errors
    /// When a server cannot be started or does not answer within a few seconds; the message carries the tail
    /// of its log.
    pub fn start(binaries: Binaries, dir: BedDir) -> Result<Self, BedError> {
        let (dir, remove_dir) = match dir {
            BedDir::Temporary => {
                let tmp = tempfile::Builder::new()
                    .prefix("certkeeper-bed-")
                    .tempdir()?;
                (
                    tmp.keep(),
                    std::env::var_os("CERTKEEPER_KEEP_BED").is_none(),
                )
            }
            BedDir::Keep(path) => {
                fs::create_dir_all(&path)?;
                (path, false)
            }
        };
        let children = Mutex::new(Vec::new());
        // Build the bed incrementally so that a failure half-way still kills what was started.
        let mut partial = Partial {
            dir: dir.clone(),
            remove_dir,
            children,
        };
        let knot = start_knot(&dir, &partial.children)?;
        let pebble = start_pebble(&dir, "pebble", knot.port, 0, &partial.children)?;
        let children = std::mem::take(&mut *lock(&partial.children));
        partial.remove_dir = false;
        Ok(Self {
            dir,
            remove_dir,
            binaries,
            knot,
            pebble,
            bad_nonce_pebble: OnceLock::new(),
            children: Mutex::new(children),
        })
    }

    /// A second Pebble, started on first use, that rejects [`BAD_NONCE_PERCENT`] of good nonces as real CAs
    /// may (RFC 8555 §6.5): clients must retry `badNonce`. The main Pebble rejects none, so the other tests'
    /// counts stay exact.
    ///
    /// # Panics
    /// When it cannot be started.
    pub fn bad_nonce_pebble(&self) -> &Pebble {
        self.bad_nonce_pebble.get_or_init(|| {
            start_pebble(
                &self.dir,
                "pebble-bad-nonce",
                self.knot.port,
                BAD_NONCE_PERCENT,
                &self.children,
            )
            .unwrap_or_else(|e| panic!("the bad-nonce Pebble did not start: {e}"))
        })
    }

    /// Starts one more Pebble named `name`, resolving at the bed's knotd, with `settings` (an object) merged
    /// into the `pebble` section of its config, e.g. `{"externalAccountBindingRequired": true, ...}`. It runs
    /// until the bed shuts down; callers keep it (e.g. in a `OnceLock`) rather than starting one per test.
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn extra_pebble(&self, name: &str, settings: &Value) -> Result<Pebble, BedError> {
        start_pebble_with(&self.dir, name, self.knot.port, 0, settings, &self.children)
    }

    /// Starts one more Pebble named `name`, resolving at the bed's knotd, that rejects `percent` of good nonces
    /// (`PEBBLE_WFE_NONCEREJECT`). Runs until the bed shuts down; callers keep it (e.g. in a `OnceLock`).
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn extra_pebble_rejecting_nonces(
        &self,
        name: &str,
        percent: u8,
    ) -> Result<Pebble, BedError> {
        start_pebble(&self.dir, name, self.knot.port, percent, &self.children)
    }

    /// Starts one more knotd serving [`ZONE`] (its own port, TSIG secrets and files under `dir/name/`). Pebble does
    /// not resolve through it: records added there are invisible to the CA (a hidden primary that never
    /// notifies the public servers). Runs until the bed shuts down.
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn extra_knot(&self, name: &str) -> Result<Knot, BedError> {
        let dir = self.dir.join(name);
        fs::create_dir_all(&dir)?;
        start_knot(&dir, &self.children)
    }

    /// The directory holding the bed's configs, logs and databases.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills knotd and Pebble and removes the bed directory if it is temporary. Idempotent.
    pub fn shutdown(&self) {
        for mut child in lock(&self.children).drain(..) {
            kill_group(&mut child);
        }
        if self.remove_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    /// The TXT strings at `owner` (a full name such as `_acme-challenge.x.example.test.`), asked from the
    /// bed's knotd with kdig.
    ///
    /// # Panics
    /// When kdig cannot be run or gets no answer: the bed is broken, not certkeeper.
    pub fn txt_records(&self, owner: &str) -> Vec<String> {
        let out = Command::new("kdig")
            .args(["@127.0.0.1", "-p", &self.knot.port.to_string()])
            .args(["+short", "+norecurse", "+time=2", "+retry=2", "TXT", owner])
            .output()
            .unwrap_or_else(|e| panic!("cannot run kdig: {e}"));
        assert!(
            out.status.success(),
            "kdig TXT {owner} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| line.trim().trim_matches('"').to_owned())
            .collect()
    }

    /// The `_acme-challenge` owner certkeeper must use for `domain` (`*.a.b` and `a.b` share one).
    pub fn challenge_owner(domain: &str) -> String {
        format!("_acme-challenge.{}.", domain.trim_start_matches("*."))
    }

    /// Counts the main Pebble's new accounts, new orders and issued certificates so far, from its log.
    ///
    /// Pebble's log does not say which names an order is for, so counts are global: compare them inside
    /// [`Bed::exclusive`] to attribute a difference to one test.
    pub fn pebble_counts(&self) -> PebbleCounts {
        self.pebble.counts()
    }

    /// Certificates Pebble issued so far (see [`Bed::pebble_counts`]).
    pub fn pebble_issued_count(&self) -> usize {
        self.pebble_counts().issued
    }

    /// Orders Pebble created so far (see [`Bed::pebble_counts`]).
    pub fn pebble_new_orders(&self) -> usize {
        self.pebble_counts().orders
    }

    /// Accounts Pebble created so far (see [`Bed::pebble_counts`]).
    pub fn pebble_new_accounts(&self) -> usize {
        self.pebble_counts().accounts
    }

    /// Takes the bed for this thread alone: until the guard drops, no other [`Bed::run_certkeeper`] runs, so
    /// [`Exclusive::delta`] counts only this thread's ACME traffic. Other runs wait; they do not fail.
    ///
    /// # Panics
    /// When this thread holds a [`Shared`] guard (it would wait for itself forever).
    pub fn exclusive(&self) -> Exclusive<'_> {
        assert_eq!(
            SHARED_DEPTH.with(Cell::get),
            0,
            "Bed::exclusive while this thread holds the bed shared (a running daemon?): it would deadlock"
        );
        let guard = PEBBLE_USERS.write().unwrap_or_else(|e| e.into_inner());
        EXCLUSIVE.with(|e| e.set(true));
        Exclusive {
            bed: self,
            before: self.pebble_counts(),
            _guard: guard,
        }
    }

    /// Holds the bed shared until the guard drops: an [`Bed::exclusive`] section of another thread waits for it,
    /// so its counts see none of this thread's ACME traffic (e.g. of a long-running `certkeeper run`).
    ///
    /// Re-entrant per thread, and a no-op inside this thread's own exclusive section: the lock is
    /// writer-preferring, so taking it shared twice could deadlock against a waiting writer.
    pub fn shared(&self) -> Shared {
        let guard = if EXCLUSIVE.with(Cell::get) || SHARED_DEPTH.with(Cell::get) > 0 {
            None
        } else {
            Some(PEBBLE_USERS.read().unwrap_or_else(|e| e.into_inner()))
        };
        SHARED_DEPTH.with(|d| d.set(d.get() + 1));
        Shared { _guard: guard }
    }

    /// Starts a fresh stand-in of the EMQX API whose request log goes to `log`.
    ///
    /// # Panics
    /// When the stand-in does not start: its binary is missing or broken.
    pub fn standin(&self, log: &Path) -> Standin {
        Standin::start(&self.binaries.standin, log)
            .unwrap_or_else(|e| panic!("emqx-standin did not start: {e}"))
    }

    /// A config for certkeeper talking to this bed and to `standin` with the given credentials; its files go to
    /// `dir` (config.toml, emqx.secret, and the state directory `dir/state`).
    pub fn config(&self, dir: &Path, standin: &Standin, key: &str, secret: &str) -> ConfigBuilder {
        ConfigBuilder::new(self, dir, standin.api_url(), key, secret)
    }

    /// Runs `certkeeper --config CONFIG ARGS...` to completion and captures its output.
    ///
    /// The environment is scrubbed of what would make the run depend on the machine: proxies (loopback
    /// traffic must not go through one), `CERTKEEPER_CONFIG` and `CREDENTIALS_DIRECTORY`; colours are off.
    ///
    /// # Panics
    /// When the binary cannot be started or runs longer than two minutes (it is killed first).
    pub fn run_certkeeper(&self, config: &Path, args: &[&str]) -> Run {
        // Hold the bed shared so an `exclusive` section elsewhere sees no traffic of ours.
        let _shared = self.shared();
        let mut cmd = Command::new(&self.binaries.certkeeper);
        cmd.arg("--config").arg(config).args(args);
        scrub_env(&mut cmd);
        cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
        run_captured(cmd, RUN_TIMEOUT)
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What [`Bed::start`] has started so far; kills it if the start fails half-way.
struct Partial {
    dir: PathBuf,
    remove_dir: bool,
    children: Mutex<Vec<Child>>,
}

impl Drop for Partial {
    fn drop(&mut self) {
        for mut child in lock(&self.children).drain(..) {
            kill_group(&mut child);
        }
        if self.remove_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Pebble's counters (see [`Bed::pebble_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PebbleCounts {
    /// Accounts created (`There are now N accounts in memory`).
    pub accounts: usize,
    /// Orders created (`Added order "…" to the db`).
    pub orders: usize,
    /// Certificates issued (`Issued certificate serial … for order …`).
    pub issued: usize,
}

impl Sub for PebbleCounts {
    type Output = Self;

    fn sub(self, rhs: Self) -> Self {
        Self {
            accounts: self.accounts - rhs.accounts,
            orders: self.orders - rhs.orders,
            issued: self.issued - rhs.issued,
        }
    }
}

/// Readers: certkeeper runs; writer: one thread measuring Pebble's counters ([`Bed::exclusive`]).
static PEBBLE_USERS: RwLock<()> = RwLock::new(());

thread_local! {
    /// True if and only if this thread holds [`PEBBLE_USERS`] for writing (it must not also take it shared).
    static EXCLUSIVE: Cell<bool> = const { Cell::new(false) };
    /// How many [`Shared`] guards this thread holds (only the first one holds [`PEBBLE_USERS`]).
    static SHARED_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Shared use of the bed by one thread (see [`Bed::shared`]); not `Send`, like the lock guard it holds.
pub struct Shared {
    _guard: Option<RwLockReadGuard<'static, ()>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        SHARED_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Exclusive use of the bed by one thread (see [`Bed::exclusive`]).
pub struct Exclusive<'a> {
    bed: &'a Bed,
    before: PebbleCounts,
    _guard: RwLockWriteGuard<'static, ()>,
}

impl Exclusive<'_> {
    /// What Pebble counted since the guard was taken.
    pub fn delta(&self) -> PebbleCounts {
        self.bed.pebble_counts() - self.before
    }
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        EXCLUSIVE.with(|e| e.set(false));
    }
}

/// The output of one certkeeper run.
#[derive(Debug)]
pub struct Run {
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error (logs and failure lines), lossily decoded.
    pub stderr: String,
}

impl Run {
    /// The exit code; `None` if a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The stderr lines that report a failure of deployment `id`: they start with `"{id}: "` (the CLI
    /// contract), which no log line does.
    pub fn failures_of(&self, id: &str) -> Vec<&str> {
        let prefix = format!("{id}: ");
        self.stderr
            .lines()
            .filter(|line| line.starts_with(&prefix))
            .collect()
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certkeeper exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A running `emqx-standin`; killed on drop.
#[derive(Debug)]
pub struct Standin {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its stderr (one line per request).
    pub log_file: PathBuf,
}

impl Standin {
    /// Spawns `bin` on a free port and waits for its `emqx-standin listening on http://…` line.
    ///
    /// # Errors
    /// When it cannot be spawned, exits, or does not announce its address within a few seconds.
    pub fn start(bin: &Path, log: &Path) -> Result<Self, BedError> {
        let stderr = fs::File::create(log)?;
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        scrub_env(&mut cmd);
        let mut child = spawn_owned(cmd)?;
        // Unwrap: stdout was set to piped above.
        let stdout = child.stdout.take().unwrap();
        let line = first_line(stdout, STARTUP_TIMEOUT);
        let addr = line
            .as_deref()
            .and_then(|l| l.trim().strip_prefix("emqx-standin listening on http://"))
            .and_then(|a| a.parse::<SocketAddr>().ok());
        match addr {
            Some(addr) => Ok(Self {
                child,
                addr,
                log_file: log.to_path_buf(),
            }),
            None => {
                kill_group(&mut child);
                Err(format!(
                    "expected `emqx-standin listening on http://127.0.0.1:PORT` on stdout, got {line:?}; \
                     stderr: {}",
                    tail(log)
                )
                .into())
            }
        }
    }

    /// The vendor API base URL, `http://127.0.0.1:PORT/api/v1` (certkeeper's `[emqx.*] url`).
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// Creates or replaces API key `key` with `secret`, allowed for `deployments` (`None`: all).
    pub fn put_key(&self, key: &str, secret: &str, deployments: Option<&[&str]>) {
        let body = serde_json::json!({"secret": secret, "deployments": deployments});
        self.admin_expect("PUT", &format!("/_admin/keys/{key}"), Some(&body), 204);
    }

    /// Creates or replaces deployment `id`: `body` is `{"tlsType", "expire" (RFC 3339 or null), "status"}`.
    pub fn put_deployment(&self, id: &str, body: &Value) {
        self.admin_expect("PUT", &format!("/_admin/deployments/{id}"), Some(body), 204);
    }

    /// Changes some settings (`pending`, `old_dialect`, `zone`, `fail_writes`, …); returns all of them.
    pub fn settings(&self, patch: &Value) -> Value {
        self.admin_expect("PUT", "/_admin/settings", Some(patch), 200)
    }

    /// The stand-in's full view of deployment `id` (cert, key and cacert as stored, RFC 3339 expire, writes).
    pub fn deployment(&self, id: &str) -> Value {
        self.admin_expect("GET", &format!("/_admin/deployments/{id}"), None, 200)
    }

    /// Every vendor API request so far, in order: `{"method", "path", "key", "status", "at"}`.
    pub fn log(&self) -> Vec<Value> {
        match self.admin_expect("GET", "/_admin/log", None, 200) {
            Value::Array(entries) => entries,
            other => panic!("stand-in log is not an array: {other}"),
        }
    }

    /// A vendor API request with basic auth, as certkeeper would send it: `(status, body)`.
    ///
    /// # Errors
    /// When the stand-in cannot be reached.
    pub fn vendor(
        &self,
        method: &str,
        path: &str,
        key: &str,
        secret: &str,
    ) -> io::Result<(u16, Value)> {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"));
        let (status, body) = http(
            self.addr,
            method,
            &format!("/api/v1{path}"),
            None,
            Some(&auth),
        )?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    fn admin_expect(&self, method: &str, path: &str, body: Option<&Value>, want: u16) -> Value {
        let (status, bytes) = http(self.addr, method, path, body, None)
            .unwrap_or_else(|e| panic!("stand-in admin {method} {path}: {e}"));
        assert_eq!(
            status,
            want,
            "stand-in admin {method} {path} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "stand-in admin {method} {path}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        }
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Writes a certkeeper config for the bed, with the test's choices on top of defaults fit for tests
/// (`poll_interval = "100ms"`, `wait_timeout = "10s"`, ECDSA P-256, traditional key format).
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    dir: PathBuf,
    top: Vec<(String, String)>,
    acme: Vec<(String, String)>,
    dns: Vec<(String, String)>,
    emqx: Vec<(String, String)>,
    emqx_secret: String,
    schedule: Vec<(String, String)>,
    deployments: Vec<Vec<(String, String)>>,
    /// Sub-tables of deployments: (deployment index, table name, entries written as is).
    deployment_tables: Vec<(usize, String, Entries)>,
}

/// TOML `key = value` lines of one table, values written as is.
type Entries = Vec<(String, String)>;

impl ConfigBuilder {
    fn new(bed: &Bed, dir: &Path, api_url: String, key: &str, secret: &str) -> Self {
        let path = |p: &Path| quote(&p.display().to_string());
        Self {
            dir: dir.to_path_buf(),
            top: vec![("state_dir".into(), path(&dir.join("state")))],
            acme: vec![
                ("directory".into(), quote(&bed.pebble.directory_url)),
                ("trust_roots".into(), path(&bed.pebble.ca_pem)),
                ("key_type".into(), quote("ecdsa-p256")),
                ("key_format".into(), quote("traditional")),
            ],
            dns: vec![
                ("provider".into(), quote("rfc2136")),
                ("server".into(), quote(&bed.knot.server())),
                ("tsig_key".into(), quote(TSIG_KEY)),
                ("tsig_algorithm".into(), quote("hmac-sha256")),
                ("tsig_secret_file".into(), path(&bed.knot.tsig_secret_file)),
            ],
            emqx: vec![
                ("url".into(), quote(&api_url)),
                ("key".into(), quote(key)),
                ("secret_file".into(), path(&dir.join("emqx.secret"))),
                ("poll_interval".into(), quote("100ms")),
                ("wait_timeout".into(), quote("10s")),
            ],
            emqx_secret: secret.to_owned(),
            schedule: Vec::new(),
            deployments: Vec::new(),
            deployment_tables: Vec::new(),
        }
    }

    /// The state directory the config names (`DIR/state`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Uses `pebble` (directory and HTTPS trust root) instead of the bed's main Pebble.
    pub fn pebble(mut self, pebble: &Pebble) -> Self {
        set(&mut self.acme, "directory", quote(&pebble.directory_url));
        set(
            &mut self.acme,
            "trust_roots",
            quote(&pebble.ca_pem.display().to_string()),
        );
        self
    }

    /// Sets a top-level string key (e.g. `state_dir`).
    pub fn top(mut self, key: &str, value: &str) -> Self {
        set(&mut self.top, key, quote(value));
        self
    }

    /// Sets a string key in `[acme]` (e.g. `key_type`, `key_format`).
    pub fn acme(mut self, key: &str, value: &str) -> Self {
        set(&mut self.acme, key, quote(value));
        self
    }

    /// Sets a string key in `[dns.bed]` (e.g. `zone`).
    pub fn dns(mut self, key: &str, value: &str) -> Self {
        set(&mut self.dns, key, quote(value));
        self
    }

    /// Sets a string key in `[emqx.standin]` (e.g. `expire_timezone`, `wait_timeout`).
    pub fn emqx(mut self, key: &str, value: &str) -> Self {
        set(&mut self.emqx, key, quote(value));
        self
    }

    /// Sets a string key in `[schedule]` (`cron`, `jitter`); without any, the config has no `[schedule]`.
    pub fn schedule(mut self, key: &str, value: &str) -> Self {
        set(&mut self.schedule, key, quote(value));
        self
    }

    /// Sets a key in `[emqx.standin]` to a TOML value written as is (e.g. `get_limit`, `6`).
    pub fn emqx_raw(mut self, key: &str, value: &str) -> Self {
        set(&mut self.emqx, key, value.to_owned());
        self
    }

    /// Adds a `[[deployment]]` with `id` and `domains`.
    pub fn deployment(mut self, id: &str, domains: &[&str]) -> Self {
        let domains: Vec<String> = domains.iter().map(|d| quote(d)).collect();
        self.deployments.push(vec![
            ("id".into(), quote(id)),
            ("domains".into(), format!("[{}]", domains.join(", "))),
        ]);
        self
    }

    /// Sets a string key in the last added deployment (e.g. `tls_type`, `client_ca_file`, `renew_before`).
    ///
    /// # Panics
    /// When no deployment was added yet: a bug in the test.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        let last = self
            .deployments
            .last_mut()
            .expect("ConfigBuilder::with needs a deployment first");
        set(last, key, quote(value));
        self
    }

    /// Adds `[deployment.NAME]` to the last added deployment, with values written as TOML as is
    /// (e.g. `("reload", "[\"true\"]")`).
    ///
    /// # Panics
    /// When no deployment was added yet: a bug in the test.
    pub fn table(mut self, name: &str, entries: &[(&str, String)]) -> Self {
        assert!(
            !self.deployments.is_empty(),
            "ConfigBuilder::table needs a deployment first"
        );
        self.deployment_tables.push((
            self.deployments.len() - 1,
            name.to_owned(),
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        ));
        self
    }

    /// The config as TOML text.
    pub fn toml(&self) -> String {
        let mut out = String::from("# Written by the certkeeper test bed.\n");
        let section = |out: &mut String, header: &str, entries: &[(String, String)]| {
            if !header.is_empty() {
                out.push_str(&format!("\n{header}\n"));
            }
            for (k, v) in entries {
                out.push_str(&format!("{k} = {v}\n"));
            }
        };
        section(&mut out, "", &self.top);
        section(&mut out, "[acme]", &self.acme);
        section(&mut out, "[dns.bed]", &self.dns);
        section(&mut out, "[emqx.standin]", &self.emqx);
        if !self.schedule.is_empty() {
            section(&mut out, "[schedule]", &self.schedule);
        }
        for (i, deployment) in self.deployments.iter().enumerate() {
            section(&mut out, "[[deployment]]", deployment);
            for (_, name, entries) in self.deployment_tables.iter().filter(|(at, ..)| *at == i) {
                section(&mut out, &format!("[deployment.{name}]"), entries);
            }
        }
        out
    }

    /// Writes `DIR/config.toml` and `DIR/emqx.secret` (both 0600) and returns the config's path.
    ///
    /// # Panics
    /// When the files cannot be written.
    pub fn write(&self) -> PathBuf {
        fs::create_dir_all(&self.dir).expect("create the config directory");
        write_private(&self.dir.join("emqx.secret"), self.emqx_secret.as_bytes())
            .expect("write emqx.secret");
        let config = self.dir.join("config.toml");
        write_private(&config, self.toml().as_bytes()).expect("write config.toml");
        config
    }
}

fn set(entries: &mut Vec<(String, String)>, key: &str, value: String) {
    match entries.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => entries.push((key.to_owned(), value)),
    }
}

/// A TOML basic string: JSON's string escapes are valid TOML escapes.
pub fn quote(s: &str) -> String {
    // Unwrap: serializing a str cannot fail.
    serde_json::to_string(s).unwrap()
}

/// Writes `contents` to a new or truncated file with mode 0600.
///
/// # Errors
/// I/O errors.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    // The mode only applies to a new file; make an existing one private too.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

// ---- knotd ----------------------------------------------------------------------------------------------------

fn start_knot(dir: &Path, children: &Mutex<Vec<Child>>) -> Result<Knot, BedError> {
    // The ACL allows TXT updates anywhere in the zone: knot 3.2 cannot match "any `_acme-challenge` label"
    // (update-owner names are fixed owners or their subtrees).
    let kdir = dir.join("knot");
    fs::create_dir_all(&kdir)?;
    let port = free_udp_tcp_port()?;
    let tsig_secret = random_base64(32)?;
    let intruder_secret = random_base64(32)?;
    let tsig_secret_file = dir.join("tsig.secret");
    write_private(&tsig_secret_file, tsig_secret.as_bytes())?;
    fs::write(
        kdir.join("example.test.zone"),
        "$ORIGIN example.test.\n\
         $TTL 60\n\
         @   SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60\n\
         @   NS  ns1.example.test.\n\
         ns1 A   127.0.0.1\n\
         @   A   127.0.0.1\n",
    )?;
    let k = kdir.display();
    // Small databases and workers: the bed serves a few dozen updates. Asynchronous journal: no fsync per
    // update, which is most of an update's time. zonefile-sync -1 keeps updates out of the zone file.
    let conf = format!(
        "server:\n    rundir: {k}\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    tcp-workers: 1\n    \
         background-workers: 1\n\
         log:\n  - target: stderr\n    any: info\n\
         database:\n    storage: {k}\n    journal-db-mode: asynchronous\n    journal-db-max-size: 64M\n    \
         kasp-db-max-size: 16M\n    timer-db-max-size: 16M\n    catalog-db-max-size: 16M\n\
         key:\n  - id: {TSIG_KEY}\n    algorithm: hmac-sha256\n    secret: {tsig_secret}\n  \
         - id: {INTRUDER_KEY}\n    algorithm: hmac-sha256\n    secret: {intruder_secret}\n\
         acl:\n  - id: acme-update\n    key: {TSIG_KEY}\n    action: update\n    update-type: TXT\n\
         template:\n  - id: default\n    storage: {k}\n    zonefile-sync: -1\n\
         zone:\n  - domain: {ZONE}\n    file: {k}/example.test.zone\n    acl: acme-update\n"
    );
    let conf_path = kdir.join("knot.conf");
    fs::write(&conf_path, conf)?;
    let log = dir.join("knotd.log");
    let mut cmd = Command::new(sbin("knotd"));
    cmd.arg("-c").arg(&conf_path);
    redirect(&mut cmd, &log)?;
    let child =
        spawn_owned(cmd).map_err(|e| format!("cannot start knotd (apt-get install knot): {e}"))?;
    lock(children).push(child);

    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let out = Command::new("kdig")
            .args(["@127.0.0.1", "-p", &port.to_string()])
            .args(["+short", "+norecurse", "+time=1", "+retry=0", "SOA", ZONE])
            .output()
            .map_err(|e| format!("cannot run kdig (apt-get install knot-dnsutils): {e}"))?;
        if out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("ns1.example.test.")
        {
            break;
        }
        if exited(children) || Instant::now() > deadline {
            return Err(format!(
                "knotd did not answer SOA {ZONE} on port {port}: {}",
                tail(&log)
            )
            .into());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(Knot {
        port,
        tsig_secret,
        tsig_secret_file,
        intruder_secret,
        log,
    })
}

// ---- Pebble ---------------------------------------------------------------------------------------------------

/// Starts Pebble `name` (its files in `dir/name/`, its log `dir/name.log`) resolving at knotd on `knot_port` and
/// rejecting `nonce_reject` percent of good nonces.
fn start_pebble(
    dir: &Path,
    name: &str,
    knot_port: u16,
    nonce_reject: u8,
    children: &Mutex<Vec<Child>>,
) -> Result<Pebble, BedError> {
    start_pebble_with(
        dir,
        name,
        knot_port,
        nonce_reject,
        &serde_json::json!({}),
        children,
    )
}

/// [`start_pebble`] with `settings` (an object) merged into the `pebble` section of its config.
fn start_pebble_with(
    dir: &Path,
    name: &str,
    knot_port: u16,
    nonce_reject: u8,
    settings: &Value,
    children: &Mutex<Vec<Child>>,
) -> Result<Pebble, BedError> {
    let pdir = dir.join(name);
    fs::create_dir_all(&pdir)?;
    let (ca_pem, cert_pem, key_pem) = https_certificate()?;
    let ca_path = pdir.join("ca.pem");
    fs::write(&ca_path, ca_pem.as_bytes())?;
    fs::write(pdir.join("cert.pem"), cert_pem)?;
    write_private(&pdir.join("key.pem"), key_pem.as_bytes())?;

    let [listen, management, http, tls] = free_tcp_ports::<4>()?;
    let mut config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": pdir.join("cert.pem"),
            "privateKey": pdir.join("key.pem"),
            // Unused (DNS-01 only), but must not collide with anything.
            "httpPort": http,
            "tlsPort": tls,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }
    });
    if let (Some(pebble), Some(extra)) = (config["pebble"].as_object_mut(), settings.as_object()) {
        for (key, value) in extra {
            pebble.insert(key.clone(), value.clone());
        }
    }
    let config_path = pdir.join("pebble-config.json");
    fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;

    let log = dir.join(format!("{name}.log"));
    let mut cmd = Command::new("pebble");
    // `-strict=false`, not `-strict false`: the latter enables strict mode and drops the flags after it.
    cmd.arg("-config")
        .arg(&config_path)
        .arg("-dnsserver")
        .arg(format!("127.0.0.1:{knot_port}"))
        .arg("-strict=false")
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", nonce_reject.to_string())
        .env("PEBBLE_AUTHZREUSE", "0")
        .current_dir(&pdir);
    scrub_env(&mut cmd);
    redirect(&mut cmd, &log)?;
    let child = spawn_owned(cmd)
        .map_err(|e| format!("cannot start pebble (apt-get install pebble): {e}"))?;
    lock(children).push(child);

    let directory_url = format!("https://127.0.0.1:{listen}/dir");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match https_get(&directory_url, ca_pem.as_bytes()) {
            Ok((200, body)) if body.contains("newOrder") => break,
            _ if exited(children) || Instant::now() > deadline => {
                return Err(
                    format!("pebble did not answer {directory_url}: {}", tail(&log)).into(),
                );
            }
            _ => thread::sleep(Duration::from_millis(50)),
        }
    }
    Ok(Pebble {
        directory_url,
        management_url: format!("https://127.0.0.1:{management}"),
        ca_pem: ca_path,
        log,
    })
}

/// A throwaway CA and a leaf for `localhost`/`127.0.0.1` signed by it: `(ca_pem, leaf_pem, leaf_key_pem)`.
fn https_certificate() -> Result<(String, String, String), BedError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "certkeeper test bed CA (throwaway)");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
    Ok((ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem()))
}

/// `GET url` trusting only `ca_pem`: `(status, body)`.
pub fn https_get(url: &str, ca_pem: &[u8]) -> Result<(u16, String), BedError> {
    // reqwest is built without a default crypto provider; a second install attempt fails harmlessly.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem)?)
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let response = client.get(url).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    })
}

// ---- processes ------------------------------------------------------------------------------------------------

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` as an owned child: its own process group, killed when this process dies.
///
/// PDEATHSIG fires when the *thread* that forked the child exits, not the process, so all children are forked
/// by one thread that lives as long as the process (test threads come and go).
///
/// # Errors
/// When the command cannot be spawned.
pub fn spawn_owned(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("bed-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            // Unwrap: failing to start a thread at test start is unrecoverable.
            .expect("start the bed's spawner thread");
        tx
    });
    let parent = std::process::id();
    // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid) and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.process_group(0);
    let (tx, rx) = mpsc::channel();
    spawner
        .send((cmd, tx))
        .map_err(|_| io::Error::other("the bed's spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the bed's spawner thread is gone"))?
}

/// Kills the child's whole process group and reaps the child.
pub fn kill_group(child: &mut Child) {
    // Only while the child is unreaped is its pid (= its group id, process_group(0)) surely still ours.
    if let (Ok(None), Ok(pid)) = (child.try_wait(), i32::try_from(child.id())) {
        // SAFETY: plain syscall on our own child's process group.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `cmd` with stdout/stderr captured, killing it after `timeout`.
///
/// # Panics
/// When it cannot be spawned or times out.
pub fn run_captured(mut cmd: Command, timeout: Duration) -> Run {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = spawn_owned(cmd).unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    // Unwraps: both were set to piped above.
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                kill_group(&mut child);
                let stderr = stderr.join().unwrap_or_default();
                panic!("{program} ran longer than {timeout:?} and was killed; stderr:\n{stderr}");
            }
            Err(e) => panic!("waiting for {program}: {e}"),
        }
    };
    // The process exited; its pipes close unless a grandchild holds them, which certkeeper does not spawn.
    Run {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Reads the first line of `stdout` within `timeout`, then keeps draining it so the child never blocks on a
/// full pipe.
fn first_line(stdout: ChildStdout, timeout: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = io::copy(&mut reader, &mut io::sink());
    });
    rx.recv_timeout(timeout).ok().filter(|l| !l.is_empty())
}

/// Removes what would make a child's behaviour depend on the developer's machine (or on the systemd unit the
/// tests happen to run under).
pub fn scrub_env(cmd: &mut Command) {
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "CERTKEEPER_CONFIG",
        "CREDENTIALS_DIRECTORY",
        "RUST_LOG",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "JOURNAL_STREAM",
    ] {
        cmd.env_remove(var);
    }
}

fn redirect(cmd: &mut Command, log: &Path) -> io::Result<()> {
    let file = fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    Ok(())
}

/// `name` from PATH, else from /usr/sbin or /sbin: Debian puts knotd there, outside a normal user's PATH.
fn sbin(name: &str) -> PathBuf {
    let in_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    if !in_path {
        for dir in ["/usr/sbin", "/sbin", "/usr/local/sbin"] {
            let candidate = Path::new(dir).join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from(name)
}

/// True if and only if one of `children` has exited.
fn exited(children: &Mutex<Vec<Child>>) -> bool {
    lock(children)
        .iter_mut()
        .any(|c| !matches!(c.try_wait(), Ok(None)))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves the list of children intact.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(15);
    format!("({}):\n{}", path.display(), lines[start..].join("\n"))
}

// ---- ports and randomness ---------------------------------------------------------------------------------------

/// `N` distinct loopback TCP ports that were free a moment ago (all held until all are chosen).
pub fn free_tcp_ports<const N: usize>() -> io::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// A loopback port free for both UDP and TCP (DNS uses both).
fn free_udp_tcp_port() -> io::Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other(
        "no loopback port free for both UDP and TCP",
    ))
}

fn random_base64(len: usize) -> io::Result<String> {
    let mut bytes = vec![0; len];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

// ---- minimal HTTP/1.1 client ------------------------------------------------------------------------------------

/// One HTTP/1.1 request over a fresh connection (`Connection: close`): `(status, body)`.
///
/// The stand-in's admin API is plain HTTP on loopback; a blocking client keeps the tests free of an async
/// runtime.
///
/// # Errors
/// Connection errors and unparsable responses.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    basic_auth: Option<&str>,
) -> io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(auth) = basic_auth {
        request.push_str(&format!("Authorization: Basic {auth}\r\n"));
    }
    if !body.is_empty() || matches!(method, "PUT" | "POST") {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    // No half-close after the request: hyper takes a closed read side for a client that gave up. The server
    // closes the connection after its response (`Connection: close`).
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;

    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad HTTP response: {what}"),
        )
    };
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        rest = dechunk(&rest).ok_or_else(|| bad("broken chunked body"))?;
    }
    Ok((status, rest))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
