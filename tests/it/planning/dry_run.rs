//! Dry run.

use super::*;

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
