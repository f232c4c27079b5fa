//! The file operations of the files target: reading the pair in place, writing one file atomically, keeping
//! the previous pair as `<name>.prev`, and putting it back.
//!
//! Each file is written to `.<name>.certkeeper-tmp` in its own directory (so the rename cannot cross a file
//! system), given its owner and mode, fsynced, renamed over the old one, and the directory fsynced: a reader
//! sees the old file or the new one, never half of either. The temp name is fixed, so a write a SIGKILL
//! interrupted leaves one stray file that the next write replaces, never a growing heap.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret as _, SecretString};

use super::config::{CERT_MODE, FilesConfig};
use crate::certs;

/// The largest file read back (a PEM chain is a few KiB).
const MAX_READ: u64 = 1024 * 1024;

/// The PEM contents of one pair, as written.
pub(super) struct Contents {
    pub key: SecretString,
    pub cert: String,
    pub chain: Option<String>,
}

/// What a pair of files in place holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum InPlace {
    /// No certificate file.
    Absent,
    /// A certificate whose key file matches it (or cannot be told apart: a key in another format).
    Good(certs::LeafInfo),
    /// A certificate without its key: a write was interrupted, or someone changed one file.
    Mismatched(certs::LeafInfo),
}

/// A failed file operation, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what} {}: {source}", path.display())]
pub struct FileError {
    /// What was attempted.
    pub what: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

fn err<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> FileError + 'p {
    move |source| FileError {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// `<path>.prev`.
pub(super) fn prev(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".prev");
    path.with_file_name(name)
}

/// Reads a file of at most [`MAX_READ`] bytes; `None` when it does not exist. Symlinks are not followed.
fn read(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    use std::io::Read as _;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err("read", path)(e)),
    };
    let mut out = Vec::new();
    file.take(MAX_READ + 1)
        .read_to_end(&mut out)
        .map_err(err("read", path))?;
    if out.len() as u64 > MAX_READ {
        return Err(err("read", path)(io::Error::other(format!(
            "larger than {MAX_READ} bytes; this is no PEM certificate file"
        ))));
    }
    Ok(Some(out))
}

/// What the pair at `cert` / `key` holds.
pub(super) fn in_place(cert: &Path, key: &Path) -> Result<InPlace, FileError> {
    let Some(pem) = read(cert)? else {
        return Ok(InPlace::Absent);
    };
    let leaf = certs::parse_pem_certs(&pem)
        .ok()
        .and_then(|ders| ders.into_iter().next())
        .ok_or_else(|| {
            err("use", cert)(io::Error::other(
                "it holds no readable PEM certificate; fix or remove it so certkeeper can write a new one",
            ))
        })?;
    let info = certs::leaf_info(&leaf).map_err(|e| err("use", cert)(io::Error::other(e)))?;
    let key_pem = read(key)?.map(|k| SecretString::from(String::from_utf8_lossy(&k).into_owned()));
    Ok(match key_pem.map(|k| certs::key_matches(&k, &leaf)) {
        None | Some(Some(false)) => InPlace::Mismatched(info),
        Some(Some(true) | None) => InPlace::Good(info),
    })
}

/// Writes `contents` to the files of `config`: key first, then cert, then chain, each atomically.
pub(super) fn write_pair(config: &FilesConfig, contents: &Contents) -> Result<(), FileError> {
    write_atomic(
        config,
        &config.key,
        contents.key.expose_secret().as_bytes(),
        config.key_mode,
    )?;
    fail::fail_point!("files-key-written");
    write_atomic(config, &config.cert, contents.cert.as_bytes(), CERT_MODE)?;
    if let (Some(path), Some(chain)) = (&config.chain, &contents.chain) {
        write_atomic(config, path, chain.as_bytes(), CERT_MODE)?;
    }
    Ok(())
}

/// Copies the pair in place to `<name>.prev`.
pub(super) fn keep_previous(config: &FilesConfig) -> Result<(), FileError> {
    for path in config.paths() {
        if let Some(bytes) = read(path)? {
            let mode = if path == config.key {
                config.key_mode
            } else {
                CERT_MODE
            };
            write_atomic(config, &prev(path), &bytes, mode)?;
        }
    }
    Ok(())
}

/// Returns true if and only if `<name>.prev` holds a whole pair whose key matches its certificate.
pub(super) fn previous_is_good(config: &FilesConfig) -> bool {
    let chain_ok = config.chain.as_ref().is_none_or(|c| prev(c).is_file());
    chain_ok
        && matches!(
            in_place(&prev(&config.cert), &prev(&config.key)),
            Ok(InPlace::Good(_))
        )
}

/// Puts the `<name>.prev` pair back in place (key first, as a write does).
pub(super) fn restore_previous(config: &FilesConfig) -> Result<(), FileError> {
    for path in config.paths() {
        let Some(bytes) = read(&prev(path))? else {
            continue;
        };
        let mode = if path == config.key {
            config.key_mode
        } else {
            CERT_MODE
        };
        write_atomic(config, path, &bytes, mode)?;
    }
    Ok(())
}

/// Removes the pair certkeeper wrote where there was none before.
pub(super) fn remove_pair(config: &FilesConfig) -> Result<(), FileError> {
    for path in config.paths() {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("remove", path)(e)),
        }
    }
    Ok(())
}

fn write_atomic(
    config: &FilesConfig,
    path: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(), FileError> {
    write_file_atomically(path, bytes, mode, config.owner, config.group)
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory (created 0600, symlinks at its name
/// not followed), owner and group set when given, then `mode`, fsync, rename, directory fsync. The old file
/// is intact on any error. Every file certkeeper hands to another program is written this way.
///
/// # Errors
/// A [`FileError`] naming the step and the file.
pub(crate) fn write_file_atomically(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".certkeeper-tmp");
    let temp = dir.join(name);
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("remove the stale temp file", &temp)(e)),
    }
    // Created 0600 whatever the umask: the key is never readable by others, not even for a moment.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .map_err(err("create", &temp))?;
    let written = (|| {
        file.write_all(bytes).map_err(err("write", &temp))?;
        if owner.is_some() || group.is_some() {
            std::os::unix::fs::fchown(&file, owner, group)
                .map_err(err("change the owner of", &temp))?;
        }
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(err("set the mode of", &temp))?;
        file.sync_all().map_err(err("sync", &temp))?;
        fs::rename(&temp, path).map_err(err("replace", path))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("sync the directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(dir: &Path) -> FilesConfig {
        FilesConfig {
            cert: dir.join("fullchain.pem"),
            key: dir.join("privkey.pem"),
            chain: None,
            key_mode: 0o640,
            owner: None,
            group: None,
            reload: Vec::new(),
            reload_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn writes_are_atomic_with_modes_and_previous_pairs_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let pair = |n: &str| Contents {
            key: format!("key {n}").into(),
            cert: format!("cert {n}"),
            chain: None,
        };
        write_pair(&c, &pair("1")).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&c.key), 0o640);
        assert_eq!(mode(&c.cert), 0o644);
        keep_previous(&c).unwrap();
        write_pair(&c, &pair("2")).unwrap();
        assert_eq!(fs::read_to_string(&c.cert).unwrap(), "cert 2");
        assert_eq!(fs::read_to_string(prev(&c.cert)).unwrap(), "cert 1");
        assert_eq!(mode(&prev(&c.key)), 0o640);
        restore_previous(&c).unwrap();
        assert_eq!(fs::read_to_string(&c.key).unwrap(), "key 1");
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.contains("certkeeper-tmp")),
            "{names:?}"
        );
        remove_pair(&c).unwrap();
        assert_eq!(in_place(&c.cert, &c.key).unwrap(), InPlace::Absent);
    }

    #[test]
    fn a_stale_temp_file_is_replaced_and_symlinks_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        fs::write(dir.path().join(".privkey.pem.certkeeper-tmp"), "stale").unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "untouched").unwrap();
        std::os::unix::fs::symlink(&outside, &c.cert).unwrap();
        assert!(in_place(&c.cert, &c.key).is_err());
        write_pair(
            &c,
            &Contents {
                key: "k".to_owned().into(),
                cert: "c".into(),
                chain: None,
            },
        )
        .unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "untouched");
        assert_eq!(fs::read_to_string(&c.key).unwrap(), "k");
    }
}
