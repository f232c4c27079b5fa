//! One renewal pass: for each selected deployment, inspect → plan → issue → validate → deploy → wait →
//! record, resuming from the step persisted by an earlier pass.
//!
//! The order of persistence is the point of this module. The issued bundle is saved (0600) *before* the
//! push, and the step after each target answer, so that a crash or a failed push is retried with the same
//! certificate instead of issuing again: Let's Encrypt allows five certificates per name set per week, and
//! wasting them is an outage. Deployments are handled one after another: those behind one vendor key share
//! its budget of six writes an hour, and a failure of one never stops the others.
//!
//! - [`pass`]: select, prefetch, schedule per request budget, run each deployment, record the outcome.
//! - [`steps`]: one function per persisted step; [`Pipeline::persist`] is the one place a step is saved and
//!   its [`Event`] emitted.
//! - [`issue`]: ordering from the CA (and the dry run's trial issuance); [`ari`]: the CA's renewal window.
//! - [`fallback`]: the issuers a deployment may use (decided before ordering) and ordering from them in turn;
//!   [`online`]: `check --online`.
//! - [`events`]: what metrics and notifications subscribe to.
//!
//! A dry run is not a mode of this code: the targets are wrapped in [`DryRun`] and the state in
//! [`ReadOnly`], so every write stops there. Two choices remain a dry run's own: it issues against the
//! staging CA, and it does not clean up after an interrupted pass (that would change DNS and the CA's order).

mod ari;
mod checks;
mod error;
mod events;
mod fallback;
mod issue;
mod online;
mod pass;
mod steps;
#[cfg(test)]
mod tests;
mod turns;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use time::OffsetDateTime;

pub use error::{BudgetLeft, Done, RenewError, Report, day};
pub use events::{Event, EventSink};
pub use online::Check;

use crate::acme::{AcmeClient, AcmeError};
use crate::budget::Budget;
use crate::certs::{self, Bundle};
use crate::config::{Config, Deployment, Issuer, TargetConfig};
use crate::deploy::emqx::client::{EmqxClient, vendor_http};
use crate::deploy::emqx::{Account, EmqxTarget};
use crate::deploy::files::FilesTarget;
use crate::deploy::{DryRun, Target};
use crate::plan::{self, Plan};
use crate::solver::Dns01Solver;
use crate::solver::journal::JournaledSolver;
use crate::state::{CertRecord, Record, Step};
use crate::state::{ReadOnly, StateStore};

/// Pushes in a row a target may accept without applying before certkeeper stops pushing the certificate
/// (each costs one of the vendor's writes and a whole `wait_timeout` of `GET`s); `renew --now` starts over.
pub const MAX_UNAPPLIED_PUSHES: u32 = 3;
/// `GET`s kept back from the prefetch for each push a pass may make: the one before a resumed push, and the
/// `pending` and `running` answers that confirm it.
pub const CONFIRM_READS: u32 = 3;
/// How many orders one renewal may place when the CA or DNS fail transiently (each a new order, never a
/// second certificate: once finalization was requested, the same order is resumed instead).
pub const ACME_ATTEMPTS: u32 = 4;

/// Holds the targets, solvers and CA clients a pass needs; build one per config load.
pub struct Pipeline {
    config: Config,
    state: Arc<dyn StateStore>,
    budget: Arc<Budget>,
    accounts: BTreeMap<String, Arc<Account>>,
    targets: BTreeMap<String, Box<dyn Target>>,
    solvers: BTreeMap<String, Box<dyn Dns01Solver>>,
    /// One client per issuer, in `[acme] issuers` order.
    acme: Vec<tokio::sync::OnceCell<AcmeClient>>,
    staging: tokio::sync::OnceCell<AcmeClient>,
    events: EventSink,
    dry_run: bool,
    lock_wait: LockWait,
    turns: turns::Turns,
    /// Issuers that were down or rate-limited earlier in this pass, with why: later deployments go straight
    /// to the next issuer instead of spending their retries on them. Cleared when a pass starts.
    unavailable: std::sync::Mutex<BTreeMap<usize, String>>,
}

/// What a pass does when another process works on a deployment it selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Report the deployment busy at once (a hand-run `renew`).
    Never,
    /// Wait at most this long (`renew --wait-lock`).
    Upto(std::time::Duration),
    /// Wait until it is free or the pass is stopped (the daemon).
    Forever,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("state_dir", &self.config.state_dir)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Prepares targets for every deployment and a solver for every DNS section. No network traffic
    /// happens here; the ACME account is only contacted when a deployment needs the CA.
    ///
    /// `state` is where everything between passes is kept: normally the state directory, `Arc::new(store)`.
    ///
    /// # Errors
    /// The request log cannot be read, or an HTTP client cannot be built.
    pub fn new(config: Config, state: Arc<dyn StateStore>) -> Result<Pipeline, RenewError> {
        let budget = Arc::new(Budget::load(state.clone())?);
        let http =
            vendor_http().map_err(|e| RenewError::Config(format!("cannot set up HTTPS: {e}")))?;
        let accounts: BTreeMap<String, Arc<Account>> = config
            .emqx
            .iter()
            .map(|(name, c)| {
                let client = EmqxClient::new(http.clone(), c.clone(), budget.clone());
                (name.clone(), Arc::new(Account::new(client, c.clone())))
            })
            .collect();
        let targets = config
            .deployments
            .iter()
            .map(|d| {
                let target: Box<dyn Target> = match &d.target {
                    TargetConfig::Emqx(e) => Box::new(EmqxTarget::new(
                        accounts[&e.account].clone(),
                        &d.id,
                        e,
                        config.acme.key_format,
                    )),
                    TargetConfig::Files(f) => Box::new(FilesTarget::new(
                        f.clone(),
                        d.endpoint.clone().map(|e| (e, sni(d))),
                        d.verify_timeout,
                    )),
                };
                (d.id.clone(), target)
            })
            .collect();
        let solvers = config
            .dns
            .iter()
            .map(|(name, c)| (name.clone(), crate::solver::build(c)))
            .collect();
        let acme = (0..config.acme.issuers.len())
            .map(|_| tokio::sync::OnceCell::new())
            .collect();
        Ok(Pipeline {
            config,
            state,
            budget,
            accounts,
            targets,
            solvers,
            acme,
            staging: tokio::sync::OnceCell::new(),
            events: EventSink::default(),
            dry_run: false,
            lock_wait: LockWait::Never,
            turns: turns::Turns::default(),
            unavailable: std::sync::Mutex::default(),
        })
    }

    /// In a dry run the pipeline inspects and plans (and issues against `[acme] staging_directory` when set)
    /// but never writes to a target, and records nothing about deployments.
    pub fn with_dry_run(mut self, dry_run: bool) -> Pipeline {
        if dry_run && !self.dry_run {
            self.targets = std::mem::take(&mut self.targets)
                .into_iter()
                .map(|(id, t)| (id, Box::new(DryRun(t)) as Box<dyn Target>))
                .collect();
            self.state = Arc::new(ReadOnly(self.state.clone()));
            self.dry_run = true;
        }
        self
    }

    /// What the pass does when another process works on one of its deployments ([`LockWait::Never`] unless
    /// told).
    pub fn with_lock_wait(mut self, wait: LockWait) -> Pipeline {
        self.lock_wait = wait;
        self
    }

    /// Replaces the target of deployment `id` (for tests and embedding); unknown ids are ignored.
    pub fn with_target(mut self, id: &str, target: Box<dyn Target>) -> Pipeline {
        if let Some(slot) = self.targets.get_mut(id) {
            *slot = target;
        }
        self
    }

    /// Calls `subscriber` with every [`Event`] of every later pass.
    pub fn subscribe(&mut self, subscriber: impl Fn(&Event) + Send + Sync + 'static) {
        self.events.subscribe(subscriber);
    }

    /// Whether this is a dry run.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// After a pass that started at `since`: the failure notifications it calls for (none in a dry run).
    pub async fn notify(&self, since: OffsetDateTime) {
        if self.dry_run {
            return;
        }
        crate::notify::after_pass(
            &self.config.notify,
            &self.config.alerts,
            &*self.state,
            &self.status_report(),
            since,
        )
        .await;
    }

    /// What local state says of every deployment (`status`, metrics).
    pub fn status_report(&self) -> crate::status::Report {
        crate::status::report(
            &self.config,
            &*self.state,
            |name| self.budget_left(name),
            OffsetDateTime::now_utc(),
        )
    }

    /// The request budget left of the `[emqx.NAME]` account.
    pub fn budget_left(&self, name: &str) -> Option<BudgetLeft> {
        let client = self.accounts.get(name)?.client();
        Some(BudgetLeft {
            reads: client.reads_left(),
            writes: client.writes_left(),
        })
    }

    fn target(&self, d: &Deployment) -> &dyn Target {
        // Built in `new` from the same deployments.
        &*self.targets[&d.id]
    }

    /// Saves `record` with `step` and tells the subscribers: the one place a pipeline step is persisted.
    fn persist(
        &self,
        d: &Deployment,
        record: &mut Record,
        step: Option<Step>,
    ) -> Result<(), RenewError> {
        record.step = step;
        self.state.save_record(&d.id, record)?;
        if let Some(step) = step.filter(|_| self.state.persists()) {
            self.events.emit(&Event::Step {
                id: d.id.clone(),
                step,
            });
        }
        Ok(())
    }

    /// The certificate the pipeline made active, when the target still runs it.
    fn active_cert<'r>(&self, record: &'r Record) -> Option<&'r CertRecord> {
        record
            .cert
            .as_ref()
            .filter(|_| matches!(record.step, Some(Step::Active | Step::Verified)))
    }

    /// Returns true if and only if local state alone may decide: certkeeper pushed the running certificate,
    /// asked the target within its `inspect_interval`, and renewal is not due.
    fn inspection_fresh(&self, d: &Deployment, record: &Record, now: OffsetDateTime) -> bool {
        let interval = self.target(d).inspect_interval();
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

    /// The client of issuer `index`, connected on first use.
    async fn acme(&self, index: usize) -> Result<&AcmeClient, AcmeError> {
        let issuer = &self.config.acme.issuers[index];
        self.client(&self.acme[index], issuer, &issuer.directory)
            .await
    }

    /// The index of the configured issuer at `directory`; `None` (the first issuer) in records from before
    /// issuers could differ.
    fn issuer_at(&self, directory: Option<&str>) -> Option<usize> {
        match directory {
            None => Some(0),
            Some(dir) => self
                .config
                .acme
                .issuers
                .iter()
                .position(|i| i.directory == dir),
        }
    }

    /// The index of the configured issuer whose directory has the origin (scheme, host, port) of `url`, an
    /// order URL; the first issuer when none has.
    fn issuer_of_url(&self, url: &str) -> usize {
        let origin = |u: &str| {
            let rest = u.split_once("://").map_or(u, |(_, r)| r);
            rest.split('/')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
        };
        self.config
            .acme
            .issuers
            .iter()
            .position(|i| origin(&i.directory) == origin(url))
            .unwrap_or(0)
    }

    /// The ACME client of `directory` kept in `cell`, connected (account loaded or created with `issuer`'s
    /// settings) on first use.
    async fn client<'c>(
        &'c self,
        cell: &'c tokio::sync::OnceCell<AcmeClient>,
        issuer: &Issuer,
        directory: &str,
    ) -> Result<&'c AcmeClient, AcmeError> {
        cell.get_or_try_init(|| async {
            AcmeClient::connect(issuer, directory, &*self.state)
                .await
                .map(|(client, _)| client)
        })
        .await
    }

    /// The deployment's DNS-01 solver, journaling what it publishes.
    fn journaled<'a>(&'a self, d: &'a Deployment) -> JournaledSolver<'a> {
        JournaledSolver::new(&*self.solvers[&d.dns], &*self.state, &d.id)
    }
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
    certs::split_leaf(chain).map(|(leaf, _)| leaf)
}

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}
