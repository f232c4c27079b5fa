//! The acme-dns provider's account lookup and credentials file.

use std::collections::BTreeMap;

use super::*;

const FILE: &str = r#"{
  "mqtt.example.com": {"username": "u1", "password": "p1", "fulldomain": "s1.auth.example.net", "subdomain": "s1"},
  "*.Other.Example.COM.": {"username": "u2", "password": "p2", "fulldomain": "s2.auth.example.net", "subdomain": "s2", "allowfrom": []}
}"#;

fn accounts() -> BTreeMap<String, Account> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acme-dns.json");
    std::fs::write(&path, FILE).unwrap();
    read_accounts(&path).unwrap()
}

#[test]
fn an_owner_finds_its_account_by_domain_or_by_fulldomain() {
    let accounts = accounts();
    assert_eq!(
        account_key(&accounts, "_acme-challenge.mqtt.example.com.").as_deref(),
        Some("mqtt.example.com")
    );
    assert_eq!(
        account_key(&accounts, "S1.auth.example.net.").as_deref(),
        Some("mqtt.example.com")
    );
    assert_eq!(
        account_key(&accounts, "_acme-challenge.other.example.com.").as_deref(),
        Some("*.other.example.com")
    );
    assert_eq!(
        account_key(&accounts, "_acme-challenge.nope.example.com."),
        None
    );
}

#[test]
fn a_debug_print_shows_no_password() {
    let accounts = accounts();
    let printed = format!("{accounts:?}");
    assert!(printed.contains("s1.auth.example.net"));
    assert!(
        !printed.contains("p1") && !printed.contains("p2"),
        "{printed}"
    );
}

#[test]
fn a_broken_file_is_named_without_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acme-dns.json");
    std::fs::write(
        &path,
        r#"{"a.example.com": {"username": "u", "password": "secret-pw"}}"#,
    )
    .unwrap();
    let err = read_accounts(&path).unwrap_err().to_string();
    assert!(
        err.contains("acme-dns.json") && !err.contains("secret-pw"),
        "{err}"
    );
}

#[test]
fn the_cname_to_create_is_zone_file_syntax() {
    let registered = register::Registered {
        domain: "mqtt.example.com".into(),
        fulldomain: "s1.auth.example.net".into(),
        file: "/x".into(),
    };
    assert_eq!(
        registered.cname(),
        "_acme-challenge.mqtt.example.com. CNAME s1.auth.example.net."
    );
}

fn parse(section: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
    let text = format!(
        "state_dir = \"/tmp/x\"\n[acme]\ndirectory = \"letsencrypt-staging\"\n{section}\n[[deployment]]\nid = \"a\"\n\
         domains = [\"a.example.com\"]\n[deployment.files]\ncert = \"/tmp/cert.pem\"\nkey = \"/tmp/key.pem\"\n"
    );
    crate::config::Config::parse(std::path::Path::new("c.toml"), &text)
}

#[test]
fn hosted_provider_sections_parse_and_refuse_foreign_keys() {
    use crate::config::DnsProvider;
    let c = parse("[dns.d]\nprovider = \"acme-dns\"\nserver = \"https://auth.example.net/\"\ncredentials_file = \"/etc/certkeeper/acme-dns.json\"\n").unwrap();
    let DnsProvider::AcmeDns(a) = &c.dns["d"].provider else {
        panic!("not acme-dns")
    };
    assert_eq!(a.server, "https://auth.example.net");
    let c = parse("[dns.cf]\nprovider = \"cloudflare\"\napi_token = \"t0ken\"\n").unwrap();
    let DnsProvider::Cloudflare(cf) = &c.dns["cf"].provider else {
        panic!("not cloudflare")
    };
    assert_eq!(cf.api_url, crate::solver::cloudflare::DEFAULT_API_URL);
    assert!(
        !format!("{cf:?}").contains("t0ken"),
        "Debug shows the token"
    );
    let err = parse("[dns.cf]\nprovider = \"cloudflare\"\napi_token = \"t\"\ntsig_key = \"k\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tsig_key"), "{err}");
    let err =
        parse("[dns.cf]\nprovider = \"cloudflare\"\napi_token = \"t\"\napi_token_env = \"X\"\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("exactly one of `api_token`"), "{err}");
    let err = parse("[dns.cf]\nprovider = \"cloudflare\"\napi_token = \"t\"\nzone_id = \"nope\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("zone_id"), "{err}");
    let err = parse("[dns.d]\nprovider = \"acme-dns\"\nserver = \"auth.example.net\"\ncredentials_file = \"/x\"\n").unwrap_err().to_string();
    assert!(err.contains("not an http(s) URL"), "{err}");
}
