//! `certkeeper run`: the long-running service. It sleeps until the next cron tick (plus a random jitter),
//! runs one pass under the state lock, and sleeps again: no polling loop, no wake-up between ticks unless
//! systemd's watchdog asks for one.
//!
//! Signals: SIGTERM/SIGINT stop new work, give the pass in flight [`STOP_GRACE`] to reach a safe point (an
//! in-flight write and its state record finish; waiting for `running` is abandoned because the step is
//! already saved), then exit 0. SIGHUP reloads the config; an invalid new config is reported and the old one
//! stays in force. A reload requested during a pass takes effect after it.
//!
//! A failure of one deployment never stops the daemon: it is logged and the next tick tries again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::Config;
use crate::metrics::Exporter;
use crate::pipeline::{self, LockWait, Pipeline, Report};
use crate::shutdown::{self, Shutdown};
use crate::state::Store;
use crate::systemd::Notifier;

/// The shortest sleep before a pass for deferred renewals.
const MIN_DEFERRED_WAIT: Duration = Duration::from_secs(60);
/// How long a pass in flight may take to reach a safe point after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// Why the daemon could not start or keep running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The state directory or the clients could not be set up.
    #[error(transparent)]
    Setup(#[from] pipeline::RenewError),
    /// `[metrics] listen` cannot be bound.
    #[error("cannot listen on {0} for [metrics]: {1}; pick a free address or remove `listen`")]
    Metrics(std::net::SocketAddr, #[source] std::io::Error),
}

/// What the last pass achieved, for `STATUS=`.
fn summarize(reports: &[Report]) -> String {
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| r.result.is_err())
        .map(|r| r.id.as_str())
        .collect();
    if failed.is_empty() {
        "ok".into()
    } else {
        format!("{} failed ({})", failed.len(), failed.join(", "))
    }
}

fn next_tick(
    config: &Config,
    deferred_until: Option<OffsetDateTime>,
) -> Option<(OffsetDateTime, Duration)> {
    let now = chrono::Utc::now();
    let next = config.schedule.cron.after(&now).next()?;
    let until_tick = (next - now).to_std().unwrap_or_default();
    let jitter = if config.schedule.jitter.is_zero() {
        Duration::ZERO
    } else {
        config.schedule.jitter.mul_f64(rand::random::<f64>())
    };
    let mut wait = until_tick + jitter;
    // A deferred renewal may bring the next pass forward, never push the schedule back; and never sooner than
    // a minute, so a zero Retry-After cannot make the daemon spin.
    if let Some(until) = deferred_until {
        let deferred = Duration::try_from(until - OffsetDateTime::now_utc())
            .unwrap_or_default()
            .max(MIN_DEFERRED_WAIT);
        wait = wait.min(deferred);
    }
    Some((OffsetDateTime::now_utc() + wait, wait))
}

fn build(config: Config, exporter: &Exporter) -> Result<Pipeline, pipeline::RenewError> {
    let store = Store::open(&config.state_dir)?;
    // The daemon has time: a deployment a hand-run `renew` works on is waited for, not failed.
    let mut agent = Pipeline::new(config, Arc::new(store))?.with_lock_wait(LockWait::Forever);
    let stats = exporter.stats();
    agent.subscribe(move |event| stats.observe(event));
    Ok(agent)
}

/// Serves `[metrics] listen`, when set; binding it is part of starting.
async fn start_exporter(config: &Config) -> Result<Arc<Exporter>, DaemonError> {
    let exporter = Exporter::new(&config.metrics);
    if let Some(addr) = config.metrics.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| DaemonError::Metrics(addr, e))?;
        tracing::info!(%addr, "serving /metrics and /healthz");
        tokio::spawn(exporter.clone().serve(listener));
    }
    Ok(exporter)
}

/// The signals the daemon answers, installed once at start.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

/// What a signal asks for.
enum Wake {
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGHUP.
    Reload,
}

impl Signals {
    fn install() -> Result<Signals, DaemonError> {
        let install = |kind| signal(kind).map_err(DaemonError::Signals);
        Ok(Signals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            hup: install(SignalKind::hangup())?,
        })
    }

    /// The next signal. Cancel-safe: a signal that arrives while nobody waits is kept for the next call.
    async fn next(&mut self) -> Wake {
        tokio::select! {
            _ = self.term.recv() => Wake::Stop,
            _ = self.int.recv() => Wake::Stop,
            _ = self.hup.recv() => Wake::Reload,
        }
    }
}

/// How a pass watched for signals ended.
struct PassEnd {
    /// `None` when the pass never got the state lock.
    reports: Option<Vec<Report>>,
    /// SIGTERM/SIGINT arrived: exit once the pass reached a safe point.
    stopping: bool,
    /// SIGHUP arrived during the pass: reload now that it is done.
    reload: bool,
}

/// Runs the daemon until SIGTERM/SIGINT. `config_path` is re-read on SIGHUP.
///
/// # Errors
/// Only set-up failures; everything after start is logged and retried on the next tick.
pub async fn run(
    config_path: PathBuf,
    config: Config,
    notifier: Notifier,
) -> Result<(), DaemonError> {
    let mut signals = Signals::install()?;
    let exporter = start_exporter(&config).await?;
    let mut agent = build(config, &exporter)?;
    agent.check_profiles().await?;
    // Before the first pass, /metrics already shows what the state directory knows.
    exporter.publish(&agent.status_report(), None);
    let (trigger, stop) = shutdown::channel();

    spawn_watchdog();

    let mut last = "none yet".to_owned();
    // A deferred renewal wakes the daemon when the vendor budget allows it, not at the next cron tick.
    let mut deferred_until: Option<OffsetDateTime> = None;
    let mut ready_sent = false;
    loop {
        let wake = match next_tick(agent.config(), deferred_until) {
            Some((at, sleep)) => {
                let status = format!(
                    "{} deployments, next pass {}, last: {last}",
                    agent.config().deployments.len(),
                    pipeline::day(at)
                );
                if ready_sent {
                    notifier.status(&status);
                } else {
                    notifier.ready(&status);
                    ready_sent = true;
                }
                tracing::info!(next = %pipeline::day(at), "sleeping until the next pass");
                tokio::select! {
                    () = tokio::time::sleep(sleep) => None,
                    wake = signals.next() => Some(wake),
                }
            }
            None => {
                tracing::error!(
                    "the cron schedule has no future tick; waiting for SIGHUP with a new one or SIGTERM"
                );
                notifier.status("schedule has no future tick");
                Some(signals.next().await)
            }
        };
        match wake {
            Some(Wake::Stop) => break,
            Some(Wake::Reload) => {
                agent = reload(&config_path, agent, &notifier, &exporter).await;
                continue;
            }
            None => {}
        }

        let end =
            pass_and_report(&agent, &stop, &trigger, &notifier, &mut signals, &exporter).await;
        deferred_until = None;
        if let Some(reports) = &end.reports {
            for r in reports {
                if let Err(e) = &r.result {
                    tracing::error!(deployment = %r.id, "{e}");
                }
            }
            deferred_until = earliest_deferral(reports);
            last = summarize(reports);
        }
        if end.stopping {
            return Ok(());
        }
        if end.reload {
            agent = reload(&config_path, agent, &notifier, &exporter).await;
        }
    }
    notifier.stopping();
    tracing::info!("stopping");
    Ok(())
}

/// One pass with what follows it: metrics published, notifications sent (not while stopping: delivery may
/// take seconds, and the next start compares again).
async fn pass_and_report(
    agent: &Pipeline,
    stop: &Shutdown,
    trigger: &shutdown::Trigger,
    notifier: &Notifier,
    signals: &mut Signals,
    exporter: &Exporter,
) -> PassEnd {
    exporter.pass_started();
    let started = std::time::Instant::now();
    let since = OffsetDateTime::now_utc();
    let end = watched_pass(agent, stop, trigger, notifier, signals).await;
    exporter.publish(
        &agent.status_report(),
        end.reports
            .is_some()
            .then(|| started.elapsed().as_secs_f64()),
    );
    if end.reports.is_some() && !end.stopping {
        agent.notify(since).await;
    }
    end
}

/// One pass, while answering signals: SIGTERM/SIGINT let it reach a safe point, SIGHUP waits for its end.
async fn watched_pass(
    agent: &Pipeline,
    stop: &Shutdown,
    trigger: &shutdown::Trigger,
    notifier: &Notifier,
    signals: &mut Signals,
) -> PassEnd {
    notifier.status(&format!(
        "{} deployments, pass running",
        agent.config().deployments.len()
    ));
    let pass = one_pass(agent, stop);
    tokio::pin!(pass);
    let mut reload = false;
    loop {
        tokio::select! {
            reports = &mut pass => return PassEnd { reports, stopping: false, reload },
            wake = signals.next() => match wake {
                Wake::Stop => {
                    let reports = finish(trigger, notifier, pass.as_mut()).await;
                    return PassEnd { reports, stopping: true, reload: false };
                }
                Wake::Reload => {
                    tracing::info!("SIGHUP during a pass: reloading once it is done");
                    reload = true;
                }
            },
        }
    }
}

/// Pings systemd's watchdog, when it asks for one: the one wake-up between ticks.
fn spawn_watchdog() {
    let Some(every) = Notifier::watchdog_interval() else {
        return;
    };
    // The runtime has a single thread, so a ping proves the event loop still turns: anything blocking it stops
    // the pings, and every network wait inside a pass has its own timeout.
    let watchdog = Notifier::from_env();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        loop {
            interval.tick().await;
            watchdog.watchdog();
        }
    });
}

/// The earliest time a deferred renewal of the pass may go on: the daemon wakes then rather than at the next
/// tick. A deferral is a wake-up time whether it is still in time or already past the deadline.
fn earliest_deferral(reports: &[Report]) -> Option<OffsetDateTime> {
    reports
        .iter()
        .filter_map(|r| match &r.result {
            Ok(pipeline::Done::Deferred { until, .. })
            | Err(pipeline::RenewError::DeferredPastDeadline { until, .. }) => Some(*until),
            _ => None,
        })
        .min()
}

/// Takes the lock (waiting for a manual pass to finish) and runs one pass; `None` if stopped while waiting.
async fn one_pass(agent: &Pipeline, stop: &Shutdown) -> Option<Vec<Report>> {
    let store = match Store::open(&agent.config().state_dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return Some(Vec::new());
        }
    };
    let _lock = match store.lock_waiting(None, stop).await {
        Ok(Some(lock)) => lock,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!("{e}");
            return Some(Vec::new());
        }
    };
    let reports = agent.pass(&[], false, stop).await;
    // DCS instances are synced under the same lock; one log line each.
    for instance in crate::dcs::sync_all(agent.config(), stop).await {
        match &instance.result {
            Ok(done) => tracing::info!(instance = %instance.id, "{done}"),
            Err(e) => tracing::error!(instance = %instance.id, "{e}"),
        }
    }
    Some(reports)
}

/// After SIGTERM: tell the pass to stop, give it [`STOP_GRACE`] to reach a safe point.
async fn finish(
    trigger: &shutdown::Trigger,
    notifier: &Notifier,
    pass: std::pin::Pin<&mut impl std::future::Future<Output = Option<Vec<Report>>>>,
) -> Option<Vec<Report>> {
    tracing::info!("stopping: letting the pass in flight reach a safe point");
    notifier.stopping();
    trigger.stop();
    match tokio::time::timeout(STOP_GRACE, pass).await {
        Ok(reports) => reports,
        Err(_) => {
            tracing::warn!(
                "the pass did not reach a safe point within {STOP_GRACE:?}; stopping anyway"
            );
            None
        }
    }
}

/// The daemon holds the lock of the state directory it started with; another directory on reload
/// would mean unlocked writes there and a fresh start from blank state (new orders, new account).
fn same_state_dir(old: &std::path::Path, new: &std::path::Path) -> Result<(), String> {
    let canonical =
        |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if old == new || canonical(old) == canonical(new) {
        return Ok(());
    }
    Err(format!(
        "state_dir cannot change on reload ({} -> {}); restart the service to use the new one",
        old.display(),
        new.display()
    ))
}

async fn reload(
    path: &std::path::Path,
    old: Pipeline,
    notifier: &Notifier,
    exporter: &Exporter,
) -> Pipeline {
    notifier.reloading();
    let loaded = match Config::load(path) {
        Err(e) => Err(e.to_string()),
        Ok(config) => {
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            match same_state_dir(&old.config().state_dir, &config.state_dir)
                .and_then(|()| build(config, exporter).map_err(|e| e.to_string()))
            {
                Err(e) => Err(e),
                // The same check as at start: a profile the CA does not offer is a config error.
                Ok(agent) => agent
                    .check_profiles()
                    .await
                    .map(|()| agent)
                    .map_err(|e| e.to_string()),
            }
        }
    };
    let (agent, status) = match loaded {
        Ok(agent) => {
            tracing::info!(
                deployments = agent.config().deployments.len(),
                "configuration reloaded"
            );
            let status = format!(
                "{} deployments, configuration reloaded",
                agent.config().deployments.len()
            );
            (agent, status)
        }
        Err(e) => {
            tracing::error!("reload failed: {e}; keeping the previous configuration");
            let status = format!(
                "{} deployments, reload FAILED (previous configuration kept): {e}",
                old.config().deployments.len()
            );
            (old, status)
        }
    };
    notifier.ready(&status);
    agent
}
