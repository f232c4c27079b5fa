//! When to renew, end to end (issue 4, "## Tests"): ARI through a test double in front of Pebble, the lifetime
//! rule, skipping the vendor's GET when local state is fresh, the vendor's write budget over 20 deployments on
//! one key, 429 deferrals, `renew --dry-run`, ACME profiles, External Account Binding and `status`.
//!
//! Every test has its own names (`t-<test>…example.test`), stand-in and state directory; Pebble and knotd are
//! shared with the other tests of this binary. Tests that count Pebble's orders take the bed exclusively for
//! those runs ([`common::Bed::exclusive`]). The planner's arithmetic is unit-tested in `src/plan.rs`; here it
//! is checked through the binary, with state records crafted where a certificate's lifetime must be one the
//! bed's Pebble does not issue.

use crate::common;
use crate::common::probe::due;

use std::fs;
use std::path::Path;
use std::time::{Duration as StdDuration, Instant};

use common::ari::{AriProxy, OrderSeen, ari_cert_id};
use common::bed::write_private;
use common::{
    Case, ConfigBuilder, EAB_HMAC_KEY, EAB_KID, Run, assert_deployed, assert_no_txt, bed,
    eab_pebble, from_now, parse_chain, rfc3339,
};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// `t` as certkeeper prints it (`renew::day`): `2026-02-01 12:00 UTC`.
fn day(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

fn parse_time(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        v.as_str().unwrap_or_else(|| panic!("not a date: {v}")),
        &Rfc3339,
    )
    .unwrap_or_else(|e| panic!("{v} is not RFC 3339: {e}"))
}

/// The state record of deployment `id`.
fn record(case: &Case, id: &str) -> Value {
    let path = case.state_dir().join(format!("deployments/{id}.json"));
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes the state record of deployment `id` as an earlier certkeeper would have: it pushed a certificate valid
/// from `not_before` to `not_after` (no leaf kept, so no ARI) and asked the vendor an hour ago. Returns its path.
fn craft_record(
    case: &Case,
    id: &str,
    domains: &[&str],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> std::path::PathBuf {
    let deployments = case.state_dir().join("deployments");
    for dir in [case.state_dir(), deployments.clone()] {
        fs::create_dir_all(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    }
    let record = json!({
        "step": "active",
        "cert": {
            "serial": "0badcafe",
            "not_before": rfc3339(not_before),
            "not_after": rfc3339(not_after),
            "domains": domains,
            "leaf_pem": null,
        },
        "create": false,
        "expire": rfc3339(not_after),
        "tls_type": "one-way",
        "last": null,
        "last_inspect": rfc3339(from_now(-Duration::hours(1))),
        "ari": null,
        "ari_next_check": null,
        "plan": null,
    });
    let path = deployments.join(format!("{id}.json"));
    write_private(
        &path,
        serde_json::to_string_pretty(&record).unwrap().as_bytes(),
    )
    .unwrap();
    path
}

/// The stdout line of deployment `id` (`"{id}: …"`).
fn line_of<'r>(run: &'r Run, id: &str) -> &'r str {
    let prefix = format!("{id}: ");
    run.stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no stdout line for {id}:\n{run}"))
}

/// The stderr log lines inside deployment `id`'s span.
fn log_of<'r>(run: &'r Run, id: &str) -> Vec<&'r str> {
    let span = format!("id={id}}}");
    run.stderr.lines().filter(|l| l.contains(&span)).collect()
}

/// Vendor API requests of the stand-in for deployment `id`.
fn requests_for(case: &Case, id: &str) -> Vec<Value> {
    let path = format!("/api/v1/deployments/{id}/tls");
    case.standin
        .log()
        .into_iter()
        .filter(|e| e["path"] == path.as_str())
        .collect()
}

/// The PEM chain the stand-in holds for `id`.
fn pushed_chain(case: &Case, id: &str) -> String {
    case.standin.deployment(id)["cert"]
        .as_str()
        .unwrap_or_else(|| panic!("{id}: no certificate in the stand-in"))
        .to_owned()
}

fn assert_ok(run: &Run, id: &str) {
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(run.failures_of(id).is_empty(), "{run}");
}

mod ari;
mod budget;
mod dry_run;
mod lifetime;
mod profiles_eab;
mod status;
