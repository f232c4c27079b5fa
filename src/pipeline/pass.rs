//! The pass: select the deployments, learn what local state does not know, schedule each request budget's
//! deployments by deadline, run up to `[schedule] concurrency` of each budget's at once and the budgets in
//! parallel (each deployment under its lock, writing in its budget's deadline order: see `turns.rs`), and
//! record each outcome.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::{FutureExt as _, StreamExt as _};
use time::OffsetDateTime;

use super::{
    CONFIRM_READS, Done, Event, LockWait, Pipeline, RenewError, Report, day, panic_message,
};
use crate::config::Deployment;
use crate::deploy::{Deployed, TargetError};
use crate::plan::{self, Slot};
use crate::shutdown::Shutdown;
use crate::state::{DeploymentLock, Outcome, PlanRecord, Record, Step, StoreError, wait_for};

/// A target answer obtained before scheduling, handed to the renewal so it is not asked twice.
pub(super) type Prefetched = Option<Result<Deployed, TargetError>>;

/// One selected deployment on its way through the pass.
struct Planned<'c> {
    d: &'c Deployment,
    /// The record as the pass found it: if it changed by the time the deployment's lock is held, another
    /// process worked on it meanwhile and the prefetched answer is stale.
    seen: Record,
    record: Record,
    slot: Slot,
    prefetched: Prefetched,
}

impl Pipeline {
    /// Runs one pass over the deployments whose ids are in `only` (all when empty); `force` renews even
    /// those not due. Deployments are started earliest deadline first, so a scarce write budget goes to
    /// the certificate that expires first. Returns one report per deployment handled, in the order they
    /// finished; when `stop` fires, deployments not yet started are left for the next pass and get no report.
    pub async fn pass(&self, only: &[String], force: bool, stop: &Shutdown) -> Vec<Report> {
        self.pass_reporting(only, force, stop, &mut |_| {}).await
    }

    /// [`Pipeline::pass`], calling `on_report` with each report as its deployment finishes.
    pub async fn pass_reporting(
        &self,
        only: &[String],
        force: bool,
        stop: &Shutdown,
        on_report: &mut dyn FnMut(&Report),
    ) -> Vec<Report> {
        // A long-lived agent (the daemon) must see what other processes spent since its last pass.
        if let Err(e) = self.budget.reload() {
            tracing::warn!("cannot re-read the request budget, using the one in memory: {e}");
        }
        self.forget_unavailable();
        for target in self.targets.values() {
            if let Some(budget) = target.budget() {
                budget.begin_pass();
            }
        }
        let now = OffsetDateTime::now_utc();
        let mut reports = Vec::new();
        let mut loaded: Vec<(&Deployment, Record)> = Vec::new();
        for d in self
            .config
            .deployments
            .iter()
            .filter(|d| only.is_empty() || only.contains(&d.id))
        {
            match self.state.record(&d.id) {
                Ok(record) => loaded.push((d, record)),
                Err(e) => {
                    let report = Report {
                        id: d.id.clone(),
                        result: Err(e.into()),
                    };
                    on_report(&report);
                    reports.push(report);
                }
            }
        }
        // With fewer GETs than deployments, the prefetch goes to the most urgent by last known expiry (unknown
        // first), and stops short of the GETs this pass's pushes need to be confirmed.
        loaded.sort_by_key(|(_, r)| r.expire.unwrap_or(OffsetDateTime::UNIX_EPOCH));
        let mut planned = Vec::new();
        for (d, record) in loaded {
            planned.push(self.prefetch(d, record, force, stop, now).await);
        }
        let order = self.schedule(&mut planned, now);
        let mut slots: Vec<Option<Planned<'_>>> = planned.into_iter().map(Some).collect();
        let ordered: Vec<Planned<'_>> = order.into_iter().filter_map(|i| slots[i].take()).collect();
        let groups = self.by_budget(ordered);
        let mut queues = BTreeMap::new();
        for (group, members) in &groups {
            let budget = members.first().and_then(|p| self.target(p.d).budget());
            if let (Some(group), Some(budget)) = (group, budget) {
                budget.plan_tasks(u32::try_from(members.len()).unwrap_or(u32::MAX));
                queues.insert(
                    group.clone(),
                    members.iter().map(|p| p.d.id.clone()).collect(),
                );
            }
        }
        self.turns.begin(queues);

        let announced = AtomicBool::new(false);
        let announced = &announced;
        // `concurrency` bounds each request budget (an API key; the local targets share one), not the pass:
        // a deployment holds its place while it waits for `running`, so one global bound would make the keys
        // wait on each other's vendor for nothing.
        let limit = self.config.schedule.concurrency.max(1);
        let mut finished = futures_util::stream::select_all(groups.into_values().map(|group| {
            futures_util::stream::iter(group)
                .map(|p| self.start(p, force, stop, announced))
                .buffer_unordered(limit)
        }));
        while let Some(report) = finished.next().await {
            if let Some(report) = report {
                on_report(&report);
                reports.push(report);
            }
        }
        reports
    }

    /// Starts one deployment's task, unless the pass is stopping: then it is left for the next pass.
    async fn start(
        &self,
        p: Planned<'_>,
        force: bool,
        stop: &Shutdown,
        announced: &AtomicBool,
    ) -> Option<Report> {
        if stop.is_stopping() {
            self.turns.release(&p.d.id);
            if !announced.swap(true, Ordering::Relaxed) {
                tracing::info!("stopping: leaving the remaining deployments for the next pass");
            }
            return None;
        }
        Some(self.task(p, force, stop).await)
    }

    /// The deployments split by request budget (`None`: the targets without one, together), each in the order
    /// the pass starts them: the order each budget writes in.
    fn by_budget<'c>(
        &self,
        ordered: Vec<Planned<'c>>,
    ) -> BTreeMap<Option<String>, Vec<Planned<'c>>> {
        let mut groups: BTreeMap<Option<String>, Vec<Planned<'c>>> = BTreeMap::new();
        for p in ordered {
            let group = self.target(p.d).budget().map(|b| b.group().to_owned());
            groups.entry(group).or_default().push(p);
        }
        groups
    }

    /// One deployment from its lock to its recorded outcome. A deployment another process holds is reported
    /// busy (or waited for, per [`LockWait`]) and nothing of its state is touched.
    async fn task(&self, mut p: Planned<'_>, force: bool, stop: &Shutdown) -> Report {
        let id = p.d.id.clone();
        if let Some(budget) = self.target(p.d).budget() {
            budget.task_started();
        }
        let lock = self.lock_deployment(&id, stop).await;
        let result = match lock {
            Ok(Some(_lock)) => {
                match self.state.record(&id) {
                    Ok(now) if now != p.seen => {
                        tracing::debug!(deployment = %id, "changed by another certkeeper meanwhile; asking afresh");
                        // Both the answer and the schedule entry were made from the old record.
                        let at = OffsetDateTime::now_utc();
                        p.prefetched = None;
                        p.slot = Slot {
                            plan: self.local_plan(p.d, &now, at),
                            deadline: now.expire.map(|e| e - plan::DEADLINE_MARGIN),
                            at_risk: false,
                        };
                        p.record = now.clone();
                        p.seen = now;
                    }
                    _ => {}
                }
                // A bundle waiting to be pushed needs one of this pass's writes: no other deployment may order
                // a certificate counting on it.
                if p.seen.step == Some(Step::Issued)
                    && let Some(budget) = self.target(p.d).budget()
                {
                    self.turns.claim(budget.group(), &id);
                }
                let result = self.run_one(&mut p, force, stop).await;
                self.record_outcome(p.d, &p.slot, &result);
                result
            }
            Ok(None) => Err(RenewError::Interrupted("waiting for another certkeeper")),
            Err(e) => Err(e.into()),
        };
        self.turns.release(&id);
        Report { id, result }
    }

    /// The lock of deployment `id`, waiting per [`LockWait`]; `None` when `stop` fired while waiting.
    async fn lock_deployment(
        &self,
        id: &str,
        stop: &Shutdown,
    ) -> Result<Option<DeploymentLock>, StoreError> {
        let first = self.state.try_lock_deployment(id);
        let limit = match (self.lock_wait, &first) {
            (_, Ok(_)) | (LockWait::Never, _) => return first.map(Some),
            (_, Err(e)) if !matches!(e, StoreError::Busy { .. }) => return first.map(Some),
            (LockWait::Upto(limit), _) => Some(limit),
            (LockWait::Forever, _) => None,
        };
        // Its turn to write goes to the next deployment of its budget while it waits.
        self.turns.release(id);
        wait_for(limit, stop, || self.state.try_lock_deployment(id)).await
    }

    /// Learns what local state does not know before scheduling, so that the write budget goes to the earliest
    /// real deadlines even on a first pass. The answer is reused by the renewal.
    async fn prefetch<'c>(
        &self,
        d: &'c Deployment,
        mut record: Record,
        force: bool,
        stop: &Shutdown,
        now: OffsetDateTime,
    ) -> Planned<'c> {
        let seen = record.clone();
        let mut prefetched = None;
        let resuming = matches!(record.step, Some(Step::Issued | Step::Pushed));
        if !resuming
            && !stop.is_stopping()
            && (force || !self.inspection_fresh(d, &record, now))
            && self.may_prefetch(d)
        {
            let answer = self.target(d).inspect().await;
            if let Ok(deployed) = &answer {
                record.expire = deployed.expire;
            }
            prefetched = Some(answer);
        }
        let slot = Slot {
            plan: self.local_plan(d, &record, now),
            deadline: record.expire.map(|e| e - plan::DEADLINE_MARGIN),
            at_risk: false,
        };
        Planned {
            d,
            seen,
            record,
            slot,
            prefetched,
        }
    }

    /// Schedules each request budget's deployments against its write limit, then interleaves them all by
    /// deadline. Returns the order to run them in.
    fn schedule(&self, planned: &mut [Planned<'_>], now: OffsetDateTime) -> Vec<usize> {
        let group = |p: &Planned<'_>| {
            self.target(p.d)
                .budget()
                .map(|b| (b.group().to_owned(), b.write_limit(), b.window()))
        };
        let mut groups: Vec<_> = planned.iter().filter_map(group).collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        groups.dedup_by(|a, b| a.0 == b.0);
        let mut queue: Vec<usize> = (0..planned.len())
            .filter(|&i| group(&planned[i]).is_none())
            .collect();
        for (name, write_limit, window) in groups {
            let members: Vec<usize> = (0..planned.len())
                .filter(|&i| group(&planned[i]).is_some_and(|g| g.0 == name))
                .collect();
            let mut slots: Vec<Slot> = members.iter().map(|&i| planned[i].slot.clone()).collect();
            let order = plan::schedule(&mut slots, write_limit, window, now);
            for (k, slot) in slots.into_iter().enumerate() {
                planned[members[k]].slot = slot;
            }
            queue.extend(order.into_iter().map(|k| members[k]));
        }
        queue.sort_by_key(|&i| {
            planned[i]
                .slot
                .deadline
                .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        });
        queue
    }

    /// One deployment, in its own span; a panic is that deployment's failure, not the pass's.
    async fn run_one(
        &self,
        p: &mut Planned<'_>,
        force: bool,
        stop: &Shutdown,
    ) -> Result<Done, RenewError> {
        let (d, slot) = (p.d, &p.slot);
        if slot.at_risk {
            let group = self.target(d).budget().map_or("", |b| b.group());
            tracing::warn!(
                deployment = %d.id,
                expires = %p.record.expire.map_or("?".into(), day),
                "at risk: the vendor's write budget of [{group}] cannot renew every deployment of the key before \
                 its certificate expires; spread them over more API keys or renew some by hand",
            );
        }
        let span = tracing::info_span!("deployment", id = %d.id);
        tracing::Instrument::instrument(
            std::panic::AssertUnwindSafe(self.one(d, slot, p.prefetched.take(), force, stop))
                .catch_unwind(),
            span,
        )
        .await
        // Everything before the panic is persisted; the state of this deployment is read afresh next pass.
        .unwrap_or_else(|panic| Err(RenewError::Bug(panic_message(&*panic))))
    }

    /// Returns true if and only if the target of `d` has reads left beyond those kept for confirming this
    /// pass's pushes: [`CONFIRM_READS`] for each write its budget can still afford, up to one per deployment
    /// sharing it. A target without a budget always may.
    fn may_prefetch(&self, d: &Deployment) -> bool {
        let Some(budget) = self.target(d).budget() else {
            return true;
        };
        let members = self
            .config
            .deployments
            .iter()
            .filter(|o| {
                self.target(o)
                    .budget()
                    .is_some_and(|b| b.group() == budget.group())
            })
            .count();
        let pushes = budget
            .writes_left()
            .min(u32::try_from(members).unwrap_or(u32::MAX));
        budget.reads_left() > pushes.saturating_mul(CONFIRM_READS)
    }

    /// Best effort: the pass result is reported either way.
    fn record_outcome(&self, d: &Deployment, slot: &Slot, result: &Result<Done, RenewError>) {
        let now = OffsetDateTime::now_utc();
        let message = match result {
            Ok(done) => done.to_string(),
            Err(e) => e.to_string(),
        };
        let saved = self.state.record(&d.id).and_then(|mut r| {
            match result {
                Ok(_) => r.last_success = Some(now),
                // Stopped at a safe point: not a failure of the deployment.
                Err(RenewError::Interrupted(_)) => {}
                Err(_) => r.failures_total += 1,
            }
            // Stopped at a safe point is not a result: the previous one stands until the next pass.
            if !matches!(result, Err(RenewError::Interrupted(_))) {
                r.last = Some(Outcome {
                    at: now,
                    ok: result.is_ok(),
                    message: message.clone(),
                });
            }
            let plan = match result {
                Ok(Done::NotDue { plan, .. }) => *plan,
                Ok(Done::Renewed { .. }) => self.local_plan(d, &r, now),
                _ => slot.plan,
            };
            let next_inspect = r
                .last_inspect
                .map_or(now, |t| t + self.target(d).inspect_interval())
                .min(plan.renew_at.max(now));
            r.plan = Some(PlanRecord {
                renew_at: plan.renew_at,
                rule: plan.rule.to_string(),
                next_inspect,
                // A renewal that happened anyway is no longer at risk.
                at_risk: (slot.at_risk && !matches!(result, Ok(Done::Renewed { .. }))).then(|| {
                    "the vendor's write budget cannot renew it before it expires".to_owned()
                }),
            });
            self.state.save_record(&d.id, &r)?;
            Ok(r.expire)
        });
        let expires = match saved {
            Ok(expires) => expires,
            Err(e) => {
                tracing::warn!(deployment = %d.id, "cannot record the outcome: {e}");
                None
            }
        };
        self.events.emit(&Event::Outcome {
            id: d.id.clone(),
            ok: result.is_ok(),
            message,
            expires,
        });
    }
}
