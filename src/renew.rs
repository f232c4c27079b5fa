//! One renewal pass: for each selected deployment, inspect → plan → issue → validate → deploy → wait →
//! record, resuming from the step persisted by an earlier pass.
//!
//! The order of persistence is the point of this module. The issued bundle is saved (0600) *before* the
//! push, and the step after each vendor answer, so that a crash or a failed push is retried with the same
//! certificate instead of issuing again: Let's Encrypt allows five certificates per name set per week, and
//! wasting them is an outage. Deployments are handled one after another: they share the vendor's budget of
//! six writes an hour per key, and a failure of one never stops the others.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use secrecy::ExposeSecret as _;
use time::OffsetDateTime;

use crate::acme::{AcmeClient, AcmeError};
use crate::budget::Budget;
use crate::certs::{self, Bundle, CertError};
use crate::config::{Config, Deployment, TlsType};
use crate::plan::{self, Plan};
use crate::shutdown::Shutdown;
use crate::solver::Dns01Solver;
use crate::solver::rfc2136::{Rfc2136Settings, Rfc2136Solver};
use crate::store::{CertRecord, Outcome, Record, Step, Store, StoreError};
use crate::target::emqx::{EmqxClient, EmqxError, TlsState, Upload};

/// Per-exchange timeout of DNS queries and updates.
const DNS_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why one deployment could not be brought to a good state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenewError {
    /// The vendor API.
    #[error(transparent)]
    Emqx(#[from] EmqxError),
    /// The CA or DNS-01.
    #[error(transparent)]
    Acme(#[from] AcmeError),
    /// The issued bundle failed a check; it is not pushed.
    #[error("the issued certificate fails a check and was not pushed: {0}")]
    Cert(#[from] CertError),
    /// The state directory.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configuration does not fit what the vendor reports.
    #[error("{0}")]
    Config(String),
    /// The process is stopping; everything done so far is persisted and the next pass resumes.
    #[error("interrupted by shutdown before {0}; the next pass resumes from there")]
    Interrupted(&'static str),
}

/// What a pass did with a deployment that ended well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// A new certificate is active.
    Renewed {
        /// Its expiry.
        expires: OffsetDateTime,
        /// Its serial.
        serial: String,
    },
    /// Nothing to do yet.
    NotDue {
        /// The current certificate's expiry.
        expires: OffsetDateTime,
        /// When renewal is planned.
        plan: Plan,
    },
}

impl fmt::Display for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Done::Renewed { expires, serial } => {
                write!(
                    f,
                    "renewed: certificate {serial} is running, expires {}",
                    day(*expires)
                )
            }
            Done::NotDue { expires, plan } => write!(
                f,
                "not due: expires {}, renewal planned {} ({})",
                day(*expires),
                day(plan.renew_at),
                plan.rule
            ),
        }
    }
}

/// Formats a moment for humans: `2026-02-01 12:00 UTC`.
pub fn day(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// The result of one deployment in a pass.
#[derive(Debug)]
pub struct Report {
    /// Deployment id.
    pub id: String,
    /// What happened.
    pub result: Result<Done, RenewError>,
}

/// Holds the clients a pass needs; build one per pass (or per config load in the daemon).
pub struct Agent {
    config: Config,
    store: Store,
    emqx: BTreeMap<String, EmqxClient>,
    solvers: BTreeMap<String, Rfc2136Solver>,
    acme: tokio::sync::OnceCell<AcmeClient>,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("state_dir", &self.store.dir())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Prepares clients for every configured account and solver. No network traffic happens here; the ACME
    /// account is only contacted when a deployment needs a certificate.
    ///
    /// # Errors
    /// The budget file cannot be read, or an HTTP client cannot be built.
    pub fn new(config: Config, store: Store) -> Result<Agent, RenewError> {
        let budget = Arc::new(Budget::load(&store)?);
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("certkeeper/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RenewError::Config(format!("cannot set up HTTPS: {e}")))?;
        let emqx = config
            .emqx
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    EmqxClient::new(http.clone(), c.clone(), budget.clone()),
                )
            })
            .collect();
        let solvers = config
            .dns
            .iter()
            .map(|(name, c)| {
                let settings = Rfc2136Settings {
                    server: c.server.clone(),
                    key_name: c.tsig_key.clone(),
                    algorithm: c.tsig_algorithm,
                    secret: c.tsig_secret.expose_secret().to_vec().into(),
                    zone: c.zone.clone(),
                    query_timeout: DNS_QUERY_TIMEOUT,
                    propagation_timeout: c.propagation_timeout,
                };
                (name.clone(), Rfc2136Solver::new(settings))
            })
            .collect();
        Ok(Agent {
            config,
            store,
            emqx,
            solvers,
            acme: tokio::sync::OnceCell::new(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs one pass over the deployments whose ids are in `only` (all when empty); `force` renews even
    /// those not due. Returns one report per deployment handled, in config order; when `stop` fires,
    /// deployments not yet started are left for the next pass and get no report.
    pub async fn pass(&self, only: &[String], force: bool, stop: &Shutdown) -> Vec<Report> {
        let mut reports = Vec::new();
        for deployment in &self.config.deployments {
            if !only.is_empty() && !only.contains(&deployment.id) {
                continue;
            }
            if stop.is_stopping() {
                tracing::info!("stopping: leaving the remaining deployments for the next pass");
                break;
            }
            let span = tracing::info_span!("deployment", id = %deployment.id);
            let result =
                tracing::Instrument::instrument(self.one(deployment, force, stop), span).await;
            let outcome = Outcome {
                at: OffsetDateTime::now_utc(),
                ok: result.is_ok(),
                message: match &result {
                    Ok(done) => done.to_string(),
                    Err(e) => e.to_string(),
                },
            };
            // Recording the outcome is best effort: the pass result is reported either way.
            if let Err(e) = self.store.record(&deployment.id).and_then(|mut r| {
                r.last = Some(outcome);
                self.store.save_record(&deployment.id, &r)
            }) {
                tracing::warn!(deployment = %deployment.id, "cannot record the outcome: {e}");
            }
            reports.push(Report {
                id: deployment.id.clone(),
                result,
            });
        }
        reports
    }

    async fn one(&self, d: &Deployment, force: bool, stop: &Shutdown) -> Result<Done, RenewError> {
        let emqx = &self.emqx[&d.emqx];
        let mut record = self.store.record(&d.id)?;

        // Resume a certificate an earlier pass issued or pushed but did not see running.
        match record.step {
            Some(Step::Pushed) => {
                tracing::info!("resuming: waiting for the certificate pushed by an earlier pass");
                return self.wait_and_record(d, emqx, &mut record, stop).await;
            }
            Some(Step::Issued) => {
                if let Some(bundle) = self.store.bundle(&d.id)? {
                    match certs::validate(&bundle, &d.domains, OffsetDateTime::now_utc()) {
                        Ok(_) => {
                            tracing::info!(
                                "resuming: pushing the certificate issued by an earlier pass"
                            );
                            let tls_type = self.tls_type(d, record.tls_type.as_deref())?;
                            return self
                                .push(d, emqx, &mut record, &bundle, tls_type, stop)
                                .await;
                        }
                        Err(e) => tracing::warn!(
                            "the saved certificate is no longer usable ({e}); issuing a new one"
                        ),
                    }
                }
                record.step = None;
                self.store.save_record(&d.id, &record)?;
            }
            Some(Step::Active) | None => {}
        }

        let state = emqx.inspect(&d.id).await?;
        record.expire = state.expire;
        record.tls_type = state.tls_type.clone();
        self.store.save_record(&d.id, &record)?;
        let pushed = record
            .cert
            .as_ref()
            .filter(|_| record.step == Some(Step::Active));
        let plan = plan::plan(state.expire, pushed, d.renew_before);
        let now = OffsetDateTime::now_utc();
        if !force && !plan.is_due(now) {
            let expires = state.expire.unwrap_or(now);
            tracing::info!(expires = %day(expires), renew_at = %day(plan.renew_at), rule = %plan.rule, "not due");
            return Ok(Done::NotDue { expires, plan });
        }

        // Fail before spending an ACME order on anything that would make the push fail.
        let tls_type = self.tls_type(d, state.tls_type.as_deref())?;
        if emqx.writes_left() == 0 {
            return Err(EmqxError::Budget(crate::budget::Exhausted {
                key: self.config.emqx[&d.emqx].key.clone(),
                until: now + time::Duration::hours(1),
                why: "no write left this hour to push a new certificate",
            })
            .into());
        }
        if stop.is_stopping() {
            return Err(RenewError::Interrupted("ordering a certificate"));
        }
        tracing::info!(rule = %plan.rule, forced = force, "renewal due; ordering a certificate");
        let bundle = self.issue(d).await?;
        let info = certs::validate(&bundle, &d.domains, OffsetDateTime::now_utc())?;
        self.store.save_bundle(&d.id, &bundle)?;
        record.step = Some(Step::Issued);
        record.create = state.expire.is_none();
        record.cert = Some(CertRecord {
            serial: info.serial,
            not_before: info.not_before,
            not_after: info.not_after,
            domains: d.domains.clone(),
        });
        self.store.save_record(&d.id, &record)?;
        self.push(d, emqx, &mut record, &bundle, tls_type, stop)
            .await
    }

    /// Issues and validates a certificate for deployment `id` exactly as a renewal would, without talking to
    /// the vendor and without touching the deployment's record (`certkeeper issue`, benchmarks).
    ///
    /// # Errors
    /// [`RenewError::Config`] for an unknown id; issuance and validation errors.
    pub async fn issue_only(&self, id: &str) -> Result<(Bundle, certs::LeafInfo), RenewError> {
        let d = self
            .config
            .deployments
            .iter()
            .find(|d| d.id == id)
            .ok_or_else(|| RenewError::Config(format!("no deployment {id} is configured")))?;
        let bundle = self.issue(d).await?;
        let info = certs::validate(&bundle, &d.domains, OffsetDateTime::now_utc())?;
        Ok((bundle, info))
    }

    async fn issue(&self, d: &Deployment) -> Result<Bundle, RenewError> {
        let acme = self
            .acme
            .get_or_try_init(|| AcmeClient::connect(&self.config.acme, &self.store))
            .await?;
        let solver: &dyn Dns01Solver = &self.solvers[&d.dns];
        Ok(acme
            .issue(&d.domains, self.config.acme.key_type, solver)
            .await?)
    }

    /// The TLS type to push: the configured one, else the one the vendor reports, else one-way.
    fn tls_type(&self, d: &Deployment, reported: Option<&str>) -> Result<TlsType, RenewError> {
        let tls_type = match (d.tls_type, reported) {
            (Some(t), _) => t,
            (None, None) => TlsType::OneWay,
            (None, Some("one-way")) => TlsType::OneWay,
            (None, Some("two-way")) => TlsType::TwoWay,
            (None, Some(other)) => {
                return Err(RenewError::Config(format!(
                    "EMQX reports an unknown tlsType {other:?} — set tls_type in the [[deployment]] of {}",
                    d.id
                )));
            }
        };
        if tls_type == TlsType::TwoWay && d.client_ca_file.is_none() {
            return Err(RenewError::Config(
                "the deployment uses two-way TLS but no client_ca_file is configured — set client_ca_file \
                 (EMQX needs the client CA with every certificate push); nothing was ordered"
                    .into(),
            ));
        }
        Ok(tls_type)
    }

    async fn push(
        &self,
        d: &Deployment,
        emqx: &EmqxClient,
        record: &mut Record,
        bundle: &Bundle,
        tls_type: TlsType,
        stop: &Shutdown,
    ) -> Result<Done, RenewError> {
        if stop.is_stopping() {
            return Err(RenewError::Interrupted("pushing the issued certificate"));
        }
        let key = certs::encode_key(&bundle.key_pkcs8_pem, self.config.acme.key_format)?;
        let cacert = match (tls_type, &d.client_ca_file) {
            (TlsType::TwoWay, Some(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
                RenewError::Config(format!(
                    "cannot read client_ca_file {}: {e}",
                    path.display()
                ))
            })?),
            _ => None,
        };
        let upload = Upload {
            tls_type,
            cert: &bundle.chain_pem,
            key: key.expose_secret(),
            cacert: cacert.as_deref(),
        };
        tracing::info!(method = if record.create { "POST" } else { "PUT" }, %tls_type, "pushing the certificate");
        emqx.deploy(&d.id, record.create, &upload).await?;
        record.step = Some(Step::Pushed);
        self.store.save_record(&d.id, record)?;
        self.wait_and_record(d, emqx, record, stop).await
    }

    async fn wait_and_record(
        &self,
        d: &Deployment,
        emqx: &EmqxClient,
        record: &mut Record,
        stop: &Shutdown,
    ) -> Result<Done, RenewError> {
        // Waiting only reads: it may be abandoned at any moment, the step `Pushed` is already saved.
        let state: TlsState = tokio::select! {
            state = emqx.wait_active(&d.id) => state?,
            () = stop.wait() => return Err(RenewError::Interrupted("the vendor reported running")),
        };
        let cert = record.cert.clone().ok_or_else(|| {
            RenewError::Config("the record of the pushed certificate is missing".into())
        })?;
        if let Some(expire) = state.expire
            && (expire - cert.not_after).abs() > time::Duration::days(1)
        {
            tracing::warn!(
                reported = %day(expire),
                pushed = %day(cert.not_after),
                "EMQX reports an expiry that differs from the pushed certificate's; check expire_timezone"
            );
        }
        record.step = Some(Step::Active);
        record.expire = Some(cert.not_after);
        record.create = false;
        self.store.save_record(&d.id, record)?;
        self.store.remove_bundle(&d.id)?;
        tracing::info!(serial = %cert.serial, expires = %day(cert.not_after), "certificate running");
        Ok(Done::Renewed {
            expires: cert.not_after,
            serial: cert.serial,
        })
    }
}
