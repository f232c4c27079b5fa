//! What a pass reports: per deployment, what was done ([`Done`]) or why it failed ([`RenewError`]).

use std::fmt;

use time::OffsetDateTime;

use super::MAX_UNAPPLIED_PUSHES;
use crate::acme::AcmeError;
use crate::certs::CertError;
use crate::deploy::TargetError;
use crate::plan::Plan;
use crate::state::StoreError;

/// Why one deployment could not be brought to a good state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenewError {
    /// The deploy target (the vendor API, the files and their reload).
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The CA or DNS-01.
    #[error(transparent)]
    Acme(#[from] AcmeError),
    /// The issued bundle failed a check; it is not pushed.
    #[error("the issued certificate fails a check and was not pushed: {0}")]
    Cert(#[from] CertError),
    /// The state directory.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configuration does not fit what the target reports.
    #[error("{0}")]
    Config(String),
    /// No configured issuer can give a certificate the target accepts; nothing was ordered.
    #[error("{0}")]
    NoIssuer(String),
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
        /// [`crate::plan::DEADLINE_MARGIN`] before the certificate expires.
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

/// The budget left of one `[emqx.*]` account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLeft {
    /// `GET`s left in the current window.
    pub reads: u32,
    /// Writes left in the current window.
    pub writes: u32,
}
