//! ARI.

use super::*;

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
