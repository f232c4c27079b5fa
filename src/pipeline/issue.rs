//! Ordering a certificate from the CA: the renewal's issuance (its order persisted before finalization), the
//! dry run's trial issuance against the staging CA, `certkeeper issue`, and the profile check at start.

use std::sync::atomic::{AtomicBool, Ordering};

use secrecy::SecretString;
use time::OffsetDateTime;

use super::{ACME_ATTEMPTS, Done, Event, Pipeline, RenewError};
use crate::acme::{AcmeClient, AcmeError, OrderSpec};
use crate::certs::{self, Bundle};
use crate::config::Deployment;
use crate::plan::Plan;
use crate::solver::Dns01Solver as _;
use crate::state::PendingOrder;

impl Pipeline {
    pub(super) async fn dry_run_issue(
        &self,
        d: &Deployment,
        plan: Plan,
        create: bool,
    ) -> Result<Done, RenewError> {
        let deploy = self.target(d).describe_deploy(create);
        let Some(staging) = &self.config.acme.staging_directory else {
            return Ok(Done::DryRun(format!(
                "due ({}): would order a certificate for {} from {} and {deploy}; set [acme] \
                 staging_directory for a trial issuance",
                plan.rule,
                d.domains.join(","),
                self.config.acme.directory
            )));
        };
        let spec = OrderSpec {
            domains: &d.domains,
            key_type: self.config.acme.key_type,
            profile: self.profile(d),
            replaces: None,
        };
        let bundle = self.obtain(&self.staging, staging, d, &spec, false).await?;
        let info = certs::validate(&bundle, &d.domains, OffsetDateTime::now_utc())?;
        Ok(Done::DryRun(format!(
            "due ({}): trial issuance against {staging} passed (certificate {} for {}); would order from {} and \
             {deploy}",
            plan.rule,
            info.serial,
            info.dns_names.join(","),
            self.config.acme.directory
        )))
    }

    /// Checks, when any ACME profile is configured, that the CA offers it: a missing profile is a config
    /// error at start rather than a failed order later. Costs one directory request, and only then.
    ///
    /// # Errors
    /// [`RenewError::Config`] naming the profile and what the CA offers; the CA being unreachable.
    pub async fn check_profiles(&self) -> Result<(), RenewError> {
        let wanted: Vec<&str> = self
            .config
            .deployments
            .iter()
            .filter_map(|d| self.profile(d))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let offered =
            AcmeClient::offered_profiles(&self.config.acme, &self.config.acme.directory).await?;
        match wanted.iter().find(|p| !offered.iter().any(|o| o == *p)) {
            None => Ok(()),
            Some(missing) => Err(RenewError::Config(format!(
                "ACME profile `{missing}` is not offered by {} (offered: {}) — fix `profile` in [acme] or the [[deployment]]",
                self.config.acme.directory,
                if offered.is_empty() {
                    "none".to_owned()
                } else {
                    offered.join(", ")
                }
            ))),
        }
    }

    fn profile<'a>(&'a self, d: &'a Deployment) -> Option<&'a str> {
        d.profile.as_deref().or(self.config.acme.profile.as_deref())
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
        let bundle = self.issue(d, None, false).await?;
        let info = certs::validate(&bundle, &d.domains, OffsetDateTime::now_utc())?;
        Ok((bundle, info))
    }

    pub(super) async fn issue(
        &self,
        d: &Deployment,
        replaces: Option<&str>,
        persist: bool,
    ) -> Result<Bundle, RenewError> {
        let spec = OrderSpec {
            domains: &d.domains,
            key_type: self.config.acme.key_type,
            profile: self.profile(d),
            replaces,
        };
        self.obtain(&self.acme, &self.config.acme.directory, d, &spec, persist)
            .await
    }

    /// Obtains a certificate from the CA at `directory` (its client kept in `cell`), retrying the whole
    /// attempt — DNS preflight, account, order — with backoff while failures are transient. The DNS server is
    /// checked before any order is placed, so a dead server leaves no orders behind.
    ///
    /// Once the CA was asked to finalize an order, a certificate may exist: from then on this pass never
    /// orders again. A renewal resumes the saved order once more (after a pause), and otherwise leaves it
    /// saved for the next pass; a dry run or `issue` (nothing saved) gives up.
    async fn obtain(
        &self,
        cell: &tokio::sync::OnceCell<AcmeClient>,
        directory: &str,
        d: &Deployment,
        spec: &OrderSpec<'_>,
        persist: bool,
    ) -> Result<Bundle, RenewError> {
        let solver = &self.journaled(d);
        let mut owners: Vec<String> = d
            .domains
            .iter()
            .map(|n| crate::solver::challenge_fqdn(n))
            .collect();
        owners.dedup();
        let finalized = AtomicBool::new(false);
        let mut attempt = 1;
        loop {
            let resuming = finalized.load(Ordering::SeqCst);
            let result: Result<Bundle, AcmeError> = async {
                let acme = self.client(cell, directory).await?;
                if resuming && let Some(pending) = self.state.pending_order(&d.id)? {
                    return acme
                        .resume(&pending.url, &pending.key_pkcs8_pem, &d.domains)
                        .await;
                }
                solver.preflight(&owners).await?;
                // Renewals persist the order before finalization; dry runs and `issue` keep nothing.
                let save = |url: &str, key: &SecretString| {
                    if persist {
                        self.state.save_pending_order(
                            &d.id,
                            &PendingOrder {
                                url: url.to_owned(),
                                key_pkcs8_pem: key.clone(),
                            },
                        )?;
                    }
                    finalized.store(true, Ordering::SeqCst);
                    Ok(())
                };
                acme.issue(spec, solver, &save).await
            }
            .await;
            self.events.emit(&Event::Order {
                id: d.id.clone(),
                issued: result.is_ok(),
            });
            match result {
                Ok(bundle) => return Ok(bundle),
                Err(e) if finalized.load(Ordering::SeqCst) => {
                    if !persist || resuming || !e.is_transient() {
                        return Err(if persist {
                            RenewError::OrderKept(e)
                        } else {
                            e.into()
                        });
                    }
                    let wait = crate::acme::backoff(attempt + 1);
                    tracing::warn!(
                        "fetching the certificate of the finalized order failed ({e}); trying the same order \
                         again in {wait:?}"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(e) if e.is_transient() && attempt < ACME_ATTEMPTS => {
                    let wait = crate::acme::backoff(attempt);
                    tracing::warn!(
                        attempt,
                        "obtaining the certificate failed ({e}); trying again in {wait:?}"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
