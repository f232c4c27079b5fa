//! Failure notifications: one message per change of a deployment's state, not per pass.
//!
//! After every pass (not a dry run) the [`crate::status::Report`] is compared with what was last notified
//! (`notify.json`): a deployment that starts failing is a `failure` (again every `[alerts] repeat` while it
//! keeps failing), one the budget cannot renew in time is `at_risk`, one that is fine again after either is
//! `recovered`, and a new certificate is `renewed` for channels that ask. Messages are queued in the state
//! directory first and then delivered with a few bounded retries; what is not delivered stays queued for the
//! next pass, so a restart or a receiver that is down loses none. A notification never fails or delays a
//! renewal: the pass is over when this runs, and a delivery failure is logged once per pass and channel.
//!
//! The message (webhook `format = "json"`), schema 1, fields only ever added:
//!
//! ```json
//! {"schema": 1, "event": "failure", "deployment": "ge6a1a75", "target": "emqx",
//!  "domains": ["mqtt.example.com"], "message": "EMQX API rejected the credentials (401) — check …",
//!  "expires": "2027-01-01T00:00:00Z", "at": "2026-12-03T12:00:00Z"}
//! ```
//!
//! It carries the deployment's one-line result, which never holds a secret.

pub mod config;
pub mod email;
mod webhook;

pub use webhook::{SIGNATURE_HEADER, signature as webhook_signature};

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use crate::config::AlertsConfig;
use crate::state::{Notified, NotifyLog, QueuedMessage, StateStore};
use crate::status::{DeploymentStatus, Health, Report};
use config::{Channel, Kind};

/// The most messages kept undelivered; beyond, the oldest are dropped (with a warning): a receiver that is
/// gone for good must not grow the state directory forever.
pub const MAX_QUEUED: usize = 200;
/// Delivery attempts per message within one pass.
const ATTEMPTS_PER_PASS: u32 = 3;

/// The message about `d`.
fn message(kind: Kind, d: &DeploymentStatus, now: OffsetDateTime) -> serde_json::Value {
    let text = match kind {
        Kind::Recovered => format!("{} works again", d.id),
        _ => d.last.as_ref().map_or_else(
            || d.at_risk.clone().unwrap_or_default(),
            |l| l.message.clone(),
        ),
    };
    let text = match (kind, &d.at_risk) {
        (Kind::AtRisk, Some(why)) => format!("{}: at risk: {why}", d.id),
        _ => text,
    };
    json!({
        "schema": 1,
        "event": kind.as_str(),
        "deployment": d.id,
        "target": d.target,
        "domains": d.domains,
        "message": text,
        "expires": d.expires.map(rfc3339),
        "at": rfc3339(now),
    })
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What `d` calls for, given what was last notified about it.
fn events(
    d: &DeploymentStatus,
    before: Option<&Notified>,
    since: OffsetDateTime,
    repeat: Duration,
    now: OffsetDateTime,
) -> (Vec<Kind>, &'static str) {
    let state = match d.health {
        Health::Failing => "failing",
        Health::AtRisk => "at_risk",
        // Unreadable state says nothing new; near expiry is `status`'s and the metrics' business.
        Health::Unreadable => return (Vec::new(), before.map_or("ok", |b| state_name(&b.state))),
        Health::Ok | Health::Expiring => "ok",
    };
    let previous = before.map_or("ok", |b| b.state.as_str());
    let due_again = before
        .and_then(|b| b.last_sent)
        .is_none_or(|t| now - t >= repeat);
    let mut kinds = Vec::new();
    match state {
        "failing" if previous != "failing" || due_again => kinds.push(Kind::Failure),
        "at_risk" if previous != "at_risk" || due_again => kinds.push(Kind::AtRisk),
        "ok" if previous != "ok" => kinds.push(Kind::Recovered),
        _ => {}
    }
    let renewed = d
        .last
        .as_ref()
        .is_some_and(|l| l.ok && l.at >= since && l.message.starts_with("renewed"));
    if renewed {
        kinds.push(Kind::Renewed);
    }
    (kinds, state)
}

fn state_name(s: &str) -> &'static str {
    match s {
        "failing" => "failing",
        "at_risk" => "at_risk",
        _ => "ok",
    }
}

/// Why a delivery failed; a permanent failure (the receiver refuses this message) drops the message instead
/// of blocking its channel.
#[derive(Debug)]
pub struct SendError {
    /// Trying again cannot help.
    pub permanent: bool,
    /// One line, naming the channel and never its secret.
    pub message: String,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A message that failed this many times (over passes) is dropped with a warning.
pub const MAX_ATTEMPTS: u32 = 30;

/// After a pass that started at `since`: queues what changed and delivers the queue.
pub async fn after_pass(
    channels: &[Channel],
    alerts: &AlertsConfig,
    state: &dyn StateStore,
    report: &Report,
    since: OffsetDateTime,
) {
    if channels.is_empty() {
        return;
    }
    let now = report.generated_at;
    // Compared and queued in one step under the store's update lock: two processes finishing passes at the same
    // time queue each change once.
    let queued = state.update_notify_log(&mut |log| {
        queue_changes(channels, alerts, log, report, since, now);
        true
    });
    let log = match queued {
        Ok(log) => log,
        Err(e) => {
            tracing::warn!("cannot update the notification state, sending nothing this pass: {e}");
            return;
        }
    };
    let outcome = deliver(channels, &log.queue).await;
    let finished = state.update_notify_log(&mut |log| {
        log.queue.retain(|m| !outcome.done.contains(&m.id));
        for m in log
            .queue
            .iter_mut()
            .filter(|m| outcome.failed.contains(&m.id))
        {
            m.attempts += 1;
        }
        let before = log.queue.len();
        log.queue.retain(|m| m.attempts < MAX_ATTEMPTS);
        if log.queue.len() < before {
            tracing::warn!(
                dropped = before - log.queue.len(),
                "notifications undelivered after {MAX_ATTEMPTS} passes; dropped"
            );
        }
        true
    });
    if let Err(e) = finished {
        tracing::warn!("cannot save the notification state: {e}");
    }
}

/// Compares `report` with what `log` last notified, and queues a message per change and channel.
fn queue_changes(
    channels: &[Channel],
    alerts: &AlertsConfig,
    log: &mut NotifyLog,
    report: &Report,
    since: OffsetDateTime,
    now: OffsetDateTime,
) {
    // DCS instances notify like deployments, under `dcs:{id}` (a name no deployment id can have).
    let dcs: Vec<_> = report
        .dcs_instances
        .iter()
        .map(|i| i.as_deployment())
        .collect();
    for d in report.deployments.iter().chain(&dcs) {
        let (kinds, current) = events(d, log.deployments.get(&d.id), since, alerts.repeat, now);
        let mut sent_at = log.deployments.get(&d.id).and_then(|n| n.last_sent);
        for kind in kinds {
            if kind != Kind::Renewed {
                sent_at = Some(now);
            }
            for channel in channels.iter().filter(|c| c.on.contains(&kind)) {
                log.queue.push(QueuedMessage {
                    id: format!(
                        "{}-{}-{}-{}",
                        now.unix_timestamp_nanos(),
                        std::process::id(),
                        kind.as_str(),
                        config::digest(&format!("{} {}", d.id, channel.key))
                    ),
                    channel: channel.key.clone(),
                    message: message(kind, d, now),
                    attempts: 0,
                });
            }
        }
        log.deployments.insert(
            d.id.clone(),
            Notified {
                state: current.to_owned(),
                last_sent: sent_at,
            },
        );
    }
    trim(log);
}

fn trim(log: &mut NotifyLog) {
    if log.queue.len() > MAX_QUEUED {
        let dropped = log.queue.len() - MAX_QUEUED;
        log.queue.drain(..dropped);
        tracing::warn!(
            dropped,
            "more than {MAX_QUEUED} notifications undelivered; dropped the oldest"
        );
    }
}

/// Which queued messages were delivered (or dropped for good) and which failed this pass.
#[derive(Default)]
struct Delivered {
    done: Vec<String>,
    failed: Vec<String>,
}

/// Sends every queued message its channel still exists for and still wants.
async fn deliver(channels: &[Channel], queue: &[QueuedMessage]) -> Delivered {
    let mut outcome = Delivered::default();
    let http = match crate::deploy::emqx::client::vendor_http() {
        Ok(http) => http,
        Err(e) => {
            tracing::warn!("cannot set up HTTPS for notifications: {e}");
            return outcome;
        }
    };
    let mut failed_channels: Vec<&str> = Vec::new();
    for queued in queue {
        let kind = queued.message["event"].as_str().unwrap_or_default();
        let channel = channels
            .iter()
            .find(|c| c.key == queued.channel && c.on.iter().any(|k| k.as_str() == kind));
        let Some(channel) = channel else {
            // The channel left the config or no longer wants it: nobody to tell.
            outcome.done.push(queued.id.clone());
            continue;
        };
        // A channel that failed this pass is not tried again before the next.
        if failed_channels.contains(&channel.key.as_str()) {
            continue;
        }
        match send_with_retries(&http, channel, &queued.message).await {
            Ok(()) => outcome.done.push(queued.id.clone()),
            Err(e) if e.permanent => {
                tracing::warn!(channel = %channel.name, "notification refused, dropped: {e}");
                outcome.done.push(queued.id.clone());
            }
            Err(e) => {
                tracing::warn!(channel = %channel.name, "notification not delivered, kept for the next pass: {e}");
                failed_channels.push(&channel.key);
                outcome.failed.push(queued.id.clone());
            }
        }
    }
    outcome
}

async fn send_with_retries(
    http: &reqwest::Client,
    channel: &Channel,
    message: &serde_json::Value,
) -> Result<(), SendError> {
    let mut attempt = 1;
    loop {
        match send(http, channel, message).await {
            Ok(()) => return Ok(()),
            Err(e) if e.permanent || attempt == ATTEMPTS_PER_PASS => return Err(e),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
        attempt += 1;
    }
}

/// One delivery attempt through `channel`.
async fn send(
    http: &reqwest::Client,
    channel: &Channel,
    message: &serde_json::Value,
) -> Result<(), SendError> {
    match &channel.sink {
        config::Sink::Webhook {
            url,
            format,
            secret,
        } => {
            webhook::send(
                http,
                &channel.name,
                (url, *format, secret.as_ref()),
                message,
            )
            .await
        }
        config::Sink::Email(email) => email::send(&channel.name, email, message).await,
    }
}

/// `certkeeper notify test`: one test message through every channel, now; the result of each.
pub async fn test(channels: &[Channel]) -> Vec<(String, Result<(), String>)> {
    let http = match crate::deploy::emqx::client::vendor_http() {
        Ok(http) => http,
        Err(e) => {
            return channels
                .iter()
                .map(|c| (c.name.clone(), Err(format!("cannot set up HTTPS: {e}"))))
                .collect();
        }
    };
    let now = OffsetDateTime::now_utc();
    let body = json!({
        "schema": 1,
        "event": Kind::Test.as_str(),
        "deployment": null,
        "target": null,
        "domains": [],
        "message": "certkeeper test notification: this channel works",
        "expires": null,
        "at": rfc3339(now),
    });
    let mut results = Vec::new();
    for channel in channels {
        results.push((
            channel.name.clone(),
            send(&http, channel, &body).await.map_err(|e| e.message),
        ));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Last;

    fn deployment(health: Health, ok: bool, message: &str, at: OffsetDateTime) -> DeploymentStatus {
        DeploymentStatus {
            id: "d".into(),
            target: "emqx",
            domains: vec!["d.example".into()],
            health,
            expires: None,
            renewal: None,
            step: None,
            last: Some(Last {
                ok,
                at,
                message: message.into(),
            }),
            at_risk: (health == Health::AtRisk).then(|| "no budget".into()),
            error: None,
            last_success: None,
            failures_total: 0,
            issuer: None,
            issuer_reason: String::new(),
        }
    }

    #[test]
    fn one_message_per_change_and_repeats_after_the_interval() {
        let now = OffsetDateTime::now_utc();
        let day = Duration::from_secs(86400);
        let failing = deployment(Health::Failing, false, "401", now);
        let first = events(&failing, None, now, day, now);
        assert_eq!(first, (vec![Kind::Failure], "failing"));
        let sent = Notified {
            state: "failing".into(),
            last_sent: Some(now),
        };
        assert_eq!(events(&failing, Some(&sent), now, day, now).0, []);
        let later = now + time::Duration::days(1);
        assert_eq!(
            events(&failing, Some(&sent), now, day, later).0,
            [Kind::Failure]
        );
        let ok = deployment(Health::Ok, true, "renewed: certificate ab", now);
        assert_eq!(
            events(&ok, Some(&sent), now, day, now).0,
            [Kind::Recovered, Kind::Renewed]
        );
        let quiet = deployment(Health::Ok, true, "not due", now);
        assert_eq!(events(&quiet, None, now, day, now).0, []);
        let risky = deployment(Health::AtRisk, true, "deferred", now);
        assert_eq!(events(&risky, None, now, day, now).0, [Kind::AtRisk]);
    }
}
