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
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::FutureExt as _;
use secrecy::{ExposeSecret as _, SecretString};
use time::OffsetDateTime;

use crate::acme::{AcmeClient, AcmeError, OrderSpec};
use crate::budget::Budget;
use crate::certs::{self, Bundle, CertError};
use crate::config::{Config, Deployment, TlsType};
use crate::plan::{self, Plan, Rule, Slot};
use crate::shutdown::Shutdown;
use crate::solver::rfc2136::{Rfc2136Settings, Rfc2136Solver};
use crate::solver::{Dns01Solver, SolverFuture, TxtRecord};
use crate::store::{
    AriRecord, CertRecord, Outcome, PendingOrder, PlanRecord, Record, Step, Store, StoreError,
};
use crate::target::emqx::{EmqxClient, EmqxError, Status, TlsState, Upload};

/// Bounds on how soon to ask the CA for a renewal window again, whatever its Retry-After says.
const ARI_RECHECK_MIN: time::Duration = time::Duration::minutes(1);
const ARI_RECHECK_MAX: time::Duration = time::Duration::days(1);
/// Pushes in a row the vendor may accept without applying before certkeeper stops pushing the certificate
/// (each costs one of the vendor's writes and a whole `wait_timeout` of `GET`s); `renew --now` starts over.
pub const MAX_UNAPPLIED_PUSHES: u32 = 3;
/// `GET`s kept back from the prefetch for each push a pass may make: the one before a resumed push, and the
/// `pending` and `running` answers that confirm it.
pub const CONFIRM_READS: u32 = 3;
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
    /// The deployment's endpoint does not serve the pushed certificate.
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
    /// The CA was asked to finalize an order, and its certificate could not be fetched: the order is saved,
    /// and the next pass fetches its certificate instead of ordering another.
    #[error(
        "{0}; the finalized order is kept and the next pass fetches its certificate instead of ordering another"
    )]
    OrderKept(#[source] AcmeError),
    /// The vendor accepted a push and still runs the previous certificate after `wait_timeout`.
    #[error(
        "the vendor accepted the certificate but still runs the previous one after {waited:?} (push {pushes} of \
         at most {MAX_UNAPPLIED_PUSHES}) — {}",
        if *pushes >= MAX_UNAPPLIED_PUSHES {
            "certkeeper stops pushing it: check the deployment in the console, then run `certkeeper renew --now`"
        } else {
            "the next pass pushes the same certificate again"
        }
    )]
    NotApplied {
        /// How long the last push was waited for.
        waited: std::time::Duration,
        /// Pushes in a row the vendor accepted without applying.
        pushes: u32,
    },
    /// Due, and the vendor's budget cannot afford the renewal before the certificate's deadline.
    #[error(
        "cannot renew before the deadline {}: {why}, until {} — renew by hand, or free the API key's budget",
        day(*deadline),
        day(*until)
    )]
    DeferredPastDeadline {
        /// When the budget allows it again.
        until: OffsetDateTime,
        /// [`plan::DEADLINE_MARGIN`] before the certificate expires.
        deadline: OffsetDateTime,
        /// Why it is deferred.
        why: String,
    },
    /// The journal of published TXT records cannot be read; it is left in place.
    #[error(
        "{0} — it lists _acme-challenge TXT records an interrupted pass may have left in the zone: remove those of \
         this deployment's names by hand first"
    )]
    Journal(#[source] StoreError),
    /// A bug: the renewal of this deployment panicked. The others are not affected.
    #[error("internal error (a bug in certkeeper, please report it): {0}")]
    Bug(String),
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
        /// False when local state sufficed and the vendor was not asked.
        inspected: bool,
    },
    /// Due, but the vendor's request budget cannot afford it now; the next pass after `until` does it.
    Deferred {
        /// When the budget allows it again.
        until: OffsetDateTime,
        /// Why.
        why: String,
    },
    /// `--dry-run`: what would have happened.
    DryRun(String),
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
            Done::NotDue {
                expires,
                plan,
                inspected,
            } => write!(
                f,
                "not due: expires {}, renewal planned {} ({}){}",
                day(*expires),
                day(plan.renew_at),
                plan.rule,
                if *inspected {
                    ""
                } else {
                    " [from local state, no API request]"
                }
            ),
            Done::Deferred { until, why } => write!(f, "deferred until {}: {why}", day(*until)),
            Done::DryRun(what) => write!(f, "dry run: {what}"),
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

/// A vendor answer obtained before scheduling, handed to the renewal so it is not asked twice.
type Prefetched = Option<Result<TlsState, EmqxError>>;

/// Holds the clients a pass needs; build one per config load.
pub struct Agent {
    config: Config,
    store: Store,
    budget: Arc<Budget>,
    emqx: BTreeMap<String, EmqxClient>,
    solvers: BTreeMap<String, Rfc2136Solver>,
    acme: tokio::sync::OnceCell<AcmeClient>,
    staging: tokio::sync::OnceCell<AcmeClient>,
    dry_run: bool,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("state_dir", &self.store.dir())
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// The budget left of one `[emqx.*]` account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLeft {
    /// `GET`s left in the current window.
    pub reads: u32,
    /// Writes left in the current window.
    pub writes: u32,
}

impl Agent {
    /// Prepares clients for every configured account and solver. No network traffic happens here; the ACME
    /// account is only contacted when a deployment needs the CA.
    ///
    /// # Errors
    /// The budget file cannot be read, or an HTTP client cannot be built.
    pub fn new(config: Config, store: Store) -> Result<Agent, RenewError> {
        let budget = Arc::new(Budget::load(&store)?);
        let http = crate::target::emqx::vendor_http()
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
            budget,
            emqx,
            solvers,
            acme: tokio::sync::OnceCell::new(),
            staging: tokio::sync::OnceCell::new(),
            dry_run: false,
        })
    }

    /// In a dry run the agent inspects and plans (and issues against `[acme] staging_directory` when set)
    /// but never writes to the vendor API, and records nothing about deployments.
    pub fn with_dry_run(mut self, dry_run: bool) -> Agent {
        self.dry_run = dry_run;
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The request budget left of the `[emqx.NAME]` account.
    pub fn budget_left(&self, name: &str) -> Option<BudgetLeft> {
        let client = self.emqx.get(name)?;
        Some(BudgetLeft {
            reads: client.reads_left(),
            writes: client.writes_left(),
        })
    }

    /// Runs one pass over the deployments whose ids are in `only` (all when empty); `force` renews even
    /// those not due. Deployments are handled earliest deadline first, so a scarce write budget goes to
    /// the certificate that expires first. Returns one report per deployment handled; when `stop` fires,
    /// deployments not yet started are left for the next pass and get no report.
    pub async fn pass(&self, only: &[String], force: bool, stop: &Shutdown) -> Vec<Report> {
        // A long-lived agent (the daemon) must see what other processes spent since its last pass.
        if let Err(e) = self.budget.reload() {
            tracing::warn!("cannot re-read the request budget, using the one in memory: {e}");
        }
        for client in self.emqx.values() {
            client.begin_pass();
        }
        let now = OffsetDateTime::now_utc();
        let selected: Vec<&Deployment> = self
            .config
            .deployments
            .iter()
            .filter(|d| only.is_empty() || only.contains(&d.id))
            .collect();
        let mut reports = Vec::new();
        let mut loaded: Vec<(&Deployment, Record)> = Vec::new();
        for d in selected {
            match self.store.record(&d.id) {
                Ok(record) => loaded.push((d, record)),
                Err(e) => reports.push(Report {
                    id: d.id.clone(),
                    result: Err(e.into()),
                }),
            }
        }
        // With fewer GETs than deployments, the prefetch goes to the most urgent by last known expiry (unknown
        // first), and stops short of the GETs this pass's pushes need to be confirmed.
        loaded.sort_by_key(|(_, r)| r.expire.unwrap_or(OffsetDateTime::UNIX_EPOCH));
        let mut planned: Vec<(&Deployment, Record, Slot, Prefetched)> = Vec::new();
        for (d, mut record) in loaded {
            // Learn what local state does not know before scheduling, so that the write budget goes to the
            // earliest real deadlines even on a first pass. The answer is reused by the renewal.
            let mut prefetched = None;
            let resuming = matches!(record.step, Some(Step::Issued | Step::Pushed));
            if !resuming
                && !stop.is_stopping()
                && (force || !self.inspection_fresh(d, &record, now))
                && self.may_prefetch(d)
            {
                let answer = self.emqx[&d.emqx].inspect(&d.id).await;
                if let Ok(state) = &answer {
                    record.expire = state.expire;
                }
                prefetched = Some(answer);
            }
            let slot = Slot {
                plan: self.local_plan(d, &record, now),
                deadline: record.expire.map(|e| e - plan::DEADLINE_MARGIN),
                at_risk: false,
            };
            planned.push((d, record, slot, prefetched));
        }
        // Schedule each API key's deployments against its write budget, then interleave keys by deadline.
        let mut queue: Vec<usize> = Vec::new();
        for (name, emqx) in &self.config.emqx {
            let members: Vec<usize> = (0..planned.len())
                .filter(|&i| planned[i].0.emqx == *name)
                .collect();
            let mut slots: Vec<Slot> = members.iter().map(|&i| planned[i].2.clone()).collect();
            let order = plan::schedule(&mut slots, emqx.write_limit, emqx.rate_window, now);
            for (k, slot) in slots.into_iter().enumerate() {
                planned[members[k]].2 = slot;
            }
            queue.extend(order.into_iter().map(|k| members[k]));
        }
        queue.sort_by_key(|&i| planned[i].2.deadline.unwrap_or(OffsetDateTime::UNIX_EPOCH));

        for i in queue {
            let (d, record, slot, prefetched) = &mut planned[i];
            let (d, record, slot) = (*d, &*record, &*slot);
            if stop.is_stopping() {
                tracing::info!("stopping: leaving the remaining deployments for the next pass");
                break;
            }
            if slot.at_risk {
                tracing::warn!(
                    deployment = %d.id,
                    expires = %record.expire.map_or("?".into(), day),
                    "at risk: the vendor's write budget of [emqx.{}] cannot renew every deployment of the key before \
                     its certificate expires; spread them over more API keys or renew some by hand",
                    d.emqx
                );
            }
            let span = tracing::info_span!("deployment", id = %d.id);
            let result = tracing::Instrument::instrument(
                std::panic::AssertUnwindSafe(self.one(d, slot, prefetched.take(), force, stop))
                    .catch_unwind(),
                span,
            )
            .await
            // Everything before the panic is persisted; the state of this deployment is read afresh next pass.
            .unwrap_or_else(|panic| Err(RenewError::Bug(panic_message(&*panic))));
            if !self.dry_run {
                self.record_outcome(d, slot, &result);
            }
            reports.push(Report {
                id: d.id.clone(),
                result,
            });
        }
        reports
    }

    /// Returns true if and only if the API key of `d` has GETs left beyond those kept for confirming this
    /// pass's pushes: [`CONFIRM_READS`] for each write the key can still afford, up to one per deployment.
    fn may_prefetch(&self, d: &Deployment) -> bool {
        let emqx = &self.emqx[&d.emqx];
        let members = self
            .config
            .deployments
            .iter()
            .filter(|o| o.emqx == d.emqx)
            .count();
        let pushes = emqx
            .writes_left()
            .min(u32::try_from(members).unwrap_or(u32::MAX));
        emqx.reads_left() > pushes.saturating_mul(CONFIRM_READS)
    }

    /// Best effort: the pass result is reported either way.
    fn record_outcome(&self, d: &Deployment, slot: &Slot, result: &Result<Done, RenewError>) {
        let now = OffsetDateTime::now_utc();
        let saved = self.store.record(&d.id).and_then(|mut r| {
            r.last = Some(Outcome {
                at: now,
                ok: result.is_ok(),
                message: match result {
                    Ok(done) => done.to_string(),
                    Err(e) => e.to_string(),
                },
            });
            let plan = match result {
                Ok(Done::NotDue { plan, .. }) => *plan,
                Ok(Done::Renewed { .. }) => self.local_plan(d, &r, now),
                _ => slot.plan,
            };
            let inspect_interval = self.config.emqx[&d.emqx].inspect_interval;
            let next_inspect = r
                .last_inspect
                .map_or(now, |t| t + inspect_interval)
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
            self.store.save_record(&d.id, &r)
        });
        if let Err(e) = saved {
            tracing::warn!(deployment = %d.id, "cannot record the outcome: {e}");
        }
    }

    /// The certificate the agent made active, when the vendor still runs it.
    fn active_cert<'r>(&self, record: &'r Record) -> Option<&'r CertRecord> {
        record
            .cert
            .as_ref()
            .filter(|_| matches!(record.step, Some(Step::Active | Step::Verified)))
    }

    /// Returns true if and only if local state alone may decide: certkeeper pushed the running certificate,
    /// asked the vendor within `inspect_interval`, and renewal is not due.
    fn inspection_fresh(&self, d: &Deployment, record: &Record, now: OffsetDateTime) -> bool {
        let interval = self.config.emqx[&d.emqx].inspect_interval;
        self.active_cert(record).is_some()
            && record.last_inspect.is_some_and(|t| now - t < interval)
            && !self.local_plan(d, record, now).is_due(now)
    }

    /// The plan from local knowledge alone (no request).
    fn local_plan(&self, d: &Deployment, record: &Record, now: OffsetDateTime) -> Plan {
        let ari = record.ari.as_ref().map(|a| a.chosen);
        plan::plan(
            record.expire,
            self.active_cert(record).or(record.served.as_ref()),
            d.renew_before,
            ari,
            now,
        )
    }

    async fn acme(&self) -> Result<&AcmeClient, RenewError> {
        Ok(self.client(&self.acme, &self.config.acme.directory).await?)
    }

    /// The ACME client of `directory` kept in `cell`, connected (account loaded or created) on first use.
    async fn client<'c>(
        &'c self,
        cell: &'c tokio::sync::OnceCell<AcmeClient>,
        directory: &str,
    ) -> Result<&'c AcmeClient, AcmeError> {
        cell.get_or_try_init(|| AcmeClient::connect(&self.config.acme, directory, &self.store))
            .await
    }

    /// The deployment's DNS-01 solver, journaling what it publishes.
    fn journaled<'a>(&'a self, d: &'a Deployment) -> JournaledSolver<'a> {
        JournaledSolver {
            inner: &self.solvers[&d.dns],
            store: &self.store,
            id: &d.id,
        }
    }

    async fn one(
        &self,
        d: &Deployment,
        slot: &Slot,
        prefetched: Prefetched,
        force: bool,
        stop: &Shutdown,
    ) -> Result<Done, RenewError> {
        match self.renew(d, slot, prefetched, force, stop).await {
            // The budget is a reason to wait, not a failure: the renewal resumes from the persisted step.
            Err(RenewError::Emqx(EmqxError::Budget(e))) => defer(slot, e.until, e.to_string()),
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
        let emqx = &self.emqx[&d.emqx];
        let mut record = self.store.record(&d.id)?;
        let now = OffsetDateTime::now_utc();

        // Resume a certificate an earlier pass issued or pushed but did not see running.
        if record.step == Some(Step::Pushed) {
            if self.dry_run {
                return Ok(Done::DryRun(
                    "would resume waiting for the pushed certificate to run".into(),
                ));
            }
            if !force {
                tracing::info!("resuming: waiting for the certificate pushed by an earlier pass");
                return self.wait_and_record(d, emqx, &mut record, stop).await;
            }
            // `--now` overrides the wait: the vendor is asked once below, and the bundle pushed again unless
            // it already runs it.
            tracing::info!(
                "--now: checking the certificate pushed by an earlier pass instead of waiting"
            );
            record.step = Some(Step::Issued);
            self.store.save_record(&d.id, &record)?;
        }
        if record.step == Some(Step::Active) && d.endpoint.is_some() && !self.dry_run {
            tracing::info!(
                "resuming: checking the endpoint serves the certificate made active by an earlier pass"
            );
            if let Err(e) = self.verify_endpoint(d, &mut record).await {
                // An endpoint that never shows the certificate must not block a renewal that is due.
                if !self.local_plan(d, &record, now).is_due(now) && !force {
                    return Err(e);
                }
                tracing::warn!("{e}; renewing anyway because renewal is due");
            }
        }
        // An order an earlier process was finalizing: its certificate may exist at the CA; fetch it rather than
        // order another. TXT records a killed process left are removed first.
        if !self.dry_run {
            self.journaled(d)
                .clean_leftovers()
                .await
                .map_err(RenewError::Journal)?;
            if self.store.bundle(&d.id)?.is_some() {
                self.store.remove_pending_order(&d.id)?;
            } else if let Some(pending) = self.store.pending_order(&d.id)? {
                tracing::info!(order = %pending.url, "resuming: fetching the certificate of the order an earlier pass finalized");
                match self
                    .acme()
                    .await?
                    .resume(&pending.url, &pending.key_pkcs8_pem, &d.domains)
                    .await
                {
                    Ok(bundle) => {
                        self.store.save_bundle(&d.id, &bundle)?;
                        self.store.remove_pending_order(&d.id)?;
                    }
                    Err(e) if e.is_transient() => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!(
                            "the saved order gives no certificate ({e}); ordering a new one"
                        );
                        self.store.remove_pending_order(&d.id)?;
                    }
                }
            }
        }
        // A saved bundle is the certificate in flight, whatever the record says: a crash may have come between
        // saving the bundle and recording the step, and issuing again would waste a certificate.
        if let Some(bundle) = self.store.bundle(&d.id)? {
            match self.check_pushable(d, &bundle, now) {
                Ok(_) if self.dry_run => {
                    return Ok(Done::DryRun(
                        "would push the certificate issued by an earlier pass".into(),
                    ));
                }
                // Already active: a crash came between recording that and removing the bundle.
                Ok(info)
                    if self
                        .active_cert(&record)
                        .is_some_and(|c| c.serial == info.serial) =>
                {
                    self.store.remove_bundle(&d.id)?;
                }
                Ok(info) => {
                    tracing::info!("resuming: pushing the certificate issued by an earlier pass");
                    // Ask the vendor first: an earlier push may have been accepted without being recorded, and
                    // whether the deployment has a certificate decides between POST and PUT.
                    let state = emqx.inspect(&d.id).await?;
                    let shown = self.vendor_shows(d, &record, &state, &info).await;
                    record.tls_type = state.tls_type.clone().or(record.tls_type.take());
                    record.step = Some(Step::Issued);
                    record.cert = Some(cert_record(&bundle, info.clone(), d));
                    record.create = state.expire.is_none();
                    if shown {
                        tracing::info!(
                            "the vendor already has this certificate: waiting for it to run"
                        );
                        record.create = false;
                        record.step = Some(Step::Pushed);
                        self.store.save_record(&d.id, &record)?;
                        return self.wait_and_record(d, emqx, &mut record, stop).await;
                    }
                    if force {
                        record.unapplied_pushes = 0;
                    } else if record.unapplied_pushes >= MAX_UNAPPLIED_PUSHES {
                        return Err(RenewError::NotApplied {
                            waited: self.config.emqx[&d.emqx].wait_timeout,
                            pushes: record.unapplied_pushes,
                        });
                    }
                    self.store.save_record(&d.id, &record)?;
                    let tls_type = self.tls_type(d, record.tls_type.as_deref())?;
                    return self
                        .push(d, emqx, &mut record, &bundle, tls_type, stop)
                        .await;
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
                    if !self.dry_run {
                        self.store.remove_bundle(&d.id)?;
                    }
                }
            }
        }
        if record.step == Some(Step::Issued) && !self.dry_run {
            record.step = None;
            self.store.save_record(&d.id, &record)?;
        }

        if let Err(e) = self.refresh_ari(&mut record, now).await {
            tracing::warn!("cannot refresh the CA's renewal window, planning without it: {e}");
        }
        let earlier = |p: Plan| {
            if slot.plan.rule == Rule::Budget && slot.plan.renew_at < p.renew_at {
                slot.plan
            } else {
                p
            }
        };
        let local = earlier(self.local_plan(d, &record, now));
        if !force
            && prefetched.is_none()
            && !local.is_due(now)
            && self.inspection_fresh(d, &record, now)
        {
            let expires = record.expire.unwrap_or(now);
            tracing::info!(renew_at = %day(local.renew_at), rule = %local.rule, "not due (local state is fresh; no API request)");
            if !self.dry_run {
                self.store.save_record(&d.id, &record)?;
            }
            return Ok(Done::NotDue {
                expires,
                plan: local,
                inspected: false,
            });
        }

        let state = match prefetched {
            Some(answer) => answer?,
            None => emqx.inspect(&d.id).await?,
        };
        if self.active_cert(&record).is_some_and(|c| {
            state
                .expire
                .is_none_or(|e| (e - c.not_after).abs() > plan::SAME_CERT_TOLERANCE)
        }) {
            tracing::warn!(
                "the deployment no longer runs the certificate certkeeper pushed; planning from what it runs now"
            );
            record.step = None;
            record.ari = None;
        }
        record.expire = state.expire;
        record.tls_type = state.tls_type.clone();
        record.last_inspect = Some(OffsetDateTime::now_utc());
        if self.active_cert(&record).is_none() {
            record.served = self.learn_served(d, state.expire).await;
        }
        if !self.dry_run {
            self.store.save_record(&d.id, &record)?;
        }
        let plan = earlier(self.local_plan(d, &record, now));
        if !force && !plan.is_due(now) {
            let expires = state.expire.unwrap_or(now);
            tracing::info!(expires = %day(expires), renew_at = %day(plan.renew_at), rule = %plan.rule, "not due");
            return Ok(Done::NotDue {
                expires,
                plan,
                inspected: true,
            });
        }

        // Fail before spending an ACME order on anything that would make the push fail.
        let tls_type = self.tls_type(d, state.tls_type.as_deref())?;
        if stop.is_stopping() {
            return Err(RenewError::Interrupted("ordering a certificate"));
        }
        if emqx.writes_left() == 0 {
            let why = format!(
                "no write left in the vendor budget of [emqx.{}] to push a new certificate",
                d.emqx
            );
            return defer(slot, emqx.next_write_at(), why);
        }
        let create = state.expire.is_none();
        if self.dry_run {
            return self.dry_run_issue(d, plan, tls_type, create).await;
        }
        tracing::info!(rule = %plan.rule, forced = force, "renewal due; ordering a certificate");
        let replaces = record
            .ari
            .as_ref()
            .and(self.active_cert(&record))
            .and_then(|c| c.leaf_pem.clone());
        let bundle = self.issue(d, replaces.as_deref(), true).await?;
        // Saved before any check: an issued certificate is never thrown away, whatever the checks say.
        self.store.save_bundle(&d.id, &bundle)?;
        self.store.remove_pending_order(&d.id)?;
        fail::fail_point!("issued-saved");
        let leaf = certs::parse_pem_certs(bundle.chain_pem.as_bytes())?
            .into_iter()
            .next()
            .ok_or_else(|| CertError::Invalid("the CA sent no certificate".into()))?;
        record.step = Some(Step::Issued);
        record.create = create;
        record.ari = None;
        record.ari_next_check = None;
        record.cert = Some(cert_record(&bundle, certs::leaf_info(&leaf)?, d));
        self.store.save_record(&d.id, &record)?;
        // A bundle that fails here stays saved; the next pass decides whether it can still be pushed.
        self.check_pushable(d, &bundle, OffsetDateTime::now_utc())?;
        fail::fail_point!("issued-recorded");
        self.push(d, emqx, &mut record, &bundle, tls_type, stop)
            .await
    }

    /// Returns true if and only if the vendor is shown to have the saved bundle `info` already (an earlier push
    /// was accepted but not recorded), so that it is waited for rather than pushed again.
    ///
    /// Only a certificate the vendor is applying or runs counts: one it reports in an unknown status (e.g.
    /// "failed") is pushed again. `expire` alone decides only when it tells the bundle from the certificate
    /// the deployment ran before; when both expire within [`plan::SAME_CERT_TOLERANCE`] (a forced re-issue
    /// the same day), the endpoint's serial decides, and without an endpoint the bundle is pushed again — a
    /// second PUT of the same bundle is harmless, recording a certificate the vendor does not serve is not.
    async fn vendor_shows(
        &self,
        d: &Deployment,
        record: &Record,
        state: &TlsState,
        info: &certs::LeafInfo,
    ) -> bool {
        let close = |t: OffsetDateTime| (t - info.not_after).abs() <= plan::SAME_CERT_TOLERANCE;
        let applying = matches!(state.status, Status::Running | Status::Pending);
        if !applying || !state.expire.is_some_and(close) {
            return false;
        }
        let mut before = record
            .expire
            .into_iter()
            .chain(self.active_cert(record).map(|c| c.not_after));
        if !before.any(close) {
            return true;
        }
        let Some(endpoint) = d.endpoint.as_deref() else {
            tracing::info!(
                "the vendor's expiry cannot tell the saved certificate from the one it ran before; pushing it \
                 again to be sure"
            );
            return false;
        };
        match crate::verify::served_leaf(endpoint, &sni(d)).await {
            Ok(served) if served.serial == info.serial => true,
            Ok(served) => {
                tracing::info!(
                    served = %served.serial,
                    saved = %info.serial,
                    "the endpoint serves another certificate than the saved one; pushing it again"
                );
                false
            }
            Err(e) => {
                tracing::info!(
                    endpoint,
                    "cannot read the served certificate ({e}); pushing the saved one again"
                );
                false
            }
        }
    }

    /// Asks the CA for its renewal window of the active certificate when the last answer has expired, and
    /// picks a moment uniformly at random inside a new window.
    async fn refresh_ari(
        &self,
        record: &mut Record,
        now: OffsetDateTime,
    ) -> Result<(), RenewError> {
        let Some(cert) = self.active_cert(record).cloned() else {
            return Ok(());
        };
        let Some(leaf) = cert.leaf_pem.as_deref() else {
            return Ok(());
        };
        let fresh = record.ari_next_check.is_some_and(|t| t > now)
            && record.ari.as_ref().is_none_or(|a| a.serial == cert.serial);
        if fresh {
            return Ok(());
        }
        let acme = self.acme().await?;
        match acme.renewal_window(leaf).await? {
            None => {
                record.ari = None;
                record.ari_next_check = Some(now + ARI_RECHECK_MAX);
            }
            Some((start, end, retry)) => {
                let same = record
                    .ari
                    .as_ref()
                    .filter(|a| a.serial == cert.serial && a.start == start && a.end == end);
                let chosen = match same {
                    Some(a) => a.chosen,
                    None => {
                        let span = (end - start).max(time::Duration::ZERO);
                        start + span * rand::random::<f64>()
                    }
                };
                tracing::info!(start = %day(start), end = %day(end), chosen = %day(chosen), "the CA's renewal window (ARI)");
                record.ari = Some(AriRecord {
                    serial: cert.serial.clone(),
                    start,
                    end,
                    chosen,
                });
                let retry = time::Duration::try_from(retry).unwrap_or(ARI_RECHECK_MAX);
                record.ari_next_check = Some(now + retry.clamp(ARI_RECHECK_MIN, ARI_RECHECK_MAX));
            }
        }
        Ok(())
    }

    async fn dry_run_issue(
        &self,
        d: &Deployment,
        plan: Plan,
        tls_type: TlsType,
        create: bool,
    ) -> Result<Done, RenewError> {
        let method = if create { "POST" } else { "PUT" };
        let Some(staging) = &self.config.acme.staging_directory else {
            return Ok(Done::DryRun(format!(
                "due ({}): would order a certificate for {} from {} and {method} it ({tls_type}); set [acme] \
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
             {method} it ({tls_type})",
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

    async fn issue(
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
                if resuming && let Some(pending) = self.store.pending_order(&d.id)? {
                    return acme
                        .resume(&pending.url, &pending.key_pkcs8_pem, &d.domains)
                        .await;
                }
                solver.preflight(&owners).await?;
                // Renewals persist the order before finalization; dry runs and `issue` keep nothing.
                let save = |url: &str, key: &SecretString| {
                    if persist {
                        self.store.save_pending_order(
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
            (TlsType::TwoWay, Some(path)) => Some(
                crate::config::read_bounded(path)
                    .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
                    .map_err(|e| {
                        RenewError::Config(format!(
                            "cannot read client_ca_file {}: {e}",
                            path.display()
                        ))
                    })?,
            ),
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
        fail::fail_point!("push-accepted");
        // From now on the deployment has a certificate: any further push of this one is a PUT.
        record.create = false;
        record.step = Some(Step::Pushed);
        self.store.save_record(&d.id, record)?;
        fail::fail_point!("pushed-recorded");
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
        let waited = tokio::select! {
            state = emqx.wait_active(&d.id, record.cert.as_ref().map(|c| c.not_after)) => state,
            () = stop.wait() => return Err(RenewError::Interrupted("the vendor reported running")),
        };
        let state: TlsState = match waited {
            Err(e @ EmqxError::NotApplied { .. }) => {
                // The bundle is still saved: step back so the next pass pushes the same certificate again.
                record.step = Some(Step::Issued);
                self.store.save_record(&d.id, record)?;
                return Err(e.into());
            }
            // Still running the previous certificate after the whole wait: the vendor accepted the write and
            // did not apply it (or never saw it). Waiting again would not help; pushing the same bundle does.
            Err(EmqxError::WaitTimeout {
                status: Status::Running,
                waited,
            }) => {
                record.step = Some(Step::Issued);
                record.unapplied_pushes = record.unapplied_pushes.saturating_add(1);
                self.store.save_record(&d.id, record)?;
                return Err(RenewError::NotApplied {
                    waited,
                    pushes: record.unapplied_pushes,
                });
            }
            other => other?,
        };
        let cert = record.cert.clone().ok_or_else(|| {
            RenewError::Config("the record of the pushed certificate is missing".into())
        })?;
        // wait_active only accepts `running` with the pushed certificate's expiry; without one it cannot tell.
        if state.expire.is_none() {
            tracing::warn!(
                "EMQX reports running without an expiry; cannot confirm it runs the pushed certificate"
            );
        }
        // The bundle goes first: a crash in between leaves step `pushed` and the next pass only waits.
        self.store.remove_bundle(&d.id)?;
        record.step = Some(Step::Active);
        record.expire = Some(cert.not_after);
        record.create = false;
        record.unapplied_pushes = 0;
        self.store.save_record(&d.id, record)?;
        fail::fail_point!("active-recorded");
        tracing::info!(serial = %cert.serial, expires = %day(cert.not_after), "certificate running");
        self.verify_endpoint(d, record).await?;
        Ok(Done::Renewed {
            expires: cert.not_after,
            serial: cert.serial,
        })
    }

    /// With `endpoint` configured: waits until it serves the active certificate, then records `verified`.
    async fn verify_endpoint(&self, d: &Deployment, record: &mut Record) -> Result<(), RenewError> {
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
        record.step = Some(Step::Verified);
        self.store.save_record(&d.id, record)?;
        tracing::info!(endpoint, serial = %cert.serial, "the endpoint serves the new certificate");
        Ok(())
    }

    /// Returns true if and only if a saved bundle that fails the push checks may still become pushable as it
    /// is: not yet valid (clock skew), or failing only a vendor rule the operator can relax. An expired one, one
    /// for other names, or one with another key type than configured is not.
    fn worth_keeping(&self, d: &Deployment, bundle: &Bundle, now: OffsetDateTime) -> bool {
        let Some(info) = certs::parse_pem_certs(bundle.chain_pem.as_bytes())
            .ok()
            .and_then(|ders| ders.first().and_then(|der| certs::leaf_info(der).ok()))
        else {
            return false;
        };
        if now < info.not_before {
            return true;
        }
        certs::validate(bundle, &d.domains, now).is_ok()
            && certs::key_type(bundle).is_some_and(|k| k == self.config.acme.key_type)
    }

    /// With `endpoint` configured, reads the certificate the deployment serves from a handshake: when it is the
    /// one `expire` describes, its lifetime is known and the lifetime rule can plan its renewal.
    async fn learn_served(
        &self,
        d: &Deployment,
        expire: Option<OffsetDateTime>,
    ) -> Option<CertRecord> {
        let (endpoint, expire) = (d.endpoint.as_deref()?, expire?);
        match crate::verify::served_leaf(endpoint, &sni(d)).await {
            Ok(served) if (served.not_after - expire).abs() <= plan::SAME_CERT_TOLERANCE => {
                Some(CertRecord {
                    serial: served.serial,
                    not_before: served.not_before,
                    not_after: served.not_after,
                    domains: Vec::new(),
                    leaf_pem: None,
                })
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(endpoint, "cannot read the served certificate: {e}");
                None
            }
        }
    }

    /// Checks that go beyond a well-formed bundle: what the vendor will accept.
    fn check_pushable(
        &self,
        d: &Deployment,
        bundle: &Bundle,
        now: OffsetDateTime,
    ) -> Result<certs::LeafInfo, RenewError> {
        let info = certs::validate(bundle, &d.domains, now)?;
        let emqx = &self.config.emqx[&d.emqx];
        let left = info.not_after - now;
        if left < time::Duration::try_from(emqx.import_minimum).unwrap_or(time::Duration::MAX) {
            return Err(CertError::Invalid(format!(
                "the certificate has {} days left, less than the vendor's import minimum of {} days — a CA with \
                 shorter lifetimes cannot serve EMQX; lower [emqx.{}] import_minimum only if your plan accepts it",
                left.whole_days(),
                emqx.import_minimum.as_secs() / 86400,
                d.emqx
            ))
            .into());
        }
        if let Err(e) = certs::check_issuer_key_match(bundle) {
            match emqx.issuer_key_match {
                crate::config::IssuerKeyMatch::Enforce => return Err(e.into()),
                crate::config::IssuerKeyMatch::Warn => {
                    tracing::warn!("{e}; EMQX's docs require them to match")
                }
            }
        }
        Ok(info)
    }
}

/// A renewal the vendor's budget cannot afford before `until`: deferred, which is no failure — unless `until`
/// lies past the deployment's deadline, when waiting would let the certificate expire.
fn defer(slot: &Slot, until: OffsetDateTime, why: String) -> Result<Done, RenewError> {
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

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// SNI for the endpoint check: `endpoint_sni`, else the first non-wildcard name, else the wildcard's base.
fn sni(d: &Deployment) -> String {
    d.endpoint_sni.clone().unwrap_or_else(|| {
        d.domains
            .iter()
            .find(|n| !n.starts_with("*."))
            .cloned()
            .unwrap_or_else(|| d.domains[0].trim_start_matches("*.").to_owned())
    })
}

fn cert_record(bundle: &Bundle, info: certs::LeafInfo, d: &Deployment) -> CertRecord {
    CertRecord {
        serial: info.serial,
        not_before: info.not_before,
        not_after: info.not_after,
        domains: d.domains.clone(),
        leaf_pem: leaf_pem(&bundle.chain_pem),
    }
}

/// The first certificate (the leaf) of a PEM chain.
fn leaf_pem(chain: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let end = chain.find(END)? + END.len();
    Some(format!("{}\n", chain[..end].trim_start()))
}

/// How many orders one renewal may place when the CA or DNS fail transiently (each a new order, never a
/// second certificate: failures after finalization are retried on the same order inside [`AcmeClient::issue`]).
pub const ACME_ATTEMPTS: u32 = 4;

/// Keeps a journal of the TXT records published for one deployment (`deployments/ID.txt.json`), so that a
/// process killed between publishing and removing them leaves the next pass a list to clean up.
struct JournaledSolver<'a> {
    inner: &'a Rfc2136Solver,
    store: &'a Store,
    id: &'a str,
}

impl JournaledSolver<'_> {
    fn journal(&self) -> String {
        format!("deployments/{}.txt.json", self.id)
    }

    fn edit(&self, record: &TxtRecord, add: bool) -> Result<(), crate::solver::SolverError> {
        let entry = (record.fqdn.clone(), record.value.clone());
        let mut entries: Vec<(String, String)> = match self.store.read_json(&self.journal()) {
            Ok(entries) => entries.unwrap_or_default(),
            // A journal that cannot be read is kept as it is for the operator: overwriting it would forget the
            // records it lists. The pass fails on it before publishing (see `clean_leftovers`).
            Err(e) => {
                tracing::warn!("cannot journal the TXT record {}: {e}", record.fqdn);
                return Ok(());
            }
        };
        entries.retain(|e| *e != entry);
        if add {
            entries.push(entry);
        }
        let saved = if entries.is_empty() {
            self.store.remove_file(&self.journal())
        } else {
            self.store.write_json(&self.journal(), &entries)
        };
        // Journaling is best effort: it must not stop a renewal; the record is still removed in this pass.
        if let Err(e) = saved {
            tracing::warn!("cannot journal the TXT record {}: {e}", record.fqdn);
        }
        Ok(())
    }

    /// Removes records a killed process left behind.
    ///
    /// # Errors
    /// The journal cannot be read: it is left in place, and the records it lists may still be in the zone.
    async fn clean_leftovers(&self) -> Result<(), StoreError> {
        let entries: Vec<(String, String)> =
            self.store.read_json(&self.journal())?.unwrap_or_default();
        for (fqdn, value) in entries {
            let record = TxtRecord { fqdn, value };
            tracing::info!(owner = %record.fqdn, "removing a TXT record an interrupted pass left");
            if self.inner.cleanup(&record).await.is_ok() {
                let _ = self.edit(&record, false);
            }
        }
        Ok(())
    }
}

impl Dns01Solver for JournaledSolver<'_> {
    fn present<'a>(&'a self, record: &'a TxtRecord) -> SolverFuture<'a> {
        Box::pin(async move {
            self.edit(record, true)?;
            self.inner.present(record).await
        })
    }

    fn cleanup<'a>(&'a self, record: &'a TxtRecord) -> SolverFuture<'a> {
        Box::pin(async move {
            self.inner.cleanup(record).await?;
            self.edit(record, false)
        })
    }

    fn preflight<'a>(&'a self, owners: &'a [String]) -> SolverFuture<'a> {
        self.inner.preflight(owners)
    }
}
