//! The EMQX TLS API's wire format: the `GET` answer (`expire`, `status`, `tlsType` in both dialects) and the
//! body of a `POST`/`PUT`. Pure functions, fuzzed (`fuzz/fuzz_targets/emqx_state.rs`).

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::TlsType;

/// The earliest and latest year an `expire` may name. Beyond these the date arithmetic of the planner and the
/// state files cannot represent it, and no real certificate lives there.
pub const EXPIRE_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// The deployment's certificate state as `GET` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsState {
    /// `tlsType` as reported (`None` when absent).
    pub tls_type: Option<String>,
    /// Expiry of the certificate in use; `None` when there is none.
    pub expire: Option<OffsetDateTime>,
    /// `status`, trimmed.
    pub status: Status,
}

/// `status` of the deployment's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Serving the certificate.
    Running,
    /// Being applied.
    Pending,
    /// No status field (no certificate).
    Absent,
    /// A value the docs do not list, kept verbatim.
    Other(String),
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Running => f.write_str("running"),
            Status::Pending => f.write_str("pending"),
            Status::Absent => f.write_str("(none)"),
            Status::Other(s) => write!(f, "{s:?}"),
        }
    }
}

/// Body of `POST`/`PUT`.
#[derive(Serialize)]
pub struct Upload<'a> {
    /// `one-way` or `two-way`.
    #[serde(rename = "tlsType")]
    pub tls_type: TlsType,
    /// Leaf then chain, PEM.
    pub cert: &'a str,
    /// Private key PEM.
    pub key: &'a str,
    /// Client CA PEM, two-way only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cacert: Option<&'a str>,
}

impl fmt::Debug for Upload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload")
            .field("tls_type", &self.tls_type)
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Parses a `GET`/write answer. Public for the fuzz and unit tests.
///
/// # Errors
/// A description of what does not follow the docs.
pub fn parse_state(body: &[u8], offset: time::UtcOffset) -> Result<TlsState, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let obj = value.as_object().ok_or("body is not a JSON object")?;
    let field = |name: &str| -> Result<Option<&str>, String> {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.trim())),
            Some(other) => Err(format!("`{name}` is not a string: {other}")),
        }
    };
    let undocumented: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !matches!(*k, "tlsType" | "tls_type" | "expire" | "status"))
        .take(10)
        .collect();
    if !undocumented.is_empty() {
        tracing::info!(fields = ?undocumented, "EMQX API answered undocumented fields; ignored");
    }
    let tls_type = field("tlsType")?
        .or(field("tls_type")?)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let expire = match field("expire")?.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(parse_expire(s, offset).ok_or_else(|| {
            format!(
                "`expire` {s:?} is not a date between the years {} and {}",
                EXPIRE_YEARS.start(),
                EXPIRE_YEARS.end()
            )
        })?),
    };
    let status = match field("status")?.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => Status::Absent,
        Some("running") => Status::Running,
        Some("pending") => Status::Pending,
        Some(other) => Status::Other(other.to_owned()),
    };
    Ok(TlsState {
        tls_type,
        expire,
        status,
    })
}

/// `YYYY-MM-DD HH:MM:SS` in `offset`, or RFC 3339; in UTC, and only within [`EXPIRE_YEARS`].
pub fn parse_expire(text: &str, offset: time::UtcOffset) -> Option<OffsetDateTime> {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let parsed = OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        time::PrimitiveDateTime::parse(text, &fmt)
            .ok()
            .map(|t| t.assume_offset(offset))
    })?;
    parsed
        .checked_to_offset(time::UtcOffset::UTC)
        .filter(|t| EXPIRE_YEARS.contains(&t.year()))
}

/// The vendor's error message from a body, cut to one short line.
pub(crate) fn vendor_message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        "no message".into()
    } else if line.chars().count() > 200 {
        format!("{}…", line.chars().take(200).collect::<String>())
    } else {
        line
    }
}
