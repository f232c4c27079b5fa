//! One deployment's renewal, one function per persisted step. Each step is saved through
//! [`Pipeline::persist`] before the next begins, so that a crash anywhere resumes without a second
//! certificate: `issued` (bundle saved) → `pushed` (the target accepted it) → `active` (it runs) →
//! `verified` (the endpoint serves it).

use time::OffsetDateTime;

use super::pass::Prefetched;
use super::{Done, MAX_UNAPPLIED_PUSHES, Pipeline, RenewError, cert_record, day, sni};
use crate::certs::{self, Bundle, CertError};
use crate::config::Deployment;
use crate::deploy::{Deployed, TargetError};
use crate::plan::{self, Plan, Rule, Slot};
use crate::shutdown::Shutdown;
use crate::state::{Record, Step};

impl Pipeline {
    pub(super) async fn one(
        &self,
        d: &Deployment,
        slot: &Slot,
        prefetched: Prefetched,
        force: bool,
        stop: &Shutdown,
    ) -> Result<Done, RenewError> {
        match self.renew(d, slot, prefetched, force, stop).await {
            // The budget is a reason to wait, not a failure: the renewal resumes from the persisted step.
            Err(RenewError::Target(TargetError::Budget(e))) => defer(slot, e.until, e.to_string()),
            Err(RenewError::Target(e @ TargetError::DryRun(_))) => Ok(Done::DryRun(e.to_string())),
            other => other,
        }
    }

    async fn renew(
        &self,
        d: &Deployment,
        slot: &Slot,
        prefetched: Prefetched,
        force: bool,
        stop: &Shutdown,
    ) -> Result<Done, RenewError> {
        let mut record = self.state.record(&d.id)?;
        let now = OffsetDateTime::now_utc();
        if record.step == Some(Step::Pushed) {
            if !force {
                tracing::info!("resuming: waiting for the certificate pushed by an earlier pass");
                return self.wait_and_record(d, &mut record, stop).await;
            }
            // `--now` overrides the wait: the target is asked once below, and the bundle pushed again unless
            // it already runs it.
            tracing::info!(
                "--now: checking the certificate pushed by an earlier pass instead of waiting"
            );
            self.persist(d, &mut record, Some(Step::Issued))?;
        }
        if record.step == Some(Step::Active) && d.endpoint.is_some() {
            self.recheck_endpoint(d, &mut record, force, now).await?;
        }
        // Cleaning up after an interrupted pass changes DNS and fetches from the CA: not for a dry run.
        if !self.dry_run {
            self.recover_interrupted(d, &mut record).await?;
        }
        // A fresh `now`: the bundle may have been fetched just above, within a second of its notBefore.
        let checked_at = OffsetDateTime::now_utc();
        if let Some(done) = self
            .resume_bundle(d, &mut record, force, stop, checked_at)
            .await?
        {
            return Ok(done);
        }
        if record.step == Some(Step::Issued) {
            self.persist(d, &mut record, None)?;
        }
        let (deployed, plan) = match self
            .decide(d, &mut record, slot, prefetched, force, now)
            .await?
        {
            Decision::NotDue(done) => return Ok(done),
            Decision::Due(deployed, plan) => (deployed, plan),
        };
        self.issue_and_push(d, &mut record, slot, &deployed, plan, force, stop)
            .await
    }

    /// Step `active` with an endpoint: the endpoint check of an earlier pass did not finish.
    async fn recheck_endpoint(
        &self,
        d: &Deployment,
        record: &mut Record,
        force: bool,
        now: OffsetDateTime,
    ) -> Result<(), RenewError> {
        // No write follows this wait: the next deployment of the budget may write meanwhile.
        self.turns.release(&d.id);
        tracing::info!(
            "resuming: checking the endpoint serves the certificate made active by an earlier pass"
        );
        if let Err(e) = self.verify_endpoint(d, record).await {
            // An endpoint that never shows the certificate must not block a renewal that is due.
            if !self.local_plan(d, record, now).is_due(now) && !force {
                return Err(e);
            }
            tracing::warn!("{e}; renewing anyway because renewal is due");
        }
        Ok(())
    }

    /// Removes TXT records a killed process left, and fetches the certificate of an order an earlier process
    /// was finalizing: it may exist at the CA, and ordering another would waste one.
    async fn recover_interrupted(
        &self,
        d: &Deployment,
        record: &mut Record,
    ) -> Result<(), RenewError> {
        self.journaled(d)
            .clean_leftovers()
            .await
            .map_err(RenewError::Journal)?;
        if self.state.bundle(&d.id)?.is_some() {
            self.state.remove_pending_order(&d.id)?;
            return Ok(());
        }
        let Some(pending) = self.state.pending_order(&d.id)? else {
            return Ok(());
        };
        tracing::info!(order = %pending.url, "resuming: fetching the certificate of the order an earlier pass finalized");
        let issuer = self.issuer_of_url(&pending.url);
        match self
            .acme(issuer)
            .await?
            .resume(&pending.url, &pending.key_pkcs8_pem, &d.domains)
            .await
        {
            Ok(bundle) => {
                self.state.save_bundle(&d.id, &bundle)?;
                // The bundle's record is written when it is resumed below; it comes from this CA.
                record.cert_issuer = Some(self.config.acme.issuers[issuer].directory.clone());
                self.state.remove_pending_order(&d.id)?;
            }
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                tracing::warn!("the saved order gives no certificate ({e}); ordering a new one");
                self.state.remove_pending_order(&d.id)?;
            }
        }
        Ok(())
    }

    /// A saved bundle is the certificate in flight, whatever the record says: a crash may have come between
    /// saving the bundle and recording the step, and issuing again would waste a certificate. Returns the
    /// outcome when the saved bundle decided the pass.
    async fn resume_bundle(
        &self,
        d: &Deployment,
        record: &mut Record,
        force: bool,
        stop: &Shutdown,
        now: OffsetDateTime,
    ) -> Result<Option<Done>, RenewError> {
        let Some(bundle) = self.state.bundle(&d.id)? else {
            return Ok(None);
        };
        let info = match self.check_pushable(d, &bundle, now) {
            // Already active: a crash came between recording that and removing the bundle.
            Ok(info)
                if self
                    .active_cert(record)
                    .is_some_and(|c| c.serial == info.serial) =>
            {
                self.state.remove_bundle(&d.id)?;
                return Ok(None);
            }
            Ok(info) => info,
            // Only the target's rule refuses it and another issuer may serve: order from that one (its
            // certificate replaces this one as the bundle in flight).
            Err(e)
                if self.target_refuses(d, &bundle, now)
                    && self.choose(d).is_ok_and(|c| {
                        c.iter().any(|c| {
                            Some(&self.config.acme.issuers[c.index].directory)
                                != record.cert_issuer.as_ref()
                        })
                    }) =>
            {
                tracing::warn!(
                    "the saved certificate cannot be pushed ({e}); it stays saved until a certificate from \
                     another issuer replaces it"
                );
                return Ok(None);
            }
            Err(e) if self.worth_keeping(d, &bundle, now) => {
                // Waiting (a clock a second behind the CA's) or a config change (import_minimum,
                // issuer_key_match) makes it pushable as it is: another order would only waste a certificate.
                return Err(RenewError::Cert(CertError::Invalid(format!(
                    "the saved certificate cannot be pushed yet ({e}); it is kept and no new one is ordered"
                ))));
            }
            Err(e) => {
                tracing::warn!(
                    "the saved certificate is no longer usable ({e}); issuing a new one"
                );
                self.state.remove_bundle(&d.id)?;
                return Ok(None);
            }
        };
        tracing::info!("resuming: pushing the certificate issued by an earlier pass");
        // Ask the target first: an earlier push may have been accepted without being recorded, and whether
        // the deployment has a certificate decides between creating and replacing it.
        let deployed = self.target(d).inspect().await?;
        let shown = self.target_shows(d, record, &deployed, &info).await;
        record.cert = Some(cert_record(&bundle, info, d));
        record.create = deployed.expire.is_none();
        if shown {
            tracing::info!("the vendor already has this certificate: waiting for it to run");
            record.create = false;
            self.persist(d, record, Some(Step::Pushed))?;
            return self.wait_and_record(d, record, stop).await.map(Some);
        }
        if force {
            record.unapplied_pushes = 0;
        } else if record.unapplied_pushes >= MAX_UNAPPLIED_PUSHES {
            return Err(RenewError::NotApplied {
                waited: self.target(d).wait_timeout(),
                pushes: record.unapplied_pushes,
            });
        }
        self.persist(d, record, Some(Step::Issued))?;
        self.target(d).precheck(&deployed)?;
        self.push(d, record, &bundle, stop).await.map(Some)
    }

    /// Inspects (unless local state is fresh) and plans.
    async fn decide(
        &self,
        d: &Deployment,
        record: &mut Record,
        slot: &Slot,
        prefetched: Prefetched,
        force: bool,
        now: OffsetDateTime,
    ) -> Result<Decision, RenewError> {
        if let Err(e) = self.refresh_ari(record, now).await {
            tracing::warn!("cannot refresh the CA's renewal window, planning without it: {e}");
        }
        let earlier = |p: Plan| {
            if slot.plan.rule == Rule::Budget && slot.plan.renew_at < p.renew_at {
                slot.plan
            } else {
                p
            }
        };
        let local = earlier(self.local_plan(d, record, now));
        if !force
            && prefetched.is_none()
            && !local.is_due(now)
            && self.inspection_fresh(d, record, now)
        {
            tracing::info!(renew_at = %day(local.renew_at), rule = %local.rule, "not due (local state is fresh; no API request)");
            self.state.save_record(&d.id, record)?;
            return Ok(Decision::NotDue(Done::NotDue {
                expires: record.expire.unwrap_or(now),
                plan: local,
                inspected: false,
            }));
        }
        let deployed = match prefetched {
            Some(answer) => answer?,
            None => self.target(d).inspect().await?,
        };
        if self.active_cert(record).is_some_and(|c| {
            deployed
                .expire
                .is_none_or(|e| (e - c.not_after).abs() > plan::SAME_CERT_TOLERANCE)
        }) {
            tracing::warn!(
                "the deployment no longer runs the certificate certkeeper pushed; planning from what it runs now"
            );
            record.step = None;
            record.ari = None;
        }
        record.expire = deployed.expire;
        record.last_inspect = Some(OffsetDateTime::now_utc());
        if self.active_cert(record).is_none() {
            record.served = self.learn_served(d, deployed.expire).await;
        }
        self.state.save_record(&d.id, record)?;
        let plan = earlier(self.local_plan(d, record, now));
        if !force && !plan.is_due(now) {
            let expires = deployed.expire.unwrap_or(now);
            tracing::info!(expires = %day(expires), renew_at = %day(plan.renew_at), rule = %plan.rule, "not due");
            return Ok(Decision::NotDue(Done::NotDue {
                expires,
                plan,
                inspected: true,
            }));
        }
        Ok(Decision::Due(deployed, plan))
    }

    /// Due: orders a certificate, saves it (step `issued`), checks it, and pushes it.
    #[allow(clippy::too_many_arguments)]
    async fn issue_and_push(
        &self,
        d: &Deployment,
        record: &mut Record,
        slot: &Slot,
        deployed: &Deployed,
        plan: Plan,
        force: bool,
        stop: &Shutdown,
    ) -> Result<Done, RenewError> {
        let target = self.target(d);
        // Fail before spending an ACME order on anything that would make the push fail.
        target.precheck(deployed)?;
        let candidates = self.choose(d)?;
        if stop.is_stopping() {
            return Err(RenewError::Interrupted("ordering a certificate"));
        }
        if let Some(budget) = target.budget()
            && let Err(claimed) = self
                .turns
                .try_claim(budget.group(), &d.id, budget.writes_left())
        {
            let why = format!(
                "no write left in the vendor budget of [{}] to push a new certificate",
                budget.group()
            );
            return defer(slot, budget.next_write_at(claimed), why);
        }
        let create = deployed.expire.is_none();
        if self.dry_run {
            return self.dry_run_issue(d, plan, create, &candidates[0]).await;
        }
        tracing::info!(rule = %plan.rule, forced = force, "renewal due; ordering a certificate");
        // ARI's `replaces` names the active certificate to the CA that issued it, and to no other.
        let replaced_by = self
            .config
            .acme
            .issuers
            .get(
                self.issuer_at(record.cert_issuer.as_deref())
                    .unwrap_or(usize::MAX),
            )
            .map(|i| i.directory.clone());
        let replaces = record
            .ari
            .as_ref()
            .and(self.active_cert(record))
            .and_then(|c| c.leaf_pem.clone())
            .zip(replaced_by);
        let replaces = replaces.as_ref().map(|(l, i)| (l.as_str(), i.as_str()));
        // A bundle that fails its checks stays saved; the next pass decides whether it can still be pushed.
        let bundle = self
            .issue_with_fallback(d, record, &candidates, replaces, create)
            .await?;
        fail::fail_point!("issued-recorded");
        self.push(d, record, &bundle, stop).await
    }

    /// Step `issued` → `pushed`: hands the bundle to the target.
    async fn push(
        &self,
        d: &Deployment,
        record: &mut Record,
        bundle: &Bundle,
        stop: &Shutdown,
    ) -> Result<Done, RenewError> {
        if stop.is_stopping() {
            return Err(RenewError::Interrupted("pushing the issued certificate"));
        }
        if let Some(budget) = self.target(d).budget() {
            self.turns.wait(budget.group(), &d.id).await;
            if stop.is_stopping() {
                self.turns.release(&d.id);
                return Err(RenewError::Interrupted("pushing the issued certificate"));
            }
        }
        let deployed = self.target(d).deploy(bundle, record.create).await;
        self.turns.release(&d.id);
        deployed?;
        fail::fail_point!("push-accepted");
        // From now on the deployment has a certificate: any further push of this one replaces it.
        record.create = false;
        self.persist(d, record, Some(Step::Pushed))?;
        fail::fail_point!("pushed-recorded");
        self.wait_and_record(d, record, stop).await
    }

    /// Step `pushed` → `active`: waits until the target runs the pushed certificate.
    async fn wait_and_record(
        &self,
        d: &Deployment,
        record: &mut Record,
        stop: &Shutdown,
    ) -> Result<Done, RenewError> {
        // Waiting for `running` writes nothing: the next deployment of the budget may write meanwhile.
        self.turns.release(&d.id);
        let cert = record.cert.clone().ok_or_else(|| {
            RenewError::Config("the record of the pushed certificate is missing".into())
        })?;
        // Waiting only reads: it may be abandoned at any moment, the step `Pushed` is already saved.
        let waited = tokio::select! {
            state = self.target(d).wait_active(&cert) => state,
            () = stop.wait() => return Err(RenewError::Interrupted("the vendor reported running")),
        };
        match waited {
            Ok(_) => {}
            Err(e @ TargetError::NotApplied(_)) => {
                // The bundle is still saved: step back so the next pass pushes the same certificate again.
                self.persist(d, record, Some(Step::Issued))?;
                return Err(e.into());
            }
            // Still running the previous certificate after the whole wait: the target accepted the write and
            // did not apply it (or never saw it). Waiting again would not help; pushing the same bundle does.
            Err(TargetError::StillPrevious { waited }) => {
                record.unapplied_pushes = record.unapplied_pushes.saturating_add(1);
                self.persist(d, record, Some(Step::Issued))?;
                return Err(RenewError::NotApplied {
                    waited,
                    pushes: record.unapplied_pushes,
                });
            }
            Err(e) => return Err(e.into()),
        }
        // The bundle goes first: a crash in between leaves step `pushed` and the next pass only waits.
        self.state.remove_bundle(&d.id)?;
        record.expire = Some(cert.not_after);
        record.create = false;
        record.unapplied_pushes = 0;
        self.persist(d, record, Some(Step::Active))?;
        fail::fail_point!("active-recorded");
        tracing::info!(serial = %cert.serial, expires = %day(cert.not_after), "certificate running");
        self.verify_endpoint(d, record).await?;
        Ok(Done::Renewed {
            expires: cert.not_after,
            serial: cert.serial,
        })
    }

    /// Step `active` → `verified`, with `endpoint` configured: waits until it serves the active certificate.
    pub(super) async fn verify_endpoint(
        &self,
        d: &Deployment,
        record: &mut Record,
    ) -> Result<(), RenewError> {
        let (Some(endpoint), Some(cert)) = (&d.endpoint, record.cert.clone()) else {
            return Ok(());
        };
        let spki = cert
            .leaf_pem
            .as_deref()
            .and_then(|pem| certs::parse_pem_certs(pem.as_bytes()).ok())
            .and_then(|ders| ders.into_iter().next())
            .and_then(|der| certs::spki(&der).ok())
            .ok_or_else(|| {
                RenewError::Config(
                    "the record lacks the pushed leaf; cannot verify the endpoint".into(),
                )
            })?;
        let sni = sni(d);
        tracing::info!(
            endpoint,
            sni,
            "checking that the endpoint serves the new certificate"
        );
        crate::verify::wait_served(endpoint, &sni, &cert.serial, &spki, d.verify_timeout).await?;
        self.persist(d, record, Some(Step::Verified))?;
        tracing::info!(endpoint, serial = %cert.serial, "the endpoint serves the new certificate");
        Ok(())
    }
}

/// What [`Pipeline::decide`] found.
enum Decision {
    /// Nothing to do in this pass.
    NotDue(Done),
    /// Renew: what the target runs, and the plan that made it due.
    Due(Deployed, Plan),
}

/// A renewal the budget cannot afford before `until`: deferred, which is no failure — unless `until` lies past
/// the deployment's deadline, when waiting would let the certificate expire.
pub(super) fn defer(slot: &Slot, until: OffsetDateTime, why: String) -> Result<Done, RenewError> {
    match slot.deadline {
        Some(deadline) if until > deadline => Err(RenewError::DeferredPastDeadline {
            until,
            deadline,
            why,
        }),
        _ => {
            tracing::info!(until = %day(until), "deferred: {why}");
            Ok(Done::Deferred { until, why })
        }
    }
}
