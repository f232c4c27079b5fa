//! The locks of the state directory, all OS file locks (`flock`) that the kernel drops when a process dies:
//!
//! - `lock`: every pass holds it **shared** for its whole length, so several certkeepers (the daemon and a
//!   hand-run `renew`) work side by side; an **exclusive** holder (an older certkeeper, maintenance) keeps
//!   them all out. Whoever takes it exclusively also removes the temp files a killed writer left: no other
//!   process can be writing then.
//! - `locks/<id>.lock`, exclusive: the deployment a pass is working on. This is what a hand-run `renew
//!   --deployment X` waits for while the daemon works on X, and only on X.
//! - `update.lock`, exclusive and short: read-modify-write of the files every process shares (the request log,
//!   the ACME accounts), so no update is lost between processes.
//!
//! Each long lock file holds the PID of its last holder, for the "who holds it" message.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use super::{Store, StoreError, TEMP_PREFIX, io_err};
use crate::shutdown::Shutdown;

/// How many times (10 ms apart) a shared lock is retried before an exclusive holder counts as busy.
const CLEANUP_RETRIES: u32 = 30;

/// A held lock; released when dropped (and by the kernel if the process dies).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// How a lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Shared,
    Exclusive,
}

/// A lock file that was busy: who holds it, as it wrote its PID.
struct Held {
    pid: String,
}

/// Opens (creating) a lock file without following a symlink: its target would be truncated.
fn open(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => StoreError::Unreadable {
                path: path.to_path_buf(),
                what: "is a symbolic link".into(),
            },
            _ => io_err("cannot open lock file", path)(e),
        })
}

/// Takes the lock file at `path` in `mode` without waiting.
fn take(path: &Path, mode: Mode) -> Result<Result<File, Held>, StoreError> {
    let mut file = open(path)?;
    let taken = match mode {
        Mode::Shared => file.try_lock_shared(),
        Mode::Exclusive => file.try_lock(),
    };
    match taken {
        Ok(()) => Ok(Ok(file)),
        Err(fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            Ok(Err(Held {
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid.into()
                },
            }))
        }
        Err(fs::TryLockError::Error(e)) => Err(io_err("cannot lock", path)(e)),
    }
}

/// Writes this process's PID into a lock file it holds.
fn sign(file: &mut File, path: &Path) -> Result<(), StoreError> {
    file.set_len(0).map_err(io_err("cannot write", path))?;
    write!(file, "{}", std::process::id()).map_err(io_err("cannot write", path))
}

impl Store {
    /// Takes the state lock exclusively without waiting: no pass of any certkeeper runs while it is held.
    ///
    /// # Errors
    /// [`StoreError::Locked`] naming the holder's PID when another process holds it.
    pub fn try_lock(&self) -> Result<StoreLock, StoreError> {
        self.state_lock(Mode::Exclusive)
    }

    /// Takes the state lock shared, as a pass does, without waiting: other passes may run beside it, each
    /// holding the lock of the deployment it works on ([`Store::try_lock_deployment`]).
    ///
    /// # Errors
    /// [`StoreError::Locked`] naming the holder when another process holds it exclusively.
    pub fn try_lock_shared(&self) -> Result<StoreLock, StoreError> {
        // Whoever finds nobody else here cleans up after a killed writer, then shares.
        if let Ok(exclusive) = self.state_lock(Mode::Exclusive) {
            drop(exclusive);
        }
        // Another pass's clean-up holds the lock exclusively for a few milliseconds: that is not "busy".
        let mut attempts = 0;
        loop {
            match self.state_lock(Mode::Shared) {
                Err(StoreError::Locked { .. }) if attempts < CLEANUP_RETRIES => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    fn state_lock(&self, mode: Mode) -> Result<StoreLock, StoreError> {
        let path = self.dir.join("lock");
        match take(&path, mode)? {
            Ok(mut file) => {
                sign(&mut file, &path)?;
                if mode == Mode::Exclusive {
                    // Only an exclusive holder can know no atomic write is in flight.
                    self.remove_stale_temp_files();
                }
                Ok(StoreLock { _file: file })
            }
            Err(held) => Err(StoreError::Locked {
                path: self.dir.clone(),
                pid: held.pid,
            }),
        }
    }

    /// Takes the lock of deployment `id` without waiting.
    ///
    /// # Errors
    /// [`StoreError::Busy`] naming the holder's PID when another process works on `id`.
    pub fn try_lock_deployment(&self, id: &str) -> Result<StoreLock, StoreError> {
        let path = self.dir.join(format!("locks/{id}.lock"));
        match take(&path, Mode::Exclusive)? {
            Ok(mut file) => {
                sign(&mut file, &path)?;
                Ok(StoreLock { _file: file })
            }
            Err(held) => Err(StoreError::Busy {
                id: id.to_owned(),
                pid: held.pid,
            }),
        }
    }

    /// Runs `update` while holding `update.lock`: the short critical section of a read-modify-write shared
    /// with other processes. It waits for the lock, which no holder keeps longer than one small file's write.
    pub(super) fn updating<T>(
        &self,
        update: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let path = self.dir.join("update.lock");
        let file = open(&path)?;
        file.lock().map_err(io_err("cannot lock", &path))?;
        let result = update();
        drop(file);
        result
    }

    /// Takes the state lock shared ([`Store::try_lock_shared`]), waiting while another process holds it
    /// exclusively: at most `limit` (forever when `None`), and no longer than until `stop` fires. Returns
    /// `None` only when `stop` fired first.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when `limit` passed; I/O errors.
    pub async fn lock_waiting(
        &self,
        limit: Option<std::time::Duration>,
        stop: &Shutdown,
    ) -> Result<Option<StoreLock>, StoreError> {
        wait_for(limit, stop, || self.try_lock_shared()).await
    }

    /// Removes the temp files of atomic writes a killed process left (`.tmp*` in the state directory and in
    /// `deployments/`). Best effort: a file that cannot be removed is only logged.
    fn remove_stale_temp_files(&self) {
        for dir in [self.dir.clone(), self.dir.join("deployments")] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let stale = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(TEMP_PREFIX))
                    && entry.file_type().is_ok_and(|t| t.is_file());
                if stale {
                    remove_stale(&entry.path());
                }
            }
        }
    }
}

fn remove_stale(path: &PathBuf) {
    match fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(file = %path.display(), "removed the temp file of an interrupted write")
        }
        Err(e) => tracing::warn!(file = %path.display(), "cannot remove a stale temp file: {e}"),
    }
}

/// Retries `try_take` a few times a second while the lock is busy ([`StoreError::Locked`] or
/// [`StoreError::Busy`]): at most `limit` (forever when `None`), and no longer than until `stop` fires
/// (`None`). The first wait is logged once, naming the holder.
///
/// # Errors
/// The busy error once `limit` passed; any other error at once.
pub async fn wait_for<L>(
    limit: Option<std::time::Duration>,
    stop: &Shutdown,
    mut try_take: impl FnMut() -> Result<L, StoreError>,
) -> Result<Option<L>, StoreError> {
    // A blocking flock cannot be abandoned on SIGTERM; polling a few times a second costs nothing and
    // happens only while another certkeeper is working.
    const POLL: std::time::Duration = std::time::Duration::from_millis(250);
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    let mut announced = false;
    loop {
        match try_take() {
            Ok(lock) => return Ok(Some(lock)),
            Err(e @ (StoreError::Locked { .. } | StoreError::Busy { .. })) => {
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    return Err(e);
                }
                if !announced {
                    let (StoreError::Locked { pid, .. } | StoreError::Busy { pid, .. }) = &e else {
                        unreachable!("matched above")
                    };
                    match &e {
                        StoreError::Busy { id, .. } => tracing::info!(
                            pid = %pid, deployment = %id,
                            "another certkeeper holds the state lock; waiting for it"
                        ),
                        _ => {
                            tracing::info!(pid = %pid, "another certkeeper holds the state lock; waiting for it")
                        }
                    }
                    announced = true;
                }
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = stop.wait() => return Ok(None),
        }
    }
}
