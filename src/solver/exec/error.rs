//! What only an exec hook reports. Wrapped in [`SolverError::Exec`](super::super::SolverError::Exec).

use std::time::Duration;

/// Why a DNS hook did not do its job. Messages name the program (`command[0]`), never its arguments.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The program could not be started (missing, not executable, ...).
    #[error(
        "cannot run DNS hook `{program}` ({reason}) — check that the DNS provider's `command` names an executable file"
    )]
    Spawn {
        /// `command[0]`.
        program: String,
        /// Why.
        reason: String,
    },

    /// The hook exited non-zero or was killed by a signal.
    #[error(
        "DNS hook `{program}` failed to {action} TXT `{owner}` ({status}): {stderr} — run it by hand with `{action} {owner} <value>` to see why"
    )]
    Failed {
        /// `command[0]`.
        program: String,
        /// `present` or `cleanup`.
        action: &'static str,
        /// The record owner.
        owner: String,
        /// How it ended, e.g. `exit status: 1`.
        status: String,
        /// The end of its stderr, on one line and bounded.
        stderr: String,
    },

    /// The hook did not finish within its timeout; its process group was killed.
    #[error(
        "DNS hook `{program}` did not finish the {action} of TXT `{owner}` within {timeout:?} and was killed — check what it waits for, or raise the DNS provider's `timeout`"
    )]
    Timeout {
        /// `command[0]`.
        program: String,
        /// `present` or `cleanup`.
        action: &'static str,
        /// The record owner.
        owner: String,
        /// The configured limit.
        timeout: Duration,
    },
}
