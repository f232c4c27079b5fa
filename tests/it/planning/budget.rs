//! The vendor's request budget.

use super::*;

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
    let passes = pass_until_nothing_is_deferred(&case, &config, &expire_of, WINDOW);

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

/// Runs `renew` until no deployment is deferred any more, each next pass once the vendor's window has room
/// again; every pass must exit 0 without failures. Returns how many passes it took.
fn pass_until_nothing_is_deferred(
    case: &Case,
    config: &std::path::Path,
    ids: &[(String, OffsetDateTime)],
    window: i64,
) -> usize {
    let started = Instant::now();
    let mut passes = 0;
    loop {
        passes += 1;
        let run = case.run(config, &["renew"]);
        assert_eq!(run.code(), Some(0), "pass {passes}:\n{run}");
        for (id, _) in ids {
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
        let wait = last + Duration::seconds(window) + Duration::milliseconds(300)
            - OffsetDateTime::now_utc();
        if wait.is_positive() {
            std::thread::sleep(StdDuration::try_from(wait).unwrap());
        }
    }
    passes
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
