//! `[dns.NAME]` with `provider = "rfc2136"`: the RFC 2136 solver's own keys and their resolution.

use secrecy::SecretSlice;
use serde::Deserialize;
use toml::Spanned;

use super::TsigAlgorithm;
use crate::config::{ConfigError, Loader, check_host_port};

/// The RFC 2136 provider's own settings in `[dns.NAME]`.
#[derive(Debug, Clone)]
pub struct Rfc2136Config {
    /// `host:port` of the zone's primary.
    pub server: String,
    /// TSIG key name.
    pub tsig_key: String,
    /// TSIG algorithm.
    pub tsig_algorithm: TsigAlgorithm,
    /// Decoded TSIG key bytes.
    pub tsig_secret: SecretSlice<u8>,
    /// The zone, when not discovered by SOA lookup.
    pub zone: Option<String>,
}

/// `[dns.NAME]` with `provider = "rfc2136"`, as written (without the shared keys, `solver/config.rs`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRfc2136 {
    pub(crate) server: Spanned<String>,
    pub(crate) tsig_key: String,
    pub(crate) tsig_algorithm: Option<TsigAlgorithm>,
    pub(crate) tsig_secret: Option<String>,
    pub(crate) tsig_secret_file: Option<Spanned<String>>,
    pub(crate) tsig_secret_env: Option<Spanned<String>>,
    pub(crate) zone: Option<String>,
}

/// Resolves `[dns.NAME]`: server, TSIG key and secret, zone.
///
/// # Errors
/// A [`ConfigError`] at the offending key.
pub(crate) fn resolve(
    cx: &mut Loader<'_>,
    name: &str,
    span: std::ops::Range<usize>,
    raw: RawRfc2136,
) -> Result<Rfc2136Config, ConfigError> {
    if let Err(why) = check_host_port(raw.server.get_ref()) {
        return Err(cx.err_at(
            raw.server.span(),
            format!(
                "[dns.{name}] server `{}` {why}; write host:port, e.g. \"192.0.2.1:53\"",
                raw.server.get_ref()
            ),
        ));
    }
    cx.inline_secrets |= raw.tsig_secret.is_some();
    let secret = cx.secret(
        "tsig_secret",
        &format!("dns.{name}"),
        span,
        &raw.tsig_secret,
        &raw.tsig_secret_file,
        &raw.tsig_secret_env,
    )?;
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(secret.as_bytes())
        .ok()
        // Not read (`status`): an empty secret stands in, never used.
        .filter(|bytes| !bytes.is_empty() || !cx.read_secrets)
        .ok_or_else(|| {
            cx.err(format!(
                "[dns.{name}] the TSIG secret is not valid base64 or is empty (use the secret as knot/bind print it)"
            ))
        })?;
    let absolute = |s: &str| {
        if s.ends_with('.') {
            s.to_owned()
        } else {
            format!("{s}.")
        }
    };
    Ok(Rfc2136Config {
        server: raw.server.into_inner(),
        tsig_key: absolute(&raw.tsig_key),
        tsig_algorithm: raw.tsig_algorithm.unwrap_or(TsigAlgorithm::HmacSha256),
        tsig_secret: decoded.into(),
        zone: raw.zone.as_deref().map(absolute),
    })
}
