//! Ordering a certificate from the CA: the renewal's issuance (its order persisted before finalization), the
//! dry run's trial issuance against the staging CA, `certkeeper issue`, and the profile check at start.

use std::sync::atomic::{AtomicBool, Ordering};

use secrecy::SecretString;
use time::OffsetDateTime;

use super::{ACME_ATTEMPTS, Done, Event, Pipeline, RenewError};
use crate::acme::{AcmeClient, AcmeError, OrderSpec};
use crate::certs::{self, Bundle};
use crate::config::{Deployment, Issuer};
use crate::issuers::Candidate;
use crate::plan::Plan;
use crate::solver::Dns01Solver as _;
use crate::state::PendingOrder;

impl Pipeline {
    pub(super) async fn dry_run_issue(
        &self,
        d: &Deployment,
        plan: Plan,
        create: bool,
        chosen: &Candidate,
    ) -> Result<Done, RenewError> {
        let deploy = self.target(d).describe_deploy(create);
        let issuer = &self.config.acme.issuers[chosen.index];
        let Some(staging) = &self.config.acme.staging_directory else {
            return Ok(Done::DryRun(format!(
                "due ({}): would order a certificate for {} from issuer {} ({}) and {deploy}; set [acme] \
                 staging_directory for a trial issuance",
                plan.rule,
                d.domains.join(","),
                chosen.name,
                issuer.directory
            )));
        };
        let first = &self.config.acme.issuers[0];
        let spec = OrderSpec {
            domains: &d.domains,
            key_type: first.key_type,
            profile: self.profile(d),
            replaces: None,
        };
        let bundle = self
            .obtain(&self.staging, first, staging, d, &spec, false)
            .await?;
        let info = certs::validate(&bundle, &d.domains, OffsetDateTime::now_utc())?;
        Ok(Done::DryRun(format!(
            "due ({}): trial issuance against {staging} passed (certificate {} for {}); would order from issuer {} \
             ({}) and {deploy}",
            plan.rule,
            info.serial,
            info.dns_names.join(","),
            chosen.name,
            issuer.directory
        )))
    }

    /// Checks, for every issuer with an ACME profile configured (its own, or a deployment's), that its CA
    /// offers it: a missing profile is a config error at start rather than a failed order later. Costs one
    /// directory request per such issuer, and only then. An issuer that cannot be reached is left to the pass,
    /// which falls back to the next one.
    ///
    /// # Errors
    /// [`RenewError::Config`] naming the profile and what the CA offers; the CA being unreachable when it is
    /// the only issuer.
    pub async fn check_profiles(&self) -> Result<(), RenewError> {
        let issuers = &self.config.acme.issuers;
        for (index, issuer) in issuers.iter().enumerate() {
            let mut wanted: Vec<&str> = self
                .config
                .deployments
                .iter()
                .filter(|d| d.issuer.is_none_or(|p| p == index))
                .filter_map(|d| crate::issuers::profile(d, index, issuer))
                .collect();
            wanted.dedup();
            if wanted.is_empty() {
                continue;
            }
            let offered = match AcmeClient::offered_profiles(
                issuer.trust_roots.as_deref(),
                &issuer.directory,
            )
            .await
            {
                Ok(offered) => offered,
                Err(e) if issuers.len() > 1 => {
                    tracing::warn!(issuer = %issuer.name, "cannot check the issuer's profiles: {e}");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(missing) = wanted.iter().find(|p| !offered.iter().any(|o| o == *p)) {
                return Err(RenewError::Config(format!(
                    "ACME profile `{missing}` is not offered by {} (offered: {}) — fix `profile` in [acme], \
                     [[acme.fallback]] or the [[deployment]]",
                    issuer.directory,
                    if offered.is_empty() {
                        "none".to_owned()
                    } else {
                        offered.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }

    /// The profile of deployment `d`'s orders to the first issuer (the staging CA's trial orders too).
    fn profile<'a>(&'a self, d: &'a Deployment) -> Option<&'a str> {
        crate::issuers::profile(d, 0, &self.config.acme.issuers[0])
    }

    /// Issues and validates a certificate for deployment `id` exactly as a renewal would — from the first
    /// issuer that can serve it, falling back when a CA fails — without talking to the vendor and without
    /// touching the deployment's record (`certkeeper issue`, benchmarks).
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
        let candidates = self.choose(d)?;
        let mut tried = candidates.iter().peekable();
        while let Some(c) = tried.next() {
            let issuer = &self.config.acme.issuers[c.index];
            let spec = OrderSpec {
                domains: &d.domains,
                key_type: issuer.key_type,
                profile: c.profile.as_deref(),
                replaces: None,
            };
            match self
                .obtain(
                    &self.acme[c.index],
                    issuer,
                    &issuer.directory,
                    d,
                    &spec,
                    false,
                )
                .await
            {
                Ok(bundle) => {
                    let info = certs::validate(&bundle, &d.domains, OffsetDateTime::now_utc())?;
                    return Ok((bundle, info));
                }
                Err(RenewError::Acme(e @ AcmeError::Ca { .. })) if tried.peek().is_some() => {
                    tracing::warn!(issuer = %c.name, "{e}; falling back to the next issuer");
                }
                Err(e) => return Err(e),
            }
        }
        // `choose` returns at least one candidate, and the last one's result is returned above.
        Err(RenewError::Config("no issuer is configured".into()))
    }

    /// Obtains a certificate from the CA at `directory` (its client kept in `cell`), retrying the whole
    /// attempt — DNS preflight, account, order — with backoff while failures are transient. The DNS server is
    /// checked before any order is placed, so a dead server leaves no orders behind.
    ///
    /// Once the CA was asked to finalize an order, a certificate may exist: from then on this pass never
    /// orders again. A renewal resumes the saved order once more (after a pause), and otherwise leaves it
    /// saved for the next pass; a dry run or `issue` (nothing saved) gives up.
    pub(super) async fn obtain(
        &self,
        cell: &tokio::sync::OnceCell<AcmeClient>,
        issuer: &Issuer,
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
                let acme = self.client(cell, issuer, directory).await?;
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
