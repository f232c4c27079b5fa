//! `[emqx.NAME]`: one EMQX Cloud / Platform API key, owned by the EMQX target: its raw section, its defaults
//! (the vendor's documented limits) and its resolution.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use toml::Spanned;

use crate::config::{ConfigError, Loader, parse_offset};

/// Default cadence of `GET` while waiting for a pushed certificate to become `running`.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// Default timeout of one HTTP exchange with the vendor API.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time to wait for `running` after a push.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The vendor's documented limit of `GET` requests per key per window.
pub const DEFAULT_GET_LIMIT: u32 = 60;
/// The vendor's documented limit of `POST`/`PUT`/`DELETE` requests per key per window.
pub const DEFAULT_WRITE_LIMIT: u32 = 6;
/// Default longest time between two inspections of a deployment whose renewal is not near.
pub const DEFAULT_INSPECT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The vendor refuses certificates with less validity left than this (its docs: "within 60 days").
pub const DEFAULT_IMPORT_MINIMUM: Duration = Duration::from_secs(60 * 24 * 3600);
/// The vendor's rate-limit window.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(60 * 60);

/// `[emqx.NAME]`: one EMQX Cloud API key.
#[derive(Debug, Clone)]
pub struct EmqxConfig {
    /// The section name.
    pub name: String,
    /// `{api}` base URL, without trailing slash.
    pub url: String,
    /// API key (the basic-auth user name; not secret).
    pub key: String,
    /// API secret.
    pub secret: SecretString,
    /// Offset of the zone-less `expire` field.
    pub expire_offset: time::UtcOffset,
    /// `GET` cadence while waiting for `running`.
    pub poll_interval: Duration,
    /// Timeout of one HTTP exchange with the API (each of up to three attempts).
    pub request_timeout: Duration,
    /// How long to wait for `running`.
    pub wait_timeout: Duration,
    /// Allowed `GET`s per window.
    pub get_limit: u32,
    /// Allowed writes per window.
    pub write_limit: u32,
    /// Longest time between two `GET`s of a deployment whose renewal is not near, to notice outside changes.
    pub inspect_interval: Duration,
    /// A certificate with less than this left is not pushed: the vendor refuses to import it ("within 60 days
    /// before ... the end of the validity period").
    pub import_minimum: Duration,
    /// What to do when the leaf's key algorithm differs from its issuer's, which EMQX's docs forbid.
    pub issuer_key_match: IssuerKeyMatch,
    /// The vendor's rate-limit window.
    pub rate_window: Duration,
}

/// The vendor documents that the leaf's key algorithm must match the issuing CA's. Some CAs (Pebble, and
/// Let's Encrypt for RSA accounts in the past) sign ECDSA leaves with RSA intermediates, so the check can warn
/// or refuse the push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssuerKeyMatch {
    /// Log a warning and push anyway (default: the rule's wording is ambiguous and untestable here).
    Warn,
    /// Refuse to push; the renewal fails with a clear error before spending a write.
    Enforce,
}

/// TLS mode of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum TlsType {
    /// Server authentication only.
    #[serde(rename = "one-way")]
    OneWay,
    /// Mutual TLS: the push must carry the client CA (`cacert`).
    #[serde(rename = "two-way")]
    TwoWay,
}

impl TlsType {
    /// The vendor's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsType::OneWay => "one-way",
            TlsType::TwoWay => "two-way",
        }
    }
}

impl fmt::Display for TlsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[emqx.NAME]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmqx {
    pub(crate) url: Spanned<String>,
    pub(crate) key: String,
    pub(crate) secret: Option<String>,
    pub(crate) secret_file: Option<Spanned<String>>,
    pub(crate) secret_env: Option<Spanned<String>>,
    pub(crate) expire_timezone: Option<Spanned<String>>,
    pub(crate) poll_interval: Option<Spanned<String>>,
    pub(crate) wait_timeout: Option<Spanned<String>>,
    pub(crate) request_timeout: Option<Spanned<String>>,
    pub(crate) get_limit: Option<u32>,
    pub(crate) write_limit: Option<u32>,
    pub(crate) rate_window: Option<Spanned<String>>,
    pub(crate) inspect_interval: Option<Spanned<String>>,
    pub(crate) import_minimum: Option<Spanned<String>>,
    pub(crate) issuer_key_match: Option<IssuerKeyMatch>,
}

/// Resolves `[emqx.NAME]`: URL, secret, limits and the vendor's rules.
///
/// # Errors
/// A [`ConfigError`] at the offending key.
pub(crate) fn resolve(
    cx: &mut Loader<'_>,
    name: &str,
    raw: Spanned<RawEmqx>,
) -> Result<EmqxConfig, ConfigError> {
    let span = raw.span();
    let raw = raw.into_inner();
    let url = api_url(cx, name, &raw.url)?;
    cx.inline_secrets |= raw.secret.is_some();
    let secret = cx.secret(
        "secret",
        &format!("emqx.{name}"),
        span.clone(),
        &raw.secret,
        &raw.secret_file,
        &raw.secret_env,
    )?;
    let expire_offset = match &raw.expire_timezone {
        None => time::UtcOffset::UTC,
        Some(tz) => parse_offset(tz.get_ref()).ok_or_else(|| {
            cx.err_at(
                tz.span(),
                format!(
                    "expire_timezone `{}` is not an offset like \"+08:00\" or \"UTC\"",
                    tz.get_ref()
                ),
            )
        })?,
    };
    if raw.get_limit == Some(0) || raw.write_limit == Some(0) {
        return Err(cx.err_at(
            span.clone(),
            format!("[emqx.{name}] get_limit and write_limit must be at least 1"),
        ));
    }
    let poll_interval = cx.duration(&raw.poll_interval, DEFAULT_POLL_INTERVAL)?;
    if poll_interval.is_zero() {
        return Err(cx.err_at(
            span,
            format!("[emqx.{name}] poll_interval must be more than 0"),
        ));
    }
    Ok(EmqxConfig {
        name: name.to_owned(),
        url,
        key: raw.key,
        secret: secret.into(),
        expire_offset,
        poll_interval,
        wait_timeout: cx.duration(&raw.wait_timeout, DEFAULT_WAIT_TIMEOUT)?,
        request_timeout: match cx.duration(&raw.request_timeout, DEFAULT_REQUEST_TIMEOUT)? {
            t if t.is_zero() => {
                return Err(cx.err_at(
                    span.clone(),
                    format!("[emqx.{name}] request_timeout must be more than 0"),
                ));
            }
            t => t,
        },
        get_limit: raw.get_limit.unwrap_or(DEFAULT_GET_LIMIT),
        write_limit: raw.write_limit.unwrap_or(DEFAULT_WRITE_LIMIT),
        rate_window: match cx.duration(&raw.rate_window, DEFAULT_RATE_WINDOW)? {
            w if w < Duration::from_secs(1) => {
                return Err(cx.err_at(
                    span.clone(),
                    format!("[emqx.{name}] rate_window must be at least 1s"),
                ));
            }
            w => w,
        },
        inspect_interval: cx.duration(&raw.inspect_interval, DEFAULT_INSPECT_INTERVAL)?,
        import_minimum: cx.duration(&raw.import_minimum, DEFAULT_IMPORT_MINIMUM)?,
        issuer_key_match: raw.issuer_key_match.unwrap_or(IssuerKeyMatch::Warn),
    })
}

/// The API base URL: http(s), a host, no query, fragment or credentials; plain http only warned about when it
/// leaves the host.
fn api_url(cx: &Loader<'_>, name: &str, raw: &Spanned<String>) -> Result<String, ConfigError> {
    let url = raw.get_ref().trim_end_matches('/').to_owned();
    let parsed = reqwest::Url::parse(&url)
        .ok()
        .filter(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
    let Some(parsed) = parsed else {
        return Err(cx.err_at(
            raw.span(),
            format!("[emqx.{name}] url `{url}` is not an http(s) URL; copy the API address from the console"),
        ));
    };
    // The path `/deployments/{id}/tls` is appended to the URL: a query, a fragment or credentials in it would
    // end up somewhere else than intended (and credentials in logs).
    if parsed.query().is_some()
        || parsed.fragment().is_some()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return Err(cx.err_at(
            raw.span(),
            format!("[emqx.{name}] url must be the API base address only, without `?query`, `#fragment` or user:password@ (the key and secret have their own settings)"),
        ));
    }
    // Loopback traffic never leaves the host (the README sandbox and the tests use one).
    let host = parsed.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if parsed.scheme() == "http" && !loopback {
        cx.warnings.borrow_mut().push(format!(
            "[emqx.{name}] url `{url}` is plain http: the API secret and every private key pushed travel unencrypted; use https"
        ));
    }
    Ok(url)
}
