//! EMQX Cloud / EMQX Platform deployments as a [`Target`]: the TLS API client ([`client`]), and the vendor's
//! rules a push must follow — `POST` when there is no certificate yet and `PUT` after, the `tlsType` to send
//! (and the client CA two-way TLS needs with every write), the 60-day import minimum and the issuer key match.
//!
//! One [`Account`] per `[emqx.NAME]` section holds the client and its request budget; every deployment on
//! that key is an [`EmqxTarget`] sharing it, so that they are scheduled together against six writes an hour.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::ExposeSecret as _;
use time::OffsetDateTime;

use super::{Deployed, RequestBudget, Status, Target, TargetError, TargetFuture};
use crate::certs::{self, Bundle, LeafInfo};
use crate::config::{EmqxConfig, EmqxDeployment, IssuerKeyMatch, KeyFormat, TlsType};
use crate::state::CertRecord;

pub mod client;
pub mod config;
pub mod pace;
pub mod wire;
use client::{EmqxClient, EmqxError, TlsState, Upload};

/// One `[emqx.NAME]` account: its client and the budget of its API key.
pub struct Account {
    client: EmqxClient,
    config: EmqxConfig,
    /// `emqx.NAME`, the section the budget belongs to.
    group: String,
}

impl Account {
    /// The account of `config`, talking through `client`.
    pub fn new(client: EmqxClient, config: EmqxConfig) -> Account {
        Account {
            client,
            group: format!("emqx.{}", config.name),
            config,
        }
    }

    /// The client.
    pub fn client(&self) -> &EmqxClient {
        &self.client
    }
}

impl RequestBudget for Account {
    fn group(&self) -> &str {
        &self.group
    }

    fn write_limit(&self) -> u32 {
        self.config.write_limit
    }

    fn window(&self) -> Duration {
        self.config.rate_window
    }

    fn reads_left(&self) -> u32 {
        self.client.reads_left()
    }

    fn writes_left(&self) -> u32 {
        self.client.writes_left()
    }

    fn next_write_at(&self, claimed: u32) -> OffsetDateTime {
        self.client.next_write_at(claimed)
    }

    fn begin_pass(&self) {
        self.client.begin_pass();
    }

    fn plan_tasks(&self, tasks: u32) {
        self.client.pace().plan(tasks);
    }

    fn task_started(&self) {
        self.client.pace().started();
    }
}

/// One deployment of an EMQX account.
pub struct EmqxTarget {
    account: Arc<Account>,
    id: String,
    tls_type: Option<TlsType>,
    client_ca_file: Option<PathBuf>,
    key_format: KeyFormat,
    /// The `tlsType` the vendor reported last: the push sends it unless the config names one.
    reported: Mutex<Option<String>>,
}

impl EmqxTarget {
    /// The target of deployment `id` on `account`; keys are sent in `key_format`.
    pub fn new(
        account: Arc<Account>,
        id: &str,
        d: &EmqxDeployment,
        key_format: KeyFormat,
    ) -> EmqxTarget {
        EmqxTarget {
            account,
            id: id.to_owned(),
            tls_type: d.tls_type,
            client_ca_file: d.client_ca_file.clone(),
            key_format,
            reported: Mutex::new(None),
        }
    }

    fn client(&self) -> &EmqxClient {
        &self.account.client
    }

    fn config(&self) -> &EmqxConfig {
        &self.account.config
    }

    fn remember(&self, state: TlsState) -> Deployed {
        if state.tls_type.is_some() {
            // A poisoned lock only means another thread panicked while storing a string: the value is whole.
            *self.reported.lock().unwrap_or_else(|e| e.into_inner()) = state.tls_type;
        }
        Deployed {
            expire: state.expire,
            status: match state.status {
                client::Status::Running => Status::Running,
                client::Status::Pending => Status::Pending,
                client::Status::Absent => Status::Absent,
                client::Status::Other(s) => Status::Other(s),
            },
            serial: None,
        }
    }

    /// The TLS type to push: the configured one, else the one the vendor reports, else one-way; two-way
    /// needs the client CA.
    fn resolved_tls_type(&self) -> Result<TlsType, TargetError> {
        let reported = self
            .reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let tls_type = match (self.tls_type, reported.as_deref()) {
            (Some(t), _) => t,
            (None, None | Some("one-way")) => TlsType::OneWay,
            (None, Some("two-way")) => TlsType::TwoWay,
            (None, Some(other)) => {
                return Err(TargetError::Config(format!(
                    "EMQX reports an unknown tlsType {other:?} — set tls_type in the [[deployment]] of {}",
                    self.id
                )));
            }
        };
        if tls_type == TlsType::TwoWay && self.client_ca_file.is_none() {
            return Err(TargetError::Config(
                "the deployment uses two-way TLS but no client_ca_file is configured — set client_ca_file \
                 (EMQX needs the client CA with every certificate push); nothing was ordered"
                    .into(),
            ));
        }
        Ok(tls_type)
    }

    fn client_ca(&self, tls_type: TlsType) -> Result<Option<String>, TargetError> {
        let (TlsType::TwoWay, Some(path)) = (tls_type, &self.client_ca_file) else {
            return Ok(None);
        };
        crate::config::read_bounded(path)
            .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
            .map(Some)
            .map_err(|e| {
                TargetError::Config(format!(
                    "cannot read client_ca_file {}: {e}",
                    path.display()
                ))
            })
    }
}

/// Sorts the client's errors into the kinds the pipeline acts on; the message stays the vendor client's.
fn sorted(e: EmqxError) -> TargetError {
    match e {
        EmqxError::Budget(x) => TargetError::Budget(x),
        e @ EmqxError::NotApplied { .. } => TargetError::NotApplied(Box::new(e)),
        // `running` with another expiry for the whole wait: still the previous certificate.
        EmqxError::WaitTimeout {
            status: client::Status::Running,
            waited,
        } => TargetError::StillPrevious { waited },
        e => TargetError::Failed(Box::new(e)),
    }
}

impl Target for EmqxTarget {
    fn kind(&self) -> &'static str {
        "emqx"
    }

    fn budget(&self) -> Option<&dyn RequestBudget> {
        Some(&*self.account)
    }

    fn inspect(&self) -> TargetFuture<'_, Deployed> {
        Box::pin(async move {
            let state = self.client().inspect(&self.id).await.map_err(sorted)?;
            Ok(self.remember(state))
        })
    }

    fn precheck(&self, _deployed: &Deployed) -> Result<(), TargetError> {
        self.resolved_tls_type().map(|_| ())
    }

    fn accept(
        &self,
        bundle: &Bundle,
        info: &LeafInfo,
        now: OffsetDateTime,
    ) -> Result<(), TargetError> {
        let config = self.config();
        let left = info.not_after - now;
        if left < time::Duration::try_from(config.import_minimum).unwrap_or(time::Duration::MAX) {
            return Err(TargetError::Unacceptable(format!(
                "the certificate has {} days left, less than the vendor's import minimum of {} days — a CA with \
                 shorter lifetimes cannot serve EMQX; lower [emqx.{}] import_minimum only if your plan accepts it",
                left.whole_days(),
                config.import_minimum.as_secs() / 86400,
                config.name
            )));
        }
        if let Err(e) = certs::check_issuer_key_match(bundle) {
            match config.issuer_key_match {
                IssuerKeyMatch::Enforce => return Err(TargetError::Unacceptable(e.to_string())),
                IssuerKeyMatch::Warn => tracing::warn!("{e}; EMQX's docs require them to match"),
            }
        }
        Ok(())
    }

    fn deploy<'a>(&'a self, bundle: &'a Bundle, create: bool) -> TargetFuture<'a, ()> {
        Box::pin(async move {
            let tls_type = self.resolved_tls_type()?;
            let key = certs::encode_key(&bundle.key_pkcs8_pem, self.key_format)
                .map_err(|e| TargetError::Unacceptable(e.to_string()))?;
            let cacert = self.client_ca(tls_type)?;
            let upload = Upload {
                tls_type,
                cert: &bundle.chain_pem,
                key: key.expose_secret(),
                cacert: cacert.as_deref(),
            };
            tracing::info!(method = if create { "POST" } else { "PUT" }, %tls_type, "pushing the certificate");
            self.client()
                .deploy(&self.id, create, &upload)
                .await
                .map_err(sorted)?;
            Ok(())
        })
    }

    fn wait_active<'a>(&'a self, cert: &'a CertRecord) -> TargetFuture<'a, Deployed> {
        Box::pin(async move {
            let state = self
                .client()
                .wait_active(&self.id, Some(cert.not_after))
                .await
                .map_err(sorted)?;
            if state.expire.is_none() {
                tracing::warn!(
                    "EMQX reports running without an expiry; cannot confirm it runs the pushed certificate"
                );
            }
            Ok(self.remember(state))
        })
    }

    fn describe_deploy(&self, create: bool) -> String {
        let method = if create { "POST" } else { "PUT" };
        match self.resolved_tls_type() {
            Ok(tls_type) => format!("{method} it ({tls_type})"),
            Err(_) => format!("{method} it"),
        }
    }

    fn inspect_interval(&self) -> Duration {
        self.config().inspect_interval
    }

    fn wait_timeout(&self) -> Duration {
        self.config().wait_timeout
    }
}
