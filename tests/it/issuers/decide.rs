//! Decided before ordering: which issuer a deployment gets, from the target's rule and the issuers' lifetimes.

use super::*;

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
    let skipped = skipped_lines(&run);
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
