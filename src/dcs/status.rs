//! `status` for DCS instances: what the state directory remembers of each `[[dcs_instance]]`, read-only.

use serde::Serialize;
use time::OffsetDateTime;

use crate::config::Config;

/// One DCS instance in `status` (JSON: `dcs_instances[]`).
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    /// The instance id.
    pub id: String,
    /// The `[dcs.*]` section.
    pub dcs: String,
    /// Where its CA is kept.
    pub ca_file: String,
    /// Whether SSL was on at the last pass (`None`: never asked).
    pub ssl_enabled: Option<bool>,
    /// `ssl_expired_at` at the last pass.
    pub ssl_expired_at: Option<String>,
    /// When the last pass asked DCS.
    #[serde(with = "time::serde::rfc3339::option")]
    pub checked_at: Option<OffsetDateTime>,
    /// When the archive was last downloaded.
    #[serde(with = "time::serde::rfc3339::option")]
    pub downloaded_at: Option<OffsetDateTime>,
    /// SHA-256 fingerprints of the CAs in `ca_file`.
    pub ca_fingerprints: Vec<String>,
    /// `ok` or `failing`.
    pub health: &'static str,
    /// The last pass's failure.
    pub error: Option<String>,
}

impl InstanceStatus {
    /// Returns true if and only if the last pass of this instance succeeded (or none ran yet).
    pub fn is_healthy(&self) -> bool {
        self.error.is_none()
    }

    /// One line for `status`.
    pub fn line(&self) -> String {
        if let Some(e) = &self.error {
            return format!("dcs_instance {}: {e}", self.id);
        }
        let ssl = match self.ssl_enabled {
            None => "not checked yet".to_owned(),
            Some(false) => "SSL is off; certkeeper never switches it on".to_owned(),
            Some(true) => format!(
                "SSL on, server certificate until {}, {} CA(s) in {}",
                self.ssl_expired_at.as_deref().unwrap_or("unknown"),
                self.ca_fingerprints.len(),
                self.ca_file
            ),
        };
        format!("dcs_instance {}: {ssl}", self.id)
    }
}

impl InstanceStatus {
    /// The instance as a deployment-shaped status for the notifications (`dcs:{id}`, target `dcs`): a
    /// failing sync notifies as a failing deployment does, a recovery as a recovery.
    pub fn as_deployment(&self) -> crate::status::DeploymentStatus {
        let at = self.checked_at.unwrap_or(OffsetDateTime::UNIX_EPOCH);
        crate::status::DeploymentStatus {
            id: format!("dcs:{}", self.id),
            target: "dcs",
            domains: Vec::new(),
            health: if self.is_healthy() {
                crate::status::Health::Ok
            } else {
                crate::status::Health::Failing
            },
            expires: None,
            renewal: None,
            step: None,
            last: self.checked_at.map(|_| crate::status::Last {
                ok: self.is_healthy(),
                at,
                message: self.line(),
            }),
            at_risk: None,
            error: None,
            last_success: None,
            failures_total: 0,
            // A watched instance orders nothing.
            issuer: None,
            issuer_reason: String::new(),
        }
    }
}

/// The status of every configured instance, in config order.
pub fn instances(config: &Config) -> Vec<InstanceStatus> {
    config
        .dcs_instances
        .iter()
        .map(|i| {
            let rec = super::record::load(&config.state_dir, &i.id);
            InstanceStatus {
                id: i.id.clone(),
                dcs: i.account.clone(),
                ca_file: i.ca_file.display().to_string(),
                ssl_enabled: rec.ssl_enabled,
                ssl_expired_at: rec.ssl_expired_at,
                checked_at: rec.checked_at,
                downloaded_at: rec.downloaded_at,
                ca_fingerprints: rec.fingerprints,
                health: if rec.failure.is_some() {
                    "failing"
                } else {
                    "ok"
                },
                error: rec.failure,
            }
        })
        .collect()
}
