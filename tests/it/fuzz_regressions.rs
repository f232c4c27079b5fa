//! Bad input that must end in a clean error, never a panic (issue 5, "Bad input").
//!
//! Every crash the fuzzers in `fuzz/` found has a test here (see fuzz/README.md), plus hand-picked nasty
//! inputs: truncated PEM, huge numbers, invalid UTF-8, deep nesting, very long lines.

use std::path::Path;

use certkeeper::certs::{self, Bundle};
use certkeeper::config::Config;
use certkeeper::deploy::emqx::client::parse_state;
use secrecy::SecretString;
use time::{OffsetDateTime, UtcOffset};

const CONFIG: &str = r#"state_dir = "/tmp/x"
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
[[deployment]]
id = "ge6a1a75"
domains = ["mqtt.example.com"]
"#;

fn config(text: &str) -> Result<Config, certkeeper::config::ConfigError> {
    Config::parse(Path::new("/nonexistent/fuzz.toml"), text)
}

fn config_err(text: &str) -> String {
    match config(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn base_config_parses() {
    config(CONFIG).unwrap();
}

#[test]
fn config_deeply_nested_array_is_an_error() {
    let text = format!(
        "{CONFIG}x = {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    config_err(&text);
}

#[test]
fn config_deeply_nested_inline_table_is_an_error() {
    let text = format!(
        "{CONFIG}x = {}1{}\n",
        "{a=".repeat(100_000),
        "}".repeat(100_000)
    );
    config_err(&text);
}

#[test]
fn config_deep_dotted_table_header_is_an_error() {
    let text = format!("{CONFIG}[{}]\n", vec!["a"; 20_000].join("."));
    config_err(&text);
}

#[test]
fn config_integer_overflow_is_an_error() {
    for n in ["99999999999999999999999", "4294967296", "-1"] {
        let text = CONFIG.replace(
            "secret = \"s3cret\"",
            &format!("secret = \"s3cret\"\nget_limit = {n}"),
        );
        let err = config_err(&text);
        assert!(err.contains("line"), "{err}");
    }
}

#[test]
fn config_very_long_line_reports_a_position() {
    let text = format!("{CONFIG}# {}\nnope = 1\n", "x".repeat(5_000_000));
    let err = config_err(&text);
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn config_error_inside_multibyte_text_has_a_position() {
    // The span of an error can start inside a multi-byte character: line_column must not slice there.
    let err = config_err("state_dir = \"é\u{1F600}\n");
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn config_nul_and_control_characters_are_errors() {
    config_err("state_dir = \"a\0b\"\n[acme]\n");
    config_err("\u{feff}\u{0}[acme]");
}

#[test]
fn config_invalid_utf8_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let mut bytes = CONFIG.as_bytes().to_vec();
    bytes.extend_from_slice(b"# \xff\xfe\n");
    std::fs::write(&path, bytes).unwrap();
    assert!(Config::load(&path).is_err());
}

#[test]
fn config_absurd_durations_are_rejected_or_harmless() {
    // humantime accepts durations far beyond what OffsetDateTime/Instant arithmetic can hold; the planner
    // then computes `expire - renew_before` (plan.rs), which panics on overflow. Either the config rejects
    // such a value, or the planner must cope with it.
    for d in ["10000000d", "500000000000y"] {
        let text = format!("{CONFIG}renew_before = \"{d}\"\n");
        if let Ok(c) = config(&text) {
            let renew_before = c.deployments[0].renew_before;
            let now = now();
            let outcome = std::panic::catch_unwind(|| {
                certkeeper::plan::plan(Some(now), None, renew_before, None, now)
            });
            assert!(
                outcome.is_ok(),
                "renew_before = {d:?} is accepted and then panics the planner"
            );
        }
    }
}

// --- EMQX answers --------------------------------------------------------------------------------------

fn emqx_err(body: &[u8]) -> String {
    match parse_state(body, UtcOffset::UTC) {
        Ok(s) => panic!("accepted {:?}: {s:?}", String::from_utf8_lossy(body)),
        Err(e) => e,
    }
}

#[test]
fn emqx_documented_answer_parses() {
    let s = parse_state(
        br#"{"expire": "2034-05-22 02:43:21", "status": "running", "tlsType": "one-way"}"#,
        UtcOffset::UTC,
    )
    .unwrap();
    assert!(s.expire.is_some());
}

#[test]
fn emqx_truncated_and_not_json_are_errors() {
    for body in [
        &br#"{"expire": "2034-05-22 02:43:21", "status": "runn"#[..],
        b"",
        b"{",
        b"<html>502 Bad Gateway</html>",
        b"\xff\xfe{}",
        br#"{"status": "\ud800"}"#,
        br#"{"status": "run\xffning"}"#,
    ] {
        emqx_err(body);
    }
}

#[test]
fn emqx_wrong_types_and_huge_numbers_are_errors() {
    for body in [
        &br#"[]"#[..],
        b"null",
        b"1e99999",
        br#"{"expire": 2034}"#,
        br#"{"expire": 1e999}"#,
        br#"{"status": 99999999999999999999999999999999999}"#,
        br#"{"tlsType": ["one-way"]}"#,
    ] {
        emqx_err(body);
    }
}

#[test]
fn emqx_deep_nesting_is_an_error() {
    let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    emqx_err(body.as_bytes());
    let body = format!(
        r#"{{"status":"running","x":{}1{}}}"#,
        r#"{"a":"#.repeat(10_000),
        "}".repeat(10_000)
    );
    emqx_err(body.as_bytes());
}

#[test]
fn emqx_impossible_dates_are_errors() {
    for expire in [
        "2034-02-30 00:00:00",
        "2034-13-01 00:00:00",
        "99999-01-01 00:00:00",
        "2034-05-22 24:00:00",
        "2034-05-22T02:43:21+99:00",
        "+002034-05-22 02:43:21",
    ] {
        emqx_err(format!(r#"{{"expire": "{expire}"}}"#).as_bytes());
    }
}

#[test]
fn emqx_extreme_dates_with_extreme_offsets_do_not_panic_later() {
    // The last and first representable seconds, read in the farthest offsets, then the planner's arithmetic.
    let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    for (expire, offset) in [
        (
            "9999-12-31 23:59:59",
            UtcOffset::from_hms(-23, -59, -59).unwrap(),
        ),
        (
            "0000-01-01 00:00:00",
            UtcOffset::from_hms(23, 59, 59).unwrap(),
        ),
        ("9999-12-31T23:59:59-23:59", UtcOffset::UTC),
        ("0000-01-01T00:00:00+23:59", UtcOffset::UTC),
    ] {
        let body = format!(r#"{{"expire": "{expire}", "status": "running"}}"#);
        let outcome = std::panic::catch_unwind(|| {
            if let Ok(s) = parse_state(body.as_bytes(), offset) {
                let e = s.expire.unwrap();
                let _ = certkeeper::plan::plan(Some(e), None, None, None, now);
                let _ = e - certkeeper::plan::DEADLINE_MARGIN;
                let _ = (e - now).abs();
            }
        });
        assert!(outcome.is_ok(), "expire {expire:?} at {offset}");
    }
}

// --- PEM bundles ---------------------------------------------------------------------------------------

const TRUNCATED: &str = "-----BEGIN CERTIFICATE-----\nMIIBkTCCATegAwIBAgIUFuzzFuzzFuzz\n";

fn bundle(key: &str, chain: &str) -> Bundle {
    Bundle {
        key_pkcs8_pem: SecretString::from(key.to_owned()),
        chain_pem: chain.to_owned(),
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000)
}

#[test]
fn pem_truncated_or_garbled_is_an_error() {
    for pem in [
        TRUNCATED,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END PRIVATE KEY-----\n",
    ] {
        assert!(certs::parse_pem_certs(pem.as_bytes()).is_err(), "{pem:?}");
        let b = bundle("", pem);
        assert!(
            certs::validate(&b, &["a.example.com".into()], now()).is_err(),
            "{pem:?}"
        );
        assert!(certs::check_issuer_key_match(&b).is_err(), "{pem:?}");
    }
}

#[test]
fn pem_invalid_utf8_and_binary_are_errors_or_empty() {
    for pem in [
        &b"\xff\xfe\x00\x01"[..],
        b"-----BEGIN CERTIFICATE-----\n\xff\xff\n-----END CERTIFICATE-----\n",
    ] {
        if let Ok(ders) = certs::parse_pem_certs(pem) {
            assert!(ders.is_empty());
        }
    }
}

#[test]
fn pem_empty_bundle_and_bad_key_are_errors() {
    assert!(certs::validate(&bundle("", ""), &[], now()).is_err());
    assert!(certs::validate(&bundle("not a key", "no pem here"), &[], now()).is_err());
}

#[test]
fn der_garbage_huge_lengths_and_truncation_are_errors() {
    for der in [
        &b""[..],
        b"\x30",
        b"\x30\x84\xff\xff\xff\xff",
        b"\x30\x89\x01\x00\x00\x00\x00\x00\x00\x00\x00",
        b"\x30\x80\x00\x00",
        &[0x30; 4096],
    ] {
        assert!(certs::leaf_info(der).is_err(), "{der:02x?}");
        assert!(certs::spki(der).is_err(), "{der:02x?}");
    }
}

#[test]
fn pem_very_long_line_is_an_error() {
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        "A".repeat(4_000_000)
    );
    assert!(certs::parse_pem_certs(pem.as_bytes()).is_err());
}

// --- EMQX answer headers -------------------------------------------------------------------------------

/// A one-shot HTTP server answering every request with `response`.
fn serve(response: &'static str) -> std::net::SocketAddr {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(response.as_bytes());
        }
    });
    addr
}

#[tokio::test]
async fn emqx_429_with_a_huge_retry_after_is_an_error() {
    // Retry-After in seconds is read as u64 and added to now (emqx.rs, the 429 arm): 10^12 s is past year
    // 9999, u64::MAX past everything.
    for secs in ["1000000000000", "18446744073709551615"] {
        let response: &'static str = Box::leak(
            format!(
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {secs}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .into_boxed_str(),
        );
        let addr = serve(response);
        let text = CONFIG.replace(
            "https://api.example/api/v1/",
            &format!("http://{addr}/api/v1"),
        );
        let config = config(&text).unwrap();
        let emqx = config.emqx["prod"].clone();
        let store = std::sync::Arc::new(certkeeper::state::memory::Memory::default());
        let budget = std::sync::Arc::new(certkeeper::budget::Budget::load(store).unwrap());
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client =
            certkeeper::deploy::emqx::client::EmqxClient::new(reqwest::Client::new(), emqx, budget);
        let outcome =
            tokio::spawn(async move { client.inspect("ge6a1a75").await.map(|_| ()) }).await;
        match outcome {
            Ok(result) => assert!(result.is_err(), "Retry-After {secs}: {result:?}"),
            Err(join) => panic!("Retry-After {secs} panicked: {join}"),
        }
    }
}
