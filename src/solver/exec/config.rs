//! `[dns.NAME]` with `provider = "exec"`: the hook's own keys and their resolution.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{ConfigError, Loader};

/// Default [`ExecConfig::timeout`]: per call of the hook.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// The exec provider's own settings in `[dns.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecConfig {
    /// The program and its first arguments (argv, no shell); `present|cleanup <fqdn> <value>` follow.
    pub command: Vec<String>,
    /// How long one call may take before its process group is killed.
    pub timeout: Duration,
}

/// `[dns.NAME]` with `provider = "exec"`, as written (without the shared keys, `solver/config.rs`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExec {
    command: Spanned<Vec<String>>,
    timeout: Option<Spanned<String>>,
}

/// Resolves `[dns.NAME]` of an exec hook: a non-empty absolute-or-relative argv, a timeout.
///
/// # Errors
/// A [`ConfigError`] at the offending key.
pub(crate) fn resolve(
    cx: &mut Loader<'_>,
    name: &str,
    _span: std::ops::Range<usize>,
    raw: RawExec,
) -> Result<ExecConfig, ConfigError> {
    let at = raw.command.span();
    let command = raw.command.into_inner();
    match command.first() {
        None => {
            return Err(cx.err_at(
                at,
                format!(
                    "[dns.{name}] command is empty; write the hook's argv, e.g. [\"/usr/local/bin/dns-hook\"]"
                ),
            ));
        }
        Some(program) if program.trim().is_empty() => {
            return Err(cx.err_at(
                at,
                format!("[dns.{name}] command starts with an empty program name"),
            ));
        }
        Some(_) => {}
    }
    let timeout = cx.duration(&raw.timeout, DEFAULT_EXEC_TIMEOUT)?;
    if timeout.is_zero() {
        let at = raw.timeout.as_ref().map_or(at, Spanned::span);
        return Err(cx.err_at(at, format!("[dns.{name}] timeout must be longer than 0s")));
    }
    Ok(ExecConfig { command, timeout })
}
