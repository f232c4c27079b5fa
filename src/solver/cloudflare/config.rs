//! `[dns.NAME]` with `provider = "cloudflare"`: the Cloudflare provider's own keys and their resolution.

use secrecy::SecretString;
use serde::Deserialize;
use toml::Spanned;

use crate::config::{ConfigError, Loader};

/// Cloudflare's API v4 base URL.
pub const DEFAULT_API_URL: &str = "https://api.cloudflare.com/client/v4";

/// The Cloudflare provider's own settings in `[dns.NAME]`.
#[derive(Debug, Clone)]
pub struct CloudflareConfig {
    /// The API base URL, without trailing slash ([`DEFAULT_API_URL`] unless set, e.g. for tests).
    pub api_url: String,
    /// An API token with Zone:DNS:Edit on the zones (inline, `api_token_file` or `api_token_env`).
    pub api_token: SecretString,
    /// The zone's id, when not found with `GET /zones?name=`.
    pub zone_id: Option<String>,
}

/// `[dns.NAME]` with `provider = "cloudflare"`, as written (without the shared keys, `solver/config.rs`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCloudflare {
    api_token: Option<String>,
    api_token_file: Option<Spanned<String>>,
    api_token_env: Option<Spanned<String>>,
    api_url: Option<Spanned<String>>,
    zone_id: Option<Spanned<String>>,
}

/// Resolves `[dns.NAME]` of Cloudflare: the token (exactly one of its three forms), the URL, the zone id.
///
/// # Errors
/// A [`ConfigError`] at the offending key.
pub(crate) fn resolve(
    cx: &mut Loader<'_>,
    name: &str,
    span: std::ops::Range<usize>,
    raw: RawCloudflare,
) -> Result<CloudflareConfig, ConfigError> {
    cx.inline_secrets |= raw.api_token.is_some();
    let token = cx.secret(
        "api_token",
        &format!("dns.{name}"),
        span,
        &raw.api_token,
        &raw.api_token_file,
        &raw.api_token_env,
    )?;
    let api_url = match &raw.api_url {
        None => DEFAULT_API_URL.to_owned(),
        Some(url) => {
            let text = url.get_ref().trim().trim_end_matches('/').to_owned();
            let ok = reqwest::Url::parse(&text)
                .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
            if !ok {
                return Err(cx.err_at(
                    url.span(),
                    format!("[dns.{name}] api_url `{}` is not an http(s) URL; leave it out for {DEFAULT_API_URL}", url.get_ref()),
                ));
            }
            text
        }
    };
    let zone_id = match raw.zone_id {
        None => None,
        Some(id)
            if id.get_ref().len() == 32 && id.get_ref().bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Some(id.into_inner().to_ascii_lowercase())
        }
        Some(id) => {
            return Err(cx.err_at(
                id.span(),
                format!(
                    "[dns.{name}] zone_id `{}` is not a Cloudflare zone id (32 hex digits, the dashboard's \"Zone ID\"); leave it out to have it found",
                    id.get_ref()
                ),
            ));
        }
    };
    Ok(CloudflareConfig {
        api_url,
        api_token: SecretString::from(token),
        zone_id,
    })
}
