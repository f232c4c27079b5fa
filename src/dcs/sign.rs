//! Huawei Cloud's AK/SK request signing, `SDK-HMAC-SHA256` (the API Request Signing Guide, "AK/SK Signing and
//! Authentication Algorithm"): like AWS SigV4 without the region/service scoping.
//!
//! ```text
//! CanonicalRequest = Method \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders \n HexSha256(Body)
//! StringToSign     = "SDK-HMAC-SHA256" \n X-Sdk-Date \n HexSha256(CanonicalRequest)
//! Signature        = Hex(HMAC-SHA256(SK, StringToSign))
//! Authorization: SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date, Signature=…
//! ```
//!
//! The canonical URI always ends with `/` (the guide: "if the URI does not end with a slash, add one"), the
//! query is sorted by name then value with both percent-encoded (RFC 3986 unreserved characters kept), and
//! header names are lower-cased, values trimmed, sorted by name; each header line ends with `\n`, so the
//! canonical headers are followed by an empty line. Only `host` and `x-sdk-date` are signed (the guide: only
//! `X-Sdk-Date` is required), plus `content-type` when the request has one.

use aws_lc_rs::{digest, hmac};
use secrecy::{ExposeSecret as _, SecretString};
use time::OffsetDateTime;

/// The algorithm name in the string to sign and the Authorization header.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";

/// The headers a signed request carries: `X-Sdk-Date` and `Authorization`.
#[derive(Debug, Clone)]
pub struct Signature {
    /// `X-Sdk-Date`, `YYYYMMDDTHHMMSSZ`.
    pub date: String,
    /// `Authorization` (holds the AK and the signature, never the SK).
    pub authorization: String,
}

/// `X-Sdk-Date` for `now`.
pub fn sdk_date(now: OffsetDateTime) -> String {
    let now = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonical URI of `url`'s path: each segment encoded, with a trailing slash.
fn canonical_uri(url: &reqwest::Url) -> String {
    let mut out = String::new();
    for segment in url.path().split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_decode(segment);
        out.push('/');
        out.push_str(&encode(&decoded));
    }
    out.push('/');
    out
}

/// Decodes `%XX` (a path segment reqwest already encoded must not be encoded twice).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical query: pairs encoded, sorted by name then value.
fn canonical_query(url: &reqwest::Url) -> String {
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (encode(&k), encode(&v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `Host` as the client sends it: the port only when it is not the scheme's default.
pub fn host_header(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The canonical request of `method url` with `headers` (name, value) signed and `body`.
pub fn canonical_request(
    method: &str,
    url: &reqwest::Url,
    headers: &[(String, String)],
    body: &[u8],
) -> (String, String) {
    let mut headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let request = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
        canonical_uri(url),
        canonical_query(url),
        hex(digest::digest(&digest::SHA256, body).as_ref())
    );
    (request, signed)
}

/// `Hex(HMAC-SHA256(sk, string_to_sign))`.
pub fn signature_of(sk: &SecretString, string_to_sign: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, sk.expose_secret().as_bytes());
    hex(hmac::sign(&key, string_to_sign.as_bytes()).as_ref())
}

/// Signs `method url` with `body` at `now`; `content_type`, when the request has one, is signed too.
pub fn sign(
    ak: &str,
    sk: &SecretString,
    method: &str,
    url: &reqwest::Url,
    content_type: Option<&str>,
    body: &[u8],
    now: OffsetDateTime,
) -> Signature {
    let date = sdk_date(now);
    let mut headers = vec![
        ("host".to_owned(), host_header(url)),
        ("x-sdk-date".to_owned(), date.clone()),
    ];
    if let Some(ct) = content_type {
        headers.push(("content-type".to_owned(), ct.to_owned()));
    }
    let (request, signed) = canonical_request(method, url, &headers, body);
    let hashed = hex(digest::digest(&digest::SHA256, request.as_bytes()).as_ref());
    let string_to_sign = format!("{ALGORITHM}\n{date}\n{hashed}");
    let signature = signature_of(sk, &string_to_sign);
    Signature {
        date,
        authorization: format!(
            "{ALGORITHM} Access={ak}, SignedHeaders={signed}, Signature={signature}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guide's worked example: this string to sign and SK give this signature.
    #[test]
    fn the_published_example_signature_matches() {
        let sk: SecretString = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc".into();
        let string_to_sign = "SDK-HMAC-SHA256\n20191115T033655Z\n\
                              b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a";
        assert_eq!(
            signature_of(&sk, string_to_sign),
            "7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"
        );
    }

    /// The shape API Gateway echoes in its APIG.0303 error (`|` for `\n`):
    /// `GET|/test/||host:…|x-sdk-date:20230527T015431Z||host;x-sdk-date|e3b0c…b855`.
    #[test]
    fn canonical_request_has_the_trailing_slash_and_the_blank_line() {
        let url = reqwest::Url::parse("https://example.com/test").unwrap();
        let headers = vec![
            ("Host".to_owned(), "example.com".to_owned()),
            ("X-Sdk-Date".to_owned(), " 20230527T015431Z ".to_owned()),
        ];
        let (request, signed) = canonical_request("GET", &url, &headers, b"");
        assert_eq!(
            request.replace('\n', "|"),
            "GET|/test/||host:example.com|x-sdk-date:20230527T015431Z||host;x-sdk-date|\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(signed, "host;x-sdk-date");
    }

    #[test]
    fn query_is_sorted_and_encoded_and_ports_are_kept() {
        let url = reqwest::Url::parse("http://127.0.0.1:8080/v2/p/x?b=2&a=x%20y&a=1").unwrap();
        assert_eq!(canonical_query(&url), "a=1&a=x%20y&b=2");
        assert_eq!(host_header(&url), "127.0.0.1:8080");
        let default = reqwest::Url::parse("https://dcs.example.com:443/").unwrap();
        assert_eq!(host_header(&default), "dcs.example.com");
        let date = sdk_date(time::macros::datetime!(2024-04-22 14:08:39 UTC));
        assert_eq!(date, "20240422T140839Z");
    }

    #[test]
    fn authorization_names_the_key_but_not_the_secret() {
        let url = reqwest::Url::parse("https://dcs.example.com/v2/p/instances/i/ssl").unwrap();
        let sk: SecretString = "very-secret-key".into();
        let s = sign(
            "AKID",
            &sk,
            "GET",
            &url,
            None,
            b"",
            OffsetDateTime::now_utc(),
        );
        assert!(
            s.authorization.starts_with(
                "SDK-HMAC-SHA256 Access=AKID, SignedHeaders=host;x-sdk-date, Signature="
            )
        );
        assert!(!s.authorization.contains("very-secret-key"));
    }
}
