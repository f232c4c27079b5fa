//! 4: vendor redirects are never followed.

use super::*;

/// Requests certkeeper charged to its budget file, `(reads, writes)`, over all keys.
fn charged(case: &Case) -> (usize, usize) {
    let path = case.state_dir().join("budget.json");
    let Ok(bytes) = fs::read(&path) else {
        return (0, 0);
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    fn count(v: &serde_json::Value, field: &str) -> usize {
        match v {
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    if k == field {
                        v.as_array().map_or(0, Vec::len)
                    } else {
                        count(v, field)
                    }
                })
                .sum(),
            _ => 0,
        }
    }
    (count(&value, "reads_ms"), count(&value, "writes_ms"))
}

#[test]
fn vendor_redirects_are_never_followed_and_each_request_is_charged_once() {
    let case = Case::new("redirect");
    let id = "t-redirect";
    let domains = ["t-redirect.example.test"];
    case.deployment(id, "one-way", due());
    // Where the redirects point: another vendor that would accept the same key, and must see nothing.
    let elsewhere = bed().standin(&case.dir.path().join("elsewhere.log"));
    elsewhere.put_key(common::KEY, common::SECRET, None);
    let location = format!("http://{}", elsewhere.addr);
    let config = case.config().deployment(id, &domains).write();

    for (status, method) in [
        (301, "GET"),
        (302, "GET"),
        (307, "PUT"),
        (308, "PUT"),
        (303, "PUT"),
    ] {
        case.standin.settings(
            &json!({"redirect": {"status": status, "location": location, "method": method}}),
        );
        let sent = case.requests(method);
        let run = case.run(&config, &["renew"]);
        assert_eq!(run.code(), Some(1), "{status} {method}: {run}");
        let line = failure(&run, id);
        assert!(
            line.contains(&format!("HTTP {status} to {location}"))
                && line.contains("never follows redirects"),
            "{line}"
        );
        assert!(!run.stderr.contains(common::SECRET), "{run}");
        assert_eq!(
            case.requests(method),
            sent + 1,
            "not retried: {}",
            case.request_summary()
        );
        let log = case.standin.log();
        let (reads, writes) = charged(&case);
        let count = |m: &str| log.iter().filter(|e| e["method"] == m).count();
        assert_eq!(
            (reads, writes),
            (count("GET"), count("PUT") + count("POST")),
            "one charge per request sent"
        );
    }
    assert!(elsewhere.log().is_empty(), "{:?}", elsewhere.log());
    assert_eq!(case.standin.deployment(id)["writes"], json!(0));

    // Pointed at the real address again, the saved certificate is pushed: nothing was ordered twice.
    let serial = bundle_serial(&case, id);
    case.standin.settings(&json!({"redirect": null}));
    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(deployed_serial(&case, id), serial);
    assert_deployed(&case, id, &domains);
    case.assert_invariants();
}
