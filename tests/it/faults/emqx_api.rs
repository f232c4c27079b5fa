//! The fault matrix, fault matrix: EMQX API.

use super::*;

#[test]
fn emqx_500_on_every_write_fails_then_the_next_run_pushes_the_same_certificate() {
    let case = Case::new("w500");
    let id = "t-w500";
    let domains = ["t-w500.example.test"];
    // Three attempts answer 500 in the first run; the next run meets the two left, then succeeds.
    case.standin.settings(&json!({"fail_writes": 5}));
    case.deployment(id, "one-way", due());
    let config = case.config().deployment(id, &domains).write();

    let exclusive = bed().exclusive();
    let first = case.run(&config, &["renew"]);
    let line = failure(&first, id);
    assert_eq!(first.code(), Some(1), "{first}");
    assert!(
        line.contains("unavailable") && line.contains("500"),
        "{line}"
    );
    assert_eq!(
        writes(&case),
        vec![("PUT".to_owned(), 500); 3],
        "3 attempts, then give up"
    );
    assert_eq!(step(&case, id).as_deref(), Some("issued"));
    let serial = bundle_serial(&case, id);

    let second = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(second.code(), Some(0), "{second}");
    assert!(
        second
            .stderr
            .contains("resuming: pushing the certificate issued by an earlier pass"),
        "{second}"
    );
    let w = writes(&case);
    assert_eq!(
        &w[3..],
        [
            ("PUT".into(), 500),
            ("PUT".into(), 500),
            ("PUT".into(), 200)
        ],
        "500s are retried within the run"
    );
    assert_deployed(&case, id, &domains);
    assert_eq!(deployed_serial(&case, id), serial, "the same certificate");
    assert_eq!(acme.issued, 1, "no second issuance: {acme:?}");
    assert_eq!(acme.orders, 1, "{acme:?}");
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn emqx_connection_refused_fails_before_any_acme_order() {
    let case = Case::new("refused");
    let id = "t-refused";
    let port = closed_tcp_port();
    let config = case
        .config()
        .emqx("url", &format!("http://127.0.0.1:{port}/api/v1"))
        .deployment(id, &["t-refused.example.test"])
        .write();

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, id);
    assert!(
        line.contains("unavailable") && line.to_lowercase().contains("refused"),
        "the cause must be named: {line}"
    );
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert_eq!(acme.orders, 0, "inspect fails first: {acme:?}");
    assert_eq!(acme.accounts, 0, "{acme:?}");
    case.assert_invariants();
}

#[test]
fn emqx_that_never_answers_times_out() {
    let case = Case::new("hang");
    let id = "t-hang";
    let server = RawServer::start(None);
    let config = case
        .config()
        .emqx("url", &server.url())
        .emqx("request_timeout", "1s")
        .deployment(id, &["t-hang.example.test"])
        .write();

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, id).to_lowercase();
    assert!(
        line.contains("unavailable") && line.contains("timed out"),
        "{line}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 3, "3 attempts");
    assert_eq!(acme.orders, 0, "{acme:?}");
    case.assert_invariants();
}

#[test]
fn emqx_body_that_is_not_json_is_named_and_not_retried() {
    let case = Case::new("notjson");
    let id = "t-notjson";
    let server = RawServer::start(Some(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\nConnection: close\r\n\r\nnot json",
    ));
    let config = case
        .config()
        .emqx("url", &server.url())
        .deployment(id, &["t-notjson.example.test"])
        .write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, id);
    assert!(line.contains("not JSON"), "{line}");
    assert_eq!(server.connections.load(Ordering::SeqCst), 1, "not retried");
    assert!(
        !case.state_dir().join("account.json").exists(),
        "no ACME account was needed"
    );
    case.assert_invariants();
}

#[test]
fn emqx_429_with_a_long_retry_after_defers_and_keeps_the_certificate() {
    let case = Case::new("w429");
    let id = "t-w429";
    let domains = ["t-w429.example.test"];
    // The vendor allows fewer writes than certkeeper's config assumes: 429 with Retry-After of a whole window.
    case.standin.settings(&json!({"write_limit": 0}));
    case.deployment(id, "one-way", due());
    let config = case.config().deployment(id, &domains).write();

    let exclusive = bed().exclusive();
    let first = case.run(&config, &["renew"]);
    assert_eq!(first.code(), Some(0), "deferred is not a failure\n{first}");
    assert!(
        first.stdout.contains(&format!("{id}: deferred until")),
        "{first}"
    );
    assert!(first.stdout.contains("429"), "the cause is named: {first}");
    assert_eq!(
        writes(&case),
        [("PUT".into(), 429)],
        "a long Retry-After is not waited out"
    );
    assert_eq!(step(&case, id).as_deref(), Some("issued"));
    let serial = bundle_serial(&case, id);

    // Right away: the key is blocked until Retry-After; nothing is sent, the deployment stays deferred.
    let requests = case.standin.log().len();
    let second = case.run(&config, &["renew"]);
    assert_eq!(second.code(), Some(0), "{second}");
    assert!(second.stdout.contains("deferred"), "{second}");
    assert_eq!(
        case.standin.log().len(),
        requests,
        "{}",
        case.request_summary()
    );

    // A window later (Retry-After has passed, nothing is counted any more; the vendor admits writes again): the
    // same certificate is pushed. Time passes by forgetting the budget.
    let budget = case.state_dir().join("budget.json");
    assert!(budget.is_file(), "the 429 is persisted in budget.json");
    testbed::write_private(&budget, b"{}").unwrap();
    case.standin.settings(&json!({"write_limit": 6}));
    let third = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(third.code(), Some(0), "{third}");
    assert_deployed(&case, id, &domains);
    assert_eq!(deployed_serial(&case, id), serial);
    assert_eq!(acme.issued, 1, "{acme:?}");
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn emqx_429_with_a_short_retry_after_is_waited_out() {
    let case = Case::new("g429");
    let id = "t-g429";
    let domains = ["t-g429.example.test"];
    // One GET per 4 s: the polls after the push meet 429 with a Retry-After of a few seconds.
    case.standin.settings(&json!({"get_limit": 1, "window": 4}));
    case.deployment(id, "one-way", due());
    let config = case.config().deployment(id, &domains).write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}\n{}", case.request_summary());
    let log = case.standin.log();
    assert!(
        log.iter().any(|e| e["status"] == 429),
        "the test needs a 429:\n{}",
        case.request_summary()
    );
    assert_eq!(writes(&case), [("PUT".into(), 200)]);
    assert_deployed(&case, id, &domains);
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn emqx_422_is_not_retried_and_the_fixed_cause_gets_the_same_certificate() {
    let case = Case::new("w422");
    let id = "t-w422";
    let domains = ["t-w422.example.test"];
    case.standin.settings(&json!({"min_days_left": 100_000}));
    case.deployment(id, "one-way", due());
    let config = case.config().deployment(id, &domains).write();

    let exclusive = bed().exclusive();
    let first = case.run(&config, &["renew"]);
    assert_eq!(first.code(), Some(1), "{first}");
    let line = failure(&first, id);
    assert!(
        line.contains("422") && line.contains("not retried"),
        "{line}"
    );
    assert_eq!(
        writes(&case),
        [("PUT".into(), 422)],
        "a 422 is never retried"
    );
    let serial = bundle_serial(&case, id);

    case.standin.settings(&json!({"min_days_left": 60}));
    let second = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(second.code(), Some(0), "{second}");
    assert_eq!(writes(&case), [("PUT".into(), 422), ("PUT".into(), 200)]);
    assert_deployed(&case, id, &domains);
    assert_eq!(deployed_serial(&case, id), serial);
    assert_eq!(acme.issued, 1, "{acme:?}");
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn emqx_stuck_pending_fails_then_the_next_run_resumes_waiting() {
    let case = Case::new("pending");
    let id = "t-pending";
    let domains = ["t-pending.example.test"];
    case.standin.settings(&json!({"stuck_pending": true}));
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .emqx("wait_timeout", "2s")
        .emqx("poll_interval", "200ms")
        .deployment(id, &domains)
        .write();

    let exclusive = bed().exclusive();
    let first = case.run(&config, &["renew"]);
    assert_eq!(first.code(), Some(1), "{first}");
    let line = failure(&first, id);
    assert!(
        line.contains("still pending") && line.contains("resumes waiting"),
        "{line}"
    );
    assert_eq!(step(&case, id).as_deref(), Some("pushed"));
    let serial = bundle_serial(&case, id);

    case.standin.settings(&json!({"stuck_pending": false}));
    let second = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(second.code(), Some(0), "{second}");
    assert!(second.stderr.contains("resuming: waiting"), "{second}");
    assert_eq!(writes(&case), [("PUT".into(), 200)], "no new push");
    assert_deployed(&case, id, &domains);
    assert_eq!(deployed_serial(&case, id), serial);
    assert_eq!(acme.issued, 1, "{acme:?}");
    assert_eq!(step(&case, id).as_deref(), Some("active"));
    assert_no_txt(&domains);
    case.assert_invariants();
}

/// `final_status: "failed"` after the write: exit 1 naming it; then, running again, the same certificate is pushed
/// once more and succeeds. `has_cert` false starts from a deployment without a certificate (POST).
fn failed_status_case(short: &str, has_cert: bool) -> Vec<(String, u64)> {
    let case = Case::new(short);
    let id = format!("t-{short}");
    let domain = format!("{id}.example.test");
    case.standin
        .settings(&json!({"final_status": "failed", "pending": 200}));
    case.deployment(&id, "one-way", if has_cert { due() } else { None });
    let config = case.config().deployment(&id, &[&domain]).write();

    let exclusive = bed().exclusive();
    let first = case.run(&config, &["renew"]);
    assert_eq!(first.code(), Some(1), "{first}");
    let line = failure(&first, &id);
    assert!(
        line.contains("\"failed\"") && line.contains("not applied"),
        "{line}"
    );
    assert_eq!(step(&case, &id).as_deref(), Some("issued"));
    let serial = bundle_serial(&case, &id);

    // Still failed at the vendor: the same certificate is pushed again (as a PUT: the vendor has one now).
    let again = case.run(&config, &["renew"]);
    assert_eq!(again.code(), Some(1), "{again}");
    assert!(failure(&again, &id).contains("not applied"), "{again}");
    assert_eq!(bundle_serial(&case, &id), serial, "no new certificate");

    // Now the vendor runs it: the next pass sees it running and writes nothing more.
    case.standin.settings(&json!({"final_status": "running"}));
    let second = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(
        second.code(),
        Some(0),
        "{second}\n{}",
        case.request_summary()
    );
    assert_deployed(&case, &id, &[&domain]);
    assert_eq!(deployed_serial(&case, &id), serial, "the same certificate");
    assert_eq!(acme.issued, 1, "{acme:?}");
    assert_no_txt(&[&domain]);
    case.assert_invariants();
    writes(&case)
}

#[test]
fn emqx_unknown_status_failed_then_the_same_certificate_is_pushed_again() {
    let w = failed_status_case("failed", true);
    assert_eq!(w, [("PUT".into(), 200), ("PUT".into(), 200)]);
}

#[test]
fn emqx_unknown_status_failed_after_a_first_post() {
    // The vendor stored the certificate before reporting `failed`: the push again must be a PUT, and once the
    // vendor runs it nothing more is written.
    let w = failed_status_case("failedpost", false);
    assert_eq!(w, [("POST".into(), 200), ("PUT".into(), 200)]);
}
