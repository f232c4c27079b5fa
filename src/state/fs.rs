//! The state directory: ACME account credentials, one record per deployment, issued bundles awaiting a
//! push, the request budget, and the single-instance lock.
//!
//! Every file is written atomically (temp file in the same directory, fsync, rename, fsync of the
//! directory) with mode 0600 inside a 0700 directory, so a crash leaves either the old or the new content
//! and no other user can read keys. The layout is plain JSON and PEM so an operator can inspect it: `lock`
//! (the single-instance lock, holding the PID of its holder) here, every other file in `items.rs`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A state-directory operation that failed, with the path involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A state file exists but cannot be understood; it is left in place.
    #[error("state file {} is corrupt ({detail}); move it aside to start that item afresh", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Parser detail.
        detail: String,
    },
    /// The state directory is writable by others: refusing to keep keys there.
    #[error("state directory {} is writable by group or others; run `chmod 700 {}`", path.display(), path.display())]
    Insecure {
        /// The directory.
        path: PathBuf,
    },
    /// The state directory belongs to another user: its files would not be ours to trust.
    #[error(
        "state directory {} is owned by uid {owner}, not by the user running certkeeper (uid {me}); run certkeeper as \
         its owner, or `chown -R {me} {}`",
        path.display(),
        path.display()
    )]
    NotOwned {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective uid of this process.
        me: u32,
    },
    /// A state file is not a regular file (a symlink, a FIFO, a device) or is far larger than any state file.
    #[error("state file {} {what}; state files are small regular files — move it aside", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A value could not be encoded (a date outside what the file format can hold); nothing was written.
    #[error("cannot encode state file {} ({detail}); nothing was written — please report this", path.display())]
    Encode {
        /// The file.
        path: PathBuf,
        /// Encoder detail.
        detail: String,
    },
    /// Another certkeeper holds the lock.
    #[error("another certkeeper (pid {pid}) is working on {}; wait for it or stop it", path.display())]
    Locked {
        /// The state directory.
        path: PathBuf,
        /// The holder's PID as it wrote it, or "unknown".
        pid: String,
    },
    /// Another certkeeper is working on this deployment.
    #[error(
        "another certkeeper (pid {pid}) is renewing deployment {id}; wait for it (`--wait-lock`) or stop it"
    )]
    Busy {
        /// The deployment.
        id: String,
        /// The holder's PID as it wrote it, or "unknown".
        pid: String,
    },
}

/// The largest state file read: records and bundles are a few KiB; anything larger is not ours.
pub const MAX_STATE_FILE: u64 = 1024 * 1024;
/// The name prefix of atomic writes' temp files, removed at start when a killed process left them.
const TEMP_PREFIX: &str = ".tmp";

/// Refuses a directory others could write to, or one another user owns.
fn check_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs::symlink_metadata(dir).map_err(io_err("cannot read state directory", dir))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(StoreError::NotOwned {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(StoreError::Insecure {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Reads a state file: a regular file, not through a symlink, without blocking (a FIFO), at most
/// [`MAX_STATE_FILE`] bytes. `None` when it does not exist.
fn read_state_file(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let unreadable = |what: String| StoreError::Unreadable {
        path: path.to_path_buf(),
        what,
    };
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(unreadable("is a symbolic link".into()));
        }
        Err(e) => return Err(io_err("cannot read", path)(e)),
    };
    let meta = file.metadata().map_err(io_err("cannot read", path))?;
    if !meta.is_file() {
        return Err(unreadable("is not a regular file".into()));
    }
    if meta.len() > MAX_STATE_FILE {
        return Err(unreadable(format!(
            "is {} bytes, more than the {MAX_STATE_FILE} a state file may have",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_STATE_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("cannot read", path))?;
    if bytes.len() as u64 > MAX_STATE_FILE {
        return Err(unreadable(
            "grew past the size limit while being read".into(),
        ));
    }
    Ok(Some(bytes))
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The state directory. Cheap to clone; holds no open files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens the state directory to read it only (`status`): nothing is created, and it may belong to another
    /// user (the service's) as long as this one can read it. Writes through it fail with the OS's error.
    ///
    /// # Errors
    /// [`StoreError::Io`] when it is missing, unreadable or not a directory.
    pub fn open_read_only(dir: &Path) -> Result<Store, StoreError> {
        let meta = fs::metadata(dir).map_err(io_err("cannot read state directory", dir))?;
        if !meta.is_dir() {
            return Err(io_err("cannot read state directory", dir)(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// Opens (creating as 0700) the state directory.
    ///
    /// # Errors
    /// I/O errors, or [`StoreError::Insecure`] when others can write to it.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("cannot create state directory", dir))?;
        check_private_dir(dir)?;
        let deployments = dir.join("deployments");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&deployments)
            .map_err(io_err("cannot create", &deployments))?;
        check_private_dir(&deployments)?;
        let locks = dir.join("locks");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&locks)
            .map_err(io_err("cannot create", &locks))?;
        check_private_dir(&locks)?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads a JSON state file; `None` if it does not exist.
    ///
    /// # Errors
    /// I/O errors and [`StoreError::Corrupt`].
    pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        let path = self.dir.join(name);
        let Some(bytes) = read_state_file(&path)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path,
                detail: e.to_string(),
            })
    }

    /// Writes a JSON state file atomically (0600).
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        // Dates outside what RFC 3339 can write (years beyond 0000–9999) fail here: an error, never a panic.
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Encode {
            path: self.dir.join(name),
            detail: e.to_string(),
        })?;
        self.write_atomic(name, &bytes)
    }

    /// Replaces `name` (relative to the state dir) with `bytes`: temp file, fsync, rename, fsync dir.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        let parent = path.parent().unwrap_or(&self.dir).to_path_buf();
        // tempfile creates files 0600.
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&parent)
            .map_err(io_err("cannot create a file in", &parent))?;
        tmp.write_all(bytes)
            .map_err(io_err("cannot write", &path))?;
        tmp.as_file()
            .sync_all()
            .map_err(io_err("cannot sync", &path))?;
        tmp.persist(&path)
            .map_err(|e| io_err("cannot replace", &path)(e.error))?;
        File::open(&parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err("cannot sync", &parent))?;
        Ok(())
    }

    /// Removes a state file (relative to the state dir); a missing one is fine.
    fn remove(&self, name: &str) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("cannot remove", &path)(e)),
            _ => Ok(()),
        }
    }
}

mod items;
mod lock;

pub use lock::{StoreLock, wait_for};

#[cfg(test)]
mod tests;
