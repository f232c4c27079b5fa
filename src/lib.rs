//! certkeeper keeps the TLS certificates of EMQX Cloud / EMQX Platform deployments fresh with ACME
//! certificates, proving control of the names with DNS-01, without a human.
//!
//! One renewal of one deployment is a pipeline, and the modules follow it:
//!
//! ```text
//! config ──► plan ──► acme ──► certs ──► target::emqx ──► verify ──► store
//! (what)     (when)   (issue)  (check)   (push, wait)     (served?)   (record)
//! ```
//!
//! # Layout
//! - [`config`]: the TOML file, validated offline, secrets resolved.
//! - [`store`]: the state directory (account, records, bundles, lock); atomic 0600 files.
//! - [`plan`]: whether renewal is due.
//! - [`budget`]: the vendor's request budget per API key, persisted.
//! - [`acme`]: account, order, DNS-01, finalize (instant-acme).
//! - [`solver`]: DNS-01 record publication (RFC 2136 + TSIG).
//! - [`certs`]: keys, CSRs, PEM, and the checks a bundle passes before a push.
//! - [`target`]: the deployment targets (the EMQX TLS API).
//! - [`renew`]: one pass over the deployments, resumable from the persisted step.
//! - [`verify`]: after `running`, the deployment's endpoint must serve the pushed certificate.
//! - [`daemon`]: `certkeeper run`: cron ticks with jitter, signals, sd_notify ([`notify`], [`shutdown`]).
#![warn(missing_docs)]

pub mod acme;
pub mod budget;
pub mod certs;
pub mod config;
pub mod daemon;
pub mod deploy;
pub mod pipeline;
pub mod plan;
pub mod shutdown;
pub mod solver;
pub mod state;
pub mod systemd;

pub mod verify;
