//! The DNS side of the stand-ins: every change an API accepts goes to a real DNS server before the API
//! answers, so that what the API reports and what DNS serves never disagree for a test to observe.
//!
//! `knsupdate` (Debian's knot-dnsutils, which the test bed needs anyway) sends the RFC 2136 update with TSIG.
//! The key goes in on stdin (its `key` command), never on the command line, where `ps` would show it.

use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

/// How long one `knsupdate` may take before the change counts as failed.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(10);
/// The TTL of published TXT records: short, as challenge records should be.
const TTL: u32 = 60;

/// One change to the TXT records at an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Add this value at this owner (absolute name, with or without the trailing dot).
    Add(String, String),
    /// Remove exactly this value at this owner.
    Delete(String, String),
}

/// The future a [`Publisher`] returns: `Err` carries a message for the API's log and its 5xx answer.
pub type PublishFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Where accepted records go. Changes given together are applied together (one DNS UPDATE message).
pub trait Publisher: Send + Sync + 'static {
    /// Applies `changes` in order, atomically where the server allows.
    fn apply(&self, changes: Vec<Change>) -> PublishFuture;
}

/// Publishes through `knsupdate` to one DNS server with one TSIG key.
#[derive(Clone)]
pub struct Knsupdate {
    /// `host` and `port` of the server.
    pub host: String,
    /// The server's port.
    pub port: u16,
    /// The zone every update is for.
    pub zone: String,
    /// `ALGORITHM:NAME`, e.g. `hmac-sha256:acme-update.`.
    pub key: String,
    /// The base64 TSIG secret.
    pub secret: String,
}

impl std::fmt::Debug for Knsupdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knsupdate")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("zone", &self.zone)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Publisher for Knsupdate {
    fn apply(&self, changes: Vec<Change>) -> PublishFuture {
        let this = self.clone();
        Box::pin(async move {
            match tokio::time::timeout(UPDATE_TIMEOUT, this.run(&changes)).await {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "knsupdate gave no answer within {UPDATE_TIMEOUT:?}"
                )),
            }
        })
    }
}

impl Knsupdate {
    fn script(&self, changes: &[Change]) -> String {
        let mut script = format!(
            "server {} {}\nzone {}\nkey {} {}\n",
            self.host, self.port, self.zone, self.key, self.secret
        );
        for change in changes {
            match change {
                Change::Add(owner, value) => {
                    script.push_str(&format!(
                        "update add {} {TTL} TXT \"{value}\"\n",
                        absolute(owner)
                    ));
                }
                Change::Delete(owner, value) => {
                    script.push_str(&format!(
                        "update delete {} TXT \"{value}\"\n",
                        absolute(owner)
                    ));
                }
            }
        }
        script.push_str("send\n");
        script
    }

    async fn run(&self, changes: &[Change]) -> Result<(), String> {
        let mut child = tokio::process::Command::new("knsupdate")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run knsupdate (apt-get install knot-dnsutils): {e}"))?;
        // Unwrap: stdin was set to piped above.
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(self.script(changes).as_bytes())
            .await
            .map_err(|e| format!("cannot write to knsupdate: {e}"))?;
        drop(stdin);
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| format!("knsupdate failed: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "knsupdate exited with {}: {}",
                out.status,
                stderr.trim()
            ))
        }
    }
}

fn absolute(owner: &str) -> String {
    if owner.ends_with('.') {
        owner.to_owned()
    } else {
        format!("{owner}.")
    }
}

/// Keeps the changes in memory instead of sending them (the stand-ins' unit tests); fails on demand.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    /// Every change applied, in order.
    pub changes: Arc<Mutex<Vec<Change>>>,
    /// When set, every `apply` fails with this message and records nothing.
    pub fail_with: Arc<Mutex<Option<String>>>,
}

impl Recorder {
    /// The changes so far.
    pub fn changes(&self) -> Vec<Change> {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Publisher for Recorder {
    fn apply(&self, changes: Vec<Change>) -> PublishFuture {
        let this = self.clone();
        Box::pin(async move {
            if let Some(message) = this
                .fail_with
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                return Err(message);
            }
            this.changes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(changes);
            Ok(())
        })
    }
}
