//! Reading what a run left behind: the deployment's record, step and bundle in the state directory, the serial
//! the stand-in holds, the writes it received, and a run's failure line.

use std::fs;
use std::path::PathBuf;

use serde_json::Value;
use time::Duration;

use super::bed::Run;
use super::{Case, from_now};

/// Due under the default rule (less than 30 days left).
pub fn due() -> Option<time::OffsetDateTime> {
    Some(from_now(Duration::days(10)))
}

/// Not due under the default rule.
pub fn not_due() -> Option<time::OffsetDateTime> {
    Some(from_now(Duration::days(80)))
}

/// The deployment's record (`state/deployments/ID.json`), `Null` when there is none.
pub fn record(case: &Case, id: &str) -> Value {
    let path = case.state_dir().join(format!("deployments/{id}.json"));
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display())),
        Err(_) => Value::Null,
    }
}

/// The pipeline step recorded for `id` (`issued`, `pushed`, `active`, `verified`), if any.
pub fn step(case: &Case, id: &str) -> Option<String> {
    record(case, id)["step"].as_str().map(str::to_owned)
}

pub fn bundle_path(case: &Case, id: &str) -> PathBuf {
    case.state_dir().join(format!("deployments/{id}.pem"))
}

/// The serial (lowercase hex, as certkeeper writes it) of the first certificate in `pem`.
pub fn serial_of(pem: &str) -> String {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .find(|block| block.label == "CERTIFICATE")
        .map(|block| {
            block
                .parse_x509()
                .expect("a parsable certificate")
                .raw_serial_as_string()
                .replace(':', "")
        })
        .expect("a CERTIFICATE block")
}

/// The serial of the saved bundle of `id` (its leaf).
pub fn bundle_serial(case: &Case, id: &str) -> String {
    let path = bundle_path(case, id);
    serial_of(&fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

/// The serial of the certificate the state record of `id` names.
pub fn record_serial(case: &Case, id: &str) -> String {
    record(case, id)["cert"]["serial"]
        .as_str()
        .expect("the record names a certificate")
        .to_owned()
}

/// The serial of the leaf the stand-in holds for `id`.
pub fn deployed_serial(case: &Case, id: &str) -> String {
    let view = case.standin.deployment(id);
    serial_of(
        view["cert"]
            .as_str()
            .unwrap_or_else(|| panic!("no cert at the stand-in: {view}")),
    )
}

/// `(method, status)` of every POST/PUT the stand-in received, in order.
pub fn writes(case: &Case) -> Vec<(String, u64)> {
    case.standin
        .log()
        .into_iter()
        .filter(|e| e["method"] == "PUT" || e["method"] == "POST")
        .map(|e| {
            (
                e["method"].as_str().unwrap_or_default().to_owned(),
                e["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// The single failure line of deployment `id`.
pub fn failure(run: &Run, id: &str) -> String {
    let lines = run.failures_of(id);
    assert_eq!(lines.len(), 1, "exactly one failure line for {id}:\n{run}");
    lines[0].to_owned()
}
