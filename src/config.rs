//! The configuration file: its TOML schema, validation, and secret resolution.
//!
//! Loading happens in two steps, as ripgrep separates low-level from high-level arguments: serde reads the
//! file into `raw` structs that mirror the TOML one to one (`deny_unknown_fields`, spans kept where a later
//! check needs to point at a line), then [`Config::load`] resolves references, reads secrets and checks
//! everything that can be checked offline. Nothing here touches the network, so `certkeeper check` and a
//! SIGHUP reload can validate a file without side effects.
//!
//! Secrets are read into [`SecretString`] / [`SecretSlice`] at once, so no `Debug` or log line can print them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{SecretSlice, SecretString};
use serde::Deserialize;
use toml::Spanned;

use crate::solver::rfc2136::TsigAlgorithm;

/// Where the config lives when neither `--config` nor `$CERTKEEPER_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/certkeeper/config.toml";
/// Default state directory (systemd's `StateDirectory=certkeeper`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/certkeeper";
/// Let's Encrypt production directory, selected by `directory = "letsencrypt"`.
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt staging directory, selected by `directory = "letsencrypt-staging"`.
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
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
/// Default time the deployment's endpoint may take to serve a new certificate.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The vendor's rate-limit window.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(60 * 60);
/// Default daemon schedule (`cron` crate syntax, with seconds): every six hours.
pub const DEFAULT_CRON: &str = "0 0 */6 * * *";
/// Default random delay added to each daemon tick.
pub const DEFAULT_JITTER: Duration = Duration::from_secs(30 * 60);
/// The longest duration any setting accepts.
const MAX_DURATION: Duration = Duration::from_secs(10 * 366 * 24 * 3600);
/// The largest config file, secret file or PEM file read (a runaway path such as /dev/zero must fail, not
/// fill memory).
pub const MAX_FILE: u64 = 1024 * 1024;
/// The longest deployment id: it names state files (`deployments/{id}.order.json` must fit a 255-byte name).
pub const MAX_ID_LEN: usize = 128;
/// Environment variable systemd sets for `LoadCredential=`; `secret_file` paths may start with it.
const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

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
    /// When the daemon runs a pass.
    pub schedule: ScheduleConfig,
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

/// Key algorithm of an issued certificate: only what EMQX accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// RSA 2048 with SHA-256.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
        })
    }
}

/// How the private key is written in PEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyFormat {
    /// `EC PRIVATE KEY` (SEC 1) or `RSA PRIVATE KEY` (PKCS#1), as the vendor's docs show.
    Traditional,
    /// `PRIVATE KEY` (PKCS#8).
    Pkcs8,
}

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
    /// ACME profile for this deployment's orders (overrides `[acme] profile`).
    pub profile: Option<String>,
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
        pub dns: BTreeMap<String, Spanned<Dns>>,
        #[serde(default)]
        pub emqx: BTreeMap<String, Spanned<Emqx>>,
        #[serde(default)]
        pub deployment: Vec<Spanned<Deployment>>,
        pub schedule: Option<Schedule>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Schedule {
        pub cron: Option<Spanned<String>>,
        pub jitter: Option<Spanned<String>>,
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
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Dns {
        pub provider: Spanned<String>,
        pub server: Spanned<String>,
        pub tsig_key: String,
        pub tsig_algorithm: Option<TsigAlgorithm>,
        pub tsig_secret: Option<String>,
        pub tsig_secret_file: Option<Spanned<String>>,
        pub tsig_secret_env: Option<Spanned<String>>,
        pub zone: Option<String>,
        pub propagation_timeout: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Emqx {
        pub url: Spanned<String>,
        pub key: String,
        pub secret: Option<String>,
        pub secret_file: Option<Spanned<String>>,
        pub secret_env: Option<Spanned<String>>,
        pub expire_timezone: Option<Spanned<String>>,
        pub poll_interval: Option<Spanned<String>>,
        pub wait_timeout: Option<Spanned<String>>,
        pub request_timeout: Option<Spanned<String>>,
        pub get_limit: Option<u32>,
        pub write_limit: Option<u32>,
        pub rate_window: Option<Spanned<String>>,
        pub inspect_interval: Option<Spanned<String>>,
        pub import_minimum: Option<Spanned<String>>,
        pub issuer_key_match: Option<IssuerKeyMatch>,
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
        pub endpoint: Option<Spanned<String>>,
        pub endpoint_sni: Option<String>,
        pub verify_timeout: Option<Spanned<String>>,
        pub files: Option<Spanned<crate::deploy::files::RawFiles>>,
    }
}

/// Collects the context every check needs to report a position; a target's or provider's own section
/// resolves through it.
pub(crate) struct Loader<'a> {
    path: &'a Path,
    source: &'a str,
    inline_secrets: bool,
    /// Lines `check` prints and the service logs; the config is still used.
    warnings: std::cell::RefCell<Vec<String>>,
}

impl Loader<'_> {
    /// An error pointing at `span` of the file.
    pub(crate) fn err_at(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            position: Some(line_column(self.source, span.start)),
            message: message.into(),
        }
    }

    fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            position: None,
            message: message.into(),
        }
    }

    /// A humantime duration, `default` when absent.
    pub(crate) fn duration(
        &self,
        value: &Option<Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => match humantime::parse_duration(v.get_ref()) {
                // Date arithmetic with absurd durations overflows; nothing here needs more than a few years.
                Ok(d) if d > MAX_DURATION => Err(self.err_at(
                    v.span(),
                    format!(
                        "duration `{}` is longer than 10 years; that cannot be meant",
                        v.get_ref()
                    ),
                )),
                Ok(d) => Ok(d),
                Err(e) => Err(self.err_at(
                    v.span(),
                    format!(
                        "invalid duration `{}` ({e}); write e.g. \"90s\", \"30m\", \"30d\"",
                        v.get_ref()
                    ),
                )),
            },
        }
    }

    /// Reads a secret given inline, in a file, or in an environment variable: exactly one of the three.
    fn secret(
        &self,
        what: &str,
        section: &str,
        at: std::ops::Range<usize>,
        inline: &Option<String>,
        file: &Option<Spanned<String>>,
        env: &Option<Spanned<String>>,
    ) -> Result<String, ConfigError> {
        let given = inline.is_some() as u8 + file.is_some() as u8 + env.is_some() as u8;
        if given != 1 {
            return Err(self.err_at(
                at,
                format!("[{section}] needs exactly one of `{what}`, `{what}_file` or `{what}_env`"),
            ));
        }
        if let Some(value) = inline {
            if value.trim().is_empty() {
                return Err(self.err_at(
                    at,
                    format!("[{section}] `{what}` is empty; set the secret, or use `{what}_file`"),
                ));
            }
            return Ok(value.trim().to_owned());
        }
        if let Some(file) = file {
            let path =
                expand_credentials_dir(file.get_ref()).map_err(|m| self.err_at(file.span(), m))?;
            if readable_by_others(&path) {
                self.warnings.borrow_mut().push(format!(
                    "[{section}] {what}_file {} is readable by group or others; run `chmod 600 {}`",
                    path.display(),
                    path.display()
                ));
            }
            let text = read_bounded_text(&path).map_err(|e| {
                self.err_at(
                    file.span(),
                    format!("cannot read {what}_file {}: {e}", path.display()),
                )
            })?;
            let value = text.trim().to_owned();
            if value.is_empty() {
                return Err(self.err_at(
                    file.span(),
                    format!("{what}_file {} is empty", path.display()),
                ));
            }
            return Ok(value);
        }
        let var = env
            .as_ref()
            .expect("exactly one of three is set, checked above");
        match std::env::var(var.get_ref()) {
            Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
            _ => Err(self.err_at(
                var.span(),
                format!(
                    "environment variable {} (from {what}_env) is not set or empty",
                    var.get_ref()
                ),
            )),
        }
    }

    fn schedule(&self, raw: Option<raw::Schedule>) -> Result<ScheduleConfig, ConfigError> {
        let raw = raw.unwrap_or(raw::Schedule {
            cron: None,
            jitter: None,
        });
        let cron = match &raw.cron {
            None => DEFAULT_CRON.parse().expect("the default cron expression parses"),
            Some(text) => text.get_ref().parse::<cron::Schedule>().map_err(|e| {
                self.err_at(
                    text.span(),
                    format!(
                        "schedule.cron `{}` is not a cron expression ({e}); it has seconds first, e.g. \"{DEFAULT_CRON}\"",
                        text.get_ref()
                    ),
                )
            })?,
        };
        // A schedule that never fires would leave the daemon idle forever without a word.
        if cron.upcoming(chrono::Utc).next().is_none() {
            let span = raw.cron.as_ref().map(|c| c.span()).unwrap_or_default();
            return Err(self.err_at(
                span,
                "schedule.cron has no future tick; the daemon would never run a pass",
            ));
        }
        Ok(ScheduleConfig {
            cron,
            jitter: self.duration(&raw.jitter, DEFAULT_JITTER)?,
        })
    }

    fn directory(&self, key: &str, value: &Spanned<String>) -> Result<String, ConfigError> {
        match value.get_ref().as_str() {
            "letsencrypt" => Ok(LETSENCRYPT.to_owned()),
            "letsencrypt-staging" => Ok(LETSENCRYPT_STAGING.to_owned()),
            url if url.starts_with("https://") && url.len() > "https://".len() => Ok(url.to_owned()),
            other => Err(self.err_at(
                value.span(),
                format!("acme.{key} `{other}` is neither \"letsencrypt\", \"letsencrypt-staging\" nor an https:// URL"),
            )),
        }
    }

    fn acme(&mut self, raw: Option<Spanned<raw::Acme>>) -> Result<AcmeConfig, ConfigError> {
        let Some(raw) = raw else {
            return Err(self.err("missing [acme] section (at least `directory = \"letsencrypt\"`)"));
        };
        let span = raw.span();
        let raw = raw.into_inner();
        let directory = match &raw.directory {
            None => LETSENCRYPT.to_owned(),
            Some(d) => self.directory("directory", d)?,
        };
        let staging_directory = match &raw.staging_directory {
            None => None,
            Some(d) => Some(self.directory("staging_directory", d)?),
        };
        self.inline_secrets |= raw.eab_hmac_key.is_some();
        let eab = match &raw.eab_kid {
            None if raw.eab_hmac_key.is_some()
                || raw.eab_hmac_key_file.is_some()
                || raw.eab_hmac_key_env.is_some() =>
            {
                return Err(self.err_at(span, "acme.eab_hmac_key_* is set but acme.eab_kid is not; set both from the CA's console"));
            }
            None => None,
            Some(kid) => {
                let key = self.secret(
                    "eab_hmac_key",
                    "acme",
                    span.clone(),
                    &raw.eab_hmac_key,
                    &raw.eab_hmac_key_file,
                    &raw.eab_hmac_key_env,
                )?;
                use base64::Engine as _;
                let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(key.trim_end_matches('=').as_bytes())
                    .map_err(|_| self.err_at(span.clone(), "the EAB HMAC key is not base64url; paste it as the CA's console shows it"))?;
                Some(Eab {
                    kid: kid.clone(),
                    hmac_key: decoded.into(),
                })
            }
        };
        let trust_roots = match raw.trust_roots {
            None => None,
            Some(p) => {
                let path = PathBuf::from(p.get_ref());
                let text = read_bounded(&path).map_err(|e| {
                    self.err_at(
                        p.span(),
                        format!("cannot read acme.trust_roots {}: {e}", path.display()),
                    )
                })?;
                if crate::certs::parse_pem_certs(&text)
                    .map(|c| c.is_empty())
                    .unwrap_or(true)
                {
                    return Err(self.err_at(
                        p.span(),
                        format!(
                            "acme.trust_roots {} holds no PEM certificate",
                            path.display()
                        ),
                    ));
                }
                Some(path)
            }
        };
        for contact in &raw.contact {
            if !contact.starts_with("mailto:") {
                return Err(self.err(format!(
                    "acme.contact `{contact}` must be a mailto: URI, e.g. \"mailto:ops@example.com\""
                )));
            }
        }
        Ok(AcmeConfig {
            directory,
            contact: raw.contact,
            trust_roots,
            key_type: raw.key_type.unwrap_or(KeyType::EcdsaP256),
            key_format: raw.key_format.unwrap_or(KeyFormat::Traditional),
            profile: raw.profile,
            staging_directory,
            eab,
        })
    }

    fn dns(&mut self, name: &str, raw: Spanned<raw::Dns>) -> Result<DnsConfig, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        if raw.provider.get_ref() != "rfc2136" {
            return Err(self.err_at(
                raw.provider.span(),
                format!(
                    "[dns.{name}] provider `{}` is unknown; supported: \"rfc2136\"",
                    raw.provider.get_ref()
                ),
            ));
        }
        if let Err(why) = check_host_port(raw.server.get_ref()) {
            return Err(self.err_at(
                raw.server.span(),
                format!(
                    "[dns.{name}] server `{}` {why}; write host:port, e.g. \"192.0.2.1:53\"",
                    raw.server.get_ref()
                ),
            ));
        }
        self.inline_secrets |= raw.tsig_secret.is_some();
        let secret = self.secret(
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
            .filter(|bytes| !bytes.is_empty())
            .ok_or_else(|| {
                self.err(format!(
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
            propagation_timeout: self.duration(
                &raw.propagation_timeout,
                crate::solver::rfc2136::DEFAULT_PROPAGATION_TIMEOUT,
            )?,
        })
    }

    fn emqx(&mut self, name: &str, raw: Spanned<raw::Emqx>) -> Result<EmqxConfig, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let url = raw.url.get_ref().trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&url)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
        let Some(parsed) = parsed else {
            return Err(self.err_at(
                raw.url.span(),
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
            return Err(self.err_at(
                raw.url.span(),
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
            self.warnings.borrow_mut().push(format!(
                "[emqx.{name}] url `{url}` is plain http: the API secret and every private key pushed travel unencrypted; use https"
            ));
        }
        self.inline_secrets |= raw.secret.is_some();
        let secret = self.secret(
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
                self.err_at(
                    tz.span(),
                    format!(
                        "expire_timezone `{}` is not an offset like \"+08:00\" or \"UTC\"",
                        tz.get_ref()
                    ),
                )
            })?,
        };
        if raw.get_limit == Some(0) || raw.write_limit == Some(0) {
            return Err(self.err_at(
                span.clone(),
                format!("[emqx.{name}] get_limit and write_limit must be at least 1"),
            ));
        }
        let poll_interval = self.duration(&raw.poll_interval, DEFAULT_POLL_INTERVAL)?;
        if poll_interval.is_zero() {
            return Err(self.err_at(
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
            wait_timeout: self.duration(&raw.wait_timeout, DEFAULT_WAIT_TIMEOUT)?,
            request_timeout: match self.duration(&raw.request_timeout, DEFAULT_REQUEST_TIMEOUT)? {
                t if t.is_zero() => {
                    return Err(self.err_at(
                        span.clone(),
                        format!("[emqx.{name}] request_timeout must be more than 0"),
                    ));
                }
                t => t,
            },
            get_limit: raw.get_limit.unwrap_or(DEFAULT_GET_LIMIT),
            write_limit: raw.write_limit.unwrap_or(DEFAULT_WRITE_LIMIT),
            rate_window: match self.duration(&raw.rate_window, DEFAULT_RATE_WINDOW)? {
                w if w < Duration::from_secs(1) => {
                    return Err(self.err_at(
                        span.clone(),
                        format!("[emqx.{name}] rate_window must be at least 1s"),
                    ));
                }
                w => w,
            },
            inspect_interval: self.duration(&raw.inspect_interval, DEFAULT_INSPECT_INTERVAL)?,
            import_minimum: self.duration(&raw.import_minimum, DEFAULT_IMPORT_MINIMUM)?,
            issuer_key_match: raw.issuer_key_match.unwrap_or(IssuerKeyMatch::Warn),
        })
    }

    /// Picks the named section, or the only one when no name is given.
    fn pick<T>(
        &self,
        kind: &str,
        name: &Option<Spanned<String>>,
        sections: &BTreeMap<String, T>,
        at: std::ops::Range<usize>,
    ) -> Result<String, ConfigError> {
        match name {
            Some(n) if sections.contains_key(n.get_ref()) => Ok(n.get_ref().clone()),
            Some(n) => Err(self.err_at(
                n.span(),
                format!(
                    "{kind} = \"{}\" names no [{kind}.{}] section (defined: {})",
                    n.get_ref(),
                    n.get_ref(),
                    list(sections.keys())
                ),
            )),
            None if sections.len() == 1 => Ok(sections.keys().next().cloned().unwrap_or_default()),
            None if sections.is_empty() => {
                Err(self.err_at(at, format!("no [{kind}.NAME] section is defined")))
            }
            None => Err(self.err_at(
                at,
                format!(
                    "several [{kind}.*] sections exist ({}); say which with `{kind} = \"NAME\"`",
                    list(sections.keys())
                ),
            )),
        }
    }

    fn deployment(
        &self,
        raw: Spanned<raw::Deployment>,
        dns: &BTreeMap<String, DnsConfig>,
        emqx: &BTreeMap<String, EmqxConfig>,
    ) -> Result<Deployment, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let id = raw.id.get_ref().clone();
        if id.len() > MAX_ID_LEN {
            return Err(self.err_at(
                raw.id.span(),
                format!("deployment id is {} characters long; at most {MAX_ID_LEN} are allowed (it names files in the state directory)", id.len()),
            ));
        }
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.err_at(
                raw.id.span(),
                format!("deployment id `{id}` must be the deployment ID from the console (letters, digits, - and _)"),
            ));
        }
        if raw.domains.get_ref().is_empty() {
            return Err(self.err_at(
                raw.domains.span(),
                format!("deployment {id}: domains is empty"),
            ));
        }
        let mut domains: Vec<String> = Vec::new();
        for d in raw.domains.get_ref() {
            let name = d.get_ref().trim_end_matches('.').to_ascii_lowercase();
            if let Err(why) = check_domain(&name) {
                return Err(self.err_at(
                    d.span(),
                    format!("deployment {id}: domain `{}` {why}", d.get_ref()),
                ));
            }
            if domains.contains(&name) {
                return Err(self.err_at(
                    d.span(),
                    format!("deployment {id}: domain `{name}` is listed twice"),
                ));
            }
            domains.push(name);
        }
        let client_ca_file = match &raw.client_ca_file {
            None => None,
            Some(p) => {
                let path =
                    expand_credentials_dir(p.get_ref()).map_err(|m| self.err_at(p.span(), m))?;
                let pem = read_bounded(&path).map_err(|e| {
                    self.err_at(
                        p.span(),
                        format!(
                            "deployment {id}: cannot read client_ca_file {}: {e}",
                            path.display()
                        ),
                    )
                })?;
                if crate::certs::parse_pem_certs(&pem)
                    .map(|c| c.is_empty())
                    .unwrap_or(true)
                {
                    return Err(self.err_at(
                        p.span(),
                        format!(
                            "deployment {id}: client_ca_file {} holds no PEM certificate",
                            path.display()
                        ),
                    ));
                }
                Some(path)
            }
        };
        if raw.tls_type == Some(TlsType::TwoWay) && client_ca_file.is_none() {
            return Err(self.err_at(
                span,
                format!("deployment {id}: tls_type = \"two-way\" needs client_ca_file (EMQX requires the client CA on every push)"),
            ));
        }
        let target = match raw.files {
            Some(files) => {
                if let Some(key) = [
                    raw.emqx.as_ref().map(|_| "emqx"),
                    raw.tls_type.map(|_| "tls_type"),
                    client_ca_file.as_ref().map(|_| "client_ca_file"),
                ]
                .into_iter()
                .flatten()
                .next()
                {
                    return Err(self.err_at(
                        files.span(),
                        format!("deployment {id}: a deployment with [deployment.files] is no EMQX deployment; remove `{key}`"),
                    ));
                }
                TargetConfig::Files(crate::deploy::files::resolve(self, &id, files)?)
            }
            None => TargetConfig::Emqx(EmqxDeployment {
                account: self.pick("emqx", &raw.emqx, emqx, span.clone())?,
                tls_type: raw.tls_type,
                client_ca_file,
            }),
        };
        Ok(Deployment {
            target,
            dns: self.pick("dns", &raw.dns, dns, span)?,
            id,
            domains,
            renew_before: match &raw.renew_before {
                None => None,
                Some(_) => Some(self.duration(&raw.renew_before, Duration::ZERO)?),
            },
            profile: raw.profile,
            endpoint: match &raw.endpoint {
                Some(e) if check_host_port(e.get_ref()).is_err() => {
                    return Err(self.err_at(e.span(), format!("deployment {}: endpoint must be host:port with a port in 1–65535, e.g. \"mqtt.example.com:8883\"", raw.id.get_ref())));
                }
                other => other.as_ref().map(|e| e.get_ref().clone()),
            },
            endpoint_sni: raw.endpoint_sni,
            verify_timeout: self.duration(&raw.verify_timeout, DEFAULT_VERIFY_TIMEOUT)?,
        })
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

    /// Validates config text as if read from `path` (used by [`Config::load`] and the tests).
    ///
    /// # Errors
    /// See [`Config::load`].
    pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigError> {
        let mut loader = Loader {
            path,
            source,
            inline_secrets: false,
            warnings: std::cell::RefCell::new(Vec::new()),
        };
        let raw: raw::File = toml::from_str(source).map_err(|e| match e.span() {
            Some(span) => loader.err_at(span, e.message().to_owned()),
            None => loader.err(e.message().to_owned()),
        })?;
        let acme = loader.acme(raw.acme)?;
        let schedule = loader.schedule(raw.schedule)?;
        let mut dns = BTreeMap::new();
        for (name, section) in raw.dns {
            let parsed = loader.dns(&name, section)?;
            dns.insert(name, parsed);
        }
        let mut emqx = BTreeMap::new();
        for (name, section) in raw.emqx {
            let parsed = loader.emqx(&name, section)?;
            emqx.insert(name, parsed);
        }
        let mut deployments: Vec<Deployment> = Vec::new();
        for d in raw.deployment {
            let at = d.get_ref().id.span();
            let parsed = loader.deployment(d, &dns, &emqx)?;
            if deployments.iter().any(|o| o.id == parsed.id) {
                return Err(
                    loader.err_at(at, format!("deployment {} is configured twice", parsed.id))
                );
            }
            deployments.push(parsed);
        }
        if deployments.is_empty() {
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
            schedule,
            warnings,
        })
    }
}

/// Reads at most [`MAX_FILE`] bytes of `path`; a larger file is an error naming the limit.
pub fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} KiB", MAX_FILE / 1024),
        ));
    }
    Ok(bytes)
}

fn read_bounded_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Expands a leading `${CREDENTIALS_DIRECTORY}` (or `$CREDENTIALS_DIRECTORY`), as systemd's `LoadCredential=` needs.
fn expand_credentials_dir(path: &str) -> Result<PathBuf, String> {
    for prefix in ["${CREDENTIALS_DIRECTORY}", "$CREDENTIALS_DIRECTORY"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            let dir = std::env::var(CREDENTIALS_DIRECTORY).map_err(|_| {
                format!("`{path}` uses {CREDENTIALS_DIRECTORY}, which is not set (it is set by systemd's LoadCredential=)")
            })?;
            return Ok(PathBuf::from(format!("{dir}{rest}")));
        }
    }
    Ok(PathBuf::from(path))
}

fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o077 != 0)
        .unwrap_or(false)
}

/// Checks `host:port` (IPv6 in brackets) with a port in 1–65535.
fn check_host_port(text: &str) -> Result<(), &'static str> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("has no port");
    };
    if host.is_empty() || host == "[]" {
        return Err("has no host");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("has an IPv6 address without brackets");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("has a port outside 1–65535"),
    }
}

/// Parses `+08:00`, `-05:30`, `+0800`, `UTC` or `Z`.
pub fn parse_offset(text: &str) -> Option<time::UtcOffset> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("utc") || text == "Z" {
        return Some(time::UtcOffset::UTC);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1i8, &text[1..]),
        b'-' => (-1i8, &text[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let hours: i8 = digits[..2].parse().ok()?;
    let minutes: i8 = digits[2..].parse().ok()?;
    // Real zones lie within ±14:00; ±23:59 is the most an offset may say. The time crate would take ±25:59,
    // which later date arithmetic cannot.
    if hours > 23 || minutes > 59 {
        return None;
    }
    time::UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()
}

/// Checks a DNS name for a certificate: LDH labels, optional leading `*.` wildcard.
fn check_domain(name: &str) -> Result<(), &'static str> {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    let bare = rest.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Err("is an IP address; DNS-01 certificates are for DNS names");
    }
    if rest
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("ends in an all-numeric label, which no DNS name has");
    }
    if rest.is_empty() || rest.len() > 253 {
        return Err("is not a domain name");
    }
    if !rest.contains('.') {
        return Err("must be a fully qualified name like mqtt.example.com");
    }
    for label in rest.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("has an empty or over-long label");
        }
        if label == "*" {
            return Err("may only have a wildcard as its leftmost label (`*.example.com`)");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err("has characters other than letters, digits and inner hyphens");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn base(extra: &str) -> String {
        format!(
            r#"state_dir = "/tmp/x"
[acme]
directory = "letsencrypt-staging"
[dns.primary]
provider = "rfc2136"
server = "127.0.0.1:53"
tsig_key = "k"
tsig_secret = "c2VjcmV0"
[emqx.prod]
url = "https://api.example/api/v1/"
key = "app"
secret = "s3cret"
{extra}"#
        )
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("c.toml"), text)
    }

    #[test]
    fn minimal_config_resolves_defaults_and_references() {
        let c = parse(&base(
            "[[deployment]]\nid = \"ge6a1a75\"\ndomains = [\"MQTT.example.com.\"]\n",
        ))
        .unwrap();
        let d = &c.deployments[0];
        assert_eq!(d.domains, ["mqtt.example.com"]);
        assert_eq!(
            (d.emqx().map(|e| e.account.as_str()), d.dns.as_str()),
            (Some("prod"), "primary")
        );
        assert_eq!(c.emqx["prod"].url, "https://api.example/api/v1");
        assert_eq!(c.dns["primary"].tsig_key, "k.");
        assert_eq!(c.acme.directory, LETSENCRYPT_STAGING);
        assert_eq!(c.acme.key_format, KeyFormat::Traditional);
    }

    #[test]
    fn unknown_key_reports_line_and_column() {
        let e = parse(&base(
            "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\nfoo = 1\n",
        ))
        .unwrap_err();
        assert_eq!(e.position, Some((16, 1)), "{e}");
        assert!(e.to_string().contains("unknown field `foo`"), "{e}");
    }

    #[test]
    fn two_way_without_client_ca_is_rejected() {
        let e = parse(&base(
            "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\ntls_type = \"two-way\"\n",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("client_ca_file"), "{e}");
    }

    #[test]
    fn bad_domains_and_references_are_named() {
        let e = parse(&base(
            "[[deployment]]\nid = \"a\"\ndomains = [\"a.*.example.com\"]\n",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("wildcard"), "{e}");
        let e = parse(&base(
            "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\nemqx = \"nope\"\n",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("names no [emqx.nope]"), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(16));
    }

    #[test]
    fn secrets_need_exactly_one_source_and_never_print() {
        let text = base("[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n").replace(
            "secret = \"s3cret\"",
            "secret = \"s3cret\"\nsecret_env = \"X\"",
        );
        assert!(
            parse(&text)
                .unwrap_err()
                .to_string()
                .contains("exactly one")
        );
        let c = parse(&base(
            "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n",
        ))
        .unwrap();
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("c2VjcmV0"),
            "{debug}"
        );
    }

    #[test]
    fn secret_file_and_inline_warning() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "from-file").unwrap();
        let text = base("[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n").replace(
            "secret = \"s3cret\"",
            &format!("secret_file = \"{}\"", f.path().display()),
        );
        let c = parse(&text).unwrap();
        use secrecy::ExposeSecret as _;
        assert_eq!(c.emqx["prod"].secret.expose_secret(), "from-file");
    }

    #[test]
    fn schedule_defaults_and_errors() {
        let c = parse(&base(
            "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n",
        ))
        .unwrap();
        assert_eq!(c.schedule.jitter, DEFAULT_JITTER);
        let c = parse(&base(
            "[schedule]\ncron = \"*/2 * * * * *\"\njitter = \"0s\"\n[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n",
        ))
        .unwrap();
        assert!(c.schedule.jitter.is_zero());
        let e = parse(&base("[schedule]\ncron = \"every day\"\n[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n"))
            .unwrap_err();
        assert_eq!(e.position, Some((14, 8)), "{e}");
        let e = parse(&base(
            "[schedule]\ncron = \"0 0 0 1 1 * 2020\"\n[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("no future tick"), "{e}");
    }

    #[test]
    fn key_types_use_the_documented_spelling() {
        for (text, kt) in [
            ("ecdsa-p256", KeyType::EcdsaP256),
            ("ecdsa-p384", KeyType::EcdsaP384),
            ("rsa-2048", KeyType::Rsa2048),
        ] {
            let c = parse(
                &base("[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n").replace(
                    "directory = \"letsencrypt-staging\"",
                    &format!("directory = \"letsencrypt-staging\"\nkey_type = \"{text}\""),
                ),
            )
            .unwrap();
            assert_eq!(c.acme.key_type, kt);
            assert_eq!(kt.to_string(), text);
        }
    }

    #[test]
    fn the_example_config_is_valid() {
        // The example names secret files that exist only on a real host; everything else is taken as written.
        let text = include_str!("../config/certkeeper.example.toml")
            .replace(
                "tsig_secret_file = \"/etc/certkeeper/tsig.secret\"",
                "tsig_secret = \"c2VjcmV0\"",
            )
            .replace(
                "secret_file = \"/etc/certkeeper/emqx.secret\"",
                "secret = \"x\"",
            );
        let c = parse(&text).unwrap();
        assert_eq!(c.deployments[0].id, "ge6a1a75");
        assert_eq!(c.schedule.jitter, DEFAULT_JITTER);
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(
            parse_offset("+08:00"),
            time::UtcOffset::from_hms(8, 0, 0).ok()
        );
        assert_eq!(
            parse_offset("-0530"),
            time::UtcOffset::from_hms(-5, -30, 0).ok()
        );
        assert_eq!(parse_offset("UTC"), Some(time::UtcOffset::UTC));
        assert_eq!(parse_offset("8"), None);
    }

    #[test]
    fn offsets_beyond_23_59_are_refused() {
        assert_eq!(
            parse_offset("+23:59"),
            time::UtcOffset::from_hms(23, 59, 0).ok()
        );
        for bad in ["+24:00", "-25:59", "+12:60"] {
            assert_eq!(parse_offset(bad), None, "{bad}");
        }
        let err = parse(
            &base("[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n").replace(
                "secret = \"s3cret\"",
                "secret = \"s3cret\"\nexpire_timezone = \"+25:00\"",
            ),
        )
        .unwrap_err();
        assert!(err.to_string().contains("expire_timezone"), "{err}");
    }

    /// Each config passed `check` and failed at run time; each must now fail `check`, naming the key.
    #[test]
    fn configs_that_would_fail_at_run_time_fail_check() {
        let d = "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n";
        let long_id = "x".repeat(300);
        let cases: Vec<(String, &str)> = vec![
            (
                base(d).replace("tsig_secret = \"c2VjcmV0\"", "tsig_secret = \"\""),
                "`tsig_secret` is empty",
            ),
            (
                base(d).replace("tsig_secret = \"c2VjcmV0\"", "tsig_secret = \"  \""),
                "`tsig_secret` is empty",
            ),
            (
                base(d).replace("127.0.0.1:53", "127.0.0.1:99999"),
                "port outside",
            ),
            (
                base(d).replace("127.0.0.1:53", "127.0.0.1:0"),
                "port outside",
            ),
            (base(d).replace("127.0.0.1:53", "::1:53"), "IPv6"),
            (base(d).replace("a.example.com", "192.0.2.7"), "IP address"),
            (
                base(d).replace("a.example.com", "2001:db8::1"),
                "IP address",
            ),
            (
                base(d).replace("\"a.example.com\"", "\"[2001:db8::1]\""),
                "IP address",
            ),
            (
                base(d).replace("a.example.com", "a.example.123"),
                "all-numeric",
            ),
            (
                base(d).replace("id = \"a\"", &format!("id = \"{long_id}\"")),
                "at most 128",
            ),
            (base(d).replace("api/v1/", "api/v1?x=1"), "without `?query`"),
            (base(d).replace("api/v1/", "api/v1#top"), "without `?query`"),
            (
                base(d).replace("https://api.example", "https://u:p@api.example"),
                "user:password@",
            ),
        ];
        for (text, needle) in cases {
            let err = parse(&text).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn plain_http_and_readable_secret_files_are_warned_about() {
        let d = "[[deployment]]\nid = \"a\"\ndomains = [\"a.example.com\"]\n";
        let c = parse(&base(d).replace("https://api.example", "http://api.example")).unwrap();
        assert!(
            c.warnings.iter().any(|w| w.contains("plain http")),
            "{:?}",
            c.warnings
        );
        let c = parse(&base(d).replace("https://api.example", "http://127.0.0.1:8080")).unwrap();
        assert!(
            !c.warnings.iter().any(|w| w.contains("plain http")),
            "loopback: {:?}",
            c.warnings
        );

        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "from-file").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = base(d).replace(
            "secret = \"s3cret\"",
            &format!("secret_file = \"{}\"", f.path().display()),
        );
        let c = parse(&text).unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("secret_file") && w.contains("chmod 600")),
            "{:?}",
            c.warnings
        );
    }
}
