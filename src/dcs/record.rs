//! What certkeeper remembers about a DCS instance between passes: `dcs/{instance_id}.json` in the state
//! directory, written atomically (temp file and rename). It holds no secret.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The largest record read.
const MAX_RECORD: u64 = 64 * 1024;

/// The state of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// `ssl_expired_at` as DCS reported it at the last successful download.
    #[serde(default)]
    pub downloaded_for: Option<String>,
    /// When the archive was last downloaded and checked.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub downloaded_at: Option<OffsetDateTime>,
    /// When the last pass asked DCS.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub checked_at: Option<OffsetDateTime>,
    /// `ssl_expired_at` at the last status.
    #[serde(default)]
    pub ssl_expired_at: Option<String>,
    /// Whether SSL was on at the last status.
    #[serde(default)]
    pub ssl_enabled: Option<bool>,
    /// SHA-256 fingerprints of the CAs in `ca_file` as certkeeper last wrote or found them.
    #[serde(default)]
    pub fingerprints: Vec<String>,
    /// The last pass's failure, one line; `None` when it succeeded.
    #[serde(default)]
    pub failure: Option<String>,
}

/// `{state_dir}/dcs/{id}.json`.
pub fn path(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("dcs").join(format!("{id}.json"))
}

/// Reads the record; a default one when there is none or it is unreadable (it is only a cache of what DCS
/// and `ca_file` say: the worst a lost record costs is one extra download).
pub fn load(state_dir: &Path, id: &str) -> InstanceRecord {
    use std::io::Read as _;
    let Ok(file) = std::fs::File::open(path(state_dir, id)) else {
        return InstanceRecord::default();
    };
    let mut text = Vec::new();
    if file.take(MAX_RECORD).read_to_end(&mut text).is_err() {
        return InstanceRecord::default();
    }
    serde_json::from_slice(&text).unwrap_or_default()
}

/// Saves the record atomically.
///
/// # Errors
/// The directory or file cannot be written.
pub fn save(state_dir: &Path, id: &str, record: &InstanceRecord) -> std::io::Result<()> {
    let target = path(state_dir, id);
    let dir = target.parent().unwrap_or(state_dir);
    std::fs::create_dir_all(dir)?;
    let text = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut temp, &text)?;
    temp.as_file().sync_all()?;
    temp.persist(&target).map_err(|e| e.error)?;
    Ok(())
}
