//! The files target: PEM files plus a reload command, for self-hosted brokers (mosquitto, EMQX open source,
//! anything that reads a certificate and a key from disk).
//!
//! A deploy writes the key, then the certificate (then the chain), each atomically, keeping the pair it
//! replaces as `<name>.prev`; then it runs `reload`, and with an `endpoint` waits until the listener serves
//! the new leaf. A reload that fails or times out, or an endpoint that keeps the old leaf, **rolls back**: the
//! previous files are put back, `reload` runs again, and the deploy fails — the pipeline keeps the bundle in
//! the state dir and pushes the same certificate on the next pass instead of ordering another.
//!
//! Crash safety comes from the pipeline's steps plus one rule here: a pair whose key does not match its
//! certificate counts as "no certificate", so a SIGKILL between the key and the certificate write is repaired
//! by the next pass pushing the saved bundle again. `.prev` is only ever refreshed from a matching pair.

pub mod config;
mod write;

use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::AsyncReadExt as _;

pub(crate) use config::resolve;
pub use config::{FilesConfig, RawFiles};
pub use write::FileError;
pub(crate) use write::write_file_atomically;
use write::{Contents, InPlace};

use super::{Deployed, Status, Target, TargetError, TargetFuture};
use crate::certs::{self, Bundle, LeafInfo};
use crate::state::CertRecord;

/// At most this much of a reload program's stderr goes into an error line.
const MAX_RELOAD_OUTPUT: usize = 300;

/// Why a deploy to files failed. Every variant says whether the previous files are back in place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    /// Reading or writing a file failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// `reload` failed; `rollback` says what happened to the files.
    #[error("reload `{program}` {why}; {rollback}")]
    Reload {
        /// argv\[0\].
        program: String,
        /// Exit status, timeout or spawn error, with the end of its stderr.
        why: String,
        /// What was done about the files.
        rollback: String,
    },
    /// The endpoint did not serve the new leaf in time.
    #[error("{why}; {rollback}")]
    Endpoint {
        /// The verification failure.
        why: crate::verify::VerifyError,
        /// What was done about the files.
        rollback: String,
    },
}

/// One `[deployment.files]`.
pub struct FilesTarget {
    config: FilesConfig,
    /// host:port and SNI of the listener that must show the new leaf.
    endpoint: Option<(String, String)>,
    verify_timeout: Duration,
    /// The serial this process last reloaded the service for: after a crash the files may be new while the
    /// service was never told, so waiting for a certificate reloads once unless this process already did.
    reloaded: Mutex<Option<String>>,
}

impl FilesTarget {
    /// The target of `config`; with `endpoint` (host:port, SNI) a deploy waits up to `verify_timeout` for it
    /// to serve the new leaf.
    pub fn new(
        config: FilesConfig,
        endpoint: Option<(String, String)>,
        verify_timeout: Duration,
    ) -> FilesTarget {
        FilesTarget {
            config,
            endpoint,
            verify_timeout,
            reloaded: Mutex::new(None),
        }
    }

    fn contents(&self, bundle: &Bundle) -> Result<Contents, TargetError> {
        let (cert, chain) = match &self.config.chain {
            None => (bundle.chain_pem.clone(), None),
            Some(_) => {
                let (leaf, rest) = certs::split_leaf(&bundle.chain_pem).ok_or_else(|| {
                    TargetError::Unacceptable("the bundle holds no certificate".into())
                })?;
                (leaf, Some(rest))
            }
        };
        Ok(Contents {
            key: bundle.key_pkcs8_pem.clone(),
            cert,
            chain,
        })
    }

    fn set_reloaded(&self, serial: Option<String>) {
        // A poisoned lock only means another task panicked while storing a string: the value is whole.
        *self.reloaded.lock().unwrap_or_else(|e| e.into_inner()) = serial;
    }

    fn reloaded_for(&self, serial: &str) -> bool {
        self.reloaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            == Some(serial)
    }

    /// Runs `reload` (nothing when none is configured), bounded by `reload_timeout`.
    async fn reload(&self) -> Result<(), String> {
        run_reload(&self.config.reload, self.config.reload_timeout).await
    }

    /// Puts back what was in place before this deploy, reloads, and says what was done.
    async fn roll_back(&self, before: &Before) -> String {
        let undone = match before {
            Before::Good | Before::PreviousGood => write::restore_previous(&self.config)
                .map(|()| "the previous certificate files were restored"),
            Before::Nothing => write::remove_pair(&self.config)
                .map(|()| "the new files were removed (there were none before)"),
            Before::Unknown => Ok("no intact previous pair exists to restore, the new files stay"),
        };
        let mut said = match undone {
            Ok(what) => what.to_owned(),
            Err(e) => format!("rolling back failed too ({e})"),
        };
        if !matches!(before, Before::Unknown) {
            match self.reload().await {
                Ok(()) => said.push_str(" and the service reloaded"),
                Err(e) => said.push_str(&format!(" but the second reload {e}")),
            }
        }
        self.set_reloaded(None);
        said.push_str("; the new certificate is kept for the next pass");
        said
    }

    async fn deploy_files(&self, bundle: &Bundle) -> Result<(), TargetError> {
        let leaf = certs::parse_pem_certs(bundle.chain_pem.as_bytes())
            .ok()
            .and_then(|d| d.into_iter().next())
            .ok_or_else(|| TargetError::Unacceptable("the bundle holds no certificate".into()))?;
        let info = certs::leaf_info(&leaf).map_err(|e| TargetError::Failed(Box::new(e)))?;
        let spki = certs::spki(&leaf).map_err(|e| TargetError::Failed(Box::new(e)))?;
        let contents = self.contents(bundle)?;
        let failed = |e: FilesError| TargetError::Failed(Box::new(e));
        let before = match write::in_place(&self.config.cert, &self.config.key) {
            Ok(InPlace::Good(current)) if current.serial != info.serial => {
                write::keep_previous(&self.config).map_err(|e| failed(e.into()))?;
                Before::Good
            }
            Ok(InPlace::Absent) => Before::Nothing,
            // The same certificate again, a pair a crash split, or an unreadable file: only an intact `.prev`
            // can be put back.
            _ if write::previous_is_good(&self.config) => Before::PreviousGood,
            _ => Before::Unknown,
        };
        write::write_pair(&self.config, &contents).map_err(|e| failed(e.into()))?;
        fail::fail_point!("files-written");
        tracing::info!(cert = %self.config.cert.display(), serial = %info.serial, "certificate files written");
        if let Err(why) = self.reload().await {
            let rollback = self.roll_back(&before).await;
            return Err(failed(FilesError::Reload {
                program: self.config.reload[0].clone(),
                why,
                rollback,
            }));
        }
        fail::fail_point!("files-reloaded");
        self.set_reloaded(Some(info.serial.clone()));
        if let Some((endpoint, sni)) = &self.endpoint {
            let served =
                crate::verify::wait_served(endpoint, sni, &info.serial, &spki, self.verify_timeout)
                    .await;
            if let Err(why) = served {
                let rollback = self.roll_back(&before).await;
                return Err(failed(FilesError::Endpoint { why, rollback }));
            }
        }
        Ok(())
    }
}

/// What was in place before a deploy, which decides what a rollback puts back.
enum Before {
    /// An intact pair, now copied to `.prev`.
    Good,
    /// No usable pair in place, but an intact one in `.prev`.
    PreviousGood,
    /// No certificate file.
    Nothing,
    /// Nothing intact anywhere.
    Unknown,
}

impl Target for FilesTarget {
    fn kind(&self) -> &'static str {
        "files"
    }

    fn inspect(&self) -> TargetFuture<'_, Deployed> {
        Box::pin(async move {
            let deployed = match write::in_place(&self.config.cert, &self.config.key)
                .map_err(|e| TargetError::Failed(Box::new(e)))?
            {
                InPlace::Absent => Deployed {
                    expire: None,
                    status: Status::Absent,
                    serial: None,
                },
                InPlace::Good(info) => Deployed {
                    expire: Some(info.not_after),
                    status: Status::Running,
                    serial: Some(info.serial),
                },
                // The service cannot load a key that does not match: renewal (or the saved bundle) is due now.
                InPlace::Mismatched(info) => {
                    tracing::warn!(
                        key = %self.config.key.display(),
                        cert = %self.config.cert.display(),
                        "the key file does not match the certificate file; treating the deployment as having no certificate"
                    );
                    Deployed {
                        expire: None,
                        status: Status::Other("key does not match the certificate".into()),
                        serial: Some(info.serial),
                    }
                }
            };
            Ok(deployed)
        })
    }

    fn accept(
        &self,
        _bundle: &Bundle,
        _info: &LeafInfo,
        _now: OffsetDateTime,
    ) -> Result<(), TargetError> {
        Ok(())
    }

    fn deploy<'a>(&'a self, bundle: &'a Bundle, _create: bool) -> TargetFuture<'a, ()> {
        Box::pin(self.deploy_files(bundle))
    }

    fn wait_active<'a>(&'a self, cert: &'a CertRecord) -> TargetFuture<'a, Deployed> {
        Box::pin(async move {
            let deployed = self.inspect().await?;
            if deployed.status != Status::Running || deployed.serial.as_ref() != Some(&cert.serial)
            {
                return Err(TargetError::StillPrevious {
                    waited: Duration::ZERO,
                });
            }
            // Files written by a process that died before (or while) reloading: tell the service now.
            if !self.reloaded_for(&cert.serial) {
                tracing::info!("reloading the service for certificate files an earlier pass wrote");
                self.reload().await.map_err(|why| {
                    TargetError::NotApplied(
                        format!("reload `{}` {why}", self.config.reload[0]).into(),
                    )
                })?;
                self.set_reloaded(Some(cert.serial.clone()));
            }
            Ok(deployed)
        })
    }

    fn describe_deploy(&self, _create: bool) -> String {
        let reload = if self.config.reload.is_empty() {
            String::new()
        } else {
            format!(" and run `{}`", self.config.reload.join(" "))
        };
        format!(
            "write {} and {}{reload}",
            self.config.key.display(),
            self.config.cert.display()
        )
    }

    fn wait_timeout(&self) -> Duration {
        self.config.reload_timeout
    }
}

/// The last line of a program's stderr, bounded and stripped of control characters, for an error line.
/// Runs an operator's reload command `argv` (nothing when empty; no shell), killed after `timeout`. The error
/// says what happened, ending with the last line of its stderr (bounded): a sentence to follow "reload …".
pub(crate) async fn run_reload(argv: &[String], timeout: Duration) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot be started ({e})"))?;
    let mut stderr = child.stderr.take();
    let run = async {
        let mut out = Vec::new();
        if let Some(pipe) = stderr.as_mut() {
            // Bounded: a chatty or hostile program cannot fill memory.
            let _ = pipe.take(64 * 1024).read_to_end(&mut out).await;
        }
        (child.wait().await, out)
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => Err(format!("did not finish within {timeout:?} and was killed")),
        Ok((Err(e), _)) => Err(format!("could not be waited for ({e})")),
        Ok((Ok(status), _)) if status.success() => Ok(()),
        Ok((Ok(status), out)) => Err(format!("failed ({status}){}", stderr_tail(&out))),
    }
}

fn stderr_tail(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    let Some(line) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
        return String::new();
    };
    let clean: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_RELOAD_OUTPUT)
        .collect();
    format!(": {}", clean.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leaf_splits_from_its_chain() {
        let chain = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n";
        let (leaf, rest) = certs::split_leaf(chain).unwrap();
        assert_eq!(
            leaf,
            "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n"
        );
        assert!(rest.starts_with("-----BEGIN CERTIFICATE-----\nB"));
        assert!(certs::split_leaf("nothing").is_none());
    }

    #[test]
    fn reload_output_is_bounded_and_clean() {
        assert_eq!(stderr_tail(b""), "");
        assert_eq!(
            stderr_tail(b"first\nError: bad\x1b[31m thing\n\n"),
            ": Error: bad[31m thing"
        );
        assert_eq!(stderr_tail(&[b'x'; 1000]).len(), MAX_RELOAD_OUTPUT + 2);
    }
}
