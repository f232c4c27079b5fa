//! The bundle checker: `parse_pem_certs`, `leaf_info`, `validate` and `check_issuer_key_match` on arbitrary text.
//!
//! Input: sections separated by a line `%%`: key PEM, chain PEM, domains (one a line), `now` (Unix seconds).
//! Missing sections: empty domains, now = 2026-01-01 (inside the seed certificates' validity).
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use time::OffsetDateTime;

use certkeeper::certs::{self, Bundle};

fuzz_target!(|data: &[u8]| {
    // The whole input as one PEM text (any bytes: the parser takes &[u8]).
    if let Ok(ders) = certs::parse_pem_certs(data) {
        for der in &ders {
            let _ = certs::leaf_info(der);
            let _ = certs::spki(der);
        }
    }
    // Bundles are Strings (read from the ACME server or the state dir as text).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split("\n%%\n");
    let key = parts.next().unwrap_or_default();
    let chain = parts.next().unwrap_or_default();
    let domains: Vec<String> = parts
        .next()
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let now = parts
        .next()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or_else(|| OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap());
    let bundle = Bundle {
        key_pkcs8_pem: SecretString::from(key.to_owned()),
        chain_pem: chain.to_owned(),
    };
    let _ = certs::validate(&bundle, &domains, now);
    let _ = certs::check_issuer_key_match(&bundle);
});
