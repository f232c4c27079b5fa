//! `certkeeper renew` end to end: real Pebble, real knotd (RFC 2136 + TSIG), and a strict
//! stand-in of the EMQX Cloud TLS API (issue 2, "## Tests").
//!
//! Every test has its own names under `example.test` (`t-<test>.example.test`), stand-in and state directory, so
//! the tests run in parallel against one Pebble and one knotd. Tests that count Pebble's orders or issuances take
//! the bed exclusively for their runs ([`common::Bed::exclusive`]).

use crate::common;
use crate::common::probe::{due, not_due};

use std::fs;
use std::time::Instant;

use common::{
    Case, assert_deployed, assert_no_txt, bed, deployed_expire, from_now, parse_chain,
    write_client_ca,
};
use serde_json::json;
use time::Duration;

#[test]
fn one_way_renewal_of_a_due_deployment() {
    let case = Case::new("oneway");
    let domains = ["t-oneway.example.test"];
    case.deployment("t-oneway", "one-way", due());
    let config = case.config().deployment("t-oneway", &domains).write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    assert!(run.failures_of("t-oneway").is_empty(), "{run}");
    assert_eq!(case.requests("PUT"), 1, "{}", case.request_summary());
    assert_eq!(case.requests("POST"), 0, "{}", case.request_summary());
    let view = assert_deployed(&case, "t-oneway", &domains);
    assert_eq!(view["tlsType"], "one-way");
    assert_eq!(view["writes"], 1);
    assert!(
        view["cacert"].is_null(),
        "one-way must not send cacert: {view}"
    );
    assert!(deployed_expire(&case, "t-oneway").unwrap() > from_now(Duration::days(60)));
    assert!(case.state_dir().join("account.json").is_file());
    assert!(case.state_dir().join("deployments/t-oneway.json").is_file());
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn multi_name_and_wildcard_certificate() {
    let case = Case::new("multi");
    let domains = [
        "t-multi.example.test",
        "*.t-multi.example.test",
        "t-multi-other.example.test",
    ];
    case.deployment("t-multi", "one-way", due());
    let config = case.config().deployment("t-multi", &domains).write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(case.requests("PUT"), 1, "{}", case.request_summary());
    assert_deployed(&case, "t-multi", &domains);
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn two_way_renewal_sends_the_configured_cacert() {
    let case = Case::new("twoway");
    let domains = ["t-twoway.example.test"];
    let ca_path = case.dir.path().join("client-ca.pem");
    let ca_pem = write_client_ca(&ca_path);
    case.deployment("t-twoway", "two-way", due());
    let config = case
        .config()
        .deployment("t-twoway", &domains)
        .with("tls_type", "two-way")
        .with("client_ca_file", ca_path.to_str().unwrap())
        .write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(case.requests("PUT"), 1, "{}", case.request_summary());
    let view = assert_deployed(&case, "t-twoway", &domains);
    assert_eq!(view["tlsType"], "two-way");
    assert_eq!(
        view["cacert"].as_str().map(str::trim),
        Some(ca_pem.trim()),
        "the stand-in must hold the configured client CA"
    );
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn two_way_without_client_ca_file_fails_before_any_acme_order() {
    // The deployment is two-way according to GET; the config does not say so and has no client_ca_file. The
    // push would be rejected, so certkeeper must stop before ordering a certificate.
    let case = Case::new("twoway-noca");
    let domains = ["t-twoway-noca.example.test"];
    case.deployment("t-twoway-noca", "two-way", due());
    let config = case.config().deployment("t-twoway-noca", &domains).write();

    let bed = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = bed.delta();
    drop(bed);

    assert_eq!(run.code(), Some(1), "{run}");
    let failures = run.failures_of("t-twoway-noca");
    assert_eq!(
        failures.len(),
        1,
        "one failure line for the deployment:\n{run}"
    );
    assert!(
        failures[0].contains("client_ca_file"),
        "the message must say what to configure: {}",
        failures[0]
    );
    assert_eq!(acme.orders, 0, "no ACME order may be created: {acme:?}");
    assert_eq!(case.requests("PUT") + case.requests("POST"), 0);
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn post_when_the_deployment_has_no_certificate() {
    let case = Case::new("post");
    let domains = ["t-post.example.test"];
    case.deployment("t-post", "one-way", None);
    let config = case.config().deployment("t-post", &domains).write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(case.requests("POST"), 1, "{}", case.request_summary());
    assert_eq!(case.requests("PUT"), 0, "{}", case.request_summary());
    let view = assert_deployed(&case, "t-post", &domains);
    assert_eq!(view["tlsType"], "one-way");
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn not_due_is_exactly_one_get_and_nothing_else() {
    let case = Case::new("notdue");
    case.deployment("t-notdue", "one-way", not_due());
    let config = case
        .config()
        .deployment("t-notdue", &["t-notdue.example.test"])
        .write();

    let bed = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = bed.delta();
    drop(bed);

    assert_eq!(run.code(), Some(0), "{run}");
    assert!(run.failures_of("t-notdue").is_empty(), "{run}");
    let log = case.standin.log();
    assert_eq!(
        log.len(),
        1,
        "exactly one request:\n{}",
        case.request_summary()
    );
    assert_eq!(log[0]["method"], "GET");
    assert_eq!(log[0]["path"], "/api/v1/deployments/t-notdue/tls");
    assert_eq!(acme.orders, 0, "no ACME order: {acme:?}");
    assert_eq!(acme.issued, 0, "no issuance: {acme:?}");
    assert!(case.standin.deployment("t-notdue")["cert"].is_null());
    case.assert_invariants();
}

#[test]
fn now_renews_a_deployment_that_is_not_due() {
    let case = Case::new("now");
    let domains = ["t-now.example.test"];
    case.deployment("t-now", "one-way", not_due());
    let config = case.config().deployment("t-now", &domains).write();

    let run = case.run(&config, &["renew", "--now"]);

    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(case.requests("PUT"), 1, "{}", case.request_summary());
    assert_deployed(&case, "t-now", &domains);
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn wrong_secret_fails_without_acme_order() {
    let case = Case::new("badsecret");
    case.deployment("t-badsecret", "one-way", due());
    let config = case
        .config_with_secret("not-the-secret")
        .deployment("t-badsecret", &["t-badsecret.example.test"])
        .write();

    let bed = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = bed.delta();
    drop(bed);

    assert_eq!(run.code(), Some(1), "{run}");
    let failures = run.failures_of("t-badsecret");
    assert_eq!(failures.len(), 1, "one failure line:\n{run}");
    assert!(failures[0].contains("401"), "{}", failures[0]);
    assert_eq!(acme.orders, 0, "no ACME order: {acme:?}");
    let log = case.standin.log();
    assert!(
        log.iter()
            .all(|e| e["method"] == "GET" && e["status"] == 401),
        "only rejected GETs, never retried into a write:\n{}",
        case.request_summary()
    );
    assert_eq!(
        log.len(),
        1,
        "a 401 is not retried:\n{}",
        case.request_summary()
    );
    case.assert_invariants();
}

#[test]
fn unprocessable_put_is_not_retried() {
    let case = Case::new("422");
    let domains = ["t-422.example.test"];
    // Pebble's certificates live years, so only the stand-in's rule (not certkeeper's) rejects this one.
    case.standin.settings(&json!({"min_days_left": 100_000}));
    case.deployment("t-422", "one-way", due());
    let config = case.config().deployment("t-422", &domains).write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(1), "{run}");
    let failures = run.failures_of("t-422");
    assert_eq!(failures.len(), 1, "one failure line:\n{run}");
    assert!(failures[0].contains("422"), "{}", failures[0]);
    assert_eq!(
        case.requests("PUT"),
        1,
        "a 422 is never retried:\n{}",
        case.request_summary()
    );
    assert_eq!(case.requests("POST"), 0, "{}", case.request_summary());
    assert!(case.standin.deployment("t-422")["cert"].is_null());
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn injected_500_on_put_is_retried_with_the_same_certificate() {
    let case = Case::new("500");
    let domains = ["t-500.example.test"];
    case.standin.settings(&json!({"fail_writes": 1}));
    case.deployment("t-500", "one-way", due());
    let config = case.config().deployment("t-500", &domains).write();

    let bed = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = bed.delta();
    drop(bed);

    assert_eq!(run.code(), Some(0), "{run}");
    let puts: Vec<_> = case
        .standin
        .log()
        .into_iter()
        .filter(|e| e["method"] == "PUT")
        .map(|e| e["status"].as_u64())
        .collect();
    assert_eq!(puts, [Some(500), Some(200)], "{}", case.request_summary());
    assert_eq!(
        acme.issued, 1,
        "Pebble must issue exactly one certificate: {acme:?}"
    );
    assert_eq!(acme.orders, 1, "{acme:?}");
    assert_deployed(&case, "t-500", &domains);
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn old_dialect_with_a_plus_eight_expire_is_read_in_its_zone() {
    let case = Case::new("tz");
    let domains = ["t-tz.example.test"];
    case.standin
        .settings(&json!({"old_dialect": true, "zone": "+08:00"}));
    // 30 days minus 4 hours left: due (under 30 days) only if "YYYY-MM-DD HH:MM:SS" is read as +08:00. Read as
    // UTC, it would look 4 hours later than 30 days and nothing would happen.
    case.deployment(
        "t-tz",
        "one-way",
        Some(from_now(Duration::days(30) - Duration::hours(4))),
    );
    let config = case
        .config()
        .emqx("expire_timezone", "+08:00")
        .deployment("t-tz", &domains)
        .write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(
        case.requests("PUT"),
        1,
        "the deployment is due when the zone is honoured:\n{}",
        case.request_summary()
    );
    // The stand-in's status after the write is " pending" (old dialect) until it turns running.
    assert_deployed(&case, "t-tz", &domains);
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn status_stuck_in_pending_fails_after_wait_timeout() {
    let case = Case::new("stuck");
    let domains = ["t-stuck.example.test"];
    case.standin.settings(&json!({"stuck_pending": true}));
    case.deployment("t-stuck", "one-way", due());
    let config = case
        .config()
        .emqx("wait_timeout", "2s")
        .deployment("t-stuck", &domains)
        .write();

    let started = Instant::now();
    let run = case.run(&config, &["renew"]);
    let took = started.elapsed();

    assert_eq!(run.code(), Some(1), "{run}");
    let failures = run.failures_of("t-stuck");
    assert_eq!(failures.len(), 1, "one failure line:\n{run}");
    let line = failures[0].to_lowercase();
    assert!(
        line.contains("pending") || line.contains("timeout") || line.contains("timed out"),
        "the message must say it gave up waiting: {}",
        failures[0]
    );
    assert!(
        took >= std::time::Duration::from_secs(2),
        "gave up after {took:?}"
    );
    assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
    assert_eq!(case.requests("PUT"), 1, "{}", case.request_summary());
    assert!(
        case.requests("GET") >= 3,
        "polls while pending:\n{}",
        case.request_summary()
    );
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn second_run_reuses_the_acme_account() {
    let case = Case::new("reuse");
    let domains = ["t-reuse.example.test"];
    case.deployment("t-reuse", "one-way", not_due());
    let config = case.config().deployment("t-reuse", &domains).write();
    let account = case.state_dir().join("account.json");

    let bed = bed().exclusive();
    let first = case.run(&config, &["renew", "--now"]);
    let after_first = fs::read(&account);
    let second = case.run(&config, &["renew", "--now"]);
    let acme = bed.delta();
    drop(bed);

    assert_eq!(first.code(), Some(0), "{first}");
    assert_eq!(second.code(), Some(0), "{second}");
    let after_first = after_first.expect("account.json after the first run");
    assert_eq!(
        fs::read(&account).expect("account.json after the second run"),
        after_first,
        "account.json must not change"
    );
    assert_eq!(acme.accounts, 1, "one ACME account for both runs: {acme:?}");
    assert_eq!(acme.orders, 2, "{acme:?}");
    assert_eq!(acme.issued, 2, "{acme:?}");
    assert_eq!(case.requests("PUT"), 2, "{}", case.request_summary());
    assert_deployed(&case, "t-reuse", &domains);
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn traditional_ecdsa_key_is_pushed_as_ec_private_key() {
    key_format_case("keyec", "ecdsa-p256", "traditional", "EC PRIVATE KEY");
}

#[test]
fn traditional_rsa_key_is_pushed_as_rsa_private_key() {
    key_format_case("keyrsa", "rsa-2048", "traditional", "RSA PRIVATE KEY");
}

#[test]
fn pkcs8_key_is_pushed_as_private_key() {
    key_format_case("keyp8", "ecdsa-p384", "pkcs8", "PRIVATE KEY");
}

/// Renews with `key_type`/`key_format` and checks the pushed key's PEM label and the leaf's key type.
fn key_format_case(name: &str, key_type: &str, key_format: &str, label: &str) {
    let case = Case::new(name);
    let id = format!("t-{name}");
    let domain = format!("t-{name}.example.test");
    case.deployment(&id, "one-way", due());
    let config = case
        .config()
        .acme("key_type", key_type)
        .acme("key_format", key_format)
        .deployment(&id, &[&domain])
        .write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    let view = assert_deployed(&case, &id, &[&domain]);
    let key = view["key"].as_str().unwrap();
    let begin = format!("-----BEGIN {label}-----");
    assert_eq!(
        key.lines().find(|l| l.starts_with("-----BEGIN")),
        Some(begin.as_str()),
        "pushed key:\n{key}"
    );
    assert_eq!(
        key.matches("-----BEGIN").count(),
        1,
        "one key block:\n{key}"
    );
    assert_eq!(
        parse_chain(view["cert"].as_str().unwrap()).key_type,
        key_type
    );
    assert_no_txt(&[&domain]);
    case.assert_invariants();
}

#[test]
fn txt_records_are_gone_after_renewal() {
    let case = Case::new("txt");
    let domains = [
        "t-txt.example.test",
        "*.t-txt.example.test",
        "a.t-txt-deep.example.test",
    ];
    case.deployment("t-txt", "one-way", due());
    let config = case.config().deployment("t-txt", &domains).write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    assert_deployed(&case, "t-txt", &domains);
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn renewal_succeeds_when_the_ca_rejects_nonces() {
    // Real CAs reject nonces now and then (badNonce, RFC 8555 §6.5); the client must retry with a fresh one.
    let case = Case::new("nonce");
    let domains = [
        "t-nonce.example.test",
        "*.t-nonce.example.test",
        "t-nonce-other.example.test",
    ];
    case.deployment("t-nonce", "one-way", due());
    let config = case
        .config()
        .pebble(bed().bad_nonce_pebble())
        .deployment("t-nonce", &domains)
        .write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(case.requests("PUT"), 1, "{}", case.request_summary());
    assert_deployed(&case, "t-nonce", &domains);
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn test_bed_knotd_accepts_txt_updates_only_with_the_acme_update_key() {
    // A self-check of the bed, so a broken bed is not mistaken for a broken certkeeper.
    let bed = bed();
    let owner = "_acme-challenge.t-bed.example.test.";
    let update = |key: &str, secret: &str, action: &str| {
        let script = format!(
            "server 127.0.0.1 {}\nzone example.test.\nupdate {action} {owner} 60 TXT \"bed-check\"\nsend\n",
            bed.knot.port
        );
        let mut child = std::process::Command::new("knsupdate")
            .args(["-y", &format!("hmac-sha256:{key}:{secret}")])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run knsupdate");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait().unwrap().success()
    };

    assert!(!update(
        common::bed::INTRUDER_KEY,
        &bed.knot.intruder_secret,
        "add"
    ));
    assert!(bed.txt_records(owner).is_empty());
    assert!(update(common::bed::TSIG_KEY, &bed.knot.tsig_secret, "add"));
    assert_eq!(bed.txt_records(owner), ["bed-check"]);
    assert!(update(
        common::bed::TSIG_KEY,
        &bed.knot.tsig_secret,
        "delete"
    ));
    assert!(bed.txt_records(owner).is_empty());
}
