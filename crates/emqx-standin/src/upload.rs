//! The body of `POST`/`PUT /deployments/{id}/tls`: its JSON shape, then the PEM checks.
//!
//! The docs list exactly four request fields, `tlsType` (`tls_type` in the older dialect), `cert`,
//! `key` and `cacert` (needed for two-way TLS). The stand-in is strict where the docs are silent:
//! any other field, a non-string value, or both spellings of the TLS type at once is a 422, so a
//! client that sends something the vendor never documented is caught in tests. `cacert: null` is
//! read as "no cacert".

use serde_json::Value;

use crate::pki::{self, Policy};

/// The largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The two TLS types of the docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsType {
    /// Server authentication only.
    OneWay,
    /// Mutual TLS; needs a client CA certificate.
    TwoWay,
}

impl TlsType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsType::OneWay => "one-way",
            TlsType::TwoWay => "two-way",
        }
    }
}

/// An upload that passed every check.
///
/// `Debug` is written by hand: the key must never reach a log.
pub struct Upload {
    /// The TLS type.
    pub tls_type: TlsType,
    /// The certificate chain, leaf first, as uploaded.
    pub cert: String,
    /// The private key, as uploaded.
    pub key: String,
    /// The client CA certificates, as uploaded.
    pub cacert: Option<String>,
    /// The leaf's notAfter.
    pub expire: time::OffsetDateTime,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("tls_type", &self.tls_type)
            .field("expire", &self.expire)
            .finish_non_exhaustive()
    }
}

/// Returns true if and only if the Content-Type is `application/json` (parameters allowed).
pub fn is_json_content_type(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|value| {
        value
            .split(';')
            .next()
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// Parses and checks an upload body.
///
/// # Errors
///
/// A message naming the first problem found, for a 422 answer.
pub fn parse_upload(body: &[u8], policy: Policy) -> Result<Upload, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let Value::Object(fields) = value else {
        return Err("the body must be a JSON object".to_owned());
    };
    if let Some(unknown) = fields.keys().find(|name| {
        !matches!(
            name.as_str(),
            "tlsType" | "tls_type" | "cert" | "key" | "cacert"
        )
    }) {
        return Err(format!(
            "unknown field {unknown:?}; the accepted fields are tlsType, cert, key and cacert"
        ));
    }
    let tls_type = match (fields.get("tlsType"), fields.get("tls_type")) {
        (Some(_), Some(_)) => {
            return Err("give the TLS type as tlsType or tls_type, not both".to_owned());
        }
        (Some(value), None) => string_field(value, "tlsType")?,
        (None, Some(value)) => string_field(value, "tls_type")?,
        (None, None) => return Err("missing field tlsType".to_owned()),
    };
    let tls_type = match tls_type {
        "one-way" => TlsType::OneWay,
        "two-way" => TlsType::TwoWay,
        other => {
            return Err(format!(
                "tlsType {other:?} is not valid; use \"one-way\" or \"two-way\""
            ));
        }
    };
    let cert = required_string(&fields, "cert")?;
    let key = required_string(&fields, "key")?;
    let cacert = match fields.get("cacert") {
        None | Some(Value::Null) => None,
        Some(value) => Some(string_field(value, "cacert")?),
    };

    let checked = pki::check_bundle(cert, key, cacert, tls_type == TlsType::TwoWay, policy)?;
    Ok(Upload {
        tls_type,
        cert: cert.to_owned(),
        key: key.to_owned(),
        cacert: cacert.map(str::to_owned),
        expire: checked.not_after,
    })
}

fn required_string<'a>(
    fields: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Result<&'a str, String> {
    match fields.get(name) {
        Some(value) => string_field(value, name),
        None => Err(format!("missing field {name}")),
    }
}

fn string_field<'a>(value: &'a Value, name: &str) -> Result<&'a str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("field {name} must be a string"))
}
