//! DNS providers end to end: every test ends with real Pebble validating against real knotd.
//!
//! - [`exec`]: `provider = "exec"` with a hook that writes through `knsupdate`; failing and hanging hooks;
//!   wildcard + apex with a hook that deletes the whole TXT set at cleanup (as acme.sh's scripts do).
//! - [`secondary`]: `propagation = "authoritative"` waits for a lagging secondary that Pebble resolves at.
//! - [`cname`]: `_acme-challenge` delegated by CNAME into another zone, by rfc2136 and by an exec hook.
//! - [`ns_lookup`]: `propagation = "authoritative"` finding its servers by NS lookup (two loopback addresses).
//! - [`layer`]: the shared layer against knotd alone: CNAME loops, a stuck server named, the journal at the target.

mod cname;
mod exec;
mod layer;
mod ns_lookup;
mod secondary;

use std::path::Path;

use crate::common::{self, Case};

/// Replaces the `[dns.bed]` section of `config`'s TOML with `section` (its lines, without the header).
fn with_dns_section(config: &common::ConfigBuilder, section: &str) -> String {
    let toml = config.toml();
    let start = toml
        .find("[dns.bed]")
        .expect("the builder writes [dns.bed]");
    let rest = &toml[start + "[dns.bed]".len()..];
    let end = rest
        .find("\n[")
        .map_or(toml.len(), |i| start + "[dns.bed]".len() + i + 1);
    format!("{}[dns.bed]\n{section}\n{}", &toml[..start], &toml[end..])
}

/// Writes `builder`'s files (secrets, state directory) with `text` as the config file; returns its path.
fn write_config(builder: &common::ConfigBuilder, text: &str) -> std::path::PathBuf {
    let path = builder.write();
    std::fs::write(&path, text).expect("write config");
    path
}

/// The failure lines certkeeper printed for deployment `id`.
fn failure_lines(run: &common::bed::Run, id: &str) -> String {
    run.failures_of(id).join("\n")
}

/// Makes `path` an executable script with `body`.
fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, body).expect("write hook");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).expect("chmod hook");
}
