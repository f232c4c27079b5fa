//! The configuration file: its TOML schema, validation, and secret resolution.
//!
//! Loading happens in two steps, as ripgrep separates low-level from high-level arguments: serde reads the
//! file into `raw` structs that mirror the TOML one to one (`deny_unknown_fields`, spans kept where a later
//! check needs to point at a line), then [`Config::load`] resolves references, reads secrets and checks
//! everything that can be checked offline. Nothing here touches the network, so `certkeeper check` and a
//! SIGHUP reload can validate a file without side effects.
//!
//! - this file: the resolved types and the top of the schema (`[acme]`, `[schedule]`, `[[deployment]]`);
//! - `loader.rs`: the `Loader` every section resolves through (positions, durations, references);
//! - `secrets.rs`: inline / `_file` / `_env` secrets and bounded file reads;
//! - `values.rs`: host:port, offsets, DNS names, line and column.
//!
//! A target or DNS provider owns its section: `[emqx.NAME]` is in `deploy/emqx/config.rs`,
//! `[deployment.files]` in `deploy/files/config.rs`, `[dns.NAME]` in `solver/config.rs` (shared keys) and each provider's `config.rs`. They are
//! dispatched by hand (on `provider`, on the presence of `[deployment.files]`), because a `#[serde(tag)]` enum
//! loses `toml::Spanned` line/column errors.
//!
//! Secrets are read into `SecretString` / `SecretSlice` at once, so no `Debug` or log line can print them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretSlice;
use serde::Deserialize;
use toml::Spanned;

mod issuers;
mod loader;
mod secrets;
#[cfg(test)]
mod tests;
mod values;

pub use crate::certs::{KeyFormat, KeyType};
pub use crate::deploy::emqx::config::{
    DEFAULT_GET_LIMIT, DEFAULT_IMPORT_MINIMUM, DEFAULT_INSPECT_INTERVAL, DEFAULT_POLL_INTERVAL,
    DEFAULT_RATE_WINDOW, DEFAULT_REQUEST_TIMEOUT, DEFAULT_WAIT_TIMEOUT, DEFAULT_WRITE_LIMIT,
    EmqxConfig, IssuerKeyMatch, TlsType,
};
pub use crate::solver::config::{DnsConfig, DnsProvider, DnsShared, Propagation};
pub use issuers::{FIRST_ISSUER_NAME, Issuer};
pub(crate) use loader::Loader;
pub use secrets::read_bounded;
pub(crate) use secrets::{expand_credentials_dir, read_bounded_text, readable_by_others};
pub use values::parse_offset;
pub(crate) use values::{check_domain, check_host_port, line_column, list};

/// Where the config lives when neither `--config` nor `$CERTKEEPER_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/certkeeper/config.toml";
/// Default state directory (systemd's `StateDirectory=certkeeper`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/certkeeper";
/// Let's Encrypt production directory, selected by `directory = "letsencrypt"`.
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt staging directory, selected by `directory = "letsencrypt-staging"`.
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// Default time the deployment's endpoint may take to serve a new certificate.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Default daemon schedule (`cron` crate syntax, with seconds): every six hours.
pub const DEFAULT_CRON: &str = "0 0 */6 * * *";
/// Default random delay added to each daemon tick.
pub const DEFAULT_JITTER: Duration = Duration::from_secs(30 * 60);
/// Deployments of one request budget a pass works on at once by default. Each waits mostly on the network
/// (the CA, DNS, the vendor's `pending`), so eight cost little; above the vendor's 6 writes only deployments
/// that need no push gain.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// A certificate with less than this left makes `status` exit 1 by default.
pub const DEFAULT_EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);
/// A deployment that keeps failing is notified again after this long by default.
pub const DEFAULT_REPEAT: Duration = Duration::from_secs(24 * 3600);
/// The most deployments of one budget a pass works on at once: beyond this the CA's and the DNS server's rate limits,
/// not certkeeper, set the pace.
pub const MAX_CONCURRENCY: usize = 256;
/// The longest duration any setting accepts.
const MAX_DURATION: Duration = Duration::from_secs(10 * 366 * 24 * 3600);
/// The largest config file, secret file or PEM file read (a runaway path such as /dev/zero must fail, not
/// fill memory).
pub const MAX_FILE: u64 = 1024 * 1024;
/// The longest deployment id: it names state files (`deployments/{id}.order.json` must fit a 255-byte name).
pub const MAX_ID_LEN: usize = 128;

/// A config file that cannot be used, with the place in the file when there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// 1-based line and column of the offending text, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "{}: line {line}, column {column}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from.
    pub path: PathBuf,
    /// Where account, records and bundles live.
    pub state_dir: PathBuf,
    /// The ACME CA and how to talk to it.
    pub acme: AcmeConfig,
    /// DNS-01 solvers by name.
    pub dns: BTreeMap<String, DnsConfig>,
    /// EMQX API accounts by name.
    pub emqx: BTreeMap<String, EmqxConfig>,
    /// Managed deployments, in file order.
    pub deployments: Vec<Deployment>,
    /// `[dcs.NAME]`: Huawei Cloud / OTC DCS accounts by name.
    pub dcs: BTreeMap<String, crate::dcs::DcsAccount>,
    /// `[[dcs_instance]]`: watched DCS Redis instances, in file order.
    pub dcs_instances: Vec<crate::dcs::DcsInstance>,
    /// When the daemon runs a pass.
    pub schedule: ScheduleConfig,
    /// `[alerts]`.
    pub alerts: AlertsConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[[notify]]` channels, in config order.
    pub notify: Vec<crate::notify::config::Channel>,
    /// Warnings worth showing the operator (e.g. inline secrets in a readable file).
    pub warnings: Vec<String>,
}

/// `[schedule]`: when `certkeeper run` starts a pass.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// The cron expression (with seconds), parsed.
    pub cron: cron::Schedule,
    /// Each tick waits a random delay in `[0, jitter)` so that many agents do not hit the CA and the vendor at
    /// the same second.
    pub jitter: Duration,
    /// How many deployments of one request budget (an EMQX API key; the local targets share one) a pass works
    /// on at once (at least 1: one after another). Different budgets proceed in parallel.
    pub concurrency: usize,
}

/// `[alerts]`: when a deployment counts as unhealthy.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// `status` exits 1 for a certificate with less than this left, whatever the plan says.
    pub expiry_warning: Duration,
    /// A deployment that keeps failing is notified again after this long.
    pub repeat: Duration,
}

/// `[metrics]`: where Prometheus finds certkeeper's metrics.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// `certkeeper run` serves `GET /metrics` and `GET /healthz` here.
    pub listen: Option<std::net::SocketAddr>,
    /// Rewritten atomically after every pass of any command (a node exporter's textfile collector).
    pub textfile: Option<PathBuf>,
}

/// `[acme]`.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The directory URL (aliases already resolved).
    pub directory: String,
    /// Contact URIs for the account.
    pub contact: Vec<String>,
    /// Extra PEM roots trusted for the CA's HTTPS endpoint (on top of the system roots).
    pub trust_roots: Option<PathBuf>,
    /// Key type of issued certificates.
    pub key_type: KeyType,
    /// PEM encoding of the private key pushed to EMQX.
    pub key_format: KeyFormat,
    /// ACME profile sent with every order (per-deployment `profile` overrides).
    pub profile: Option<String>,
    /// Directory used by `renew --dry-run` for a full trial issuance.
    pub staging_directory: Option<String>,
    /// External Account Binding (ZeroSSL, Google Trust Services).
    pub eab: Option<Eab>,
    /// Every issuer in the order they are tried: the first is this section's CA (the fields above), then
    /// each `[[acme.fallback]]`.
    pub issuers: Vec<Issuer>,
}

/// External Account Binding credentials from the CA's console.
#[derive(Clone)]
pub struct Eab {
    /// Key identifier.
    pub kid: String,
    /// Decoded HMAC key.
    pub hmac_key: SecretSlice<u8>,
}

impl fmt::Debug for Eab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Eab")
            .field("kid", &self.kid)
            .field("hmac_key", &"[redacted]")
            .finish()
    }
}

/// `[[deployment]]`.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The deployment ID (not its name).
    pub id: String,
    /// Names on the certificate; the first is the primary name.
    pub domains: Vec<String>,
    /// Where the certificate goes.
    pub target: TargetConfig,
    /// Name of the `[dns.*]` section.
    pub dns: String,
    /// Override of the renewal rule: renew when less than this is left.
    pub renew_before: Option<Duration>,
    /// ACME profile for this deployment's orders: overrides the profile of the pinned issuer, or of the first
    /// issuer (`[acme] profile`) when none is pinned; fallbacks keep their own.
    pub profile: Option<String>,
    /// The issuer this deployment is pinned to (`issuer = "NAME"`), as an index into
    /// [`AcmeConfig::issuers`]; `None` tries them all in order.
    pub issuer: Option<usize>,
    /// host:port of the deployment's TLS listener, checked after `running` to serve the pushed certificate.
    pub endpoint: Option<String>,
    /// SNI for that check (default: the first non-wildcard domain).
    pub endpoint_sni: Option<String>,
    /// How long the endpoint may take to serve the new certificate.
    pub verify_timeout: Duration,
}

/// Where a deployment's certificate goes: a deployment with a `[deployment.files]` table is a files target,
/// any other an EMQX deployment.
#[derive(Debug, Clone)]
pub enum TargetConfig {
    /// An EMQX Cloud / Platform deployment, through the vendor's TLS API.
    Emqx(EmqxDeployment),
    /// PEM files plus a reload command (`[deployment.files]`).
    Files(crate::deploy::files::FilesConfig),
}

/// The EMQX side of a `[[deployment]]`.
#[derive(Debug, Clone)]
pub struct EmqxDeployment {
    /// Name of the `[emqx.*]` section.
    pub account: String,
    /// TLS type to push; `None` keeps what `GET` reports.
    pub tls_type: Option<TlsType>,
    /// Client CA bundle for two-way TLS.
    pub client_ca_file: Option<PathBuf>,
}

impl Deployment {
    /// The EMQX side, when the deployment is an EMQX one.
    pub fn emqx(&self) -> Option<&EmqxDeployment> {
        match &self.target {
            TargetConfig::Emqx(e) => Some(e),
            TargetConfig::Files(_) => None,
        }
    }
}

mod raw {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub state_dir: Option<PathBuf>,
        pub acme: Option<Spanned<Acme>>,
        #[serde(default)]
        /// Only checked to be tables here: `solver/config.rs` reads them again with spans per provider.
        pub dns: BTreeMap<String, toml::Table>,
        #[serde(default)]
        pub emqx: BTreeMap<String, Spanned<crate::deploy::emqx::config::RawEmqx>>,
        #[serde(default)]
        pub deployment: Vec<Spanned<Deployment>>,
        #[serde(default)]
        pub dcs: BTreeMap<String, Spanned<crate::dcs::config::RawDcs>>,
        #[serde(default)]
        pub dcs_instance: Vec<Spanned<crate::dcs::config::RawInstance>>,
        pub schedule: Option<Schedule>,
        pub alerts: Option<Alerts>,
        pub metrics: Option<Metrics>,
        #[serde(default)]
        pub notify: Vec<Spanned<crate::notify::config::RawNotify>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Metrics {
        pub listen: Option<Spanned<String>>,
        pub textfile: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Alerts {
        pub expiry_warning: Option<Spanned<String>>,
        pub repeat: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Schedule {
        pub cron: Option<Spanned<String>>,
        pub jitter: Option<Spanned<String>>,
        pub concurrency: Option<Spanned<i64>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Acme {
        pub directory: Option<Spanned<String>>,
        #[serde(default)]
        pub contact: Vec<String>,
        pub trust_roots: Option<Spanned<String>>,
        pub key_type: Option<KeyType>,
        pub key_format: Option<KeyFormat>,
        pub profile: Option<String>,
        pub staging_directory: Option<Spanned<String>>,
        pub eab_kid: Option<String>,
        pub eab_hmac_key: Option<String>,
        pub eab_hmac_key_file: Option<Spanned<String>>,
        pub eab_hmac_key_env: Option<Spanned<String>>,
        pub name: Option<Spanned<String>>,
        pub lifetime: Option<Spanned<String>>,
        #[serde(default)]
        pub fallback: Vec<Spanned<super::issuers::RawFallback>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Deployment {
        pub id: Spanned<String>,
        pub domains: Spanned<Vec<Spanned<String>>>,
        pub emqx: Option<Spanned<String>>,
        pub dns: Option<Spanned<String>>,
        pub tls_type: Option<TlsType>,
        pub client_ca_file: Option<Spanned<String>>,
        pub renew_before: Option<Spanned<String>>,
        pub profile: Option<String>,
        pub issuer: Option<Spanned<String>>,
        pub endpoint: Option<Spanned<String>>,
        pub endpoint_sni: Option<String>,
        pub verify_timeout: Option<Spanned<String>>,
        pub files: Option<Spanned<crate::deploy::files::RawFiles>>,
    }
}

impl Config {
    /// Reads and validates the config file at `path`, without touching the network.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the line and column where possible, and what to change.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = read_bounded_text(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            position: None,
            message: format!("cannot read the config file: {e}"),
        })?;
        Self::parse(path, &source)
    }

    /// [`Config::load`] without reading any secret (they are checked to be configured, not read): for
    /// `status`, which runs from a shell without the service's credentials and never talks to anyone. The
    /// secrets of the result are empty.
    ///
    /// # Errors
    /// See [`Config::load`].
    pub fn load_without_secrets(path: &Path) -> Result<Config, ConfigError> {
        let source = read_bounded_text(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            position: None,
            message: format!("cannot read the config file: {e}"),
        })?;
        Self::parse_with(path, &source, false)
    }

    /// Validates config text as if read from `path` (used by [`Config::load`] and the tests).
    ///
    /// # Errors
    /// See [`Config::load`].
    pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigError> {
        Self::parse_with(path, source, true)
    }

    fn parse_with(path: &Path, source: &str, read_secrets: bool) -> Result<Config, ConfigError> {
        let mut loader = Loader {
            path,
            source,
            inline_secrets: false,
            read_secrets,
            warnings: std::cell::RefCell::new(Vec::new()),
        };
        let raw: raw::File = toml::from_str(source).map_err(|e| match e.span() {
            Some(span) => loader.err_at(span, e.message().to_owned()),
            None => loader.err(e.message().to_owned()),
        })?;
        let acme = loader.acme(raw.acme)?;
        let schedule = loader.schedule(raw.schedule)?;
        let alerts = match raw.alerts {
            Some(a) => AlertsConfig {
                expiry_warning: loader.duration(&a.expiry_warning, DEFAULT_EXPIRY_WARNING)?,
                repeat: loader.duration(&a.repeat, DEFAULT_REPEAT)?,
            },
            None => AlertsConfig {
                expiry_warning: DEFAULT_EXPIRY_WARNING,
                repeat: DEFAULT_REPEAT,
            },
        };
        let mut notify = Vec::new();
        for raw in raw.notify {
            notify.push(crate::notify::config::resolve(&mut loader, raw)?);
        }
        let metrics = loader.metrics(raw.metrics)?;
        drop(raw.dns);
        let dns = crate::solver::config::resolve_all(&mut loader)?;
        let mut emqx = BTreeMap::new();
        for (name, section) in raw.emqx {
            let parsed = crate::deploy::emqx::config::resolve(&mut loader, &name, section)?;
            emqx.insert(name, parsed);
        }
        let mut deployments: Vec<Deployment> = Vec::new();
        for d in raw.deployment {
            let at = d.get_ref().id.span();
            let parsed = loader.deployment(d, &dns, &emqx, &acme.issuers)?;
            if deployments.iter().any(|o| o.id == parsed.id) {
                return Err(
                    loader.err_at(at, format!("deployment {} is configured twice", parsed.id))
                );
            }
            deployments.push(parsed);
        }
        let (dcs, dcs_instances) =
            crate::dcs::config::resolve(&mut loader, raw.dcs, raw.dcs_instance)?;
        if deployments.is_empty() && dcs_instances.is_empty() {
            return Err(loader.err("no [[deployment]] is configured; add one with id and domains"));
        }
        let mut warnings = loader.warnings.take();
        if loader.inline_secrets && readable_by_others(path) {
            warnings.push(format!(
                "{} holds inline secrets and is readable by group or others; run `chmod 600 {}` or move them to *_file",
                path.display(),
                path.display()
            ));
        }
        Ok(Config {
            path: path.to_path_buf(),
            state_dir: raw
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            acme,
            dns,
            emqx,
            deployments,
            dcs,
            dcs_instances,
            schedule,
            alerts,
            metrics,
            notify,
            warnings,
        })
    }
}
