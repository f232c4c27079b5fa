//! Secrets never in logs or readable files; state directories others can write are refused.

use super::*;

#[test]
fn no_secret_in_a_trace_log_of_a_full_two_way_renewal() {
    let case = Case::new("secrets");
    let id = "t-secrets";
    let domains = ["t-secrets.example.test"];
    let ca_path = case.dir.path().join("client-ca.pem");
    write_client_ca(&ca_path);
    case.deployment(id, "two-way", due());
    let config = case
        .config()
        .deployment(id, &domains)
        .with("tls_type", "two-way")
        .with("client_ca_file", ca_path.to_str().unwrap())
        .write();

    let run = run_with_env(&config, &["--verbose", "renew"], &[("RUST_LOG", "trace")]);

    assert_eq!(run.code(), Some(0), "{run}");
    assert!(run.stderr.contains("TRACE"), "a trace log was written");
    let b64 = base64::engine::general_purpose::STANDARD;
    let tsig = bed().knot.tsig_secret.clone();
    let tsig_raw = b64.decode(&tsig).expect("TSIG secret is base64");
    let tsig_hex: String = tsig_raw.iter().map(|b| format!("{b:02x}")).collect();
    let tsig_debug = format!("{:?}", &tsig_raw[..6]);
    let view = assert_deployed(&case, id, &domains);
    let pushed_key = view["key"].as_str().unwrap().to_owned();
    let key_line = pushed_key
        .lines()
        .find(|l| !l.starts_with("-----") && l.len() > 40)
        .expect("a base64 line in the key")
        .to_owned();
    let accounts: Value =
        serde_json::from_slice(&fs::read(case.state_dir().join("account.json")).unwrap()).unwrap();
    let account_key = accounts["accounts"]
        .as_object()
        .and_then(|a| a.values().next())
        .and_then(|a| a["key_pkcs8"].as_str())
        .expect("key_pkcs8 in account.json")
        .to_owned();
    let account_der = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&account_key)
        .expect("key_pkcs8 is base64url");
    let secrets = [
        ("EMQX secret", SECRET.to_owned()),
        ("EMQX basic auth", b64.encode(format!("{KEY}:{SECRET}"))),
        ("TSIG secret (base64)", tsig.clone()),
        ("TSIG secret (hex)", tsig_hex),
        (
            "TSIG secret (bytes)",
            tsig_debug.trim_end_matches(']').to_owned(),
        ),
        ("PEM private key", "PRIVATE KEY".to_owned()),
        ("pushed key (base64 line)", key_line),
        ("account key (key_pkcs8)", account_key.clone()),
        ("account key (part)", account_key[50..80].to_owned()),
        ("account key (base64)", b64.encode(&account_der)),
    ];
    let output = format!("{}\n{}", run.stdout, run.stderr);
    for (what, secret) in &secrets {
        assert!(
            !output.contains(secret.as_str()),
            "the {what} appears in the output (line: {:?})",
            output.lines().find(|l| l.contains(secret.as_str()))
        );
    }
    assert_no_txt(&domains);
    case.assert_invariants();
}

#[test]
fn inline_secret_in_a_readable_config_is_warned_about() {
    let case = Case::new("inline");
    let toml = case
        .config()
        .deployment("t-inline", &["t-inline.example.test"])
        .toml();
    let toml: String = toml
        .lines()
        .map(|l| {
            if l.starts_with("secret_file = ") {
                format!("secret = {SECRET:?}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = case.dir.path().join("inline.toml");
    fs::write(&config, &toml).unwrap();

    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let readable = case.run(&config, &["check"]);
    assert_eq!(readable.code(), Some(0), "{readable}");
    assert!(
        readable.stderr.contains("WARN")
            && readable.stderr.contains("inline secrets")
            && readable
                .stderr
                .contains(&format!("chmod 600 {}", config.display())),
        "{readable}"
    );
    assert!(!format!("{readable}").contains(SECRET));

    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let private = case.run(&config, &["check"]);
    assert_eq!(private.code(), Some(0), "{private}");
    assert!(!private.stderr.contains("inline secrets"), "{private}");
}

#[test]
fn a_state_dir_writable_by_others_is_refused() {
    let case = Case::new("state777");
    let id = "t-state777";
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .deployment(id, &["t-state777.example.test"])
        .write();
    let state = case.state_dir();
    fs::create_dir_all(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(1), "{run}");
    assert!(
        run.stderr.contains("writable by group or others")
            && run
                .stderr
                .contains(&format!("chmod 700 {}", state.display())),
        "{run}"
    );
    assert!(
        case.standin.log().is_empty(),
        "nothing was asked: {}",
        case.request_summary()
    );
    assert_eq!(
        fs::read_dir(&state).unwrap().count(),
        0,
        "nothing was written there"
    );
}
