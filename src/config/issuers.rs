//! The certificate authorities a deployment may be served by: `[acme]` is the first issuer, each
//! `[[acme.fallback]]` the next, tried in file order. Each issuer is a CA directory with its own account,
//! profile, External Account Binding, key type, contacts, trust roots and declared lifetime; a deployment may
//! pin one by name (`issuer = "NAME"`).
//!
//! Pinning is by name, not by position, so that inserting a fallback never silently moves a deployment to
//! another CA.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Eab, KeyType, Loader};

/// The name of `[acme]` when it sets no `name`.
pub const FIRST_ISSUER_NAME: &str = "acme";

/// One CA certkeeper may order from.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// How deployments (`issuer = "NAME"`), logs and `status` name it: `name`, else `acme` for the first
    /// issuer and `fallback-N` (1-based) for the N-th fallback.
    pub name: String,
    /// The directory URL (aliases already resolved); its account is kept under this URL.
    pub directory: String,
    /// Contact URIs for its account.
    pub contact: Vec<String>,
    /// Extra PEM roots trusted for its HTTPS endpoint.
    pub trust_roots: Option<PathBuf>,
    /// Key type of the certificates ordered from it.
    pub key_type: KeyType,
    /// ACME profile of its orders.
    pub profile: Option<String>,
    /// External Account Binding for its account.
    pub eab: Option<Eab>,
    /// The lifetime its certificates are declared to have (`lifetime = "90d"`), used until one was issued.
    pub lifetime: Option<Duration>,
}

/// `[[acme.fallback]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFallback {
    pub name: Option<Spanned<String>>,
    pub directory: Spanned<String>,
    #[serde(default)]
    pub contact: Option<Vec<String>>,
    pub trust_roots: Option<Spanned<String>>,
    pub key_type: Option<KeyType>,
    pub profile: Option<String>,
    pub lifetime: Option<Spanned<String>>,
    pub eab_kid: Option<String>,
    pub eab_hmac_key: Option<String>,
    pub eab_hmac_key_file: Option<Spanned<String>>,
    pub eab_hmac_key_env: Option<Spanned<String>>,
}

/// The EAB keys of one issuer's section, as written.
pub(super) struct RawEab<'r> {
    pub kid: &'r Option<String>,
    pub key: &'r Option<String>,
    pub key_file: &'r Option<Spanned<String>>,
    pub key_env: &'r Option<Spanned<String>>,
}

impl Loader<'_> {
    /// Resolves the fallbacks after `first` (already resolved from `[acme]`), checking names are unique.
    pub(super) fn fallbacks(
        &mut self,
        first: &Issuer,
        raw: Vec<Spanned<RawFallback>>,
    ) -> Result<Vec<Issuer>, ConfigError> {
        let mut issuers: Vec<Issuer> = Vec::new();
        for (i, raw) in raw.into_iter().enumerate() {
            let span = raw.span();
            let raw = raw.into_inner();
            let section = format!("acme.fallback #{}", i + 1);
            let name = match &raw.name {
                Some(n) => self.issuer_name(n)?,
                None => format!("fallback-{}", i + 1),
            };
            if first.name == name || issuers.iter().any(|o| o.name == name) {
                let at = raw.name.as_ref().map_or(span.clone(), Spanned::span);
                return Err(self.err_at(
                    at,
                    format!("[{section}]: issuer name `{name}` is used twice; give each issuer its own `name`"),
                ));
            }
            let eab = RawEab {
                kid: &raw.eab_kid,
                key: &raw.eab_hmac_key,
                key_file: &raw.eab_hmac_key_file,
                key_env: &raw.eab_hmac_key_env,
            };
            let eab = self.eab(&section, &eab, span.clone())?;
            let contact = raw.contact.unwrap_or_else(|| first.contact.clone());
            self.check_contacts(&contact)?;
            issuers.push(Issuer {
                name,
                directory: self.directory("fallback.directory", &raw.directory)?,
                contact,
                trust_roots: self.trust_roots(raw.trust_roots.as_ref())?,
                key_type: raw.key_type.unwrap_or(first.key_type),
                profile: raw.profile,
                eab,
                lifetime: self.lifetime(&raw.lifetime)?,
            });
        }
        Ok(issuers)
    }

    /// An issuer's `name`: short and plain, it appears in logs and in deployments' `issuer`.
    pub(super) fn issuer_name(&self, raw: &Spanned<String>) -> Result<String, ConfigError> {
        let name = raw.get_ref();
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
        if name.is_empty() || name.len() > 64 || !name.chars().all(plain) {
            return Err(self.err_at(
                raw.span(),
                format!("issuer name `{name}` must be 1–64 letters, digits, `-`, `_` or `.`"),
            ));
        }
        Ok(name.clone())
    }

    /// A declared certificate lifetime: at least a day would be meaningless below an hour.
    pub(super) fn lifetime(
        &self,
        raw: &Option<Spanned<String>>,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(at) = raw else {
            return Ok(None);
        };
        let lifetime = self.duration(raw, Duration::ZERO)?;
        if lifetime < Duration::from_secs(3600) {
            return Err(self.err_at(
                at.span(),
                "lifetime must be at least an hour; write the CA's certificate lifetime, e.g. \"90d\"",
            ));
        }
        Ok(Some(lifetime))
    }

    /// Contacts are mailto: URIs.
    pub(super) fn check_contacts(&self, contact: &[String]) -> Result<(), ConfigError> {
        match contact.iter().find(|c| !c.starts_with("mailto:")) {
            Some(c) => Err(self.err(format!(
                "acme.contact `{c}` must be a mailto: URI, e.g. \"mailto:ops@example.com\""
            ))),
            None => Ok(()),
        }
    }

    /// A deployment's `issuer = "NAME"`: the index of that issuer.
    pub(super) fn pinned_issuer(
        &self,
        id: &str,
        raw: Option<&Spanned<String>>,
        issuers: &[Issuer],
    ) -> Result<Option<usize>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        match issuers.iter().position(|i| i.name == *raw.get_ref()) {
            Some(at) => Ok(Some(at)),
            None => Err(self.err_at(
                raw.span(),
                format!(
                    "deployment {id}: issuer = \"{}\" names no issuer (configured: {}); set `name` on [acme] or \
                     [[acme.fallback]], or remove `issuer`",
                    raw.get_ref(),
                    issuers
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// External Account Binding: a key id and its HMAC key, both or neither.
    pub(super) fn eab(
        &mut self,
        section: &str,
        raw: &RawEab<'_>,
        span: std::ops::Range<usize>,
    ) -> Result<Option<Eab>, ConfigError> {
        self.inline_secrets |= raw.key.is_some();
        match raw.kid {
            None if raw.key.is_some() || raw.key_file.is_some() || raw.key_env.is_some() => {
                Err(self.err_at(
                    span,
                    format!(
                        "[{section}] eab_hmac_key_* is set but eab_kid is not; set both from the CA's console"
                    ),
                ))
            }
            None => Ok(None),
            Some(kid) => {
                let key = self.secret(
                    "eab_hmac_key",
                    section,
                    span.clone(),
                    raw.key,
                    raw.key_file,
                    raw.key_env,
                )?;
                use base64::Engine as _;
                let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(key.trim_end_matches('=').as_bytes())
                    .map_err(|_| {
                        self.err_at(
                            span.clone(),
                            format!(
                                "[{section}] the EAB HMAC key is not base64url; paste it as the CA's console shows it"
                            ),
                        )
                    })?;
                Ok(Some(Eab {
                    kid: kid.clone(),
                    hmac_key: decoded.into(),
                }))
            }
        }
    }
}
