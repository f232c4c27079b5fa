//! What is persisted about each deployment: the pipeline step, the certificate in flight or last made active,
//! the CA's renewal window, the last plan and outcome, and the order being finalized. Plain serde types; the
//! backends ([`super::fs`], [`super::memory`]) decide where they live.

use std::fmt;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Where a deployment is in the renewal pipeline; persisted before each next step starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// A certificate was issued and saved, and not yet accepted by the vendor.
    Issued,
    /// The vendor accepted the write; waiting for `running`.
    Pushed,
    /// The vendor reports the pushed certificate `running`.
    Active,
    /// The deployment's endpoint serves it (only with `endpoint` configured).
    Verified,
}

/// What the agent knows about a certificate it pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Names it covers.
    pub domains: Vec<String>,
    /// The leaf, PEM (public): identifies the certificate to the CA for ARI and `replaces`.
    #[serde(default)]
    pub leaf_pem: Option<String>,
}

/// The CA's suggested renewal window (ARI, RFC 9773) for the certificate the agent pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AriRecord {
    /// Serial of the certificate the window is for.
    pub serial: String,
    /// Window start.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// Window end.
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    /// The moment chosen uniformly at random inside the window (kept while the window stays the same).
    #[serde(with = "time::serde::rfc3339")]
    pub chosen: OffsetDateTime,
}

/// The last plan made for a deployment, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRecord {
    /// When renewal is planned.
    #[serde(with = "time::serde::rfc3339")]
    pub renew_at: OffsetDateTime,
    /// Why then.
    pub rule: String,
    /// When the vendor is asked again at the latest.
    #[serde(with = "time::serde::rfc3339")]
    pub next_inspect: OffsetDateTime,
    /// Set when the vendor budget cannot renew it before its certificate expires.
    #[serde(default)]
    pub at_risk: Option<String>,
}

/// Outcome of the last pass over a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// When the pass ended.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// True if and only if the deployment was left fine (renewed or not due).
    pub ok: bool,
    /// One line for `status`.
    pub message: String,
}

/// Everything persisted about one deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Pipeline step of the certificate in flight, if any.
    pub step: Option<Step>,
    /// The certificate in flight (step `Issued`/`Pushed`) or last made active.
    pub cert: Option<CertRecord>,
    /// Whether the in-flight push was a `POST` (no certificate before).
    #[serde(default)]
    pub create: bool,
    /// Last expiry the vendor reported (or of the certificate made active).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expire: Option<OffsetDateTime>,
    /// TLS type last reported by the vendor.
    pub tls_type: Option<String>,
    /// Last pass outcome.
    pub last: Option<Outcome>,
    /// The certificate the deployment's endpoint served when the agent had not pushed one: its lifetime
    /// makes the plan better than "30 days before expiry".
    #[serde(default)]
    pub served: Option<CertRecord>,
    /// When the vendor was last asked (`GET`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_inspect: Option<OffsetDateTime>,
    /// The CA's renewal window for the active certificate (`None` also when the CA offers no ARI).
    #[serde(default)]
    pub ari: Option<AriRecord>,
    /// When to ask the CA for the window again (its Retry-After; a day when it offers no ARI).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ari_next_check: Option<OffsetDateTime>,
    /// The last plan.
    #[serde(default)]
    pub plan: Option<PlanRecord>,
    /// Pushes in a row of the certificate in flight that the vendor accepted without applying.
    #[serde(default)]
    pub unapplied_pushes: u32,
    /// When a pass over the deployment last ended well (renewed, not due, deferred).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
    /// Passes over the deployment that failed, ever (the metric `certkeeper_renewal_failures_total`).
    #[serde(default)]
    pub failures_total: u64,
    /// The directory URL of the CA that issued `cert`; `None` in records from before issuers could differ,
    /// which means the first issuer (`[acme] directory`). ARI and `replaces` go to this CA only.
    #[serde(default)]
    pub cert_issuer: Option<String>,
}

/// What certkeeper learned about one issuer (a directory with a profile) from the certificates it gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedLifetime {
    /// notAfter − notBefore of the last certificate it issued, in seconds.
    pub lifetime_secs: u64,
    /// That certificate's serial.
    pub serial: String,
    /// When it was issued (notBefore).
    #[serde(with = "time::serde::rfc3339")]
    pub issued: OffsetDateTime,
    /// The key algorithm (`ECDSA`, `RSA`) of the intermediate that signed it; absent in older state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_key: Option<String>,
    /// The CA answered `rateLimited` with a Retry-After ending then: no order goes to it before. An entry
    /// made only for this has `lifetime_secs` 0 (nothing learned); an issued certificate clears it.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_limited_until: Option<OffsetDateTime>,
}

/// The lifetimes learned per issuer, keyed by [`issuer_key`].
pub type IssuerLog = std::collections::BTreeMap<String, LearnedLifetime>;

/// The key of an issuer in the [`IssuerLog`]: its directory and the profile ordered (a CA's profiles differ in
/// lifetime, so each is learned on its own).
pub fn issuer_key(directory: &str, profile: Option<&str>) -> String {
    match profile {
        Some(p) => format!("{directory} profile={p}"),
        None => directory.to_owned(),
    }
}

/// An ACME order being finalized: where it is and the key its certificate is for.
pub struct PendingOrder {
    /// The order URL.
    pub url: String,
    /// The new certificate's key, PKCS#8 PEM.
    pub key_pkcs8_pem: SecretString,
}

impl fmt::Debug for PendingOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingOrder")
            .field("url", &self.url)
            .field("key_pkcs8_pem", &"[redacted]")
            .finish()
    }
}

/// The vendor requests one API key made inside its window, and any block a 429 set. Times are Unix
/// milliseconds: whole seconds could let a request out up to a second before the vendor's window frees, and
/// earn a 429.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUsage {
    /// Unix milliseconds of each `GET` inside the window.
    #[serde(default)]
    pub reads_ms: Vec<i64>,
    /// Unix milliseconds of each write inside the window.
    #[serde(default)]
    pub writes_ms: Vec<i64>,
    /// Unix milliseconds until which the vendor said 429.
    #[serde(default)]
    pub blocked_until_ms: Option<i64>,
}

/// The request log of every API key, by key.
pub type BudgetLog = std::collections::BTreeMap<String, KeyUsage>;

/// What the failure notifications remember between passes: each deployment's last notified state, and the
/// messages not delivered yet (retried at the next pass, so a restart loses none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotifyLog {
    /// By deployment id.
    #[serde(default)]
    pub deployments: std::collections::BTreeMap<String, Notified>,
    /// Oldest first.
    #[serde(default)]
    pub queue: Vec<QueuedMessage>,
}

/// A deployment's state as last notified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notified {
    /// `ok`, `failing` or `at_risk`.
    pub state: String,
    /// When a message about this state was last queued.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_sent: Option<OffsetDateTime>,
}

/// A message waiting for its channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// Unique in the queue: delivery removes exactly what it sent, whatever another process queued meanwhile.
    pub id: String,
    /// The channel's key (its kind and destination, never a secret): a message never goes to another channel
    /// because the `[[notify]]` tables were reordered.
    pub channel: String,
    /// The message (the documented JSON; it holds no secret).
    pub message: serde_json::Value,
    /// Delivery attempts so far.
    pub attempts: u32,
}
