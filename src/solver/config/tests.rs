//! `[dns.NAME]` parsing: dispatch on `provider`, shared keys for every provider, provider keys kept apart.

use std::path::Path;
use std::time::Duration;

use crate::config::{Config, ConfigError, DnsProvider, Propagation};

fn parse(dns: &str) -> Result<Config, ConfigError> {
    let text = format!(
        r#"state_dir = "/tmp/x"
[acme]
directory = "letsencrypt-staging"
{dns}
[[deployment]]
id = "a"
domains = ["a.example.com"]
[deployment.files]
cert = "/tmp/cert.pem"
key = "/tmp/key.pem"
"#
    );
    Config::parse(Path::new("c.toml"), &text)
}

const RFC2136: &str = r#"[dns.primary]
provider = "rfc2136"
server = "127.0.0.1:53"
tsig_key = "k"
tsig_secret = "c2VjcmV0"
"#;

#[test]
fn shared_settings_default_to_cname_following_and_authoritative_propagation() {
    let c = parse(RFC2136).unwrap();
    let dns = &c.dns["primary"];
    assert!(dns.shared.follow_cname);
    assert_eq!(dns.shared.propagation, Propagation::Authoritative);
    assert!(dns.shared.propagation_servers.is_empty());
    assert_eq!(dns.shared.propagation_timeout, Duration::from_secs(120));
    assert_eq!(dns.rfc2136().unwrap().server, "127.0.0.1:53");
}

#[test]
fn shared_settings_are_accepted_by_every_provider() {
    let shared = r#"follow_cname = false
propagation = "primary"
propagation_servers = ["192.0.2.53:53", "ns2.example.net:5353"]
propagation_timeout = "30s"
lookup_servers = ["127.0.0.1:53"]
"#;
    let exec = "[dns.hook]\nprovider = \"exec\"\ncommand = [\"/usr/local/bin/dns-hook\", \"--zone\"]\ntimeout = \"5s\"\n";
    for section in [RFC2136, exec] {
        let c = parse(&format!("{section}{shared}")).unwrap();
        let dns = c.dns.values().next().unwrap();
        assert!(!dns.shared.follow_cname);
        assert_eq!(dns.shared.propagation, Propagation::Primary);
        assert_eq!(dns.shared.propagation_servers.len(), 2);
        assert_eq!(dns.shared.propagation_timeout, Duration::from_secs(30));
        assert_eq!(dns.shared.lookup_servers, ["127.0.0.1:53"]);
    }
    let c = parse(exec).unwrap();
    match &c.dns["hook"].provider {
        DnsProvider::Exec(e) => {
            assert_eq!(e.command, ["/usr/local/bin/dns-hook", "--zone"]);
            assert_eq!(e.timeout, Duration::from_secs(5));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_key_of_another_provider_is_an_error_at_its_line() {
    let e = parse(&format!("{RFC2136}command = [\"x\"]\n")).unwrap_err();
    assert!(e.to_string().contains("unknown field `command`"), "{e}");
    assert_eq!(e.position, Some((9, 1)), "{e}");
    let e = parse("[dns.hook]\nprovider = \"exec\"\ncommand = [\"x\"]\ntsig_key = \"k\"\n")
        .unwrap_err();
    assert!(e.to_string().contains("unknown field `tsig_key`"), "{e}");
    assert_eq!(e.position, Some((7, 1)), "{e}");
}

#[test]
fn bad_values_are_reported_at_their_key() {
    for (extra, wanted, line) in [
        (
            "propagation = \"everywhere\"\n",
            "propagation `everywhere`",
            9,
        ),
        (
            "propagation_servers = [\"nohost\"]\n",
            "propagation_servers: `nohost`",
            9,
        ),
        (
            "propagation_timeout = \"soon\"\n",
            "invalid duration `soon`",
            9,
        ),
        ("follow_cname = \"yes\"\n", "invalid type", 9),
    ] {
        let e = parse(&format!("{RFC2136}{extra}")).unwrap_err();
        assert!(e.to_string().contains(wanted), "{extra}: {e}");
        assert_eq!(e.position.map(|p| p.0), Some(line), "{extra}: {e}");
    }
    let e = parse("[dns.x]\nprovider = \"route53\"\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("provider `route53` is unknown; supported: \"rfc2136\", \"exec\""),
        "{e}"
    );
    assert_eq!(e.position, Some((5, 12)), "{e}");
    let e = parse("[dns.x]\nserver = \"127.0.0.1:53\"\n").unwrap_err();
    assert!(e.to_string().contains("needs `provider`"), "{e}");
    let e = parse("[dns.hook]\nprovider = \"exec\"\ncommand = []\n").unwrap_err();
    assert!(e.to_string().contains("command is empty"), "{e}");
    let e = parse("[dns.hook]\nprovider = \"exec\"\n").unwrap_err();
    assert!(e.to_string().contains("missing field `command`"), "{e}");
}
