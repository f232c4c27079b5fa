//! The end-to-end test bed: a real DNS server (knotd), a real ACME server (Pebble) and strict stand-ins of the
//! EMQX Cloud TLS API, all on free loopback ports, plus helpers to write certkeeper configs and run the binary.
//!
//! Used by the integration tests (`tests/it/common/mod.rs` starts one [`Bed`] per run) and by the README
//! sandbox (`examples/sandbox.rs` includes this module with `#[path]`). It therefore takes the paths of the
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

mod standin;
#[allow(unused_imports)]
pub use standin::*;
mod config;
#[allow(unused_imports)]
pub use config::*;
mod knot;
#[allow(unused_imports)]
pub use knot::*;
mod pebble;
#[allow(unused_imports)]
pub use pebble::*;
mod processes;
#[allow(unused_imports)]
pub use processes::*;
mod ports;
#[allow(unused_imports)]
pub use ports::*;
mod http;
#[allow(unused_imports)]
pub use http::*;
