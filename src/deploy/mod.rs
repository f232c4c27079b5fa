//! Deploy targets: where a deployment's certificate goes, and how certkeeper learns what runs there.
//!
//! This module owns the [`Target`] contract and the pieces every target shares: what is deployed now
//! ([`Deployed`]), the errors the pipeline must tell apart ([`TargetError`]), the request budget a vendor API
//! imposes ([`RequestBudget`]), and the read-only decorator of a dry run ([`DryRun`]). One file or folder per
//! kind: [`emqx`] (the EMQX Cloud / Platform TLS API) and [`files`] (PEM files plus a reload command, for
//! self-hosted brokers).
//!
//! A target knows nothing of ACME, plans or the state directory: the pipeline decides *when*, a target only
//! answers *what runs now* and carries a checked bundle *there*. Adding a kind means one file here, one
//! `[deployment.KIND]` section owned by that file, and one arm where the pipeline builds targets.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use time::OffsetDateTime;

use crate::budget::Exhausted;
use crate::certs::{Bundle, LeafInfo};
use crate::state::CertRecord;

pub mod emqx;
pub mod files;

/// The future returned by [`Target`] methods: boxed so the trait stays object-safe.
pub type TargetFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, TargetError>> + Send + 'a>>;

/// What a target runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// Expiry of the certificate in use; `None` when there is none yet.
    pub expire: Option<OffsetDateTime>,
    /// Whether it is in use, being applied, or something the target's docs do not list.
    pub status: Status,
    /// The serial (lowercase hex) when the target can tell it; EMQX's API cannot.
    pub serial: Option<String>,
}

/// Whether the deployed certificate is in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Serving the certificate.
    Running,
    /// Being applied.
    Pending,
    /// No certificate.
    Absent,
    /// A value the target's docs do not list, kept verbatim.
    Other(String),
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Running => f.write_str("running"),
            Status::Pending => f.write_str("pending"),
            Status::Absent => f.write_str("(none)"),
            Status::Other(s) => write!(f, "{s:?}"),
        }
    }
}

/// Why a target could not answer or take a certificate. The pipeline acts on the kind; the message is the
/// target's own and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The target's request budget cannot afford the request before `until`: a reason to wait, not a failure.
    #[error("{0}; deferred to a later pass")]
    Budget(Exhausted),
    /// The target reports a status meaning it did not apply the pushed certificate: push it again.
    #[error(transparent)]
    NotApplied(Box<dyn std::error::Error + Send + Sync>),
    /// After the whole wait the target still runs the previous certificate: the write was accepted but not
    /// applied. Waiting again would not help; pushing the same bundle may.
    #[error("still runs the previous certificate after {waited:?}")]
    StillPrevious {
        /// How long the push was waited for.
        waited: Duration,
    },
    /// The deployment's configuration does not fit what the target reports; nothing is ordered.
    #[error("{0}")]
    Config(String),
    /// The bundle breaks a rule of the target; it is not pushed.
    #[error("{0}")]
    Unacceptable(String),
    /// A dry run reached a write: what it would have done.
    #[error("would {0}")]
    DryRun(String),
    /// Anything else, in the target's own words.
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

/// A vendor's request budget shared by every deployment behind one API key. Deployments sharing a
/// [`RequestBudget::group`] are scheduled together against its write limit.
pub trait RequestBudget: Send + Sync {
    /// The config section the budget belongs to, for logs (`emqx.prod`); deployments with the same group share it.
    fn group(&self) -> &str;
    /// Writes allowed per [`RequestBudget::window`].
    fn write_limit(&self) -> u32;
    /// The length of the sliding window.
    fn window(&self) -> Duration;
    /// Reads still affordable now.
    fn reads_left(&self) -> u32;
    /// Writes still affordable now.
    fn writes_left(&self) -> u32;
    /// When the next write is affordable once `claimed` writes (promised to other deployments) were made.
    fn next_write_at(&self, claimed: u32) -> OffsetDateTime;
    /// Starts a pass: allowances that hold once per pass start over.
    fn begin_pass(&self) {}
    /// The pass will start `tasks` deployments of this budget: keep a read for each until it starts.
    fn plan_tasks(&self, _tasks: u32) {}
    /// One of them started.
    fn task_started(&self) {}
}

/// Where one deployment's certificate goes.
///
/// Contract for implementations:
/// - `inspect` and `wait_active` only read; `deploy` is the only write, and a target never removes the
///   certificate in use (EMQX's DELETE disconnects every client).
/// - `accept` and `precheck` are free (no request): the pipeline calls them before spending an ACME order or
///   a vendor write.
/// - `deploy` of the same bundle twice is harmless.
/// - No error or log line carries a credential or a private key.
pub trait Target: Send + Sync {
    /// The kind, for logs: `emqx`, `files`.
    fn kind(&self) -> &'static str;

    /// The request budget of the target's API, if it has one.
    fn budget(&self) -> Option<&dyn RequestBudget> {
        None
    }

    /// Returns true if and only if the target is watched, never written: renewal is reported, not done.
    fn watch_only(&self) -> bool {
        false
    }

    /// What is deployed now.
    ///
    /// # Errors
    /// [`TargetError::Budget`] when the budget cannot afford the request; the target's failures.
    fn inspect(&self) -> TargetFuture<'_, Deployed>;

    /// Checks, before a certificate is ordered, that a push could succeed given what `deployed` reports.
    ///
    /// # Errors
    /// [`TargetError::Config`] naming what to fix.
    fn precheck(&self, deployed: &Deployed) -> Result<(), TargetError> {
        let _ = deployed;
        Ok(())
    }

    /// The target's own rules a validated bundle must pass before it is pushed (e.g. EMQX's import minimum).
    ///
    /// # Errors
    /// [`TargetError::Unacceptable`] naming the rule.
    fn accept(
        &self,
        bundle: &Bundle,
        info: &LeafInfo,
        now: OffsetDateTime,
    ) -> Result<(), TargetError>;

    /// Pushes `bundle`; `create` when the target has no certificate yet (EMQX: POST instead of PUT).
    ///
    /// # Errors
    /// The target's failures; [`TargetError::Budget`] when no write is affordable.
    fn deploy<'a>(&'a self, bundle: &'a Bundle, create: bool) -> TargetFuture<'a, ()>;

    /// Waits until the target runs `cert`, for at most the target's own wait timeout.
    ///
    /// # Errors
    /// [`TargetError::NotApplied`], [`TargetError::StillPrevious`], or a timeout in the target's words.
    fn wait_active<'a>(&'a self, cert: &'a CertRecord) -> TargetFuture<'a, Deployed>;

    /// One line on what `deploy` would do, for a dry run: `PUT it (one-way)`.
    fn describe_deploy(&self, create: bool) -> String;

    /// How long local state may stand for an inspection of a certificate certkeeper deployed: a target whose
    /// reads cost budget is asked again only after this. Zero (the default) asks every pass.
    fn inspect_interval(&self) -> Duration {
        Duration::ZERO
    }

    /// How long [`Target::wait_active`] waits at most, for messages.
    fn wait_timeout(&self) -> Duration {
        Duration::ZERO
    }
}

/// A dry run's view of a target: reads go through, writes stop with [`TargetError::DryRun`].
pub struct DryRun(pub Box<dyn Target>);

impl Target for DryRun {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }

    fn budget(&self) -> Option<&dyn RequestBudget> {
        self.0.budget()
    }

    fn watch_only(&self) -> bool {
        self.0.watch_only()
    }

    fn inspect(&self) -> TargetFuture<'_, Deployed> {
        self.0.inspect()
    }

    fn precheck(&self, deployed: &Deployed) -> Result<(), TargetError> {
        self.0.precheck(deployed)
    }

    fn accept(
        &self,
        bundle: &Bundle,
        info: &LeafInfo,
        now: OffsetDateTime,
    ) -> Result<(), TargetError> {
        self.0.accept(bundle, info, now)
    }

    fn deploy<'a>(&'a self, _bundle: &'a Bundle, create: bool) -> TargetFuture<'a, ()> {
        let what = self.0.describe_deploy(create);
        Box::pin(async move { Err(TargetError::DryRun(what)) })
    }

    fn wait_active<'a>(&'a self, _cert: &'a CertRecord) -> TargetFuture<'a, Deployed> {
        Box::pin(async {
            Err(TargetError::DryRun(
                "wait for the pushed certificate to run".into(),
            ))
        })
    }

    fn describe_deploy(&self, create: bool) -> String {
        self.0.describe_deploy(create)
    }

    fn inspect_interval(&self) -> Duration {
        self.0.inspect_interval()
    }

    fn wait_timeout(&self) -> Duration {
        self.0.wait_timeout()
    }
}
