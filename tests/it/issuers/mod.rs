//! Issuers with fallback, decided before ordering (issue 13): two real Pebbles, one giving 45-day
//! certificates, one giving 90-day certificates and requiring External Account Binding, against EMQX's
//! 60-day import rule; a CA that is down; and `check --online`.
//!
//! The two Pebbles are this module's own, and its tests take [`ISSUERS`] so each test's order counts are
//! exact.

use crate::common;
use crate::common::probe::due;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use common::ari::{AriProxy, ari_cert_id};
use common::bed::{Pebble, PebbleCounts, quote, write_private};
use common::{
    Case, ConfigBuilder, EAB_HMAC_KEY, EAB_KID, Run, assert_deployed, assert_no_txt, bed, rfc3339,
};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

const DAY: i64 = 24 * 3600;
/// A name [`short_pebble`] refuses to order for.
const REFUSED_DOMAIN: &str = "t-iss-refused.example.test";

/// Serializes this module's tests: they count the orders of the Pebbles below.
static ISSUERS: Mutex<()> = Mutex::new(());
static SHORT: OnceLock<Pebble> = OnceLock::new();
static LONG: OnceLock<Pebble> = OnceLock::new();

fn serial() -> MutexGuard<'static, ()> {
    ISSUERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Pebble issuing 45-day certificates, like Let's Encrypt's `tlsserver` profile.
fn short_pebble() -> &'static Pebble {
    SHORT.get_or_init(|| {
        bed()
            .extra_pebble(
                "pebble-45d",
                // The blocklisted name lets a test see this CA refuse an order.
                &json!({
                    "certificateValidityPeriod": 45 * DAY,
                    "domainBlocklist": [REFUSED_DOMAIN],
                }),
            )
            .unwrap_or_else(|e| panic!("the 45-day Pebble did not start: {e}"))
    })
}

/// A Pebble issuing 90-day certificates that requires External Account Binding, like ZeroSSL.
fn long_pebble() -> &'static Pebble {
    LONG.get_or_init(|| {
        bed()
            .extra_pebble(
                "pebble-90d-eab",
                &json!({
                    "certificateValidityPeriod": 90 * DAY,
                    "externalAccountBindingRequired": true,
                    "externalAccountMACKeys": {EAB_KID: EAB_HMAC_KEY},
                }),
            )
            .unwrap_or_else(|e| panic!("the 90-day EAB Pebble did not start: {e}"))
    })
}

/// `[[acme.fallback]]` named `name` at `directory`, trusting `roots`, with the EAB of [`long_pebble`] when
/// `eab` is given (the HMAC key's file).
fn fallback(name: &str, directory: &str, roots: &Path, eab: Option<&Path>) -> String {
    let mut out = format!(
        "\n[[acme.fallback]]\nname = {}\ndirectory = {}\ntrust_roots = {}\n",
        quote(name),
        quote(directory),
        quote(&roots.display().to_string())
    );
    if let Some(key) = eab {
        out.push_str(&format!(
            "eab_kid = {}\neab_hmac_key_file = {}\n",
            quote(EAB_KID),
            quote(&key.display().to_string())
        ));
    }
    out
}

/// Writes the config of `builder` with `extra` (fallback sections) appended; returns its path.
fn write_with(builder: &ConfigBuilder, extra: &str) -> PathBuf {
    let path = builder.write();
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    write_private(&path, text.as_bytes()).unwrap();
    path
}

/// The EAB HMAC key file of [`long_pebble`], in the case's directory.
fn eab_key(case: &Case) -> PathBuf {
    let path = case.dir.path().join("eab.key");
    write_private(&path, format!("{EAB_HMAC_KEY}\n").as_bytes()).unwrap();
    path
}

/// A config with `[acme]` at the 45-day Pebble (named `short`) and `[[acme.fallback]]` at the 90-day EAB one
/// (named `long`).
fn two_issuers(case: &Case, builder: ConfigBuilder) -> (ConfigBuilder, String) {
    let long = long_pebble();
    let builder = builder.pebble(short_pebble()).acme("name", "short");
    let extra = fallback(
        "long",
        &long.directory_url,
        &long.ca_pem,
        Some(&eab_key(case)),
    );
    (builder, extra)
}

fn delta(after: PebbleCounts, before: PebbleCounts) -> (usize, usize) {
    (after.orders - before.orders, after.issued - before.issued)
}

/// The lines of `run`'s stderr that say an issuer was skipped before ordering.
fn skipped_lines(run: &Run) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| l.contains("skipped before ordering"))
        .collect()
}

fn stdout_line<'r>(run: &'r Run, id: &str) -> &'r str {
    let prefix = format!("{id}: ");
    run.stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no stdout line for {id}:\n{run}"))
}

fn days_valid(chain_pem: &str) -> i64 {
    let leaf = certkeeper::certs::parse_pem_certs(chain_pem.as_bytes()).unwrap()[0].clone();
    let info = certkeeper::certs::leaf_info(&leaf).unwrap();
    // Pebble ends validity a second before the full period.
    ((info.not_after - info.not_before).whole_seconds() + 3600) / DAY
}

/// A files deployment `id` writing into `DIR/files-ID/` (no reload).
fn files_deployment(case: &Case, builder: ConfigBuilder, id: &str, domain: &str) -> ConfigBuilder {
    let dir = case.dir.path().join(format!("files-{id}"));
    fs::create_dir_all(&dir).unwrap();
    builder.deployment(id, &[domain]).table(
        "files",
        &[
            ("cert", quote(&dir.join("cert.pem").display().to_string())),
            ("key", quote(&dir.join("key.pem").display().to_string())),
        ],
    )
}

mod decide;
mod fallback;
mod online;
