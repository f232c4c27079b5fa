//! Unit tests of the EMQX client: wire format, dialects, retries and the budget, against a local HTTP double.

use super::*;
use crate::config::TlsType;
use time::macros::{datetime, offset};

#[test]
fn documented_answer_parses() {
    let s = parse_state(
        br#"{"expire":"2034-05-22 02:43:21","status":"running","tlsType":"one-way"}"#,
        offset!(UTC),
    )
    .unwrap();
    assert_eq!(s.expire, Some(datetime!(2034-05-22 02:43:21 UTC)));
    assert_eq!(s.status, Status::Running);
    assert_eq!(s.tls_type.as_deref(), Some("one-way"));
}

#[test]
fn old_dialect_and_zone_offset() {
    let s = parse_state(
        br#"{"expire":"2034-05-22 10:43:21","status":" pending","tls_type":"two-way","extra":1}"#,
        offset!(+8),
    )
    .unwrap();
    assert_eq!(s.expire, Some(datetime!(2034-05-22 02:43:21 UTC)));
    assert_eq!(s.status, Status::Pending);
    assert_eq!(s.tls_type.as_deref(), Some("two-way"));
}

#[test]
fn no_certificate_and_rfc3339_and_unknown_status() {
    assert_eq!(parse_state(b"{}", offset!(UTC)).unwrap().expire, None);
    let s = parse_state(
        br#"{"expire":"2034-05-22T02:43:21Z","status":"failed"}"#,
        offset!(UTC),
    )
    .unwrap();
    assert_eq!(s.expire, Some(datetime!(2034-05-22 02:43:21 UTC)));
    assert_eq!(s.status, Status::Other("failed".into()));
}

#[test]
fn malformed_answers_are_errors_not_panics() {
    for body in [
        &b"not json"[..],
        b"[]",
        br#"{"expire": 5}"#,
        br#"{"expire":"tomorrow"}"#,
        b"\xff\xfe",
    ] {
        assert!(parse_state(body, offset!(UTC)).is_err(), "{body:?}");
    }
}

#[test]
fn upload_debug_hides_the_key() {
    let u = Upload {
        tls_type: TlsType::OneWay,
        cert: "C",
        key: "-----BEGIN EC PRIVATE KEY-----secret",
        cacert: None,
    };
    assert!(!format!("{u:?}").contains("secret"));
    let json = serde_json::to_string(&u).unwrap();
    assert!(
        json.contains(r#""tlsType":"one-way""#) && !json.contains("cacert"),
        "{json}"
    );
}

#[test]
fn http_dates_parse() {
    assert_eq!(
        httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(datetime!(1994-11-06 08:49:37 UTC))
    );
}

#[test]
fn expiries_outside_years_1_to_9999_are_refused() {
    for text in [
        "0000-01-01 00:00:00",
        "0000-12-31T23:59:59Z",
        "0001-01-01T00:30:00+01:00",
        "9999-12-31T23:30:00-01:00",
        "-0001-05-01 00:00:00",
    ] {
        assert_eq!(parse_expire(text, offset!(UTC)), None, "{text}");
    }
    assert_eq!(
        parse_expire("0001-01-01 00:00:00", offset!(UTC)),
        Some(datetime!(0001-01-01 00:00:00 UTC))
    );
    let err = parse_state(br#"{"expire":"0000-01-02 00:00:00"}"#, offset!(UTC)).unwrap_err();
    assert!(err.contains("between the years 1 and 9999"), "{err}");
    // A zone-less expiry read in a large offset lands in UTC, still representable.
    assert_eq!(
        parse_expire("0001-01-02 23:00:00", offset!(+23:59)),
        Some(datetime!(0001-01-01 23:01:00 UTC))
    );
}

#[test]
fn a_redirect_names_only_the_origin_of_its_location() {
    let base = "https://api.example.test/api/v1/deployments/d/tls";
    assert_eq!(
        location_origin(base, Some("https://evil.example:8443/x?token=abc")),
        "https://evil.example:8443"
    );
    assert_eq!(
        location_origin(base, Some("/elsewhere")),
        "https://api.example.test"
    );
    assert_eq!(location_origin(base, None), "no Location");
}

/// A one-thread HTTP server answering every request with `answer`; returns its URL and a request counter.
fn canned_server(answer: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/v1", listener.local_addr().unwrap());
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = (&stream).write_all(answer.as_bytes());
        }
    });
    (url, count)
}

fn client_for(url: String, store: &crate::state::Store) -> EmqxClient {
    let config = EmqxConfig {
        name: "main".into(),
        url,
        key: "k".into(),
        secret: "s".to_owned().into(),
        expire_offset: time::UtcOffset::UTC,
        poll_interval: Duration::from_millis(10),
        request_timeout: Duration::from_secs(5),
        wait_timeout: Duration::from_secs(1),
        get_limit: 60,
        write_limit: 6,
        inspect_interval: Duration::from_secs(3600),
        import_minimum: Duration::ZERO,
        issuer_key_match: crate::config::IssuerKeyMatch::Warn,
        rate_window: Duration::from_secs(3600),
    };
    let budget = Arc::new(Budget::load(Arc::new(store.clone())).unwrap());
    let mut client = EmqxClient::new(vendor_http().unwrap(), config, budget);
    client.default_retry_after = Duration::from_millis(20);
    client
}

#[tokio::test]
async fn a_429_without_retry_after_is_waited_out_once_per_pass() {
    let (url, count) = canned_server(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
    let tmp = tempfile::tempdir().unwrap();
    let store = crate::state::Store::open(tmp.path()).unwrap();
    let client = client_for(url, &store);
    let sent = || count.load(Ordering::SeqCst);

    let err = client.inspect("d").await.unwrap_err();
    assert!(matches!(err, EmqxError::Budget(_)), "{err}");
    assert!(
        err.to_string().contains("without a usable Retry-After"),
        "{err}"
    );
    assert_eq!(sent(), 2, "one wait, then deferred");
    tokio::time::sleep(Duration::from_millis(30)).await;
    client.inspect("d").await.unwrap_err();
    assert_eq!(sent(), 3, "the pass already waited once: no second wait");
    tokio::time::sleep(Duration::from_millis(30)).await;
    client.begin_pass();
    client.inspect("d").await.unwrap_err();
    assert_eq!(sent(), 5, "a new pass may wait once again");
}

#[tokio::test]
async fn a_redirect_is_an_error_and_is_not_followed() {
    let (url, count) = canned_server(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:9/x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
    let tmp = tempfile::tempdir().unwrap();
    let store = crate::state::Store::open(tmp.path()).unwrap();
    let client = client_for(url, &store);
    let err = client.inspect("d").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("HTTP 307 to http://127.0.0.1:9")
            && text.contains("never follows redirects")
            && text.contains("[emqx.main] url"),
        "{text}"
    );
    assert!(!err.is_transient());
    assert_eq!(count.load(Ordering::SeqCst), 1, "not retried");
}
