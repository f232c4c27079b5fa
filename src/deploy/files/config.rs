//! `[deployment.files]`: the files target's own config section and its resolution.
//!
//! Everything that can be checked without writing is checked here, so that `certkeeper check` (exit 2) finds a
//! missing directory, a path that is a directory or a symlink, an unknown owner or a reload program that does
//! not exist before any certificate is ordered.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{ConfigError, Loader};

/// How long `reload` may run when `reload_timeout` is not set.
pub const DEFAULT_RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The key file's mode when `mode` is not set.
pub const DEFAULT_KEY_MODE: u32 = 0o600;
/// The mode of certificate and chain files: public data.
pub const CERT_MODE: u32 = 0o644;

/// `[deployment.files]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFiles {
    cert: Spanned<String>,
    key: Spanned<String>,
    chain: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    reload: Option<Spanned<Vec<String>>>,
    reload_timeout: Option<Spanned<String>>,
}

/// `[deployment.files]`, resolved: where the PEM files go and how the service learns of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesConfig {
    /// The certificate file: leaf then chain, or the leaf alone when `chain` is set.
    pub cert: PathBuf,
    /// The private key file (PKCS#8 PEM).
    pub key: PathBuf,
    /// The chain alone, when the service reads it from its own file.
    pub chain: Option<PathBuf>,
    /// Mode of the key file.
    pub key_mode: u32,
    /// Owner to give the files, when set.
    pub owner: Option<u32>,
    /// Group to give the files, when set.
    pub group: Option<u32>,
    /// Program and arguments run (no shell) after new files are in place; empty runs nothing.
    pub reload: Vec<String>,
    /// How long `reload` may run.
    pub reload_timeout: Duration,
}

impl FilesConfig {
    /// Every file the target writes, cert first.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.key), Some(&self.cert), self.chain.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }
}

/// Resolves deployment `id`'s `[deployment.files]`.
///
/// # Errors
/// A [`ConfigError`] at the offending key naming the path and what to do.
pub(crate) fn resolve(
    cx: &Loader<'_>,
    id: &str,
    raw: Spanned<RawFiles>,
) -> Result<FilesConfig, ConfigError> {
    let span = raw.span();
    let raw = raw.into_inner();
    let at =
        |v: &Spanned<String>, why: String| cx.err_at(v.span(), format!("deployment {id}: {why}"));
    let cert = file_path("cert", &raw.cert).map_err(|w| at(&raw.cert, w))?;
    let key = file_path("key", &raw.key).map_err(|w| at(&raw.key, w))?;
    let chain = match &raw.chain {
        None => None,
        Some(c) => Some(file_path("chain", c).map_err(|w| at(c, w))?),
    };
    let mut seen: Vec<&Path> = Vec::new();
    for p in [Some(&cert), Some(&key), chain.as_ref()]
        .into_iter()
        .flatten()
    {
        if seen.contains(&p.as_path()) {
            return Err(cx.err_at(
                span,
                format!(
                    "deployment {id}: {} is named twice in [deployment.files]; cert, key and chain need their own files",
                    p.display()
                ),
            ));
        }
        seen.push(p);
    }
    let key_mode = match &raw.mode {
        None => DEFAULT_KEY_MODE,
        Some(m) => key_mode(m.get_ref()).map_err(|w| at(m, w))?,
    };
    let owner = match &raw.owner {
        None => None,
        Some(o) => Some(user_id(o.get_ref()).map_err(|w| at(o, w))?),
    };
    let group = match &raw.group {
        None => None,
        Some(g) => Some(group_id(g.get_ref()).map_err(|w| at(g, w))?),
    };
    let reload = match &raw.reload {
        None => Vec::new(),
        Some(argv) => {
            let program = argv.get_ref().first().ok_or_else(|| {
                cx.err_at(
                    argv.span(),
                    format!("deployment {id}: reload is empty; name a program, e.g. [\"/usr/bin/systemctl\", \"reload\", \"mosquitto\"], or remove it"),
                )
            })?;
            find_program(program).map_err(|why| {
                cx.err_at(
                    argv.span(),
                    format!("deployment {id}: reload program {why}"),
                )
            })?;
            argv.get_ref().clone()
        }
    };
    Ok(FilesConfig {
        cert,
        key,
        chain,
        key_mode,
        owner,
        group,
        reload,
        reload_timeout: cx.duration(&raw.reload_timeout, DEFAULT_RELOAD_TIMEOUT)?,
    })
}

/// Checks a target file path: absolute, in an existing directory, and either absent or a regular file (a
/// symlink would be replaced by the rename that makes each write atomic, not followed).
fn file_path(what: &str, value: &Spanned<String>) -> Result<PathBuf, String> {
    let path = PathBuf::from(value.get_ref());
    if !path.is_absolute() {
        return Err(format!(
            "{what} = \"{}\" must be an absolute path (the service's working directory is not yours to rely on)",
            path.display()
        ));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| format!("{what} = \"{}\" names no file", path.display()))?;
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{what}: {} is not a directory", dir.display())),
        Err(e) => {
            return Err(format!(
                "{what}: directory {} does not exist or cannot be read ({e}); create it and let certkeeper write there",
                dir.display()
            ));
        }
    }
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(path),
        Err(e) => Err(format!("{what}: cannot read {}: {e}", path.display())),
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "{what}: {} is a symlink; certkeeper replaces files by rename, which would replace the link \
             instead of its target — name the real file",
            path.display()
        )),
        Ok(m) if m.is_dir() => Err(format!(
            "{what}: {} is a directory; name the file to write",
            path.display()
        )),
        Ok(m) if !m.is_file() => Err(format!("{what}: {} is not a regular file", path.display())),
        Ok(_) => Ok(path),
    }
}

/// Parses an octal key mode and refuses one that lets others read or anyone execute the key.
fn key_mode(text: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("mode = \"{text}\" is not an octal file mode like \"0640\""))?;
    if mode & 0o007 != 0 {
        return Err(format!(
            "mode = \"{text}\" lets every user on the machine read or change the private key; use \"0600\" or \"0640\" with `group`"
        ));
    }
    if mode & 0o111 != 0 || mode & 0o600 != 0o600 {
        return Err(format!(
            "mode = \"{text}\" must let the owner read and write the key and nobody execute it, e.g. \"0600\" or \"0640\""
        ));
    }
    Ok(mode)
}

/// A user name or number, as `chown` takes it.
fn user_id(name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    lookup(name, Lookup::User).ok_or_else(|| {
        format!("owner = \"{name}\" is no user on this machine; create it or give a number")
    })
}

/// A group name or number.
fn group_id(name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    lookup(name, Lookup::Group).ok_or_else(|| {
        format!("group = \"{name}\" is no group on this machine; create it or give a number")
    })
}

enum Lookup {
    User,
    Group,
}

/// Looks `name` up in the system's user or group database (NSS, so LDAP and systemd-userdb users count).
fn lookup(name: &str, what: Lookup) -> Option<u32> {
    let name = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: the `*_r` calls write only into `entry` and `buf`, both sized as passed, and `result` points
    // into them or is null; nothing outlives this function.
    unsafe {
        match what {
            Lookup::User => {
                let mut entry: libc::passwd = std::mem::zeroed();
                let mut result: *mut libc::passwd = std::ptr::null_mut();
                let rc = libc::getpwnam_r(
                    name.as_ptr(),
                    &mut entry,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut result,
                );
                (rc == 0 && !result.is_null()).then_some(entry.pw_uid)
            }
            Lookup::Group => {
                let mut entry: libc::group = std::mem::zeroed();
                let mut result: *mut libc::group = std::ptr::null_mut();
                let rc = libc::getgrnam_r(
                    name.as_ptr(),
                    &mut entry,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut result,
                );
                (rc == 0 && !result.is_null()).then_some(entry.gr_gid)
            }
        }
    }
}

/// Finds `program` as `execvp` would: a path with a slash as is, a bare name on `$PATH`. It must be an
/// executable regular file.
pub(crate) fn find_program(program: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if executable(&path) {
            Ok(path)
        } else {
            Err(format!("`{program}` does not exist or is not executable"))
        };
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| {
            format!(
                "`{program}` is not found on PATH; give its absolute path, e.g. /usr/bin/{program}"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_modes_that_expose_the_key_are_refused() {
        assert_eq!(key_mode("0600"), Ok(0o600));
        assert_eq!(key_mode("0640"), Ok(0o640));
        assert!(key_mode("0644").unwrap_err().contains("every user"));
        assert!(key_mode("0700").unwrap_err().contains("execute"));
        assert!(
            key_mode("0400")
                .unwrap_err()
                .contains("owner read and write")
        );
        assert!(key_mode("rw-------").unwrap_err().contains("octal"));
        assert!(key_mode("01600").is_err());
    }

    #[test]
    fn users_and_groups_resolve_by_name_or_number() {
        assert_eq!(user_id("root"), Ok(0));
        assert_eq!(group_id("root"), Ok(0));
        assert_eq!(user_id("4242"), Ok(4242));
        assert!(
            user_id("no-such-user-certkeeper")
                .unwrap_err()
                .contains("no user")
        );
        assert!(
            group_id("no-such-group-certkeeper")
                .unwrap_err()
                .contains("no group")
        );
    }

    #[test]
    fn programs_are_found_like_execvp() {
        assert!(find_program("sh").is_ok());
        assert!(
            find_program("/no/such/reload")
                .unwrap_err()
                .contains("does not exist")
        );
        assert!(
            find_program("no-such-reload-program")
                .unwrap_err()
                .contains("PATH")
        );
    }
}
