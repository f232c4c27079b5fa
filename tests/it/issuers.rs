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

#[test]
fn emqx_uses_the_90_day_issuer_and_files_the_45_day_one() {
    let _serial = serial();
    let (short, long) = (short_pebble(), long_pebble());
    let case = Case::new("iss-split");
    case.standin.settings(&json!({"pending": 0}));
    let (files, emqx) = ("t-iss-split-files", "t-iss-split-emqx");
    let (files_domain, emqx_domain) = (
        format!("{files}.example.test"),
        format!("{emqx}.example.test"),
    );
    case.deployment(emqx, "one-way", due());
    let builder = files_deployment(&case, case.config(), files, &files_domain)
        .deployment(emqx, &[&emqx_domain]);
    let (builder, extra) = two_issuers(&case, builder);
    let config = write_with(&builder, &extra);

    // The files target accepts any lifetime: the first issuer serves it, and its 45 days are learned.
    let (s0, l0) = (short.counts(), long.counts());
    let run = case.run(&config, &["renew", "--deployment", files]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(stdout_line(&run, files).contains("renewed"), "{run}");
    assert_eq!(delta(short.counts(), s0), (1, 1), "{run}");
    assert_eq!(delta(long.counts(), l0), (0, 0), "{run}");
    let cert = fs::read_to_string(case.dir.path().join(format!("files-{files}/cert.pem"))).unwrap();
    assert_eq!(days_valid(&cert), 45);

    // `status` already knows: the EMQX deployment goes to the fallback, and why.
    let status = case.run(&config, &["status", "--json"]);
    let doc: Value =
        serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("{e}: {status}"));
    let of = |id: &str| {
        doc["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(of(files)["issuer"], "short", "{doc}");
    assert_eq!(of(emqx)["issuer"], "long", "{doc}");
    let reason = of(emqx)["issuer_reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("short (45 days") && reason.contains("60-day"),
        "{reason}"
    );

    // The EMQX deployment skips the 45-day issuer with one line before any order and is served by the other.
    let (s1, l1) = (short.counts(), long.counts());
    let run = case.run(&config, &["renew", "--deployment", emqx]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(stdout_line(&run, emqx).contains("renewed"), "{run}");
    let skipped: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("skipped before ordering"))
        .collect();
    assert_eq!(skipped.len(), 1, "{run}");
    assert!(
        skipped[0].contains("short (45 days") && skipped[0].contains("60-day"),
        "{}",
        skipped[0]
    );
    assert_eq!(
        delta(short.counts(), s1),
        (0, 0),
        "no order at the 45-day CA: {run}"
    );
    assert_eq!(delta(long.counts(), l1), (1, 1), "{run}");
    assert_eq!(
        long.counts().accounts - l1.accounts,
        1,
        "one account, with EAB"
    );
    let chain = assert_deployed(&case, emqx, &[&emqx_domain]);
    assert_eq!(days_valid(chain["cert"].as_str().unwrap()), 90);
    assert_no_txt(&[&files_domain, &emqx_domain]);
    case.assert_invariants();
}

#[test]
fn a_refused_certificate_is_kept_learned_and_the_next_issuer_tried_in_the_same_pass() {
    let _serial = serial();
    let (short, long) = (short_pebble(), long_pebble());
    let case = Case::new("iss-learn");
    case.standin.settings(&json!({"pending": 0}));
    let id = "t-iss-learn";
    let domain = "t-iss-learn.example.test";
    case.deployment(id, "one-way", due());
    let (builder, extra) = two_issuers(&case, case.config().deployment(id, &[domain]));
    let config = write_with(&builder, &extra);

    // Nothing is known of the first issuer: it is tried, its 45-day certificate refused, the second serves.
    let (s0, l0) = (short.counts(), long.counts());
    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(stdout_line(&run, id).contains("renewed"), "{run}");
    assert_eq!(delta(short.counts(), s0), (1, 1), "{run}");
    assert_eq!(delta(long.counts(), l0), (1, 1), "{run}");
    assert!(
        run.stderr
            .contains("the certificate from issuer short is kept but cannot be pushed"),
        "{run}"
    );
    let chain = assert_deployed(&case, id, &[domain]);
    assert_eq!(days_valid(chain["cert"].as_str().unwrap()), 90);
    assert_eq!(
        case.requests("PUT") + case.requests("POST"),
        1,
        "{}",
        case.request_summary()
    );
    let learned: Value =
        serde_json::from_slice(&fs::read(case.state_dir().join("issuers.json")).unwrap()).unwrap();
    let secs = learned[&short.directory_url]["lifetime_secs"]
        .as_i64()
        .unwrap_or_else(|| panic!("{learned}"));
    assert!((45 * DAY - 60..=45 * DAY).contains(&secs), "{learned}");

    // The next renewal skips it up front.
    let (s1, l1) = (short.counts(), long.counts());
    let run = case.run(&config, &["renew", "--now"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr
            .contains("issuer short (45 days, from the certificate it issued on"),
        "{run}"
    );
    assert_eq!(delta(short.counts(), s1), (0, 0), "{run}");
    assert_eq!(delta(long.counts(), l1), (1, 1), "{run}");
    assert_no_txt(&[domain]);
    case.assert_invariants();
}

#[test]
fn no_acceptable_issuer_fails_before_any_order_naming_the_rule() {
    let _serial = serial();
    let short = short_pebble();
    let case = Case::new("iss-none");
    let id = "t-iss-none";
    let domain = "t-iss-none.example.test";
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .pebble(short)
        .acme("lifetime", "45d")
        .deployment(id, &[domain])
        .write();

    // Before any pass, `status` already counts it as at risk, with the reason, and exits 1.
    let status = case.run(&config, &["status", "--json"]);
    assert_eq!(status.code(), Some(1), "{status}");
    let doc: Value =
        serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("{e}: {status}"));
    let d = &doc["deployments"][0];
    assert_eq!(d["health"], "at_risk", "{doc}");
    assert_eq!(doc["healthy"], false, "{doc}");
    let why = d["at_risk"].as_str().unwrap_or_else(|| panic!("{doc}"));
    assert!(
        why.contains("no issuer can serve this deployment") && why.contains("60-day import rule"),
        "{why}"
    );
    let status = case.run(&config, &["status"]);
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(
        status.stdout.contains("AT RISK, issuer: NONE ("),
        "{status}"
    );

    let before = short.counts();
    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(1), "{run}");
    let failures = run.failures_of(id);
    assert_eq!(failures.len(), 1, "{run}");
    let message = failures[0];
    for part in [
        "no issuer can serve this deployment",
        "60-day import rule",
        "import_minimum",
        "acme (45 days, from its `lifetime` setting)",
        "[[acme.fallback]]",
        "profile",
    ] {
        assert!(message.contains(part), "{part:?} missing: {message}");
    }
    assert_eq!(short.counts(), before, "no account, no order: {run}");
    assert_eq!(case.requests("PUT") + case.requests("POST"), 0);

    let status = case.run(&config, &["status"]);
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(
        status.stdout.contains("issuer: NONE (no issuer can serve"),
        "{status}"
    );
    assert_no_txt(&[domain]);
    case.assert_invariants();
}

/// Marks the active certificate of `id` as inside the CA's renewal window (chosen an hour ago) and the window
/// as fresh for a day, as a pass that asked its CA would have left it.
fn craft_ari_due(case: &Case, id: &str) {
    let path = case.state_dir().join(format!("deployments/{id}.json"));
    let mut record: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let now = OffsetDateTime::now_utc();
    record["ari"] = json!({
        "serial": record["cert"]["serial"].clone(),
        "start": rfc3339(now - Duration::hours(2)),
        "end": rfc3339(now + Duration::days(1)),
        "chosen": rfc3339(now - Duration::hours(1)),
    });
    record["ari_next_check"] = json!(rfc3339(now + Duration::days(1)));
    write_private(
        &path,
        serde_json::to_string_pretty(&record).unwrap().as_bytes(),
    )
    .unwrap();
}

#[test]
fn a_ca_that_is_down_falls_back_and_replaces_stays_with_its_own_ca() {
    let _serial = serial();
    let case = Case::new("iss-down");
    case.standin.settings(&json!({"pending": 0}));
    let id = "t-iss-down";
    let domain = "t-iss-down.example.test";
    case.deployment(id, "one-way", due());
    let (dir_a, dir_b) = (
        case.dir.path().join("proxy-a"),
        case.dir.path().join("proxy-b"),
    );
    fs::create_dir_all(&dir_a).unwrap();
    fs::create_dir_all(&dir_b).unwrap();
    // Two CAs in front of the bed's Pebble, each an ARI-capable proxy recording `replaces`.
    let first = AriProxy::start(&bed().pebble, &dir_a);
    let second = AriProxy::start(&bed().pebble, &dir_b);
    let builder = case
        .config()
        .acme("directory", &first.directory_url)
        .acme("trust_roots", first.trust_roots.to_str().unwrap())
        .deployment(id, &[domain]);
    let extra = fallback("second", &second.directory_url, &second.trust_roots, None);
    let config = write_with(&builder, &extra);

    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(first.orders().len(), 1, "{run}");
    assert!(second.orders().is_empty(), "{run}");
    let first_chain = assert_deployed(&case, id, &[domain])["cert"]
        .as_str()
        .unwrap()
        .to_owned();

    // Due by the first CA's renewal window, with `replaces` ready; then the first CA goes down.
    craft_ari_due(&case, id);
    let first_addr = first.addr;
    drop(first);
    assert!(
        std::net::TcpStream::connect(first_addr).is_err(),
        "the port is closed"
    );
    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(stdout_line(&run, id).contains("renewed"), "{run}");
    assert!(
        run.stderr.contains("falling back to the next issuer"),
        "{run}"
    );
    let orders = second.orders();
    assert_eq!(orders.len(), 1, "{run}");
    assert_eq!(
        orders[0].replaces, None,
        "`replaces` never goes to another CA"
    );
    let chain = assert_deployed(&case, id, &[domain]);
    assert_ne!(
        chain["cert"].as_str(),
        Some(first_chain.as_str()),
        "a new certificate"
    );
    let record: Value = serde_json::from_slice(
        &fs::read(case.state_dir().join(format!("deployments/{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["cert_issuer"],
        second.directory_url.as_str(),
        "{record}"
    );

    // Due again: the certificate is the second CA's now, so `replaces` goes to it (the first is still down).
    craft_ari_due(&case, id);
    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");
    let orders = second.orders();
    assert_eq!(orders.len(), 2, "{run}");
    assert_eq!(
        orders[1].replaces.as_deref(),
        Some(ari_cert_id(chain["cert"].as_str().unwrap()).as_str()),
        "`replaces` goes to the CA that issued the replaced certificate"
    );
    assert_no_txt(&[domain]);
    case.assert_invariants();
}

#[test]
fn check_online_reports_each_broken_part_and_orders_nothing() {
    let _serial = serial();
    let long = long_pebble();
    let case = Case::new("iss-online");
    let id = "t-iss-online";
    let domain = "t-iss-online.example.test";
    case.deployment(id, "one-way", due());
    let wrong_tsig = case.dir.path().join("wrong.tsig");
    write_private(
        &wrong_tsig,
        b"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MDA=\n",
    )
    .unwrap();
    let extra = fallback(
        "long",
        &long.directory_url,
        &long.ca_pem,
        Some(&eab_key(&case)),
    );
    let broken = case
        .config_with_secret("wrong-secret-0123456789")
        .acme("profile", "nosuch")
        .dns("tsig_secret_file", wrong_tsig.to_str().unwrap())
        .deployment(id, &[domain]);
    let config = write_with(&broken, &extra);

    let guard = bed().exclusive();
    let (main0, long0) = (guard.delta(), long.counts());
    let run = case.run(&config, &["check", "--online"]);
    let main = guard.delta();
    drop(guard);
    assert_eq!(run.code(), Some(1), "{run}");
    let line = |prefix: &str| line_in(&run, prefix);
    assert!(line("ok: issuer acme directory:").contains(&bed().pebble.directory_url));
    assert!(
        line("FAILED: issuer acme profile `nosuch`:").contains("not offered"),
        "{run}"
    );
    assert!(line("ok: issuer long directory:").contains("reachable"));
    assert!(
        line("ok: issuer long account:").contains("External Account Binding accepted"),
        "{run}"
    );
    let dns = line("FAILED: dns bed:");
    assert!(
        dns.to_lowercase().contains("tsig") || dns.contains("BADSIG") || dns.contains("NOTAUTH"),
        "{dns}"
    );
    assert!(line("FAILED: emqx standin:").contains("401"), "{run}");
    assert!(
        !run.stdout.contains("wrong-secret") && !run.stderr.contains("wrong-secret"),
        "{run}"
    );
    assert_eq!(
        (main.orders - main0.orders, main.issued - main0.issued),
        (0, 0),
        "{run}"
    );
    assert_eq!(delta(long.counts(), long0), (0, 0), "{run}");
    assert_eq!(
        case.requests("GET"),
        1,
        "one GET per API key: {}",
        case.request_summary()
    );
    assert_eq!(case.requests("PUT") + case.requests("POST"), 0);
    assert_no_txt(&[domain]);

    passes_once_fixed(&case, id, domain, &extra);
}

/// With the good secrets every check passes; the test record was added and removed.
fn passes_once_fixed(case: &Case, id: &str, domain: &str, extra: &str) {
    let good = case.config().deployment(id, &[domain]);
    let config = write_with(&good, extra);
    let run = case.run(&config, &["check", "--online"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        line_in(&run, "ok: dns bed:").contains("credentials accepted"),
        "{run}"
    );
    assert!(
        line_in(&run, "ok: issuer long account:").contains("exists"),
        "{run}"
    );
    assert!(
        line_in(&run, "ok: emqx standin:").contains("accepted"),
        "{run}"
    );
    assert_no_txt(&[domain]);
    case.assert_invariants();
}

fn line_in<'r>(run: &'r Run, prefix: &str) -> &'r str {
    run.stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?}:\n{run}"))
}

#[test]
fn an_order_the_first_ca_refuses_falls_back() {
    let _serial = serial();
    let short = short_pebble();
    let case = Case::new("iss-refused");
    let id = "t-iss-refused";
    let main = &bed().pebble;
    let builder = files_deployment(&case, case.config().pebble(short), id, REFUSED_DOMAIN);
    let extra = fallback("main", &main.directory_url, &main.ca_pem, None);
    let config = write_with(&builder, &extra);

    let before = short.counts();
    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(stdout_line(&run, id).contains("renewed"), "{run}");
    assert!(
        run.stderr.contains("falling back to the next issuer"),
        "{run}"
    );
    assert_eq!(short.counts().issued, before.issued, "{run}");
    let cert = fs::read_to_string(case.dir.path().join(format!("files-{id}/cert.pem"))).unwrap();
    assert!(days_valid(&cert) > 45, "issued by the fallback");
    assert_no_txt(&[REFUSED_DOMAIN]);
    case.assert_invariants();
}

#[test]
fn an_enforced_issuer_key_match_is_learned_and_decided_before_ordering() {
    let _serial = serial();
    let long = long_pebble();
    let case = Case::new("iss-keymatch");
    case.standin.settings(&json!({"pending": 0}));
    let id = "t-iss-keymatch";
    let domain = "t-iss-keymatch.example.test";
    case.deployment(id, "one-way", due());
    // Pebble signs every leaf with an RSA intermediate: the ECDSA key ordered from `long` cannot match it;
    // the fallback (the bed's Pebble) orders RSA keys, which do.
    let main = &bed().pebble;
    let builder = case
        .config()
        .pebble(long)
        .acme("name", "long")
        .acme("eab_kid", EAB_KID)
        .acme("eab_hmac_key_file", &eab_key(&case).display().to_string())
        .emqx("issuer_key_match", "enforce")
        .deployment(id, &[domain]);
    let mut extra = fallback("rsa", &main.directory_url, &main.ca_pem, None);
    extra.push_str("key_type = \"rsa-2048\"\n");
    let config = write_with(&builder, &extra);

    let l0 = long.counts();
    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(delta(long.counts(), l0), (1, 1), "{run}");
    assert!(
        run.stderr
            .contains("the certificate from issuer long is kept but cannot be pushed"),
        "{run}"
    );
    let learned: Value =
        serde_json::from_slice(&fs::read(case.state_dir().join("issuers.json")).unwrap()).unwrap();
    assert_eq!(
        learned[&long.directory_url]["issuer_key"], "RSA",
        "{learned}"
    );

    // The next pass knows `long` signs with RSA and orders nothing there.
    let l1 = long.counts();
    let run = case.run(&config, &["renew", "--now"]);
    assert_eq!(run.code(), Some(0), "{run}");
    let skipped: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("skipped before ordering"))
        .collect();
    assert_eq!(skipped.len(), 1, "{run}");
    assert!(
        skipped[0].contains("issuer_key_match") && skipped[0].contains("RSA intermediate"),
        "{}",
        skipped[0]
    );
    assert_eq!(delta(long.counts(), l1), (0, 0), "{run}");
    assert_no_txt(&[domain]);
    case.assert_invariants();
}

#[test]
fn a_recorded_rate_limit_skips_the_issuer_until_its_retry_after() {
    use std::os::unix::fs::DirBuilderExt;
    let _serial = serial();
    let (short, long) = (short_pebble(), long_pebble());
    let case = Case::new("iss-ratelimit");
    let id = "t-iss-ratelimit";
    let domain = "t-iss-ratelimit.example.test";
    let builder = files_deployment(&case, case.config(), id, domain);
    let (builder, extra) = two_issuers(&case, builder);
    let config = write_with(&builder, &extra);
    // As a pass that got `rateLimited` with an hour's Retry-After from the first CA leaves it.
    let until = OffsetDateTime::now_utc() + Duration::hours(1);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(case.state_dir())
        .unwrap();
    let log = json!({&short.directory_url: {
        "lifetime_secs": 0, "serial": "", "issued": rfc3339(until), "rate_limited_until": rfc3339(until),
    }});
    write_private(
        &case.state_dir().join("issuers.json"),
        log.to_string().as_bytes(),
    )
    .unwrap();

    let (s0, l0) = (short.counts(), long.counts());
    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");
    let skipped: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("skipped before ordering"))
        .collect();
    assert_eq!(skipped.len(), 1, "{run}");
    assert!(
        skipped[0].contains("short") && skipped[0].contains("rate-limited it until"),
        "{}",
        skipped[0]
    );
    assert_eq!(delta(short.counts(), s0), (0, 0), "{run}");
    assert_eq!(delta(long.counts(), l0), (1, 1), "{run}");
    assert_no_txt(&[domain]);
    case.assert_invariants();
}
