//! Falling back: a CA that is down or refuses, an enforced issuer key match, a recorded rate limit; ARI stays with its CA.

use super::*;

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
    let skipped = skipped_lines(&run);
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
    let skipped = skipped_lines(&run);
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
