//! Verifies `SDK-HMAC-SHA256` signatures exactly as the API Request Signing Guide describes them, with this
//! crate's own code (not certkeeper's signer): canonical URI with a trailing slash, query sorted by name then
//! value with RFC 3986 encoding, signed headers lower-cased and sorted, hex SHA-256 of the body, and
//! `X-Sdk-Date` within 15 minutes of now. `host` and `x-sdk-date` must be among the signed headers, and every
//! signed header must be present.

use std::collections::HashMap;

use aws_lc_rs::{constant_time, digest, hmac};
use axum::http::{HeaderMap, Method, Uri};
use time::OffsetDateTime;

/// The allowed clock skew.
pub const MAX_SKEW: time::Duration = time::Duration::minutes(15);

/// Why a request is refused with 401.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No or a malformed Authorization header.
    Malformed(&'static str),
    /// The AK is unknown.
    UnknownKey,
    /// X-Sdk-Date missing, malformed or too far from now.
    Date(&'static str),
    /// A required header is not signed, or a signed one is missing.
    Headers(String),
    /// The signature does not match.
    Mismatch,
}

impl Refusal {
    /// The IAM-authenticated API gateway's error message.
    pub fn message(&self) -> String {
        let why = match self {
            Refusal::Malformed(what) => format!("authorization header is malformed: {what}"),
            Refusal::UnknownKey => "ak not found".to_owned(),
            Refusal::Date(what) => format!("x-sdk-date {what}"),
            Refusal::Headers(what) => what.clone(),
            Refusal::Mismatch => "verify aksk signature fail".to_owned(),
        };
        format!("Incorrect IAM authentication information: {why}")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn encode(text: &[u8]) -> String {
    let mut out = String::new();
    for &b in text {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    out
}

/// Parses `SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…`.
fn parse(value: &str) -> Result<HashMap<String, String>, Refusal> {
    let rest = value
        .strip_prefix("SDK-HMAC-SHA256 ")
        .ok_or(Refusal::Malformed("not SDK-HMAC-SHA256"))?;
    let mut fields = HashMap::new();
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(Refusal::Malformed("field without ="))?;
        fields.insert(k.to_owned(), v.to_owned());
    }
    for need in ["Access", "SignedHeaders", "Signature"] {
        if !fields.contains_key(need) {
            return Err(Refusal::Malformed(
                "Access, SignedHeaders and Signature are required",
            ));
        }
    }
    Ok(fields)
}

/// Checks the request's signature against the secret `secret_of(ak)`; returns the AK.
pub fn verify(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    secret_of: impl Fn(&str) -> Option<String>,
    now: OffsetDateTime,
) -> Result<String, Refusal> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or(Refusal::Malformed("missing"))?;
    let fields = parse(auth)?;
    let ak = fields["Access"].clone();
    let sk = secret_of(&ak).ok_or(Refusal::UnknownKey)?;
    let date = headers
        .get("x-sdk-date")
        .and_then(|v| v.to_str().ok())
        .ok_or(Refusal::Date("is missing"))?;
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let at = time::PrimitiveDateTime::parse(date, &format)
        .map_err(|_| Refusal::Date("is not YYYYMMDDTHHMMSSZ"))?
        .assume_utc();
    if (now - at).abs() > MAX_SKEW {
        return Err(Refusal::Date(
            "is more than 15 minutes away from the server's clock",
        ));
    }
    let signed: Vec<&str> = fields["SignedHeaders"].split(';').collect();
    for need in ["host", "x-sdk-date"] {
        if !signed.contains(&need) {
            return Err(Refusal::Headers(format!("header {need} is not signed")));
        }
    }
    let mut sorted = signed.clone();
    sorted.sort_unstable();
    if sorted != signed {
        return Err(Refusal::Headers("SignedHeaders are not sorted".into()));
    }
    let mut canonical_headers = String::new();
    for name in &signed {
        let value = headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Refusal::Headers(format!("signed header {name} is missing")))?;
        canonical_headers.push_str(&format!("{name}:{}\n", value.trim()));
    }
    let mut path: String = uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| format!("/{}", encode(&decode(s))))
        .collect();
    path.push('/');
    let mut query: Vec<(String, String)> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&decode(k)), encode(&decode(v)))
        })
        .collect();
    query.sort();
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let canonical = format!(
        "{method}\n{path}\n{}\n{canonical_headers}\n{}\n{}",
        query.join("&"),
        signed.join(";"),
        hex(digest::digest(&digest::SHA256, body).as_ref())
    );
    let to_sign = format!(
        "SDK-HMAC-SHA256\n{date}\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, sk.as_bytes());
    let expected = hex(hmac::sign(&key, to_sign.as_bytes()).as_ref());
    constant_time::verify_slices_are_equal(expected.as_bytes(), fields["Signature"].as_bytes())
        .map_err(|_| Refusal::Mismatch)?;
    Ok(ak)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guide's example signature, recomputed from its string to sign.
    #[test]
    fn the_published_example_signature_matches() {
        let key = hmac::Key::new(
            hmac::HMAC_SHA256,
            b"MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc",
        );
        let to_sign = "SDK-HMAC-SHA256\n20191115T033655Z\nb25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a";
        assert_eq!(
            hex(hmac::sign(&key, to_sign.as_bytes()).as_ref()),
            "7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"
        );
    }

    #[test]
    fn malformed_and_unsigned_requests_are_refused() {
        let uri: Uri = "/v2/p/instances/i/ssl".parse().unwrap();
        let mut headers = HeaderMap::new();
        let now = OffsetDateTime::now_utc();
        let none = |_: &str| Some("sk".to_owned());
        assert_eq!(
            verify(&Method::GET, &uri, &headers, b"", none, now),
            Err(Refusal::Malformed("missing"))
        );
        headers.insert(
            "authorization",
            "SDK-HMAC-SHA256 Access=ak, SignedHeaders=host, Signature=00"
                .parse()
                .unwrap(),
        );
        headers.insert("x-sdk-date", "20240422T140839Z".parse().unwrap());
        assert!(matches!(
            verify(&Method::GET, &uri, &headers, b"", none, now),
            Err(Refusal::Date(_))
        ));
    }

    #[test]
    fn a_skewed_clock_is_refused_before_the_signature_is_looked_at() {
        let uri: Uri = "/v2/p/instances/i/ssl".parse().unwrap();
        let now = OffsetDateTime::now_utc();
        let old = now - time::Duration::minutes(16);
        let format =
            time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            "SDK-HMAC-SHA256 Access=ak, SignedHeaders=host;x-sdk-date, Signature=00"
                .parse()
                .unwrap(),
        );
        headers.insert("x-sdk-date", old.format(&format).unwrap().parse().unwrap());
        headers.insert("host", "h".parse().unwrap());
        let sk = |_: &str| Some("sk".to_owned());
        assert!(matches!(
            verify(&Method::GET, &uri, &headers, b"", sk, now),
            Err(Refusal::Date(_))
        ));
        let fresh = now - time::Duration::minutes(14);
        headers.insert(
            "x-sdk-date",
            fresh.format(&format).unwrap().parse().unwrap(),
        );
        assert_eq!(
            verify(&Method::GET, &uri, &headers, b"", sk, now),
            Err(Refusal::Mismatch)
        );
        let unknown = |_: &str| None;
        assert_eq!(
            verify(&Method::GET, &uri, &headers, b"", unknown, now),
            Err(Refusal::UnknownKey)
        );
    }
    /// The gateway signs nothing a request could leave out: without `host` in SignedHeaders a signature
    /// could be replayed against another endpoint, without `x-sdk-date` against another time.
    #[test]
    fn signed_headers_without_host_or_x_sdk_date_are_refused() {
        let uri: Uri = "/v2/p/instances/i/ssl".parse().unwrap();
        let now = OffsetDateTime::now_utc();
        let format =
            time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        let sk = |_: &str| Some("sk".to_owned());
        for (signed, missing) in [
            ("x-sdk-date", "host"),
            ("content-type;x-sdk-date", "host"),
            ("host", "x-sdk-date"),
            ("content-type;host", "x-sdk-date"),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(
                "authorization",
                format!("SDK-HMAC-SHA256 Access=ak, SignedHeaders={signed}, Signature=00")
                    .parse()
                    .unwrap(),
            );
            // Every header is sent, only the signature leaves one out.
            headers.insert("x-sdk-date", now.format(&format).unwrap().parse().unwrap());
            headers.insert("host", "h".parse().unwrap());
            headers.insert("content-type", "application/json".parse().unwrap());
            let refusal = verify(&Method::GET, &uri, &headers, b"", sk, now).unwrap_err();
            assert_eq!(
                refusal,
                Refusal::Headers(format!("header {missing} is not signed")),
                "SignedHeaders={signed}"
            );
            assert!(
                refusal
                    .message()
                    .contains(&format!("header {missing} is not signed")),
                "{}",
                refusal.message()
            );
        }
    }
}
