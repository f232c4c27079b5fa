//! `certkeeper dns register`: one `POST /register` at the acme-dns server, its account merged into the
//! credentials file (0600, written atomically), and the CNAME the operator must create.
//!
//! The file is the acme-dns clients' format, so entries written by other tools (and their extra fields) are
//! kept as they are. A domain that already has an account is refused rather than replaced: its CNAME points at
//! the old account, and a silent replacement would break renewals until someone changed DNS.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{AcmeDnsConfig, AcmeDnsError, normal};
use crate::solver::hosted_http;

/// The outcome of a registration: what the operator must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The domain registered (no `*.`, no trailing dot).
    pub domain: String,
    /// The CNAME's target, the account's `fulldomain`.
    pub fulldomain: String,
    /// The credentials file written.
    pub file: PathBuf,
}

impl Registered {
    /// The record to create in the domain's zone, in zone-file syntax.
    pub fn cname(&self) -> String {
        format!(
            "_acme-challenge.{}. CNAME {}.",
            self.domain,
            self.fulldomain.trim_end_matches('.')
        )
    }
}

/// Registers a new acme-dns account for `domain` and saves it in the credentials file.
///
/// # Errors
/// [`AcmeDnsError`]: the file holds an account for the domain already or cannot be read or written, or the
/// server refuses or cannot be reached.
pub async fn register(config: &AcmeDnsConfig, domain: &str) -> Result<Registered, AcmeDnsError> {
    let domain = normal(domain.trim().trim_start_matches("*."));
    let file = &config.credentials_file;
    let mut entries = existing_entries(file)?;
    if let Some(old) = entries.get(&domain) {
        return Err(AcmeDnsError::AlreadyRegistered {
            domain,
            file: file.clone(),
            fulldomain: old
                .get("fulldomain")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned(),
        });
    }
    let account = post_register(&config.server).await?;
    let fulldomain = account
        .get("fulldomain")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let complete = ["username", "password", "fulldomain", "subdomain"]
        .iter()
        .all(|k| {
            account
                .get(*k)
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
        });
    if !complete {
        return Err(AcmeDnsError::Unreachable {
            server: config.server.clone(),
            reason: "the registration answer lacks username, password, fulldomain or subdomain"
                .into(),
        });
    }
    entries.insert(domain.clone(), Value::Object(account));
    write_private(file, &entries)?;
    Ok(Registered {
        domain,
        fulldomain,
        file: file.clone(),
    })
}

fn existing_entries(file: &Path) -> Result<Map<String, Value>, AcmeDnsError> {
    if !file.exists() {
        return Ok(Map::new());
    }
    let text = crate::config::read_bounded_text(file).map_err(|e| AcmeDnsError::Credentials {
        file: file.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| AcmeDnsError::Credentials {
        file: file.to_path_buf(),
        reason: e.to_string(),
    })
}

async fn post_register(server: &str) -> Result<Map<String, Value>, AcmeDnsError> {
    let unreachable = |reason: String| AcmeDnsError::Unreachable {
        server: server.to_owned(),
        reason,
    };
    let http = hosted_http::client().map_err(unreachable)?;
    let (status, body) = hosted_http::send(http.post(format!("{server}/register")))
        .await
        .map_err(unreachable)?;
    if status.as_u16() != 201 && !status.is_success() {
        return Err(AcmeDnsError::Refused {
            server: server.to_owned(),
            what: "the registration".into(),
            status: status.as_u16(),
            message: super::error_message(&body),
            hint: "check that `server` is the acme-dns API and that it allows registration from this host".into(),
        });
    }
    serde_json::from_slice(&body)
        .map_err(|e| unreachable(format!("the registration answer is not JSON: {e}")))
}

/// Writes `entries` to `file` atomically: a 0600 temporary file beside it, synced, renamed over it.
fn write_private(file: &Path, entries: &Map<String, Value>) -> Result<(), AcmeDnsError> {
    let fail = |e: std::io::Error| AcmeDnsError::Write {
        file: file.to_path_buf(),
        reason: e.to_string(),
    };
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // tempfile creates the file 0600, so the secret is never readable by others, not even for a moment.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    let mut text =
        serde_json::to_string_pretty(entries).map_err(|e| fail(std::io::Error::other(e)))?;
    text.push('\n');
    tmp.write_all(text.as_bytes()).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(file).map_err(|e| fail(e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
