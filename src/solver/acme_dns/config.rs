//! `[dns.NAME]` with `provider = "acme-dns"`: the acme-dns provider's own keys and their resolution.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{ConfigError, Loader, expand_credentials_dir};

/// The acme-dns provider's own settings in `[dns.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeDnsConfig {
    /// The acme-dns server's API base URL, e.g. `https://auth.acme-dns.io` (no trailing slash).
    pub server: String,
    /// The credentials file, in the acme-dns clients' format: `{"<domain>": {"username", "password",
    /// "fulldomain", "subdomain"}}`. Read when used, not at load: `certkeeper dns register` creates it.
    pub credentials_file: PathBuf,
}

/// `[dns.NAME]` with `provider = "acme-dns"`, as written (without the shared keys, `solver/config.rs`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcmeDns {
    server: Spanned<String>,
    credentials_file: Spanned<String>,
}

/// Resolves `[dns.NAME]` of an acme-dns server: an http(s) URL and a credentials file path.
///
/// # Errors
/// A [`ConfigError`] at the offending key.
pub(crate) fn resolve(
    cx: &mut Loader<'_>,
    name: &str,
    _span: std::ops::Range<usize>,
    raw: RawAcmeDns,
) -> Result<AcmeDnsConfig, ConfigError> {
    let server = raw.server.get_ref().trim().trim_end_matches('/').to_owned();
    let parsed = reqwest::Url::parse(&server);
    if !parsed
        .as_ref()
        .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
    {
        return Err(cx.err_at(
            raw.server.span(),
            format!(
                "[dns.{name}] server `{}` is not an http(s) URL; write the acme-dns API, e.g. \"https://auth.acme-dns.example\"",
                raw.server.get_ref()
            ),
        ));
    }
    let credentials_file = expand_credentials_dir(raw.credentials_file.get_ref())
        .map_err(|m| cx.err_at(raw.credentials_file.span(), m))?;
    Ok(AcmeDnsConfig {
        server,
        credentials_file,
    })
}
