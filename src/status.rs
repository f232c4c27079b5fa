//! `certkeeper status`: what local state says about every deployment, as text for people and as JSON for
//! scripts, and whether anything needs a human (the exit code).
//!
//! The JSON schema (`"schema": 1`) is a contract: fields are only ever added. Times are RFC 3339 UTC strings;
//! anything unknown is `null`.
//!
//! ```json
//! {
//!   "schema": 1,
//!   "generated_at": "2026-12-03T12:00:00Z",
//!   "healthy": false,
//!   "deployments": [{
//!     "id": "ge6a1a75", "target": "emqx", "domains": ["mqtt.example.com"],
//!     "health": "failing",              // ok | failing | at_risk | expiring | unreadable
//!     "expires": "2027-01-01T00:00:00Z",
//!     "renewal": {"at": "…", "rule": "30 days before expiry", "next_inspection": "…"},
//!     "step": "pushed",                 // issued | pushed | active | verified | null
//!     "last": {"ok": false, "at": "…", "message": "EMQX API rejected the credentials (401) …"},
//!     "at_risk": null,                  // or why the budget cannot renew it before its deadline, or why no
//!                                       // issuer can serve it (then health is at_risk unless failing)
//!     "error": null,                    // or why its state cannot be read
//!     "last_success": "…",              // when a pass over it last ended well
//!     "failures_total": 0,              // passes over it that failed, ever
//!     "issuer": "acme",                 // the issuer its next order goes to; null when none can serve it
//!     "issuer_reason": "…"              // why that one (the skipped ones and their lifetimes), or why none
//!   }],
//!   "accounts": [{"name": "prod", "key": "app-key", "gets_left": 58, "get_limit": 60,
//!                 "writes_left": 6, "write_limit": 6, "window_seconds": 3600}]
//! }
//! ```

use serde::Serialize;
use time::OffsetDateTime;

use crate::config::{Config, Deployment, TargetConfig};
use crate::pipeline::{self, BudgetLeft};
use crate::state::{Record, StateStore, Step};

/// The version of the JSON schema.
pub const SCHEMA: u32 = 1;

/// Everything `status` reports.
#[derive(Debug, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: u32,
    /// When the report was made.
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// No deployment needs a human.
    pub healthy: bool,
    /// One per configured deployment, in config order.
    pub deployments: Vec<DeploymentStatus>,
    /// One per `[emqx.NAME]`.
    pub accounts: Vec<AccountStatus>,
    /// One per `[[dcs_instance]]` (added in schema 1; absent when none is configured).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dcs_instances: Vec<crate::dcs::status::InstanceStatus>,
}

/// Whether a deployment needs a human, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Nothing to do.
    Ok,
    /// Its last pass failed.
    Failing,
    /// The vendor's budget cannot renew it before its deadline.
    AtRisk,
    /// Less than `[alerts] expiry_warning` is left.
    Expiring,
    /// Its state cannot be read.
    Unreadable,
}

/// One deployment.
#[derive(Debug, Serialize)]
pub struct DeploymentStatus {
    /// The configured id.
    pub id: String,
    /// `emqx` or `files`.
    pub target: &'static str,
    /// The names its certificate covers.
    pub domains: Vec<String>,
    /// See [`Health`].
    pub health: Health,
    /// The last known expiry.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires: Option<OffsetDateTime>,
    /// The planned renewal.
    pub renewal: Option<Renewal>,
    /// The persisted pipeline step.
    pub step: Option<Step>,
    /// The last pass's result.
    pub last: Option<Last>,
    /// Why the budget cannot renew it in time, if so.
    pub at_risk: Option<String>,
    /// Why its state cannot be read, if so.
    pub error: Option<String>,
    /// When a pass over it last ended well.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
    /// Passes over it that failed, ever.
    pub failures_total: u64,
    /// The issuer its next order goes to (by name); `None` when no configured issuer can serve it.
    pub issuer: Option<String>,
    /// Why that issuer: which were skipped and why, what its lifetime is expected to be; or why none can.
    pub issuer_reason: String,
}

/// A planned renewal.
#[derive(Debug, Serialize)]
pub struct Renewal {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// By which rule.
    pub rule: String,
    /// When the target is asked again.
    #[serde(with = "time::serde::rfc3339")]
    pub next_inspection: OffsetDateTime,
}

/// A pass's result.
#[derive(Debug, Serialize)]
pub struct Last {
    /// It ended well.
    pub ok: bool,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Its one line.
    pub message: String,
}

/// The request budget of one `[emqx.NAME]` account.
#[derive(Debug, Serialize)]
pub struct AccountStatus {
    /// The section name.
    pub name: String,
    /// The API key (an identifier, not a secret).
    pub key: String,
    /// `GET`s left in the current window.
    pub gets_left: u32,
    /// `GET`s per window.
    pub get_limit: u32,
    /// Writes left in the current window.
    pub writes_left: u32,
    /// Writes per window.
    pub write_limit: u32,
    /// The window.
    pub window_seconds: u64,
}

/// Builds the report from local state; `budget_left` tells an account's budget.
pub fn report(
    config: &Config,
    state: &dyn StateStore,
    budget_left: impl Fn(&str) -> Option<BudgetLeft>,
    now: OffsetDateTime,
) -> Report {
    let deployments: Vec<DeploymentStatus> = config
        .deployments
        .iter()
        .map(|d| {
            let mut status = deployment(d, state.record(&d.id), config, now);
            (status.issuer, status.issuer_reason) = issuer(config, d, state, now);
            no_issuer_is_a_risk(&mut status);
            status
        })
        .collect();
    let accounts = config
        .emqx
        .iter()
        .filter_map(|(name, emqx)| {
            let left = budget_left(name)?;
            Some(AccountStatus {
                name: name.clone(),
                key: emqx.key.clone(),
                gets_left: left.reads,
                get_limit: emqx.get_limit,
                writes_left: left.writes,
                write_limit: emqx.write_limit,
                window_seconds: emqx.rate_window.as_secs(),
            })
        })
        .collect();
    let dcs_instances = crate::dcs::status::instances(config);
    Report {
        schema: SCHEMA,
        generated_at: now,
        healthy: deployments.iter().all(|d| d.health == Health::Ok)
            && dcs_instances.iter().all(|i| i.is_healthy()),
        deployments,
        accounts,
        dcs_instances,
    }
}

/// A deployment no issuer can serve will fail its next renewal before any order: it needs a human now, not
/// when its certificate runs out, so it counts as at risk (a failed last pass still says failing).
fn no_issuer_is_a_risk(status: &mut DeploymentStatus) {
    if status.issuer.is_some() || status.health == Health::Unreadable {
        return;
    }
    if status.at_risk.is_none() {
        status.at_risk = Some(status.issuer_reason.clone());
    }
    if matches!(status.health, Health::Ok | Health::Expiring) {
        status.health = Health::AtRisk;
    }
}

/// The issuer deployment `d`'s next order goes to, and why, as the pass will decide it.
fn issuer(
    config: &Config,
    d: &Deployment,
    state: &dyn StateStore,
    now: OffsetDateTime,
) -> (Option<String>, String) {
    let log = state.issuer_log().unwrap_or_default();
    let candidates = crate::issuers::candidates(config, d, &log, now);
    let skipped: Vec<String> = candidates
        .iter()
        .filter_map(|c| {
            c.refused
                .as_ref()
                .map(|why| format!("{} skipped: {why}", c.describe()))
        })
        .collect();
    let Some(chosen) = candidates.iter().find(|c| c.acceptable()) else {
        return (
            None,
            crate::issuers::none_acceptable(config, d, &candidates),
        );
    };
    let mut why = vec![match (d.issuer, crate::issuers::lifetime_rule(config, d)) {
        (Some(_), _) => format!("pinned with `issuer`; {}", chosen.describe()),
        (None, Some(rule)) if chosen.expected.is_none() => format!(
            "{}; tried first, the {} is checked on its first certificate",
            chosen.describe(),
            rule.name
        ),
        (None, Some(_)) => format!("{} passes the target's lifetime rule", chosen.describe()),
        (None, None) => format!("{}; the target has no lifetime rule", chosen.describe()),
    }];
    why.extend(skipped);
    (Some(chosen.name.clone()), why.join("; "))
}

fn deployment(
    d: &Deployment,
    record: Result<Record, crate::state::StoreError>,
    config: &Config,
    now: OffsetDateTime,
) -> DeploymentStatus {
    let target = match d.target {
        TargetConfig::Emqx(_) => "emqx",
        TargetConfig::Files(_) => "files",
    };
    let mut status = DeploymentStatus {
        id: d.id.clone(),
        target,
        domains: d.domains.clone(),
        health: Health::Ok,
        expires: None,
        renewal: None,
        step: None,
        last: None,
        at_risk: None,
        error: None,
        last_success: None,
        failures_total: 0,
        issuer: None,
        issuer_reason: String::new(),
    };
    let record = match record {
        Ok(r) => r,
        Err(e) => {
            status.health = Health::Unreadable;
            status.error = Some(e.to_string());
            return status;
        }
    };
    status.expires = record.expire;
    status.last_success = record.last_success;
    status.failures_total = record.failures_total;
    status.step = record.step;
    status.at_risk = record.plan.as_ref().and_then(|p| p.at_risk.clone());
    status.renewal = record.plan.as_ref().map(|p| Renewal {
        at: p.renew_at,
        rule: p.rule.clone(),
        next_inspection: p.next_inspect,
    });
    status.last = record.last.as_ref().map(|o| Last {
        ok: o.ok,
        at: o.at,
        message: o.message.clone(),
    });
    let expiring = record
        .expire
        .is_some_and(|e| e < now + config.alerts.expiry_warning);
    status.health = if record.last.as_ref().is_some_and(|o| !o.ok) {
        Health::Failing
    } else if status.at_risk.is_some() {
        Health::AtRisk
    } else if expiring {
        Health::Expiring
    } else {
        Health::Ok
    };
    status
}

impl DeploymentStatus {
    /// The one line `status` prints.
    pub fn line(&self) -> String {
        if let Some(e) = &self.error {
            return format!("{}: {e}", self.id);
        }
        let expiry = self.expires.map_or("unknown".to_owned(), pipeline::day);
        let step = match self.step {
            Some(Step::Issued) => "  [issued, push pending]",
            Some(Step::Pushed) => "  [pushed, waiting for running]",
            _ => "",
        };
        let plan = self.renewal.as_ref().map_or(String::new(), |r| {
            format!(
                "  renewal {} ({}), next inspection {}{}",
                pipeline::day(r.at),
                r.rule,
                pipeline::day(r.next_inspection),
                self.at_risk
                    .as_ref()
                    // No issuer: said once, with the issuer below.
                    .filter(|why| self.issuer.is_some() || **why != self.issuer_reason)
                    .map_or(String::new(), |why| format!("  AT RISK: {why}"))
            )
        });
        let last = self.last.as_ref().map_or("never run".to_owned(), |o| {
            format!(
                "{} at {}: {}",
                if o.ok { "ok" } else { "FAILED" },
                pipeline::day(o.at),
                o.message
            )
        });
        let expiring = if self.health == Health::Expiring {
            "  EXPIRES SOON"
        } else {
            ""
        };
        let issuer = match &self.issuer {
            Some(name) => format!("  issuer: {name} ({})", self.issuer_reason),
            None => format!("  AT RISK, issuer: NONE ({})", self.issuer_reason),
        };
        format!(
            "{}  {}  expires {expiry}{expiring}{step}{plan}  last: {last}{issuer}",
            self.id,
            self.domains.join(",")
        )
    }
}

impl AccountStatus {
    /// The one line `status` prints.
    pub fn line(&self) -> String {
        format!(
            "[emqx.{}] key {}: {}/{} GET and {}/{} writes left in the current {}",
            self.name,
            self.key,
            self.gets_left,
            self.get_limit,
            self.writes_left,
            self.write_limit,
            humantime::format_duration(std::time::Duration::from_secs(self.window_seconds))
        )
    }
}
