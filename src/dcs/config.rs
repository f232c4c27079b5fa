//! `[dcs.NAME]` (a Huawei Cloud / Open Telekom Cloud account for the DCS API) and `[[dcs_instance]]` (one Redis
//! instance whose CA certkeeper keeps in a file for its clients): the raw sections and their resolution.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use toml::Spanned;

use crate::config::{ConfigError, Loader, check_host_port, list};

/// Default alert threshold: `ssl_expired_at` closer than this is a failure.
pub const DEFAULT_DCS_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default longest time between two downloads of a CA that, by the status, did not change.
pub const DEFAULT_DCS_INSPECT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Default time one DCS or object-storage exchange may take.
pub const DEFAULT_DCS_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time `reload` may run.
pub const DEFAULT_DCS_RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// `[dcs.NAME]`: one account of the DCS API.
#[derive(Clone)]
pub struct DcsAccount {
    /// The section name.
    pub name: String,
    /// `https://{dcs_endpoint}`, without trailing slash.
    pub endpoint: String,
    /// The project the instances belong to.
    pub project_id: String,
    /// Access key ID (AK; not secret).
    pub access_key: String,
    /// Secret access key (SK).
    pub secret_key: SecretString,
    /// Longest time between two downloads when the status says nothing changed.
    pub inspect_interval: Duration,
    /// Timeout of one HTTP exchange.
    pub request_timeout: Duration,
}

impl fmt::Debug for DcsAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DcsAccount")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("project_id", &self.project_id)
            .field("access_key", &self.access_key)
            .field("secret_key", &"[redacted]")
            .finish()
    }
}

/// `[[dcs_instance]]`: one DCS Redis instance whose CA is kept in `ca_file`.
#[derive(Debug, Clone)]
pub struct DcsInstance {
    /// The instance ID.
    pub id: String,
    /// Name of the `[dcs.*]` section.
    pub account: String,
    /// Where the CA is kept for clients (0644, written atomically).
    pub ca_file: PathBuf,
    /// argv run after `ca_file` changed; empty for none.
    pub reload: Vec<String>,
    /// How long `reload` may run.
    pub reload_timeout: Duration,
    /// host:port whose TLS handshake must verify against `ca_file` after a change.
    pub endpoint: Option<String>,
    /// `ssl_expired_at` closer than this is a failure.
    pub expiry_warning: Duration,
    /// Keep the old CA beside the new one until it expires.
    pub ca_overlap: bool,
}

/// `[dcs.NAME]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDcs {
    endpoint: Spanned<String>,
    project_id: Spanned<String>,
    access_key: Spanned<String>,
    secret_key: Option<String>,
    secret_key_file: Option<Spanned<String>>,
    secret_key_env: Option<Spanned<String>>,
    inspect_interval: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
}

/// `[[dcs_instance]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstance {
    id: Spanned<String>,
    dcs: Option<Spanned<String>>,
    ca_file: Spanned<String>,
    reload: Option<Spanned<Vec<String>>>,
    reload_timeout: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    expiry_warning: Option<Spanned<String>>,
    ca_overlap: Option<bool>,
}

/// Resolves `[dcs.NAME]`.
pub(crate) fn resolve_account(
    cx: &mut Loader<'_>,
    name: &str,
    raw: Spanned<RawDcs>,
) -> Result<DcsAccount, ConfigError> {
    let span = raw.span();
    let raw = raw.into_inner();
    let endpoint = endpoint_url(cx, name, &raw.endpoint)?;
    for (key, value) in [
        ("project_id", &raw.project_id),
        ("access_key", &raw.access_key),
    ] {
        let v = value.get_ref();
        if v.is_empty()
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(cx.err_at(
                value.span(),
                format!(
                    "[dcs.{name}] {key} `{v}` must be letters and digits, as the console shows it"
                ),
            ));
        }
    }
    cx.inline_secrets |= raw.secret_key.is_some();
    let secret_key = cx.secret(
        "secret_key",
        &format!("dcs.{name}"),
        span,
        &raw.secret_key,
        &raw.secret_key_file,
        &raw.secret_key_env,
    )?;
    Ok(DcsAccount {
        name: name.to_owned(),
        endpoint,
        project_id: raw.project_id.into_inner(),
        access_key: raw.access_key.into_inner(),
        secret_key: secret_key.into(),
        inspect_interval: cx.duration(&raw.inspect_interval, DEFAULT_DCS_INSPECT_INTERVAL)?,
        request_timeout: cx.duration(&raw.request_timeout, DEFAULT_DCS_REQUEST_TIMEOUT)?,
    })
}

/// `endpoint`: an https URL with a host and nothing else (http only to loopback, for the stand-in).
fn endpoint_url(cx: &Loader<'_>, name: &str, raw: &Spanned<String>) -> Result<String, ConfigError> {
    let url = raw.get_ref().trim_end_matches('/').to_owned();
    let parsed = reqwest::Url::parse(&url).ok().filter(|u| {
        let loopback = u.host_str().is_some_and(|h| {
            h == "localhost"
                || h.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        (u.scheme() == "https" || (u.scheme() == "http" && loopback))
            && u.host().is_some()
            && u.path() == "/"
            && u.query().is_none()
            && u.username().is_empty()
            && u.password().is_none()
    });
    match parsed {
        Some(_) => Ok(url),
        None => Err(cx.err_at(
            raw.span(),
            format!(
                "[dcs.{name}] endpoint `{url}` must be https://HOST only, e.g. \"https://dcs.eu-de.otc.t-systems.com\""
            ),
        )),
    }
}

/// Resolves one `[[dcs_instance]]` against the accounts.
pub(crate) fn resolve_instance(
    cx: &Loader<'_>,
    raw: Spanned<RawInstance>,
    accounts: &BTreeMap<String, DcsAccount>,
) -> Result<DcsInstance, ConfigError> {
    let span = raw.span();
    let raw = raw.into_inner();
    let id = raw.id.get_ref().clone();
    if id.is_empty()
        || id.len() > crate::config::MAX_ID_LEN
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(cx.err_at(
            raw.id.span(),
            format!("dcs_instance id `{id}` must be the instance ID from the console (letters, digits, -)"),
        ));
    }
    let account = pick_account(cx, &id, span, raw.dcs.as_ref(), accounts)?;
    let ca_file = PathBuf::from(raw.ca_file.get_ref());
    let dir_ok = ca_file.is_absolute()
        && ca_file.file_name().is_some()
        && ca_file.parent().is_some_and(|d| d.is_dir());
    if !dir_ok || ca_file.is_dir() {
        return Err(cx.err_at(
            raw.ca_file.span(),
            format!(
                "dcs_instance {id}: ca_file {} must be an absolute file path in a directory that exists",
                ca_file.display()
            ),
        ));
    }
    let reload = match &raw.reload {
        None => Vec::new(),
        Some(argv) => {
            let program = argv.get_ref().first().ok_or_else(|| {
                cx.err_at(
                    argv.span(),
                    format!("dcs_instance {id}: reload is empty; name a program or remove it"),
                )
            })?;
            crate::deploy::files::config::find_program(program).map_err(|why| {
                cx.err_at(
                    argv.span(),
                    format!("dcs_instance {id}: reload program {why}"),
                )
            })?;
            argv.get_ref().clone()
        }
    };
    if let Some(e) = &raw.endpoint
        && check_host_port(e.get_ref()).is_err()
    {
        return Err(cx.err_at(
            e.span(),
            format!("dcs_instance {id}: endpoint must be host:port, e.g. \"10.0.0.5:6379\""),
        ));
    }
    Ok(DcsInstance {
        id,
        account,
        ca_file,
        reload,
        reload_timeout: cx.duration(&raw.reload_timeout, DEFAULT_DCS_RELOAD_TIMEOUT)?,
        endpoint: raw.endpoint.map(Spanned::into_inner),
        expiry_warning: cx.duration(&raw.expiry_warning, DEFAULT_DCS_EXPIRY_WARNING)?,
        ca_overlap: raw.ca_overlap.unwrap_or(true),
    })
}

/// The `[dcs.*]` section an instance uses: the named one, or the only one.
fn pick_account(
    cx: &Loader<'_>,
    id: &str,
    span: std::ops::Range<usize>,
    name: Option<&Spanned<String>>,
    accounts: &BTreeMap<String, DcsAccount>,
) -> Result<String, ConfigError> {
    match name {
        Some(n) if accounts.contains_key(n.get_ref()) => Ok(n.get_ref().clone()),
        Some(n) => {
            Err(cx.err_at(
                n.span(),
                format!(
                    "dcs = \"{}\" names no [dcs.{}] section (defined: {})",
                    n.get_ref(),
                    n.get_ref(),
                    list(accounts.keys())
                ),
            ))
        }
        None if accounts.len() == 1 => Ok(accounts.keys().next().cloned().unwrap_or_default()),
        None if accounts.is_empty() => {
            Err(cx.err_at(
                span,
                format!("dcs_instance {id}: no [dcs.NAME] section is defined"),
            ))
        }
        None => {
            Err(cx.err_at(
                span,
                format!(
                    "dcs_instance {id}: several [dcs.*] sections exist ({}); say which with `dcs = \"NAME\"`",
                    list(accounts.keys())
                ),
            ))
        }
    }
}

/// Resolves every `[dcs.*]` and `[[dcs_instance]]`; an instance id is listed once.
pub(crate) type Resolved = (BTreeMap<String, DcsAccount>, Vec<DcsInstance>);

/// Resolves the DCS sections of the file.
pub(crate) fn resolve(
    cx: &mut Loader<'_>,
    accounts: BTreeMap<String, Spanned<RawDcs>>,
    instances: Vec<Spanned<RawInstance>>,
) -> Result<Resolved, ConfigError> {
    let mut resolved = BTreeMap::new();
    for (name, section) in accounts {
        let account = resolve_account(cx, &name, section)?;
        resolved.insert(name, account);
    }
    let mut out: Vec<DcsInstance> = Vec::new();
    for raw in instances {
        let at = raw.get_ref().id.span();
        let instance = resolve_instance(cx, raw, &resolved)?;
        if out
            .iter()
            .any(|o| o.id == instance.id || o.ca_file == instance.ca_file)
        {
            return Err(cx.err_at(
                at,
                format!(
                    "dcs_instance {} is configured twice, or shares its ca_file with another instance",
                    instance.id
                ),
            ));
        }
        out.push(instance);
    }
    Ok((resolved, out))
}
