//! `[dns.NAME]` with `provider = "rfc2136"`: the RFC 2136 solver's own config section and its resolution.

use std::time::Duration;

use secrecy::SecretSlice;
use serde::Deserialize;
use toml::Spanned;

use super::TsigAlgorithm;
use crate::config::{ConfigError, Loader, check_host_port};

/// `[dns.NAME]`: an RFC 2136 server that takes TSIG-signed updates.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The section name.
    pub name: String,
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
    /// How long to wait for the server to answer a new TXT record.
    pub propagation_timeout: Duration,
}

/// `[dns.NAME]` with `provider = "rfc2136"`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub(crate) provider: Spanned<String>,
    pub(crate) server: Spanned<String>,
    pub(crate) tsig_key: String,
    pub(crate) tsig_algorithm: Option<TsigAlgorithm>,
    pub(crate) tsig_secret: Option<String>,
    pub(crate) tsig_secret_file: Option<Spanned<String>>,
    pub(crate) tsig_secret_env: Option<Spanned<String>>,
    pub(crate) zone: Option<String>,
    pub(crate) propagation_timeout: Option<Spanned<String>>,
}

/// Resolves `[dns.NAME]`: server, TSIG key and secret, zone.
///
/// # Errors
/// A [`ConfigError`] at the offending key.
pub(crate) fn resolve(
    cx: &mut Loader<'_>,
    name: &str,
    raw: Spanned<RawDns>,
) -> Result<DnsConfig, ConfigError> {
    let span = raw.span();
    let raw = raw.into_inner();
    if raw.provider.get_ref() != "rfc2136" {
        return Err(cx.err_at(
            raw.provider.span(),
            format!(
                "[dns.{name}] provider `{}` is unknown; supported: \"rfc2136\"",
                raw.provider.get_ref()
            ),
        ));
    }
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
    Ok(DnsConfig {
        name: name.to_owned(),
        server: raw.server.into_inner(),
        tsig_key: absolute(&raw.tsig_key),
        tsig_algorithm: raw.tsig_algorithm.unwrap_or(TsigAlgorithm::HmacSha256),
        tsig_secret: decoded.into(),
        zone: raw.zone.as_deref().map(absolute),
        propagation_timeout: cx
            .duration(&raw.propagation_timeout, super::DEFAULT_PROPAGATION_TIMEOUT)?,
    })
}
