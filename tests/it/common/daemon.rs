//! `certkeeper run` as a long-lived child of a test: real process, real signals, stderr captured to a file
//! that the test polls. The child is killed (its whole process group) when the [`Daemon`] drops, and dies with
//! the test process (PDEATHSIG, see [`super::bed::spawn_owned`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::bed::{self, Bed, Shared};

/// How often the helpers below look again.
pub const POLL: Duration = Duration::from_millis(50);

/// A running `certkeeper --config CONFIG run`.
pub struct Daemon {
    child: Child,
    status: Option<ExitStatus>,
    /// The daemon's stderr (its log).
    pub log: PathBuf,
    // Keeps other threads' `Bed::exclusive` sections out while this daemon may talk to Pebble.
    _shared: Shared,
}

impl Daemon {
    /// Starts `certkeeper --config CONFIG run` with `RUST_LOG=info`, no colours, a scrubbed environment plus
    /// `env`, and stderr (and stdout) going to `log`.
    ///
    /// # Panics
    /// When the binary cannot be started.
    pub fn start(bed: &Bed, config: &Path, env: &[(&str, &str)], log: &Path) -> Daemon {
        let shared = bed.shared();
        let file = fs::File::create(log).expect("create the daemon's log file");
        let mut cmd = Command::new(&bed.binaries.certkeeper);
        cmd.arg("--config").arg(config).arg("run");
        bed::scrub_env(&mut cmd);
        cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log file handle"))
            .stderr(file);
        let child = bed::spawn_owned(cmd).expect("start certkeeper run");
        Daemon {
            child,
            status: None,
            log: log.to_path_buf(),
            _shared: shared,
        }
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the daemon.
    ///
    /// # Panics
    /// When it has already been reaped (its PID might be someone else's by now).
    pub fn signal(&mut self, signal: i32) {
        assert!(
            self.try_status().is_none(),
            "signal {signal} to a daemon that already exited:\n{}",
            self.text()
        );
        let pid = i32::try_from(self.child.id()).expect("a PID fits in i32");
        // SAFETY: plain syscall on our own unreaped child.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// The exit status if it has exited (reaping it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("wait for the daemon");
        }
        self.status
    }

    /// Waits up to `timeout` for the daemon to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// The log so far.
    pub fn text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many log lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits up to `timeout` until at least `n` log lines contain `needle`; returns the log.
    ///
    /// # Panics
    /// On timeout, or when the daemon exits first; the message carries the log.
    pub fn wait_for(&mut self, needle: &str, n: usize, timeout: Duration) -> String {
        self.wait_until(&format!("{n} line(s) with {needle:?}"), timeout, |d| {
            d.count(needle) >= n
        });
        self.text()
    }

    /// Waits up to `timeout` until `cond` holds, polling every [`POLL`].
    ///
    /// # Panics
    /// On timeout, or when the daemon exits first; `what` and the log are in the message.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&Daemon) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return;
            }
            if let Some(status) = self.try_status() {
                // One last look: the condition may have become true just before the exit.
                if cond(self) {
                    return;
                }
                panic!(
                    "the daemon exited ({status}) while waiting for {what}; log:\n{}",
                    self.text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}; log:\n{}",
                self.text()
            );
            thread::sleep(POLL);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.status.is_none() {
            bed::kill_group(&mut self.child);
        }
    }
}

/// Waits up to `timeout` until `cond` holds, polling every [`POLL`]; `what` and `context()` go into the panic.
///
/// # Panics
/// On timeout.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "no {what} within {timeout:?}:\n{}",
            context()
        );
        thread::sleep(POLL);
    }
}
