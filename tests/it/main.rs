//! certkeeper's integration tests, in one binary so that the test bed (knotd + Pebble) starts once and
//! `common` compiles once. One module per area:
//!
//! - [`renew`]: `renew` end to end against the EMQX stand-in.
//! - [`cli`]: `check`, `status`, config errors and unknown deployments.
//! - [`files`]: the files target against a real mosquitto.
//! - [`daemon`]: `certkeeper run`: cron, signals, sd_notify, the lock.
//! - [`issuers`]: issuers with fallback against the target's lifetime rule, `check --online`.
//! - [`planning`]: ARI, the request budget, dry run, profiles, EAB.
//! - [`fleet`]: the concurrent pass, shared budgets, deployment locks.
//! - [`health`]: `status` exit codes and JSON, no secrets needed, journald priorities.
//! - [`metrics`]: the textfile and `/metrics` under a real Prometheus and promtool.
//! - [`notify`]: failure notifications through a webhook receiver.
//! - [`faults`]: SIGKILL at each failpoint, the fault matrix, endpoint verification, secrets in logs.
//! - [`regressions`]: one test per bug found in review.
//! - [`fuzz_regressions`]: inputs the fuzzers found.
//! - [`solver_knot`]: the RFC 2136 solver against knotd.
//! - [`dcs`]: Huawei Cloud / OTC DCS instances against the DCS stand-in and a real Redis with TLS.
//! - [`dns_hosted`]: the acme-dns and Cloudflare providers against their stand-ins, publishing into knotd.
//! - [`dns_providers`]: exec hooks, CNAME delegation, propagation to secondaries, end to end.

mod common;

mod cli;
mod daemon;
mod dcs;
mod dns_hosted;
mod dns_providers;
mod faults;
mod files;
mod fleet;
mod fuzz_regressions;
mod health;
mod issuers;
mod metrics;
mod notify;
mod planning;
mod regressions;
mod renew;
mod solver_knot;
