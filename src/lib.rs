//! certkeeper keeps the TLS certificates of MQTT brokers fresh with ACME certificates, proving control of the
//! names with DNS-01, without a human: EMQX Cloud / EMQX Platform deployments through the vendor's TLS API, and
//! self-hosted brokers through PEM files plus a reload command.
//!
//! One renewal of one deployment is a pipeline, and the modules follow it:
//!
//! ```text
//! config ──► pipeline ──► plan ──► acme + solver ──► certs ──► deploy::<kind> ──► verify ──► state
//! (what)     (the pass)   (when)   (issue, DNS-01)   (check)   (push, wait)       (served?)  (record)
//! ```
//!
//! # Layout
//! - [`config`]: the TOML file, validated offline, secrets resolved; each target and DNS provider owns its
//!   section.
//! - [`pipeline`]: one pass over the deployments, one function per persisted step, events.
//! - [`deploy`]: the [`deploy::Target`] seam and its kinds, [`deploy::emqx`] and [`deploy::files`].
//! - [`state`]: the [`state::StateStore`] seam; the state directory ([`state::Store`]) is its first backend.
//! - [`plan`]: whether renewal is due (pure).
//! - [`budget`]: the vendor's request budget per API key, persisted.
//! - [`acme`]: account, order, DNS-01, finalize (instant-acme).
//! - [`issuers`]: which CA serves which deployment, against the target's lifetime rule, before ordering.
//! - [`solver`]: DNS-01 record publication (providers: RFC 2136 + TSIG, exec hooks, acme-dns, Cloudflare), CNAME
//!   following, the propagation check at the authoritative servers, and the TXT journal.
//! - [`certs`]: keys, CSRs, PEM, and the checks a bundle passes before a push.
//! - [`verify`]: the deployment's endpoint must serve the deployed certificate.
//! - [`dcs`]: Huawei Cloud / OTC DCS instances: the CA their clients trust, kept in a file (watch-only).
//! - [`metrics`]: Prometheus text for `/metrics` and the textfile collector.
//! - [`notify`]: failure notifications (webhooks), one per change of state, queued in the state dir.
//! - [`status`]: `certkeeper status` and its JSON schema; when a deployment needs a human.
//! - [`daemon`]: `certkeeper run`: cron ticks with jitter, signals, sd_notify ([`systemd`], [`shutdown`]).
#![warn(missing_docs)]

pub mod acme;
pub mod budget;
pub mod certs;
pub mod config;
pub mod daemon;
pub mod dcs;
pub mod deploy;
pub mod issuers;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod plan;
pub mod shutdown;
pub mod solver;
pub mod state;
pub mod status;
pub mod systemd;

pub mod verify;
