//! 7: a corrupt TXT journal; scarce GETs.

use super::*;

#[test]
fn a_corrupt_txt_journal_is_reported_and_kept() {
    let case = Case::new("journal");
    let id = "t-journal";
    let domains = ["t-journal.example.test"];
    case.deployment(id, "one-way", due());
    let config = case.config().deployment(id, &domains).write();
    let deployments = case.state_dir().join("deployments");
    fs::create_dir_all(&deployments).unwrap();
    for dir in [case.state_dir(), deployments] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    }
    let journal = case.state_dir().join(format!("deployments/{id}.txt.json"));
    common::bed::write_private(&journal, b"[[\"_acme-challenge.t-journal.example.test.\"").unwrap();

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, id);
    assert!(
        line.contains(&journal.display().to_string()) && line.contains("TXT"),
        "the journal is named: {line}"
    );
    assert_eq!(
        fs::read(&journal).unwrap(),
        b"[[\"_acme-challenge.t-journal.example.test.\"",
        "kept as it was"
    );
    assert_eq!(acme.orders, 0, "nothing ordered past an unreadable journal");
    case.assert_invariants();
}

#[test]
fn scarce_gets_go_to_the_most_urgent_deployment_first() {
    let case = Case::new("scarce");
    let ids = ["t-scarce-1", "t-scarce-2", "t-scarce-3", "t-scarce-4"];
    // Not due under the default rule; the last in config order expires first.
    for id in &ids[..3] {
        case.deployment(id, "one-way", Some(from_now(Duration::days(80))));
    }
    case.deployment(ids[3], "one-way", Some(from_now(Duration::days(40))));
    let mut config = case
        .config()
        .emqx_raw("get_limit", "7")
        .emqx("inspect_interval", "0s");
    for id in ids {
        config = config.deployment(id, &[&format!("{id}.example.test")]);
    }
    let config = config.write();

    let first = case.run(&config, &["renew"]);
    assert_eq!(first.code(), Some(0), "{first}");
    let seen = case.standin.log().len();
    assert_eq!(case.requests("GET"), 4, "{}", case.request_summary());

    // Three GETs left for four deployments: the one expiring first is asked first.
    let second = case.run(&config, &["renew"]);
    assert_eq!(second.code(), Some(0), "{second}");
    let asked: Vec<String> = case.standin.log()[seen..]
        .iter()
        .filter(|e| e["method"] == "GET")
        .map(|e| e["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        asked.first().is_some_and(|p| p.contains(ids[3])),
        "the most urgent deployment first: {asked:?}"
    );
    assert_eq!(asked.len(), 3, "{asked:?}");
    case.assert_invariants();
}
