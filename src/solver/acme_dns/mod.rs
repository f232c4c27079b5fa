//! The acme-dns provider: challenge values go to an acme-dns server (joohoi/acme-dns) with `POST /update`, and
//! the operator delegates `_acme-challenge.<domain>` to the account's `fulldomain` with a CNAME once.
//!
//! Decisions made here:
//! - **Accounts by domain, whatever owner is asked**: acme-dns updates the account's subdomain and nothing
//!   else, so the owner only selects the account. The CNAME layer above may hand us the CNAME's target (the
//!   account's `fulldomain`) or, without a CNAME, `_acme-challenge.<domain>`: both find the account, the first
//!   by `fulldomain`, the second by `<domain>` (also written `*.<domain>`) in the credentials file.
//! - **The credentials file is the acme-dns clients' format** (`{"<domain>": {"username", "password",
//!   "fulldomain", "subdomain"}}`, as acme-dns-client and certbot's hook keep it), read on every use, so
//!   `certkeeper dns register` takes effect without a restart. It must not be readable by others.
//! - **Cleanup does nothing**: acme-dns has no delete. Its subdomain holds the last two values, and each update
//!   overwrites the older, which is why apex and wildcard (two values at one owner) work. The values left are
//!   public, single-use, and overwritten by the next renewal.
//! - **Propagation is not ours**: the layer above asks the authoritative servers (acme-dns is one).

pub mod config;
mod error;
pub mod register;

pub use config::AcmeDnsConfig;
pub use error::AcmeDnsError;

use std::collections::BTreeMap;
use std::path::Path;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tracing::debug;

use super::{CHALLENGE_LABEL, Dns01Solver, SolverFuture, TxtRecord};
use crate::solver::hosted_http;

/// One account in the credentials file.
#[derive(Deserialize)]
pub struct Account {
    /// The API user (a UUID).
    pub username: String,
    /// The API key.
    #[serde(deserialize_with = "secret")]
    pub password: SecretString,
    /// `SUBDOMAIN.DOMAIN`: where the values are served, the CNAME's target.
    pub fulldomain: String,
    /// The account's subdomain, sent with every update.
    pub subdomain: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.username)
            .field("fulldomain", &self.fulldomain)
            .field("subdomain", &self.subdomain)
            .finish_non_exhaustive()
    }
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    String::deserialize(d).map(SecretString::from)
}

/// A [`Dns01Solver`] that sends challenge values to an acme-dns server.
#[derive(Debug)]
pub struct AcmeDnsSolver {
    /// The `[dns.NAME]` section, for messages.
    dns: String,
    config: AcmeDnsConfig,
    /// The section's `follow_cname`: then the layer hands us the CNAME's target, and an owner that is not an
    /// account's `fulldomain` means the delegation is missing.
    follow_cname: bool,
    http: Result<reqwest::Client, String>,
}

impl AcmeDnsSolver {
    /// A solver for `[dns.<dns>]`; `follow_cname` is the section's. Nothing is read or sent until used.
    pub fn new(dns: &str, config: AcmeDnsConfig, follow_cname: bool) -> Self {
        Self {
            dns: dns.to_owned(),
            config,
            follow_cname,
            http: hosted_http::client(),
        }
    }

    /// The account that serves `owner`, from the credentials file as it is now.
    fn account(&self, owner: &str) -> Result<Account, AcmeDnsError> {
        let mut accounts = read_accounts(&self.config.credentials_file)?;
        let key = account_key(&accounts, owner);
        key.and_then(|k| accounts.remove(&k))
            .ok_or_else(|| AcmeDnsError::NoAccount {
                dns: self.dns.clone(),
                domain: domain_of(owner),
                file: self.config.credentials_file.clone(),
            })
    }

    async fn update(&self, record: &TxtRecord) -> Result<(), AcmeDnsError> {
        let account = self.account(&record.fqdn)?;
        let server = &self.config.server;
        let unreachable = |reason: String| AcmeDnsError::Unreachable {
            server: server.clone(),
            reason,
        };
        let http = self.http.as_ref().map_err(|e| unreachable(e.clone()))?;
        let mut key = reqwest::header::HeaderValue::from_str(account.password.expose_secret())
            .map_err(|_| AcmeDnsError::Credentials {
                file: self.config.credentials_file.clone(),
                reason: format!(
                    "the password of `{}` is not a valid header value",
                    account.fulldomain
                ),
            })?;
        key.set_sensitive(true);
        let request = http
            .post(format!("{server}/update"))
            .header("X-Api-User", &account.username)
            .header("X-Api-Key", key)
            .json(&serde_json::json!({"subdomain": account.subdomain, "txt": record.value}));
        let (status, body) = hosted_http::send(request).await.map_err(unreachable)?;
        if status.is_success() {
            debug!(owner = %record.fqdn, fulldomain = %account.fulldomain, "acme-dns took the value");
            return Ok(());
        }
        let message = error_message(&body);
        let hint = match status.as_u16() {
            401 => format!(
                "check the username and password of `{}` in {} (or register again), and the account's allowfrom",
                domain_of(&record.fqdn),
                self.config.credentials_file.display()
            ),
            400 => "the server rejected the value; this is a bug, please report it".to_owned(),
            _ => "check the acme-dns server's log".to_owned(),
        };
        Err(AcmeDnsError::Refused {
            server: server.clone(),
            what: format!("the update of {}", account.fulldomain),
            status: status.as_u16(),
            message,
            hint,
        })
    }
}

impl Dns01Solver for AcmeDnsSolver {
    fn present<'a>(&'a self, record: &'a TxtRecord) -> SolverFuture<'a> {
        Box::pin(async move { self.update(record).await.map_err(Into::into) })
    }

    fn cleanup<'a>(&'a self, record: &'a TxtRecord) -> SolverFuture<'a> {
        // acme-dns has no delete (see the module docs): the value is overwritten by later updates.
        debug!(owner = %record.fqdn, "acme-dns keeps the value until two newer updates replace it");
        Box::pin(async { Ok(()) })
    }

    fn preflight<'a>(&'a self, owners: &'a [String]) -> SolverFuture<'a> {
        Box::pin(async move {
            for owner in owners {
                let account = self.account(owner)?;
                if self.follow_cname && normal(&account.fulldomain) != normal(owner) {
                    return Err(AcmeDnsError::NotDelegated {
                        owner: normal(owner) + ".",
                        domain: domain_of(owner),
                        fulldomain: normal(&account.fulldomain),
                    }
                    .into());
                }
            }
            Ok(())
        })
    }
}

/// Reads the credentials file (bounded).
///
/// # Errors
/// When it cannot be read or is not the acme-dns clients' JSON.
pub fn read_accounts(file: &Path) -> Result<BTreeMap<String, Account>, AcmeDnsError> {
    let text = crate::config::read_bounded_text(file).map_err(|e| AcmeDnsError::Credentials {
        file: file.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str::<BTreeMap<String, Account>>(&text)
        .map(|accounts| accounts.into_iter().map(|(k, v)| (normal(&k), v)).collect())
        .map_err(|e| AcmeDnsError::Credentials {
            file: file.to_path_buf(),
            // serde_json's message names the position, never the value.
            reason: e.to_string(),
        })
}

/// The key of the account serving `owner`: by `fulldomain`, else by the domain under `_acme-challenge`.
fn account_key(accounts: &BTreeMap<String, Account>, owner: &str) -> Option<String> {
    let owner = normal(owner);
    if let Some((key, _)) = accounts
        .iter()
        .find(|(_, a)| normal(&a.fulldomain) == owner)
    {
        return Some(key.clone());
    }
    let domain = domain_of(&owner);
    [domain.clone(), format!("*.{domain}")]
        .into_iter()
        .find(|k| accounts.contains_key(k))
}

/// `x.example.com` for `_acme-challenge.x.example.com.`; other owners as they are (normalised).
fn domain_of(owner: &str) -> String {
    let owner = normal(owner);
    owner
        .strip_prefix(&format!("{CHALLENGE_LABEL}."))
        .map_or(owner.clone(), str::to_owned)
}

/// Lower case, without the trailing dot (a leading `*.` stays: keys may be written with it).
fn normal(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// acme-dns's `{"error": "..."}`, or the body itself, bounded.
fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let error = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
    hosted_http::bounded(&error.unwrap_or_else(|| text.into_owned()))
}

#[cfg(test)]
mod tests;
