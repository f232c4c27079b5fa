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

/// Due under every rule for a certificate certkeeper knows nothing about (less than 30 days left).
fn due() -> Option<OffsetDateTime> {
    Some(from_now(Duration::days(10)))
}

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

// ---- ARI --------------------------------------------------------------------------------------------------------

/// A case whose ACME directory is an [`AriProxy`] in front of the bed's Pebble, with one deployment `id` that
/// certkeeper has already renewed once through it (so the agent knows the certificate it pushed).
struct AriCase {
    case: Case,
    proxy: AriProxy,
    config: std::path::PathBuf,
    id: String,
    domains: Vec<String>,
    /// The ARI id of the certificate of the first renewal.
    first_id: String,
}

impl AriCase {
    fn start(name: &str) -> Self {
        let case = Case::new(name);
        case.standin.settings(&json!({"pending": 0}));
        let proxy = AriProxy::start(&bed().pebble, case.dir.path());
        let id = format!("t-{name}");
        let domain = format!("t-{name}.example.test");
        case.deployment(&id, "one-way", due());
        let config = case
            .config()
            .acme("directory", &proxy.directory_url)
            .acme("trust_roots", proxy.trust_roots.to_str().unwrap())
            .deployment(&id, &[domain.as_str()])
            .write();

        let first = case.run(&config, &["renew"]);
        assert_ok(&first, &id);
        assert!(line_of(&first, &id).contains("renewed"), "{first}");
        assert_deployed(&case, &id, &[domain.as_str()]);
        // Nothing to ask the CA about before the agent has pushed a certificate; the order has no `replaces`.
        assert!(proxy.renewal_info_requests().is_empty(), "{first}");
        assert_eq!(
            proxy.orders(),
            [OrderSeen {
                replaces: None,
                status: 201
            }]
        );
        let first_id = ari_cert_id(&pushed_chain(&case, &id));
        Self {
            case,
            proxy,
            config,
            id,
            domains: vec![domain],
            first_id,
        }
    }

    fn run(&self) -> Run {
        self.case.run(&self.config, &["renew"])
    }
}

#[test]
fn ari_proxy_is_transparent_and_adds_renewal_info() {
    // The double itself: the directory and every URL Pebble answers with name the proxy (Pebble builds them from
    // the Host header, which the proxy keeps), and renewalInfo is added.
    let tmp = tempfile::tempdir().unwrap();
    let proxy = AriProxy::start(&bed().pebble, tmp.path());
    let ca = fs::read(&proxy.trust_roots).unwrap();
    let (status, body) = common::bed::https_get(&proxy.directory_url, &ca).unwrap();
    assert_eq!(status, 200, "{body}");
    let dir: Value = serde_json::from_str(&body).unwrap();
    let base = format!("https://{}/", proxy.addr);
    for key in ["newNonce", "newAccount", "newOrder", "renewalInfo"] {
        assert!(
            dir[key].as_str().is_some_and(|u| u.starts_with(&base)),
            "{key} must point at the proxy: {dir}"
        );
    }
    proxy.set_window(from_now(Duration::days(1)), from_now(Duration::days(2)));
    proxy.set_retry_after(3600);
    let (status, body) = common::bed::https_get(
        &format!(
            "{}/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
            dir["renewalInfo"].as_str().unwrap()
        ),
        &ca,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let info: Value = serde_json::from_str(&body).unwrap();
    assert!(parse_time(&info["suggestedWindow"]["start"]) > from_now(Duration::hours(23)));
    assert_eq!(
        proxy.renewal_info_requests(),
        ["aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"]
    );
}

#[test]
fn ari_window_in_the_future_means_no_renewal_and_no_vendor_request() {
    let t = AriCase::start("ari-future");
    let (start, end) = (from_now(Duration::days(10)), from_now(Duration::days(12)));
    t.proxy.set_window(start, end);
    let vendor_before = t.case.standin.log().len();

    let bed = bed().exclusive();
    let second = t.run();
    let third = t.run();
    let acme = bed.delta();
    drop(bed);

    assert_ok(&second, &t.id);
    assert_ok(&third, &t.id);
    // The window (10 days out) is earlier than the lifetime rule for Pebble's certificates (years), so it rules;
    // it is not due, and local state is fresh: the vendor is not asked.
    let rec = record(&t.case, &t.id);
    let chosen = parse_time(&rec["ari"]["chosen"]);
    assert!(
        start <= chosen && chosen <= end,
        "chosen {chosen} outside the window: {rec}"
    );
    assert_eq!(parse_time(&rec["ari"]["start"]), start, "{rec}");
    assert_eq!(parse_time(&rec["ari"]["end"]), end, "{rec}");
    for run in [&second, &third] {
        let line = line_of(run, &t.id);
        assert!(
            line.contains("not due: expires")
                && line.contains(&format!("renewal planned {} (ARI window)", day(chosen)))
                && line.contains("[from local state, no API request]"),
            "{run}"
        );
    }
    assert_eq!(
        t.case.standin.log().len(),
        vendor_before,
        "no vendor request while not due and local state is fresh:\n{}",
        t.case.request_summary()
    );
    assert_eq!((acme.orders, acme.issued), (0, 0), "{acme:?}");
    // Asked once for the certificate certkeeper pushed; the third pass keeps the answer until its Retry-After.
    assert_eq!(t.proxy.renewal_info_requests(), [t.first_id.as_str()]);
    let next_check = parse_time(&rec["ari_next_check"]);
    let retry = common::ari::DEFAULT_RETRY_AFTER as i64;
    assert!(
        (next_check - from_now(Duration::seconds(retry))).abs() < Duration::minutes(2),
        "ari_next_check {next_check} must follow the Retry-After of {retry} s"
    );
    assert_eq!(t.proxy.orders().len(), 1, "only the first renewal ordered");

    let status = t.case.run(&t.config, &["status"]);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        status.stdout.lines().any(|l| l.starts_with(&t.id)
            && l.contains(&format!("renewal {} (ARI window)", day(chosen)))),
        "{status}"
    );
    t.case.assert_invariants();
}

/// ARI says renew now: the new order names the old certificate in `replaces`; when the CA rejects that
/// (`reject`), certkeeper orders exactly once more without it.
fn ari_window_in_the_past(name: &str, reject: bool) {
    let t = AriCase::start(name);
    t.proxy
        .set_window(from_now(-Duration::days(2)), from_now(-Duration::days(1)));
    if reject {
        t.proxy.reject_replaces(1);
    }

    let bed = bed().exclusive();
    let second = t.run();
    let acme = bed.delta();
    drop(bed);

    assert_ok(&second, &t.id);
    assert!(line_of(&second, &t.id).contains("renewed"), "{second}");
    assert!(
        log_of(&second, &t.id)
            .iter()
            .any(|l| l.contains("renewal due; ordering a certificate")
                && l.contains("rule=ARI window")),
        "{second}"
    );
    assert_eq!(t.proxy.renewal_info_requests(), [t.first_id.as_str()]);
    let with_replaces = OrderSeen {
        replaces: Some(t.first_id.clone()),
        status: if reject { 409 } else { 201 },
    };
    let mut want = vec![
        OrderSeen {
            replaces: None,
            status: 201,
        },
        with_replaces,
    ];
    if reject {
        want.push(OrderSeen {
            replaces: None,
            status: 201,
        });
        assert!(
            second.stderr.contains("the order with `replaces` failed")
                && second.stderr.contains("ordering once more without it"),
            "the retry must be logged:\n{second}"
        );
    }
    assert_eq!(t.proxy.orders(), want, "{second}");
    // The rejected order never reached Pebble: one order and one certificate either way.
    assert_eq!((acme.orders, acme.issued), (1, 1), "{acme:?}");
    assert_eq!(t.case.requests("PUT"), 2, "{}", t.case.request_summary());
    let domains: Vec<&str> = t.domains.iter().map(String::as_str).collect();
    assert_deployed(&t.case, &t.id, &domains);
    let new_id = ari_cert_id(&pushed_chain(&t.case, &t.id));
    assert_ne!(new_id, t.first_id, "a new certificate is running");
    let rec = record(&t.case, &t.id);
    assert_eq!(rec["step"], "active", "{rec}");
    assert!(rec["ari"].is_null(), "the old window is dropped: {rec}");
    assert_no_txt(&domains);
    t.case.assert_invariants();
}

#[test]
fn ari_window_in_the_past_renews_with_replaces() {
    ari_window_in_the_past("ari-past", false);
}

#[test]
fn rejected_replaces_is_retried_once_without_it() {
    ari_window_in_the_past("ari-reject", true);
}

// ---- lifetime rule and local state ------------------------------------------------------------------------------

#[test]
fn lifetime_rule_for_six_and_ninety_day_certificates() {
    // Records say certkeeper pushed these certificates; the stand-in runs them (same expiry). A 6-day certificate
    // renews at half its life (3 days left), a 90-day one at a third (30 days left); the 30-day rule for unknown
    // certificates would renew the 6-day one with 4 days left, the lifetime rule must not.
    let case = Case::new("life");
    case.standin.settings(&json!({"pending": 0}));
    let now = OffsetDateTime::now_utc();
    // (id, lifetime in days, days left, due, renewal planned at)
    let cases = [
        ("t-life6-due", 6, 2, true),
        ("t-life6-far", 6, 4, false),
        ("t-life90-due", 90, 29, true),
        ("t-life90-far", 90, 31, false),
    ];
    let mut config = case.config();
    let mut expiries = Vec::new();
    for (id, lifetime, left, _) in cases {
        let domain = format!("{id}.example.test");
        let not_after = now + Duration::days(left);
        let not_before = not_after - Duration::days(lifetime);
        craft_record(&case, id, &[domain.as_str()], not_before, not_after);
        case.deployment(id, "one-way", Some(not_after));
        config = config.deployment(id, &[domain.as_str()]);
        expiries.push(not_after);
    }
    let config = config.write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    for ((id, lifetime, _, due), not_after) in cases.into_iter().zip(expiries) {
        assert!(run.failures_of(id).is_empty(), "{run}");
        let requests = requests_for(&case, id);
        if due {
            assert!(line_of(&run, id).contains("renewed"), "{id}:\n{run}");
            assert!(
                log_of(&run, id)
                    .iter()
                    .any(|l| l.contains("renewal due; ordering a certificate")
                        && l.contains("rule=lifetime rule")),
                "{id} must be due by the lifetime rule:\n{run}"
            );
            let puts = requests.iter().filter(|e| e["method"] == "PUT").count();
            assert_eq!(puts, 1, "{id}: {requests:?}");
            assert_deployed(&case, id, &[&format!("{id}.example.test")]);
        } else {
            let left = if lifetime <= 10 {
                lifetime / 2
            } else {
                lifetime / 3
            };
            let planned = not_after - Duration::days(left);
            let line = line_of(&run, id);
            assert!(
                line.contains(&format!(
                    "not due: expires {}, renewal planned {} (lifetime rule) [from local state, no API request]",
                    day(not_after),
                    day(planned)
                )),
                "{id}: {line}"
            );
            assert!(requests.is_empty(), "{id}: no vendor request: {requests:?}");
            assert!(case.standin.deployment(id)["cert"].is_null());
        }
    }
    assert_no_txt(&["t-life6-due.example.test", "t-life90-due.example.test"]);
    case.assert_invariants();
}

#[test]
fn not_due_with_fresh_local_state_makes_no_vendor_request() {
    let case = Case::new("fresh");
    case.standin.settings(&json!({"pending": 0}));
    let id = "t-fresh";
    let domains = ["t-fresh.example.test"];
    case.deployment(id, "one-way", due());
    let builder = case.config().deployment(id, &domains);
    let config = builder.write();
    let first = case.run(&config, &["renew"]);
    assert_ok(&first, id);
    assert!(line_of(&first, id).contains("renewed"), "{first}");
    let after_first = case.standin.log().len();

    let bed = bed().exclusive();
    let second = case.run(&config, &["renew"]);
    let acme = bed.delta();
    drop(bed);

    assert_ok(&second, id);
    assert!(
        line_of(&second, id).contains("not due")
            && line_of(&second, id).contains("(lifetime rule) [from local state, no API request]"),
        "{second}"
    );
    assert_eq!(
        case.standin.log().len(),
        after_first,
        "zero vendor requests:\n{}",
        case.request_summary()
    );
    assert_eq!((acme.orders, acme.issued), (0, 0), "{acme:?}");

    // Local state is trusted only for inspect_interval: after it, one GET notices outside changes.
    let config = builder.emqx("inspect_interval", "1s").write();
    std::thread::sleep(StdDuration::from_millis(1100));
    let third = case.run(&config, &["renew"]);
    assert_ok(&third, id);
    let line = line_of(&third, id);
    assert!(
        line.contains("not due") && !line.contains("no API request"),
        "{third}"
    );
    let log = case.standin.log();
    assert_eq!(log.len(), after_first + 1, "{}", case.request_summary());
    assert_eq!(log[after_first]["method"], "GET");
    case.assert_invariants();
}

// ---- the vendor's request budget --------------------------------------------------------------------------------

/// `/api/v1/deployments/{id}/tls` → `id`.
fn deployment_of(entry: &Value) -> String {
    entry["path"]
        .as_str()
        .unwrap()
        .trim_start_matches("/api/v1/deployments/")
        .trim_end_matches("/tls")
        .to_owned()
}

#[test]
fn twenty_due_deployments_on_one_key_never_hit_429_and_renew_by_deadline() {
    // The stand-in allows 6 writes per 8 s (the vendor: per hour); certkeeper is told the same. The agent knows
    // the deployments from an earlier pass, when none was due (`renew_before = "1h"`); now all are due, each with
    // its own deadline, and the config lists them in another order.
    const N: usize = 20;
    const WINDOW: i64 = 8;
    let case = Case::new("bulk");
    case.standin
        .settings(&json!({"pending": 0, "window": WINDOW, "write_limit": 6}));
    let base = case
        .config()
        .emqx_raw("write_limit", "6")
        .emqx("rate_window", &format!("{WINDOW}s"));
    let (mut earlier, mut config) = (base.clone(), base);
    let mut expire_of = Vec::new();
    for i in 0..N {
        let id = format!("t-bulk-{i:02}");
        // A permutation of 0..N: the order of deadlines differs from the order of the config.
        let rank = (i * 7) % N;
        let expire = from_now(Duration::days(10) + Duration::hours(rank as i64));
        case.deployment(&id, "one-way", Some(expire));
        let domain = format!("{id}.example.test");
        earlier = earlier
            .deployment(&id, &[domain.as_str()])
            .with("renew_before", "1h");
        config = config.deployment(&id, &[domain.as_str()]);
        expire_of.push((id, expire));
    }
    let earlier = earlier.write();
    let pass0 = case.run(&earlier, &["renew"]);
    assert_eq!(pass0.code(), Some(0), "{pass0}");
    assert_eq!(pass0.stdout.matches(": not due: ").count(), N, "{pass0}");
    let config = config.write();

    let started = Instant::now();
    let mut passes = 0;
    loop {
        passes += 1;
        let run = case.run(&config, &["renew"]);
        assert_eq!(run.code(), Some(0), "pass {passes}:\n{run}");
        for (id, _) in &expire_of {
            assert!(run.failures_of(id).is_empty(), "pass {passes}:\n{run}");
        }
        let deferred = run
            .stdout
            .lines()
            .filter(|l| l.contains(": deferred until "))
            .count();
        if deferred == 0 {
            break;
        }
        assert!(
            run.stdout.contains("no write left in the vendor budget"),
            "pass {passes}:\n{run}"
        );
        assert!(passes < 6, "still deferring after {passes} passes:\n{run}");
        assert!(
            started.elapsed() < StdDuration::from_secs(60),
            "20 renewals took too long"
        );
        // Next pass when the vendor's window has room for six writes again. (Waiting for the last write to leave
        // the window, not the first, keeps every pass's writes inside one window.)
        let last = case
            .standin
            .log()
            .iter()
            .rev()
            .find(|e| e["method"] == "PUT")
            .map(|e| parse_time(&e["at"]))
            .expect("a pass that defers has written before");
        let wait = last + Duration::seconds(WINDOW) + Duration::milliseconds(300)
            - OffsetDateTime::now_utc();
        if wait.is_positive() {
            std::thread::sleep(StdDuration::try_from(wait).unwrap());
        }
    }

    let log = case.standin.log();
    assert!(
        log.iter().all(|e| e["status"] != 429),
        "the vendor answered 429:\n{}",
        case.request_summary()
    );
    assert!(
        log.iter()
            .all(|e| e["status"].as_u64().is_some_and(|s| s < 300)),
        "{}",
        case.request_summary()
    );
    let put_order: Vec<String> = log
        .iter()
        .filter(|e| e["method"] == "PUT")
        .map(deployment_of)
        .collect();
    let mut by_deadline = expire_of.clone();
    by_deadline.sort_by_key(|(_, expire)| *expire);
    let by_deadline: Vec<String> = by_deadline.into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        put_order, by_deadline,
        "one PUT each, earliest deadline first"
    );
    assert!(
        passes >= 4,
        "6 writes per window cannot renew 20 in {passes} passes"
    );
    for (id, _) in &expire_of {
        let view = assert_deployed(&case, id, &[&format!("{id}.example.test")]);
        assert_eq!(view["writes"], 1, "{id}: {view}");
    }
    case.assert_invariants();
    eprintln!("20 renewals in {passes} passes, {:?}", started.elapsed());
}

#[test]
fn first_pass_spends_the_write_budget_on_the_earliest_deadlines() {
    // A fresh state directory: the agent learns the expiries from its GETs in this very pass. Seven due
    // deployments, six writes: the one that waits must be the one with the latest deadline, whatever the order of
    // the config (here: latest deadline first, earliest last).
    let case = Case::new("first-pass");
    case.standin.settings(&json!({"pending": 0}));
    let mut config = case.config();
    let ids: Vec<String> = (0..7).map(|i| format!("t-first-pass-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        case.deployment(
            id,
            "one-way",
            Some(from_now(Duration::days(20) - Duration::days(i as i64))),
        );
        config = config.deployment(id, &[&format!("{id}.example.test")]);
    }
    let config = config.write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    let deferred: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains(": deferred until "))
        .collect();
    assert_eq!(deferred.len(), 1, "{run}");
    assert!(
        deferred[0].starts_with("t-first-pass-0: "),
        "the latest deadline waits, not {}",
        deferred[0]
    );
    let puts: Vec<String> = case
        .standin
        .log()
        .iter()
        .filter(|e| e["method"] == "PUT")
        .map(deployment_of)
        .collect();
    let want: Vec<String> = ids[1..].iter().rev().cloned().collect();
    assert_eq!(puts, want, "earliest deadline first");
    case.assert_invariants();
}

#[test]
fn a_429_with_a_long_retry_after_defers_without_failing_the_pass() {
    // The stand-in allows one GET per 300 s while certkeeper believes in 60 an hour: the GET that waits for the
    // pushed certificate to run gets 429 with a Retry-After of about 300 s, longer than certkeeper waits inside a
    // pass, so the deployment is deferred with its push recorded.
    let case = Case::new("429");
    case.standin
        .settings(&json!({"pending": 0, "get_limit": 1, "window": 300}));
    let id = "t-429";
    let domains = ["t-429.example.test"];
    case.deployment(id, "one-way", due());
    let config = case.config().deployment(id, &domains).write();

    let before = OffsetDateTime::now_utc();
    let first = case.run(&config, &["renew"]);

    assert_ok(&first, id);
    let line = line_of(&first, id);
    assert!(
        line.contains("deferred until") && line.contains("429"),
        "{first}"
    );
    let summary: Vec<(String, u64)> = case
        .standin
        .log()
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_owned(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let s = |m: &str, c: u64| (m.to_owned(), c);
    assert_eq!(summary, [s("GET", 200), s("PUT", 200), s("GET", 429)]);
    assert_eq!(record(&case, id)["step"], "pushed");
    let budget_path = case.state_dir().join("budget.json");
    let mut budget: Value = serde_json::from_slice(&fs::read(&budget_path).unwrap()).unwrap();
    // budget.json keeps Unix milliseconds.
    let blocked = budget[common::KEY]["blocked_until_ms"]
        .as_i64()
        .expect("the key is blocked");
    let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
    assert!(
        blocked >= ms(before + Duration::seconds(290))
            && blocked <= ms(OffsetDateTime::now_utc() + Duration::seconds(301)),
        "blocked until the Retry-After: {budget}"
    );

    // Before the Retry-After, another pass sends nothing and defers again.
    let bed = bed().exclusive();
    let second = case.run(&config, &["renew"]);
    assert_ok(&second, id);
    assert!(line_of(&second, id).contains("deferred until"), "{second}");
    assert_eq!(case.standin.log().len(), 3, "{}", case.request_summary());

    // After the Retry-After (simulated: the stand-in's window and certkeeper's block are moved into the past), the
    // next pass resumes waiting for the pushed certificate: no new order, no second push.
    case.standin.settings(&json!({"get_limit": 60}));
    budget[common::KEY]["blocked_until_ms"] = json!(ms(OffsetDateTime::now_utc()) - 1);
    write_private(&budget_path, budget.to_string().as_bytes()).unwrap();
    let third = case.run(&config, &["renew"]);
    let acme = bed.delta();
    drop(bed);

    assert_ok(&third, id);
    assert!(line_of(&third, id).contains("renewed"), "{third}");
    assert_eq!((acme.orders, acme.issued), (0, 0), "{acme:?}");
    assert_eq!(case.requests("PUT"), 1, "{}", case.request_summary());
    assert_eq!(case.standin.log().last().unwrap()["status"], 200);
    assert_eq!(record(&case, id)["step"], "active");
    assert_deployed(&case, id, &domains);
    case.assert_invariants();
}

#[test]
fn a_429_with_a_short_retry_after_is_waited_out_inside_the_pass() {
    let case = Case::new("429-short");
    case.standin
        .settings(&json!({"pending": 0, "get_limit": 1, "window": 5}));
    let id = "t-429-short";
    let domains = ["t-429-short.example.test"];
    case.deployment(id, "one-way", due());
    let config = case.config().deployment(id, &domains).write();

    let run = case.run(&config, &["renew"]);

    assert_ok(&run, id);
    assert!(line_of(&run, id).contains("renewed"), "{run}");
    let log = case.standin.log();
    let statuses: Vec<(&str, u64)> = log
        .iter()
        .map(|e| (e["method"].as_str().unwrap(), e["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [("GET", 200), ("PUT", 200), ("GET", 429), ("GET", 200)],
        "{}",
        case.request_summary()
    );
    // The retry came when the stand-in's window had room again, not before.
    assert!(parse_time(&log[3]["at"]) - parse_time(&log[0]["at"]) >= Duration::seconds(5));
    assert_deployed(&case, id, &domains);
    case.assert_invariants();
}

// ---- dry run ----------------------------------------------------------------------------------------------------

/// A case with deployment `id` due by the lifetime rule (a crafted record of a 6-day certificate with 2 days
/// left); returns the record's path.
fn due_by_record(case: &Case, id: &str, domains: &[&str]) -> std::path::PathBuf {
    let not_after = from_now(Duration::days(2));
    case.deployment(id, "one-way", Some(not_after));
    craft_record(case, id, domains, not_after - Duration::days(6), not_after)
}

fn assert_dry_run_left_no_trace(case: &Case, id: &str, record_path: &Path, record_before: &[u8]) {
    assert_eq!(
        fs::read(record_path).unwrap(),
        record_before,
        "a dry run must not change the deployment's record"
    );
    assert!(
        !case
            .state_dir()
            .join(format!("deployments/{id}.pem"))
            .exists()
    );
    let log = case.standin.log();
    assert!(
        log.iter().all(|e| e["method"] == "GET"),
        "no vendor write:\n{}",
        case.request_summary()
    );
    assert_eq!(log.len(), 1, "{}", case.request_summary());
    assert!(case.standin.deployment(id)["cert"].is_null());
}

#[test]
fn dry_run_without_staging_orders_nothing() {
    let case = Case::new("dry");
    let id = "t-dry";
    let domains = ["t-dry.example.test"];
    let record_path = due_by_record(&case, id, &domains);
    let before = fs::read(&record_path).unwrap();
    let config = case.config().deployment(id, &domains).write();

    let bed = bed().exclusive();
    let run = case.run(&config, &["renew", "--dry-run"]);
    let acme = bed.delta();
    drop(bed);

    assert_ok(&run, id);
    let line = line_of(&run, id);
    assert!(
        line.contains(
            "dry run: due (lifetime rule): would order a certificate for t-dry.example.test"
        ) && line.contains("staging_directory"),
        "{run}"
    );
    assert_eq!(acme, common::PebbleCounts::default(), "no ACME traffic");
    assert_dry_run_left_no_trace(&case, id, &record_path, &before);
    case.assert_invariants();
}

#[test]
fn dry_run_with_staging_issues_there_and_writes_nothing() {
    // The production directory is an ARI proxy (so any use of it shows); staging is the bed's Pebble itself.
    let case = Case::new("dry-staging");
    let proxy = AriProxy::start(&bed().pebble, case.dir.path());
    let id = "t-dry-staging";
    let domains = ["t-dry-staging.example.test"];
    let record_path = due_by_record(&case, id, &domains);
    let before = fs::read(&record_path).unwrap();
    let config = case
        .config()
        .acme("directory", &proxy.directory_url)
        .acme("trust_roots", proxy.trust_roots.to_str().unwrap())
        .acme("staging_directory", &bed().pebble.directory_url)
        .deployment(id, &domains)
        .write();

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew", "--dry-run"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_ok(&run, id);
    let line = line_of(&run, id);
    assert!(
        line.contains(&format!(
            "dry run: due (lifetime rule): trial issuance against {} passed",
            bed().pebble.directory_url
        )) && line.contains("would order from"),
        "{run}"
    );
    assert_eq!((acme.orders, acme.issued), (1, 1), "{acme:?}");
    assert!(
        proxy.requests().is_empty(),
        "the production CA is not used: {:?}",
        proxy.requests()
    );
    assert_dry_run_left_no_trace(&case, id, &record_path, &before);
    assert_no_txt(&domains);
    case.assert_invariants();
}

// ---- profiles and External Account Binding -----------------------------------------------------------------------

fn profile_case(name: &str, configure: impl FnOnce(ConfigBuilder) -> ConfigBuilder, profile: &str) {
    let case = Case::new(name);
    let id = format!("t-{name}");
    case.deployment(&id, "one-way", due());
    let config = configure(
        case.config()
            .deployment(&id, &[&format!("{id}.example.test")]),
    )
    .write();

    let bed = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = bed.delta();
    drop(bed);

    assert_eq!(run.code(), Some(2), "{run}");
    assert!(
        run.stderr
            .contains(&format!("ACME profile `{profile}` is not offered")),
        "{run}"
    );
    assert!(run.stdout.is_empty(), "{run}");
    assert_eq!((acme.orders, acme.issued), (0, 0), "{acme:?}");
    assert!(case.standin.log().is_empty(), "{}", case.request_summary());
    case.assert_invariants();
}

#[test]
fn a_profile_the_ca_does_not_offer_is_a_config_error() {
    profile_case("profile", |c| c.acme("profile", "shortlived"), "shortlived");
    profile_case(
        "profile-dep",
        |c| c.with("profile", "tlsserver"),
        "tlsserver",
    );
}

#[test]
fn external_account_binding() {
    let pebble = eab_pebble();
    let before = pebble.counts();

    // Without EAB the CA refuses the account: one clear failure, nothing pushed.
    let case = Case::new("eab-none");
    let id = "t-eab-none";
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .pebble(pebble)
        .deployment(id, &["t-eab-none.example.test"])
        .write();
    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(1), "{run}");
    let failures = run.failures_of(id);
    assert_eq!(failures.len(), 1, "{run}");
    assert!(
        failures[0].contains("registering an account failed")
            && failures[0].contains("externalAccountRequired"),
        "{}",
        failures[0]
    );
    assert_eq!(case.requests("PUT") + case.requests("POST"), 0);
    assert!(!case.state_dir().join("account.json").exists());
    assert_eq!(pebble.counts(), before, "no account, no order");
    case.assert_invariants();

    // With the kid and HMAC key from the CA's console: renewed.
    let case = Case::new("eab");
    let id = "t-eab";
    let domains = ["t-eab.example.test"];
    case.deployment(id, "one-way", due());
    let key_file = case.dir.path().join("eab.key");
    write_private(&key_file, format!("{EAB_HMAC_KEY}\n").as_bytes()).unwrap();
    let config = case
        .config()
        .pebble(pebble)
        .acme("eab_kid", EAB_KID)
        .acme("eab_hmac_key_file", key_file.to_str().unwrap())
        .deployment(id, &domains)
        .write();
    let run = case.run(&config, &["renew"]);
    assert_ok(&run, id);
    assert!(line_of(&run, id).contains("renewed"), "{run}");
    let after = pebble.counts();
    assert_eq!(
        (
            after.accounts - before.accounts,
            after.orders - before.orders,
            after.issued - before.issued
        ),
        (1, 1, 1)
    );
    assert_deployed(&case, id, &domains);
    assert!(case.state_dir().join("account.json").is_file());
    assert_no_txt(&domains);
    case.assert_invariants();
}

// ---- status -----------------------------------------------------------------------------------------------------

#[test]
fn status_prints_the_plan_and_the_budget_left() {
    let case = Case::new("plan-status");
    case.standin.settings(&json!({"pending": 0}));
    let id = "t-plan-status";
    let domains = ["t-plan-status.example.test"];
    case.deployment(id, "one-way", due());
    let config = case.config().deployment(id, &domains).write();
    let before = OffsetDateTime::now_utc();
    let run = case.run(&config, &["renew"]);
    let after = OffsetDateTime::now_utc();
    assert_ok(&run, id);
    let requests = case.standin.log();

    let status = case.run(&config, &["status"]);

    assert_eq!(status.code(), Some(0), "{status}");
    assert_eq!(
        case.standin.log().len(),
        requests.len(),
        "status is local only"
    );
    let line = status
        .stdout
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("no line for {id}:\n{status}"));
    // Renewal at a third of the pushed certificate's life before its end.
    let chain = parse_chain(&pushed_chain(&case, id));
    let rec = record(&case, id);
    let not_before = parse_time(&rec["cert"]["not_before"]);
    assert_eq!(parse_time(&rec["cert"]["not_after"]), chain.not_after);
    let renew_at = chain.not_after - (chain.not_after - not_before) / 3;
    assert!(
        line.contains(&format!("renewal {} (lifetime rule)", day(renew_at))),
        "{line}"
    );
    // Next inspection: inspect_interval (24 h) after the last GET.
    let next = line
        .split("next inspection ")
        .nth(1)
        .and_then(|rest| rest.get(..20))
        .unwrap_or_else(|| panic!("no next inspection: {line}"));
    let earliest = day(before + Duration::hours(24) - Duration::minutes(1));
    let latest = day(after + Duration::hours(24));
    assert!(
        earliest.as_str() <= next && next <= latest.as_str(),
        "next inspection {next} not 24 h after the run ({earliest} – {latest}): {line}"
    );
    let gets = requests.iter().filter(|e| e["method"] == "GET").count();
    let writes = requests.len() - gets;
    assert_eq!(writes, 1);
    let budget = format!(
        "[emqx.standin] key {}: {}/60 GET and {}/6 writes left in the current 1h",
        common::KEY,
        60 - gets,
        6 - writes
    );
    assert!(
        status.stdout.lines().any(|l| l == budget),
        "want `{budget}`:\n{status}"
    );
    case.assert_invariants();
}

#[test]
fn own_budget_never_sends_before_the_vendors_window_frees() {
    // certkeeper and the stand-in agree on one GET per 3 s. Passes run back to back: certkeeper must defer each
    // until the vendor's window really has room, never earn a 429.
    let case = Case::new("budget-edge");
    case.standin.settings(&json!({"get_limit": 1, "window": 3}));
    let id = "t-budget-edge";
    case.deployment(id, "one-way", Some(from_now(Duration::days(80))));
    let config = case
        .config()
        .emqx_raw("get_limit", "1")
        .emqx("rate_window", "3s")
        .deployment(id, &["t-budget-edge.example.test"])
        .write();
    let started = Instant::now();
    while case.standin.log().len() < 2 && started.elapsed() < StdDuration::from_secs(10) {
        let run = case.run(&config, &["renew"]);
        assert_ok(&run, id);
        std::thread::sleep(StdDuration::from_millis(20));
    }
    let log = case.standin.log();
    assert!(log.len() >= 2, "{}", case.request_summary());
    assert!(
        log.iter().all(|e| e["status"] == 200),
        "{}",
        case.request_summary()
    );
}

#[test]
fn deployments_the_write_budget_cannot_renew_in_time_are_named_at_risk() {
    // Twelve deployments on one key whose certificates expire in a day and a half: with 6 writes an hour they
    // must start 10 minutes apart, and the deadline (a day before expiry) is 30 minutes away, so all but the last
    // few cannot make it. The log and `status` must say which.
    const N: usize = 12;
    let case = Case::new("risk");
    case.standin.settings(&json!({"pending": 0}));
    let mut config = case.config();
    let mut ids = Vec::new();
    for i in 0..N {
        let id = format!("t-risk-{i:02}");
        case.deployment(
            &id,
            "one-way",
            Some(from_now(Duration::days(1) + Duration::minutes(30))),
        );
        config = config.deployment(&id, &[format!("{id}.example.test").as_str()]);
        ids.push(id);
    }
    let config = config.write();

    let bed = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    drop(bed);
    assert!(
        run.stderr.contains("at risk"),
        "the log names the risk:\n{run}"
    );
    // Six writes this hour: six renewed. The others would wait past their deadline (30 minutes away), which
    // issue 9 made a failure (exit 1, loud) instead of an "ok" deferral.
    assert_eq!(run.code(), Some(1), "{run}");
    assert_eq!(run.stdout.matches(": renewed: ").count(), 6, "{run}");
    let late = ids
        .iter()
        .filter(|id| {
            run.failures_of(id)
                .iter()
                .any(|l| l.contains("cannot renew before the deadline"))
        })
        .count();
    assert_eq!(late, N - 6, "{run}");

    let status = case.run(&config, &["status"]);
    assert_eq!(status.code(), Some(0), "{status}");
    let at_risk: Vec<&str> = status
        .stdout
        .lines()
        .filter(|l| l.contains("AT RISK"))
        .collect();
    assert!(
        !at_risk.is_empty(),
        "status names deployments at risk:\n{status}"
    );
    let renewed: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains(": renewed: "))
        .filter_map(|l| l.split(':').next())
        .collect();
    for line in &at_risk {
        assert!(ids.iter().any(|id| line.starts_with(id.as_str())), "{line}");
        assert!(
            !renewed.iter().any(|id| line.starts_with(&format!("{id} "))),
            "a renewed deployment is no longer at risk: {line}"
        );
    }
    assert!(
        status.stdout.contains("0/6 writes left"),
        "the budget line shows the spent writes:\n{status}"
    );
}
