//! Issue 9: the bad days an adversarial review found still wasting a certificate or stalling a deployment —
//! each reproduced against the real Pebble (through a fault-injecting proxy where the CA must fail) and the
//! strict stand-in, then fixed.
//!
//! Every test has its own names (`t-<test>.example.test`), stand-in and state directory; those that count
//! Pebble's orders or issuances hold the bed exclusively over all of their runs.

use crate::common;

use std::fs;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};

use common::ari::AriProxy;
use common::probe::{bundle_path, bundle_serial, deployed_serial, due, failure, step, writes};
use common::{Case, assert_deployed, assert_no_txt, bed, from_now, run_with_env};
use serde_json::json;
use time::Duration;

/// A case whose ACME directory is a fault-injecting proxy in front of the bed's Pebble.
fn through_proxy(case: &Case) -> (AriProxy, common::ConfigBuilder) {
    let proxy = AriProxy::start(&bed().pebble, case.dir.path());
    let config = case
        .config()
        .acme("directory", &proxy.directory_url)
        .acme("trust_roots", proxy.trust_roots.to_str().unwrap());
    (proxy, config)
}

fn failed_downloads(proxy: &AriProxy) -> usize {
    proxy
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/certZ/") && r.status == 503)
        .count()
}

mod ca_outage;
mod deferral_deadline;
mod expiry_years;
mod forced_reissue;
mod journal_gets;
mod panic_isolation;
mod redirects;
mod state_dir;
mod unapplied_write;
