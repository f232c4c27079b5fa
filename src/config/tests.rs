use super::*;
use std::io::Write as _;

fn base(extra: &str) -> String {
    format!(
        r#"state_dir = "/tmp/x"
[acme]
directory = "letsencrypt-staging"
[dns.primary]
provider = "rfc2136"
server = "127.0.0.1:53"
tsig_key = "k"
tsig_secret = "c2VjcmV0"
[emqx.prod]
url = "https://api.example/api/v1/"
key = "app"
secret = "s3cret"
{extra}"#
    )
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("c.toml"), text)
}

#[test]
fn minimal_config_resolves_defaults_and_references() {
    let c = parse(&base(
        "[[deployment]]\nid = \"ge6a1a75\"\ndomains = [\"MQTT.example.com.\"]\n",
    ))
    .unwrap();
    let d = &c.deployments[0];
    assert_eq!(d.domains, ["mqtt.example.com"]);
    assert_eq!(
        (d.emqx().map(|e| e.account.as_str()), d.dns.as_str()),
        (Some("prod"), "primary")
    );
    assert_eq!(c.emqx["prod"].url, "https://api.example/api/v1");
    assert_eq!(c.dns["primary"].rfc2136().unwrap().tsig_key, "k.");
    assert_eq!(c.acme.directory, LETSENCRYPT_STAGING);
    assert_eq!(c.acme.key_format, KeyFormat::Traditional);
}

#[test]
fn unknown_key_reports_line_and_column() {
    let e = parse(&base(
        "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\nfoo = 1\n",
    ))
    .unwrap_err();
    assert_eq!(e.position, Some((16, 1)), "{e}");
    assert!(e.to_string().contains("unknown field `foo`"), "{e}");
}

#[test]
fn two_way_without_client_ca_is_rejected() {
    let e = parse(&base(
        "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\ntls_type = \"two-way\"\n",
    ))
    .unwrap_err();
    assert!(e.to_string().contains("client_ca_file"), "{e}");
}

#[test]
fn bad_domains_and_references_are_named() {
    let e = parse(&base(
        "[[deployment]]\nid = \"a\"\ndomains = [\"a.*.example.com\"]\n",
    ))
    .unwrap_err();
    assert!(e.to_string().contains("wildcard"), "{e}");
    let e = parse(&base(
        "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\nemqx = \"nope\"\n",
    ))
    .unwrap_err();
    assert!(e.to_string().contains("names no [emqx.nope]"), "{e}");
    assert_eq!(e.position.map(|p| p.0), Some(16));
}

#[test]
fn secrets_need_exactly_one_source_and_never_print() {
    let text = base("[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n").replace(
        "secret = \"s3cret\"",
        "secret = \"s3cret\"\nsecret_env = \"X\"",
    );
    assert!(
        parse(&text)
            .unwrap_err()
            .to_string()
            .contains("exactly one")
    );
    let c = parse(&base(
        "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n",
    ))
    .unwrap();
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("c2VjcmV0"),
        "{debug}"
    );
}

#[test]
fn secret_file_and_inline_warning() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "from-file").unwrap();
    let text = base("[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n").replace(
        "secret = \"s3cret\"",
        &format!("secret_file = \"{}\"", f.path().display()),
    );
    let c = parse(&text).unwrap();
    use secrecy::ExposeSecret as _;
    assert_eq!(c.emqx["prod"].secret.expose_secret(), "from-file");
}

#[test]
fn schedule_defaults_and_errors() {
    let c = parse(&base(
        "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n",
    ))
    .unwrap();
    assert_eq!(c.schedule.jitter, DEFAULT_JITTER);
    let c = parse(&base(
        "[schedule]\ncron = \"*/2 * * * * *\"\njitter = \"0s\"\n[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n",
    ))
    .unwrap();
    assert!(c.schedule.jitter.is_zero());
    let e = parse(&base("[schedule]\ncron = \"every day\"\n[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n"))
        .unwrap_err();
    assert_eq!(e.position, Some((14, 8)), "{e}");
    let e = parse(&base(
        "[schedule]\ncron = \"0 0 0 1 1 * 2020\"\n[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n",
    ))
    .unwrap_err();
    assert!(e.to_string().contains("no future tick"), "{e}");
}

#[test]
fn concurrency_defaults_to_eight_and_is_bounded() {
    let deployment = "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n";
    let c = parse(&base(deployment)).unwrap();
    assert_eq!(c.schedule.concurrency, DEFAULT_CONCURRENCY);
    let c = parse(&base(&format!("[schedule]\nconcurrency = 1\n{deployment}"))).unwrap();
    assert_eq!(c.schedule.concurrency, 1);
    for bad in ["0", "-3", "100000"] {
        let e = parse(&base(&format!(
            "[schedule]\nconcurrency = {bad}\n{deployment}"
        )))
        .unwrap_err();
        assert_eq!(e.position, Some((14, 15)), "{e}");
        assert!(e.to_string().contains("schedule.concurrency"), "{e}");
    }
}

#[test]
fn key_types_use_the_documented_spelling() {
    for (text, kt) in [
        ("ecdsa-p256", KeyType::EcdsaP256),
        ("ecdsa-p384", KeyType::EcdsaP384),
        ("rsa-2048", KeyType::Rsa2048),
    ] {
        let c = parse(
            &base("[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n").replace(
                "directory = \"letsencrypt-staging\"",
                &format!("directory = \"letsencrypt-staging\"\nkey_type = \"{text}\""),
            ),
        )
        .unwrap();
        assert_eq!(c.acme.key_type, kt);
        assert_eq!(kt.to_string(), text);
    }
}

#[test]
fn the_example_config_is_valid() {
    // The example names secret files, a broker's directory and a reload program that exist only on a real
    // host; everything else is taken as written.
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../../config/certkeeper.example.toml")
        .replace("/etc/mosquitto/certs", &dir.path().display().to_string())
        .replace("\"/usr/bin/systemctl\"", "\"sh\"")
        .replace(
            "tsig_secret_file = \"/etc/certkeeper/tsig.secret\"",
            "tsig_secret = \"c2VjcmV0\"",
        )
        .replace(
            "secret_key_file = \"/etc/certkeeper/otc.sk\"",
            "secret_key = \"x\"",
        )
        .replace(
            "secret_file = \"/etc/certkeeper/emqx.secret\"",
            "secret = \"x\"",
        )
        .replace("/etc/redis-clients", &dir.path().display().to_string());
    let c = parse(&text).unwrap();
    assert_eq!(c.dcs_instances[0].account, "otc");
    assert!(c.dcs_instances[0].ca_overlap);
    assert_eq!(c.deployments[0].id, "ge6a1a75");
    assert_eq!(c.schedule.jitter, DEFAULT_JITTER);
    let TargetConfig::Files(files) = &c.deployments[1].target else {
        panic!("the second example deployment is a files target");
    };
    assert_eq!(files.key_mode, 0o600);
    assert_eq!(files.reload, ["sh", "reload", "mosquitto"]);
}

#[test]
fn offsets_parse() {
    assert_eq!(
        parse_offset("+08:00"),
        time::UtcOffset::from_hms(8, 0, 0).ok()
    );
    assert_eq!(
        parse_offset("-0530"),
        time::UtcOffset::from_hms(-5, -30, 0).ok()
    );
    assert_eq!(parse_offset("UTC"), Some(time::UtcOffset::UTC));
    assert_eq!(parse_offset("8"), None);
}

#[test]
fn offsets_beyond_23_59_are_refused() {
    assert_eq!(
        parse_offset("+23:59"),
        time::UtcOffset::from_hms(23, 59, 0).ok()
    );
    for bad in ["+24:00", "-25:59", "+12:60"] {
        assert_eq!(parse_offset(bad), None, "{bad}");
    }
    let err = parse(
        &base("[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n").replace(
            "secret = \"s3cret\"",
            "secret = \"s3cret\"\nexpire_timezone = \"+25:00\"",
        ),
    )
    .unwrap_err();
    assert!(err.to_string().contains("expire_timezone"), "{err}");
}

/// Each config passed `check` and failed at run time; each must now fail `check`, naming the key.
#[test]
fn configs_that_would_fail_at_run_time_fail_check() {
    let d = "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n";
    let long_id = "x".repeat(300);
    let cases: Vec<(String, &str)> = vec![
        (
            base(d).replace("tsig_secret = \"c2VjcmV0\"", "tsig_secret = \"\""),
            "`tsig_secret` is empty",
        ),
        (
            base(d).replace("tsig_secret = \"c2VjcmV0\"", "tsig_secret = \"  \""),
            "`tsig_secret` is empty",
        ),
        (
            base(d).replace("127.0.0.1:53", "127.0.0.1:99999"),
            "port outside",
        ),
        (
            base(d).replace("127.0.0.1:53", "127.0.0.1:0"),
            "port outside",
        ),
        (base(d).replace("127.0.0.1:53", "::1:53"), "IPv6"),
        (base(d).replace("a.example.com", "192.0.2.7"), "IP address"),
        (
            base(d).replace("a.example.com", "2001:db8::1"),
            "IP address",
        ),
        (
            base(d).replace("\"a.example.com\"", "\"[2001:db8::1]\""),
            "IP address",
        ),
        (
            base(d).replace("a.example.com", "a.example.123"),
            "all-numeric",
        ),
        (
            base(d).replace("id = \"a\"", &format!("id = \"{long_id}\"")),
            "at most 128",
        ),
        (base(d).replace("api/v1/", "api/v1?x=1"), "without `?query`"),
        (base(d).replace("api/v1/", "api/v1#top"), "without `?query`"),
        (
            base(d).replace("https://api.example", "https://u:p@api.example"),
            "user:password@",
        ),
    ];
    for (text, needle) in cases {
        let err = parse(&text).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn plain_http_and_readable_secret_files_are_warned_about() {
    let d = "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n";
    let c = parse(&base(d).replace("https://api.example", "http://api.example")).unwrap();
    assert!(
        c.warnings.iter().any(|w| w.contains("plain http")),
        "{:?}",
        c.warnings
    );
    let c = parse(&base(d).replace("https://api.example", "http://127.0.0.1:8080")).unwrap();
    assert!(
        !c.warnings.iter().any(|w| w.contains("plain http")),
        "loopback: {:?}",
        c.warnings
    );

    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "from-file").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = base(d).replace(
        "secret = \"s3cret\"",
        &format!("secret_file = \"{}\"", f.path().display()),
    );
    let c = parse(&text).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("secret_file") && w.contains("chmod 600")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn metrics_listen_and_textfile_are_checked() {
    let deployment = "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n";
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("c.prom");
    let c = parse(&base(&format!(
        "[metrics]\nlisten = \"127.0.0.1:9465\"\ntextfile = {:?}\n{deployment}",
        prom.display().to_string()
    )))
    .unwrap();
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9465".parse().unwrap()));
    assert_eq!(c.metrics.textfile.as_deref(), Some(prom.as_path()));
    let e = parse(&base(&format!(
        "[metrics]\nlisten = \"localhost\"\n{deployment}"
    )))
    .unwrap_err();
    assert!(e.to_string().contains("metrics.listen"), "{e}");
    assert_eq!(e.position, Some((14, 10)), "{e}");
    let e = parse(&base(&format!(
        "[metrics]\ntextfile = \"/nonexistent/dir/c.prom\"\n{deployment}"
    )))
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/dir/c.prom"), "{e}");
    assert!(parse(&base(deployment)).unwrap().metrics.listen.is_none());
}

#[test]
fn notify_channels_are_checked_with_positions() {
    let deployment = "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n";
    let c = parse(&base(&format!(
        "[[notify]]\nkind = \"webhook\"\nurl = \"https://hooks.example/x/T0KEN\"\nformat = \"slack\"\n\
         on = [\"renewed\"]\n[[notify]]\nkind = \"email\"\nsmtp = \"smtps://mail.example:465\"\n\
         from = \"a@example.com\"\nto = [\"b@example.com\"]\n{deployment}"
    )))
    .unwrap();
    assert_eq!(c.notify.len(), 2);
    assert_eq!(
        c.notify[0].name, "webhook to hooks.example",
        "no token in the name"
    );
    assert_eq!(c.notify[0].on, [crate::notify::config::Kind::Renewed]);
    assert_eq!(c.notify[1].name, "e-mail to b@example.com");
    assert!(!format!("{:?}", c.notify[0]).contains("T0KEN"));
    let c = parse(&base(&format!(
        "[[notify]]\nkind = \"webhook\"\nurl = \"https://user:pa55@hooks.example/x\"\n{deployment}"
    )))
    .unwrap();
    assert_eq!(
        c.notify[0].name, "webhook to hooks.example",
        "no credentials in the name"
    );
    assert!(!c.notify[0].key.contains("pa55"), "{}", c.notify[0].key);
    for (bad, needle) in [
        ("kind = \"pager\"", "neither \"webhook\" nor \"email\""),
        (
            "kind = \"webhook\"\nurl = \"ftp://x/T0KEN\"",
            "not an http(s):// URL",
        ),
        (
            "kind = \"webhook\"\nurl = \"https://x\"\non = [\"always\"]",
            "`always`",
        ),
        (
            "kind = \"email\"\nsmtp = \"mail.example\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]",
            "host:port",
        ),
        (
            "kind = \"email\"\nsmtp = \"mail.example:25\"\nfrom = \"nobody\"\nto = [\"b@example.com\"]",
            "`nobody`",
        ),
        (
            "kind = \"email\"\nsmtp = \"mail.example:25\"\nfrom = \"a@example.com\"",
            "needs `to",
        ),
    ] {
        let e = parse(&base(&format!("[[notify]]\n{bad}\n{deployment}"))).unwrap_err();
        assert!(e.to_string().contains(needle), "{bad}: {e}");
        assert!(e.position.is_some(), "{e}");
        assert!(!e.to_string().contains("T0KEN"), "{e}");
    }
}

#[test]
fn dcs_sections_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "[acme]\n[dcs.otc]\nendpoint = \"https://dcs.example.com\"\nproject_id = \"p1\"\naccess_key = \"AK\"\n\
         secret_key = \"sk\"\n[[dcs_instance]]\nid = \"i-1\"\nca_file = \"{}/ca.pem\"\n",
        dir.path().display()
    );
    let c = parse(&base).unwrap();
    assert_eq!(c.dcs_instances[0].account, "otc");
    assert!(
        c.deployments.is_empty(),
        "a DCS-only config needs no deployment"
    );
    assert!(
        !format!("{:?}", c.dcs["otc"]).contains("\"sk\""),
        "Debug must not show the SK"
    );
    for (bad, why) in [
        (
            "endpoint = \"https://dcs.example.com\"",
            "endpoint = \"http://dcs.example.com/v2\"",
        ),
        ("id = \"i-1\"", "id = \"i-1\"\ndcs = \"nope\""),
        ("ca_file = ", "ca_file = \"relative.pem\"\n#"),
        (
            "secret_key = \"sk\"",
            "secret_key = \"sk\"\nsecret_key_env = \"X\"",
        ),
    ] {
        let text = base.replacen(bad, why, 1);
        assert!(parse(&text).is_err(), "accepted: {text}");
    }
    let twice = format!(
        "{base}[[dcs_instance]]\nid = \"i-1\"\nca_file = \"{}/other.pem\"\n",
        dir.path().display()
    );
    assert!(
        parse(&twice)
            .unwrap_err()
            .to_string()
            .contains("configured twice")
    );
}
