//! Huawei Cloud / Open Telekom Cloud DCS (Redis) instances: a watch-only target. DCS issues each instance's
//! server certificate itself and has no upload API; what certkeeper keeps fresh is the CA the instance's
//! clients must trust, in a file they read (`ca_file`). Each pass asks DCS for the instance's SSL status
//! (one signed GET); only when `ca_file` is missing or unusable, `ssl_expired_at` changed since the last
//! download, or `inspect_interval` has passed, does it download the certificate archive, unpack `ca.crt`
//! defensively, and replace `ca_file` when the CAs differ (then `reload`, then verify `endpoint`, rolling the
//! file back when that fails).
//!
//! certkeeper never switches SSL on or off (`PUT …/ssl` restarts the instance and can lose data).
//!
//! - `config`: `[dcs.NAME]` and `[[dcs_instance]]`;
//! - `sign`: `SDK-HMAC-SHA256` request signing;
//! - `client`: the signed API calls and the unsigned object-storage fetch;
//! - `archive`: the zip, unpacked into memory with bounds;
//! - `trust`: the CA bundle, overlap, atomic writes with `.prev`;
//! - `record`: what the state directory remembers per instance;
//! - `status`: the instances in `certkeeper status`;
//! - `watch`: one instance's sync, reload and endpoint check.

pub mod archive;
pub mod client;
pub mod config;
pub mod record;
pub mod sign;
pub mod status;
pub mod trust;
mod watch;

use std::collections::BTreeMap;
use std::fmt;

pub use config::{DcsAccount, DcsInstance};
pub use watch::sync_instance;

use crate::config::Config;
use crate::shutdown::Shutdown;

/// Why an instance's sync failed (or needs a human although it succeeded).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DcsError {
    /// 401/403: the signature or the credentials were refused.
    #[error(
        "DCS rejected the request signature/credentials ({code} {message}) — check [dcs.{account}] \
         access_key/secret_key and the clock"
    )]
    Credentials {
        /// The `[dcs.*]` section.
        account: String,
        /// DCS/IAM error code.
        code: String,
        /// DCS/IAM error message.
        message: String,
    },
    /// 400 DCS.4201.
    #[error(
        "DCS instance {instance} does not support SSL (only Redis 6.0/7.0 basic editions do); remove it from [[dcs_instance]]"
    )]
    SslUnsupported {
        /// The instance.
        instance: String,
    },
    /// 404.
    #[error(
        "DCS knows no instance {instance} in the project of [dcs.{account}]; check the id and project_id"
    )]
    UnknownInstance {
        /// The instance.
        instance: String,
        /// The `[dcs.*]` section.
        account: String,
    },
    /// Another refusal.
    #[error("DCS refused the request for instance {instance}: {status} {code} {message}")]
    Api {
        /// The instance.
        instance: String,
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
        /// Error message.
        message: String,
    },
    /// 5xx, timeouts and broken connections, after the retries.
    #[error("cannot reach DCS to {what}: {detail}; the next pass tries again")]
    Transport {
        /// The call.
        what: String,
        /// The last failure.
        detail: String,
    },
    /// An answer that is not the documented JSON.
    #[error("DCS answered for instance {instance} with unexpected JSON ({detail})")]
    BadAnswer {
        /// The instance.
        instance: String,
        /// The parse error.
        detail: String,
    },
    /// The object-storage download failed.
    #[error("cannot download the certificate archive {object}: {detail}")]
    Fetch {
        /// bucket/file.
        object: String,
        /// What happened.
        detail: String,
    },
    /// The archive was refused.
    #[error("instance {instance}: {source}; ca_file is untouched")]
    Archive {
        /// The instance.
        instance: String,
        /// Why.
        #[source]
        source: archive::ArchiveError,
    },
    /// The CA bundle or the file operation failed.
    #[error("instance {instance}: {source}; ca_file is untouched")]
    Trust {
        /// The instance.
        instance: String,
        /// Why.
        #[source]
        source: trust::TrustError,
    },
    /// `reload` or the endpoint check failed after a change; the file was rolled back.
    #[error("instance {instance}: {what}; {rolled_back}")]
    Applied {
        /// The instance.
        instance: String,
        /// What failed.
        what: String,
        /// What the roll-back did.
        rolled_back: String,
    },
    /// The status says the instance's certificate is not valid.
    #[error(
        "DCS reports the SSL certificate of instance {instance} as not validated (ssl_validated = false); check the instance in the console"
    )]
    NotValidated {
        /// The instance.
        instance: String,
    },
    /// `ssl_expired_at` is within `expiry_warning`.
    #[error(
        "the SSL certificate of DCS instance {instance} expires at {at}, within expiry_warning; DCS renews it, check the console"
    )]
    ExpiresSoon {
        /// The instance.
        instance: String,
        /// `ssl_expired_at`.
        at: String,
    },
}

/// What a successful sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Synced {
    /// SSL is off (or DCS has no SSL information): nothing else was done.
    SslOff,
    /// No download was due; `ca_file` is as last checked.
    NotDue,
    /// Downloaded; `ca_file` already held these CAs.
    Current,
    /// `ca_file` was replaced and holds `cas` certificates.
    Updated {
        /// How many CAs the file holds now.
        cas: usize,
    },
}

impl fmt::Display for Synced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Synced::SslOff => f.write_str("SSL is off; certkeeper never switches it on"),
            Synced::NotDue => f.write_str("SSL status unchanged, ca_file is current"),
            Synced::Current => f.write_str("downloaded the CA, ca_file already holds it"),
            Synced::Updated { cas } => write!(f, "ca_file updated ({cas} CA certificate(s))"),
        }
    }
}

/// One instance's result of a pass.
#[derive(Debug)]
pub struct InstanceReport {
    /// The instance id.
    pub id: String,
    /// What happened.
    pub result: Result<Synced, DcsError>,
}

impl InstanceReport {
    /// One line for the terminal and the journal: `dcs_instance ID: …`.
    pub fn line(&self) -> String {
        match &self.result {
            Ok(done) => format!("dcs_instance {}: {done}", self.id),
            Err(e) => format!("dcs_instance {}: {e}", self.id),
        }
    }
}

/// Syncs every `[[dcs_instance]]` of `config`, one after another (one status GET each), until `stop`.
///
/// Logs nothing: the caller says each result once (`renew` on the terminal, the daemon in its log), so a
/// failure is one line, not a log line and a terminal line.
pub async fn sync_all(config: &Config, stop: &Shutdown) -> Vec<InstanceReport> {
    if config.dcs_instances.is_empty() {
        return Vec::new();
    }
    let http = match crate::deploy::emqx::client::vendor_http() {
        Ok(http) => http,
        Err(e) => {
            return config
                .dcs_instances
                .iter()
                .map(|i| InstanceReport {
                    id: i.id.clone(),
                    result: Err(DcsError::Transport {
                        what: "set up the HTTP client".into(),
                        detail: e.to_string(),
                    }),
                })
                .collect();
        }
    };
    let clients: BTreeMap<&str, client::DcsClient> = config
        .dcs
        .iter()
        .map(|(name, account)| {
            (
                name.as_str(),
                client::DcsClient::new(http.clone(), account.clone()),
            )
        })
        .collect();
    let mut reports = Vec::new();
    for instance in &config.dcs_instances {
        if stop.is_stopping() {
            break;
        }
        let (Some(client), Some(account)) = (
            clients.get(instance.account.as_str()),
            config.dcs.get(&instance.account),
        ) else {
            continue;
        };
        let result = sync_instance(client, account, instance, &config.state_dir).await;
        reports.push(InstanceReport {
            id: instance.id.clone(),
            result,
        });
    }
    reports
}
