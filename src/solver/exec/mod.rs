//! The exec provider: an operator's program publishes and removes the records, so any DNS host with an API
//! or CLI can be used without certkeeper knowing it.
//!
//! Decisions made here:
//! - **The calling convention is lego's `exec` provider's**: `COMMAND present <fqdn> <value>` and later
//!   `COMMAND cleanup <fqdn> <value>`, the owner absolute (with the trailing dot), so existing lego exec
//!   scripts work unchanged. The same values are in the environment (`CERTKEEPER_FQDN`, `CERTKEEPER_VALUE`,
//!   `CERTKEEPER_ACTION`) for scripts that prefer it.
//! - **No shell**: `command` is an argv. Nothing of the record is ever interpreted by a shell of ours.
//! - **Bounded**: each call has a timeout, after which the hook's whole process group is killed (a script's
//!   `curl` or `sleep` children included); stdout and stderr are read up to [`OUTPUT_LIMIT`] each and the rest
//!   is drained and dropped, so a chatty hook cannot grow our memory.
//! - **Errors name the program, not the argv**: the arguments after it may carry a token, so messages and
//!   logs show `command[0]` only. The hook's stderr is shown (its last [`STDERR_SHOWN`] characters), as the
//!   hook's own explanation; a hook that prints its secrets there is the hook's bug.
//! - **Propagation is not the hook's job**: the layer above (`solver/layer.rs`) asks the authoritative servers,
//!   so a hook may return as soon as its API accepted the change.

pub mod config;
mod error;

pub use config::ExecConfig;
pub use error::ExecError;

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tracing::debug;

use super::{Dns01Solver, SolverFuture, TxtRecord};

/// Most bytes of stdout and of stderr kept from one call.
pub const OUTPUT_LIMIT: usize = 16 * 1024;
/// Most characters of stderr an error message shows.
pub const STDERR_SHOWN: usize = 600;

/// What the hook is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Publish the record.
    Present,
    /// Remove the record.
    Cleanup,
}

impl Action {
    /// The word passed as the first argument after `command`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Cleanup => "cleanup",
        }
    }
}

/// A [`Dns01Solver`] that runs the configured hook for every change.
#[derive(Debug)]
pub struct ExecSolver {
    config: ExecConfig,
}

impl ExecSolver {
    /// Returns a solver running `config.command`. Nothing is started until the first call.
    pub fn new(config: ExecConfig) -> Self {
        Self { config }
    }

    /// The program as messages name it: `command[0]` only (later arguments may carry tokens).
    fn program(&self) -> &str {
        self.config.command.first().map_or("", String::as_str)
    }

    /// Runs the hook once for `action` on `record`.
    ///
    /// # Errors
    /// [`ExecError`]: it cannot be started, it exits non-zero, or it outlives the timeout.
    pub async fn call(&self, action: Action, record: &TxtRecord) -> Result<(), ExecError> {
        let program = self.program().to_owned();
        let mut command = Command::new(&program);
        command
            .args(&self.config.command[1..])
            .args([action.as_str(), &record.fqdn, &record.value])
            .env("CERTKEEPER_FQDN", &record.fqdn)
            .env("CERTKEEPER_VALUE", &record.value)
            .env("CERTKEEPER_ACTION", action.as_str())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that a timeout kills the children a script started as well.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| ExecError::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        })?;
        let pid = child.id();
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let run = async {
            let (out, err, status) =
                tokio::join!(read_bounded(stdout), read_bounded(stderr), child.wait());
            (out, err, status)
        };
        let (stdout, stderr, status) = match tokio::time::timeout(self.config.timeout, run).await {
            Ok(done) => done,
            Err(_) => {
                kill_group(pid);
                let _ = child.wait().await;
                return Err(ExecError::Timeout {
                    program,
                    action: action.as_str(),
                    owner: record.fqdn.clone(),
                    timeout: self.config.timeout,
                });
            }
        };
        let status = status.map_err(|e| ExecError::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        })?;
        debug!(
            hook = %program,
            action = action.as_str(),
            owner = %record.fqdn,
            %status,
            // Its stdout is not logged: hooks print API responses there, which may echo a token.
            stdout_bytes = stdout.len(),
            "DNS hook finished"
        );
        if status.success() {
            return Ok(());
        }
        Err(ExecError::Failed {
            program,
            action: action.as_str(),
            owner: record.fqdn.clone(),
            status: status.to_string(),
            stderr: excerpt(&stderr),
        })
    }

    /// Checks that the program exists and is executable, without running it.
    fn check_program(&self) -> Result<(), ExecError> {
        let program = self.program();
        let found = if program.contains('/') {
            is_executable(Path::new(program))
        } else {
            std::env::var_os("PATH").is_some_and(|path| {
                std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
            })
        };
        if found {
            Ok(())
        } else {
            Err(ExecError::Spawn {
                program: program.to_owned(),
                reason: "no executable file by that name".into(),
            })
        }
    }
}

impl Dns01Solver for ExecSolver {
    fn present<'a>(&'a self, record: &'a TxtRecord) -> SolverFuture<'a> {
        Box::pin(async move { Ok(self.call(Action::Present, record).await?) })
    }

    fn cleanup<'a>(&'a self, record: &'a TxtRecord) -> SolverFuture<'a> {
        Box::pin(async move { Ok(self.call(Action::Cleanup, record).await?) })
    }

    fn preflight<'a>(&'a self, _owners: &'a [String]) -> SolverFuture<'a> {
        Box::pin(async move { Ok(self.check_program()?) })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Kills the process group `pid` leads (the hook and everything it started).
fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals the process group; no memory is involved. The group is
    // the hook's own (`process_group(0)`), so nothing of ours is hit.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Reads `stream` to its end, keeping the first [`OUTPUT_LIMIT`] bytes and dropping the rest.
async fn read_bounded<R: AsyncRead + Unpin>(stream: Option<R>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut stream) = stream else {
        return kept;
    };
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        let room = OUTPUT_LIMIT.saturating_sub(kept.len());
        kept.extend_from_slice(&buffer[..n.min(room)]);
    }
    kept
}

/// The end of the hook's stderr on one line: control characters replaced, at most [`STDERR_SHOWN`] chars.
fn excerpt(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let count = line.chars().count();
    if count == 0 {
        return "(no stderr)".into();
    }
    if count <= STDERR_SHOWN {
        return line;
    }
    let tail: String = line.chars().skip(count - STDERR_SHOWN).collect();
    format!("…{tail}")
}

/// How long a test may wait for a hook: a unit test's hook is a shell one-liner.
#[cfg(test)]
const TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests;
