//! Status.

use super::*;

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
    // Issue 12: deployments failing or at risk make `status` exit 1 (it was 0 before), so it can be a health check.
    assert_eq!(status.code(), Some(1), "{status}");
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
