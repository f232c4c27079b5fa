//! The second step of loading: resolving the raw sections into [`Config`](super::Config) types, checking
//! what can be checked offline. A target's or a DNS provider's own section resolves in its own module through
//! the same [`Loader`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::*;

/// Collects the context every check needs to report a position; a target's or provider's own section
/// resolves through it.
pub(crate) struct Loader<'a> {
    pub(crate) path: &'a Path,
    pub(crate) source: &'a str,
    pub(crate) inline_secrets: bool,
    /// False for `status`: secrets are checked to be configured, never read.
    pub(crate) read_secrets: bool,
    /// Lines `check` prints and the service logs; the config is still used.
    pub(crate) warnings: std::cell::RefCell<Vec<String>>,
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

    /// An error about the file as a whole.
    pub(crate) fn err(&self, message: impl Into<String>) -> ConfigError {
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

    pub(super) fn schedule(
        &self,
        raw: Option<raw::Schedule>,
    ) -> Result<ScheduleConfig, ConfigError> {
        let raw = raw.unwrap_or(raw::Schedule {
            cron: None,
            jitter: None,
            concurrency: None,
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
        let concurrency = match &raw.concurrency {
            None => DEFAULT_CONCURRENCY,
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(n @ 1..=MAX_CONCURRENCY) => n,
                _ => {
                    return Err(self.err_at(
                        n.span(),
                        format!(
                            "schedule.concurrency = {} is out of range: from 1 (one deployment of an API key after another) to \
                             {MAX_CONCURRENCY}",
                            n.get_ref()
                        ),
                    ));
                }
            },
        };
        Ok(ScheduleConfig {
            cron,
            jitter: self.duration(&raw.jitter, DEFAULT_JITTER)?,
            concurrency,
        })
    }

    pub(super) fn directory(
        &self,
        key: &str,
        value: &Spanned<String>,
    ) -> Result<String, ConfigError> {
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

    pub(super) fn acme(
        &mut self,
        raw: Option<Spanned<raw::Acme>>,
    ) -> Result<AcmeConfig, ConfigError> {
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
        let eab = issuers::RawEab {
            kid: &raw.eab_kid,
            key: &raw.eab_hmac_key,
            key_file: &raw.eab_hmac_key_file,
            key_env: &raw.eab_hmac_key_env,
        };
        let eab = self.eab("acme", &eab, span)?;
        let trust_roots = self.trust_roots(raw.trust_roots.as_ref())?;
        self.check_contacts(&raw.contact)?;
        let first = Issuer {
            name: match &raw.name {
                Some(n) => self.issuer_name(n)?,
                None => FIRST_ISSUER_NAME.to_owned(),
            },
            directory: directory.clone(),
            contact: raw.contact.clone(),
            trust_roots: trust_roots.clone(),
            key_type: raw.key_type.unwrap_or(KeyType::EcdsaP256),
            profile: raw.profile.clone(),
            eab: eab.clone(),
            lifetime: self.lifetime(&raw.lifetime)?,
        };
        let mut issuers = self.fallbacks(&first, raw.fallback)?;
        issuers.insert(0, first);
        Ok(AcmeConfig {
            directory,
            contact: raw.contact,
            trust_roots,
            key_type: raw.key_type.unwrap_or(KeyType::EcdsaP256),
            key_format: raw.key_format.unwrap_or(KeyFormat::Traditional),
            profile: raw.profile,
            staging_directory,
            eab,
            issuers,
        })
    }

    /// The CA certificates to trust instead of the system's, for a private CA (or Pebble).
    pub(super) fn trust_roots(
        &self,
        path: Option<&Spanned<String>>,
    ) -> Result<Option<PathBuf>, ConfigError> {
        let Some(p) = path else {
            return Ok(None);
        };
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
        Ok(Some(path))
    }

    /// `[metrics]`: an address to listen on, and a textfile in a directory that exists.
    pub(super) fn metrics(&self, raw: Option<raw::Metrics>) -> Result<MetricsConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(MetricsConfig::default());
        };
        let listen = match &raw.listen {
            None => None,
            Some(l) => Some(l.get_ref().parse().map_err(|_| {
                self.err_at(
                    l.span(),
                    format!(
                        "metrics.listen `{}` is not an address with a port, e.g. \"127.0.0.1:9465\"",
                        l.get_ref()
                    ),
                )
            })?),
        };
        let textfile = match &raw.textfile {
            None => None,
            Some(t) => {
                let path = PathBuf::from(t.get_ref());
                let dir_ok = path
                    .parent()
                    .is_some_and(|d| d.as_os_str().is_empty() || d.is_dir());
                if !dir_ok || path.file_name().is_none() || path.is_dir() {
                    return Err(self.err_at(
                        t.span(),
                        format!(
                            "metrics.textfile {} must be a file in a directory that exists",
                            path.display()
                        ),
                    ));
                }
                Some(path)
            }
        };
        Ok(MetricsConfig { listen, textfile })
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

    pub(super) fn deployment(
        &self,
        raw: Spanned<raw::Deployment>,
        dns: &BTreeMap<String, DnsConfig>,
        emqx: &BTreeMap<String, EmqxConfig>,
        issuers: &[Issuer],
    ) -> Result<Deployment, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let id = self.deployment_id(&raw.id)?;
        let domains = self.domains(&id, &raw.domains)?;
        let endpoint = match &raw.endpoint {
            Some(e) if check_host_port(e.get_ref()).is_err() => {
                return Err(self.err_at(e.span(), format!("deployment {id}: endpoint must be host:port with a port in 1–65535, e.g. \"mqtt.example.com:8883\"")));
            }
            other => other.as_ref().map(|e| e.get_ref().clone()),
        };
        let renew_before = match &raw.renew_before {
            None => None,
            Some(_) => Some(self.duration(&raw.renew_before, Duration::ZERO)?),
        };
        let verify_timeout = self.duration(&raw.verify_timeout, DEFAULT_VERIFY_TIMEOUT)?;
        let dns = self.pick("dns", &raw.dns, dns, span.clone())?;
        let (profile, endpoint_sni) = (raw.profile.clone(), raw.endpoint_sni.clone());
        let issuer = self.pinned_issuer(&id, raw.issuer.as_ref(), issuers)?;
        Ok(Deployment {
            target: self.target(&id, span, raw, emqx)?,
            dns,
            id,
            domains,
            renew_before,
            profile,
            issuer,
            endpoint,
            endpoint_sni,
            verify_timeout,
        })
    }

    /// A deployment id: it names state files, so it is short and plain.
    fn deployment_id(&self, raw: &Spanned<String>) -> Result<String, ConfigError> {
        let id = raw.get_ref().clone();
        if id.len() > MAX_ID_LEN {
            return Err(self.err_at(
                raw.span(),
                format!("deployment id is {} characters long; at most {MAX_ID_LEN} are allowed (it names files in the state directory)", id.len()),
            ));
        }
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.err_at(
                raw.span(),
                format!("deployment id `{id}` must use letters, digits, - and _ only (for EMQX: the deployment ID from the console)"),
            ));
        }
        Ok(id)
    }

    /// The certificate's names: lower-cased, without trailing dot, each valid and listed once.
    fn domains(
        &self,
        id: &str,
        raw: &Spanned<Vec<Spanned<String>>>,
    ) -> Result<Vec<String>, ConfigError> {
        if raw.get_ref().is_empty() {
            return Err(self.err_at(raw.span(), format!("deployment {id}: domains is empty")));
        }
        let mut domains: Vec<String> = Vec::new();
        for d in raw.get_ref() {
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
        Ok(domains)
    }

    /// Where the certificate goes: `[deployment.files]` makes a files target, anything else is EMQX.
    fn target(
        &self,
        id: &str,
        span: std::ops::Range<usize>,
        raw: raw::Deployment,
        emqx: &BTreeMap<String, EmqxConfig>,
    ) -> Result<TargetConfig, ConfigError> {
        let client_ca_file = match &raw.client_ca_file {
            None => None,
            Some(p) => Some(self.client_ca_file(id, p)?),
        };
        if let Some(files) = raw.files {
            let emqx_key = [
                raw.emqx.as_ref().map(|_| "emqx"),
                raw.tls_type.map(|_| "tls_type"),
                client_ca_file.as_ref().map(|_| "client_ca_file"),
            ]
            .into_iter()
            .flatten()
            .next();
            if let Some(key) = emqx_key {
                return Err(self.err_at(
                    files.span(),
                    format!("deployment {id}: a deployment with [deployment.files] is no EMQX deployment; remove `{key}`"),
                ));
            }
            return Ok(TargetConfig::Files(crate::deploy::files::resolve(
                self, id, files,
            )?));
        }
        if raw.tls_type == Some(TlsType::TwoWay) && client_ca_file.is_none() {
            return Err(self.err_at(
                span,
                format!("deployment {id}: tls_type = \"two-way\" needs client_ca_file (EMQX requires the client CA on every push)"),
            ));
        }
        Ok(TargetConfig::Emqx(EmqxDeployment {
            account: self.pick("emqx", &raw.emqx, emqx, span)?,
            tls_type: raw.tls_type,
            client_ca_file,
        }))
    }

    /// A client CA bundle for two-way TLS: readable, and holding at least one certificate.
    fn client_ca_file(&self, id: &str, p: &Spanned<String>) -> Result<PathBuf, ConfigError> {
        let path = expand_credentials_dir(p.get_ref()).map_err(|m| self.err_at(p.span(), m))?;
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
        Ok(path)
    }
}
