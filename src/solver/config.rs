//! `[dns.NAME]`: the provider-neutral part of a DNS section (which provider, and the settings every provider
//! shares: CNAME following and the propagation check) and the dispatch to the provider's own keys.
//!
//! Each provider owns its keys in its own module (`rfc2136/config.rs`, `exec/config.rs`, ...), deserialized
//! with `deny_unknown_fields`, so a key of another provider is an error at its line. serde's `#[serde(tag)]`
//! and `flatten` would lose both the positions and `deny_unknown_fields`, so the section is read a second time
//! from the source as a spanned `toml_edit` table: the shared keys are taken out first, then the rest goes to
//! the provider. Adding a provider is one [`DnsProvider`] variant, one arm in [`resolve_section`] and its
//! module (plus one arm in the factory, `solver/build.rs`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IntoDeserializer as _;
use toml::Spanned;

use crate::config::{ConfigError, Loader, check_host_port};

/// Suggested [`DnsShared::propagation_timeout`]: how long the CA is kept waiting for DNS at most.
pub const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(120);

/// The keys every provider accepts besides its own (and `provider`).
const SHARED_KEYS: [&str; 5] = [
    "follow_cname",
    "propagation",
    "propagation_servers",
    "propagation_timeout",
    "lookup_servers",
];

/// The providers `provider = "..."` may name, for messages.
const PROVIDERS: &str = "\"rfc2136\", \"exec\", \"acme-dns\", \"cloudflare\"";

/// `[dns.NAME]`, resolved: one provider and the shared settings.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The section name.
    pub name: String,
    /// Settings every provider shares.
    pub shared: DnsShared,
    /// The provider and its own settings.
    pub provider: DnsProvider,
}

impl DnsConfig {
    /// Returns the RFC 2136 settings when this section uses that provider.
    pub fn rfc2136(&self) -> Option<&crate::solver::rfc2136::config::Rfc2136Config> {
        match &self.provider {
            DnsProvider::Rfc2136(c) => Some(c),
            DnsProvider::Exec(_) | DnsProvider::AcmeDns(_) | DnsProvider::Cloudflare(_) => None,
        }
    }

    /// Returns a one-line description for `certkeeper check`, without secrets: `127.0.0.1:53` for rfc2136,
    /// `exec /usr/local/bin/hook` for a hook (its program only: later arguments may carry a token).
    pub fn describe(&self) -> String {
        match &self.provider {
            DnsProvider::Rfc2136(c) => c.server.clone(),
            DnsProvider::Exec(c) => {
                format!("exec {}", c.command.first().map_or("", String::as_str))
            }
            DnsProvider::AcmeDns(c) => format!("acme-dns {}", c.server),
            DnsProvider::Cloudflare(c) => format!("cloudflare {}", c.api_url),
        }
    }
}

/// A DNS provider and its own settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DnsProvider {
    /// `provider = "rfc2136"`: TSIG-signed dynamic updates to the zone's primary.
    Rfc2136(crate::solver::rfc2136::config::Rfc2136Config),
    /// `provider = "exec"`: an operator's hook program.
    Exec(crate::solver::exec::config::ExecConfig),
    /// `provider = "acme-dns"`: an acme-dns server's API, with CNAME delegation.
    AcmeDns(crate::solver::acme_dns::config::AcmeDnsConfig),
    /// `provider = "cloudflare"`: Cloudflare's API v4 with an API token.
    Cloudflare(crate::solver::cloudflare::config::CloudflareConfig),
}

/// The settings every provider shares (the layer above the providers applies them, `solver/layer.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsShared {
    /// Follow a CNAME at `_acme-challenge.<name>` and publish at its target (default true).
    pub follow_cname: bool,
    /// Which servers must answer the value before the CA is told.
    pub propagation: Propagation,
    /// Servers (`host:port`) asked instead of the zone's NS hosts, when given.
    pub propagation_servers: Vec<String>,
    /// How long to wait for every server to answer the value.
    pub propagation_timeout: Duration,
    /// Servers (`host:port`) asked for CNAMEs, zones and NS records instead of the default (the rfc2136
    /// `server`, then the system's resolvers).
    pub lookup_servers: Vec<String>,
}

impl Default for DnsShared {
    fn default() -> Self {
        Self {
            follow_cname: true,
            propagation: Propagation::Authoritative,
            propagation_servers: Vec::new(),
            propagation_timeout: DEFAULT_PROPAGATION_TIMEOUT,
            lookup_servers: Vec::new(),
        }
    }
}

/// `propagation = "..."`: which servers must answer a new value before the CA is asked to validate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Every authoritative server of the zone (NS lookup, or `propagation_servers`): the servers the CA asks.
    Authoritative,
    /// Only the zone's primary: the rfc2136 `server`, or the SOA MNAME for other providers.
    Primary,
    /// No check: the provider's own word is trusted.
    None,
}

/// The shared keys as written; everything else in the section is the provider's.
#[derive(Deserialize)]
struct RawShared {
    provider: Option<Spanned<String>>,
    follow_cname: Option<bool>,
    propagation: Option<Spanned<String>>,
    propagation_servers: Option<Spanned<Vec<String>>>,
    propagation_timeout: Option<Spanned<String>>,
    lookup_servers: Option<Spanned<Vec<String>>>,
}

/// Resolves every `[dns.NAME]` of the file, in name order.
///
/// # Errors
/// A [`ConfigError`] at the offending key.
pub(crate) fn resolve_all(cx: &mut Loader<'_>) -> Result<BTreeMap<String, DnsConfig>, ConfigError> {
    let source = cx.source;
    // The first step (`toml::from_str`) already accepted the file, so this parse succeeds; map it anyway.
    let doc = toml_edit::ImDocument::parse(source).map_err(|e| cx.err(e.to_string()))?;
    let mut out = BTreeMap::new();
    let Some(dns) = doc.get("dns").and_then(toml_edit::Item::as_table_like) else {
        return Ok(out);
    };
    for (name, item) in dns.iter() {
        let table = match item.clone().into_table() {
            Ok(table) => table,
            Err(_) => return Err(cx.err(format!("[dns.{name}] must be a table"))),
        };
        let config = resolve_section(cx, name, table)?;
        out.insert(name.to_owned(), config);
    }
    Ok(out)
}

/// Resolves one `[dns.NAME]`: the shared keys here, the rest by the provider's module.
fn resolve_section(
    cx: &mut Loader<'_>,
    name: &str,
    mut table: toml_edit::Table,
) -> Result<DnsConfig, ConfigError> {
    let span = section_span(&table);
    let shared: RawShared = deserialize(cx, &table, span.clone())?;
    for key in SHARED_KEYS.iter().chain(&["provider"]) {
        table.remove(key);
    }
    let Some(provider) = shared.provider.as_ref() else {
        return Err(cx.err_at(span, format!("[dns.{name}] needs `provider` ({PROVIDERS})")));
    };
    let provider = match provider.get_ref().as_str() {
        "rfc2136" => DnsProvider::Rfc2136(crate::solver::rfc2136::config::resolve(
            cx,
            name,
            span.clone(),
            deserialize(cx, &table, span.clone())?,
        )?),
        "exec" => DnsProvider::Exec(crate::solver::exec::config::resolve(
            cx,
            name,
            span.clone(),
            deserialize(cx, &table, span.clone())?,
        )?),
        "acme-dns" => DnsProvider::AcmeDns(crate::solver::acme_dns::config::resolve(
            cx,
            name,
            span.clone(),
            deserialize(cx, &table, span.clone())?,
        )?),
        "cloudflare" => DnsProvider::Cloudflare(crate::solver::cloudflare::config::resolve(
            cx,
            name,
            span.clone(),
            deserialize(cx, &table, span.clone())?,
        )?),
        other => {
            return Err(cx.err_at(
                provider.span(),
                format!("[dns.{name}] provider `{other}` is unknown; supported: {PROVIDERS}"),
            ));
        }
    };
    Ok(DnsConfig {
        name: name.to_owned(),
        shared: shared_settings(cx, name, shared)?,
        provider,
    })
}

fn shared_settings(cx: &Loader<'_>, name: &str, raw: RawShared) -> Result<DnsShared, ConfigError> {
    let propagation = match raw
        .propagation
        .as_ref()
        .map(|p| (p.get_ref().as_str(), p.span()))
    {
        None | Some(("authoritative", _)) => Propagation::Authoritative,
        Some(("primary", _)) => Propagation::Primary,
        Some(("none", _)) => Propagation::None,
        Some((other, at)) => {
            return Err(cx.err_at(
                at,
                format!(
                    "[dns.{name}] propagation `{other}` is not one of \"authoritative\", \"primary\", \"none\""
                ),
            ));
        }
    };
    let servers = |key: &str, list: Option<Spanned<Vec<String>>>| match list {
        None => Ok(Vec::new()),
        Some(list) => {
            let at = list.span();
            let list = list.into_inner();
            for server in &list {
                if let Err(why) = check_host_port(server) {
                    return Err(cx.err_at(
                        at.clone(),
                        format!(
                            "[dns.{name}] {key}: `{server}` {why}; write host:port, e.g. \"192.0.2.53:53\""
                        ),
                    ));
                }
            }
            Ok(list)
        }
    };
    Ok(DnsShared {
        follow_cname: raw.follow_cname.unwrap_or(true),
        propagation,
        propagation_servers: servers("propagation_servers", raw.propagation_servers)?,
        propagation_timeout: cx.duration(&raw.propagation_timeout, DEFAULT_PROPAGATION_TIMEOUT)?,
        lookup_servers: servers("lookup_servers", raw.lookup_servers)?,
    })
}

/// The position of a section for errors about it as a whole: its `[dns.NAME]` header, else its first key.
fn section_span(table: &toml_edit::Table) -> Range<usize> {
    table
        .span()
        .or_else(|| table.iter().next().and_then(|(_, item)| item.span()))
        .unwrap_or(0..0)
}

/// Deserializes `table` (with its spans) into `T`; serde's complaints keep their line and column.
fn deserialize<T: serde::de::DeserializeOwned>(
    cx: &Loader<'_>,
    table: &toml_edit::Table,
    span: Range<usize>,
) -> Result<T, ConfigError> {
    let value = toml_edit::Value::InlineTable(table.clone().into_inline_table());
    T::deserialize(value.into_deserializer()).map_err(|e| {
        let at = e.span().unwrap_or(span);
        cx.err_at(at, e.message().to_owned())
    })
}

#[cfg(test)]
mod tests;
