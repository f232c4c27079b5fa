//! The layer above the providers: what every `[dns.*]` gets whatever its provider — CNAME following at the
//! challenge owner and the propagation check — so a provider only adds and removes TXT records.
//!
//! Decisions made here:
//! - **CNAME following** (`follow_cname`, default on): `_acme-challenge.<name>` may be a CNAME into a zone the
//!   provider can write (RFC 8555 §8.4 validators follow it, and so do we). The chain is followed through the
//!   lookup servers (`solver/lookup.rs`), at most [`MAX_CNAME_CHAIN`](super::lookup::MAX_CNAME_CHAIN) links,
//!   and a loop is an error. [`Dns01Solver::resolve`] tells the journal where a record really goes, so that
//!   a killed process's record is removed at its target even if the CNAME changed since.
//! - **Propagation** is checked here, not by providers: `authoritative` asks every server the CA may ask
//!   (the zone's NS hosts, or `propagation_servers`) directly and non-recursively, all at once, polling fast
//!   (`solver/dns.rs`), until each answers the value; `primary` asks the rfc2136 `server` or the SOA primary;
//!   `none` trusts the provider. A server that never answers is named in the error after the timeout.
//! - **NS hosts and ports**: without `propagation_servers` the NS hosts are asked on the port of the rfc2136
//!   `server` (53 in production, another port on test beds), and that `server` is always asked as well: a
//!   zone whose NS set omits its hidden primary still has the primary checked.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hickory_proto::rr::Name;
use tracing::debug;

use super::config::{DnsShared, Propagation};
use super::dns::{Server, parse_name};
use super::lookup::Lookup;
use super::{Dns01Solver, ResolveFuture, SolverError, SolverFuture, TxtRecord};

/// A provider with the shared settings applied; what [`build`](super::build) returns.
pub struct LayeredSolver {
    provider: Box<dyn Dns01Solver>,
    shared: DnsShared,
    /// The rfc2136 `server`: first lookup server, the `primary`, always among the authoritative ones.
    primary: Option<String>,
    lookup: Lookup,
    query_timeout: Duration,
    /// Owners known to be the end of their CNAME chain (targets we resolved), not looked up again.
    targets: Mutex<HashSet<String>>,
}

impl LayeredSolver {
    /// Wraps `provider`; `primary` is the rfc2136 `server` when the provider has one.
    pub fn new(
        provider: Box<dyn Dns01Solver>,
        shared: DnsShared,
        primary: Option<String>,
        query_timeout: Duration,
    ) -> Self {
        let lookup = Lookup::new(&shared.lookup_servers, primary.as_deref(), query_timeout);
        Self {
            provider,
            shared,
            primary,
            lookup,
            query_timeout,
            targets: Mutex::new(HashSet::new()),
        }
    }

    /// Where `record` is published: at the end of its CNAME chain when following is on.
    async fn target(&self, record: &TxtRecord) -> Result<TxtRecord, SolverError> {
        let key = record.fqdn.to_ascii_lowercase();
        let known = self
            .targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&key);
        if !self.shared.follow_cname || known {
            return Ok(record.clone());
        }
        let owner = parse_name(&record.fqdn, "record owner")?;
        let target = self.lookup.follow_cname(&owner).await?;
        let fqdn = target.to_ascii().to_ascii_lowercase();
        self.targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(fqdn.clone());
        Ok(TxtRecord {
            fqdn,
            value: record.value.clone(),
        })
    }

    async fn present_record(&self, record: &TxtRecord) -> Result<(), SolverError> {
        let target = self.target(record).await?;
        self.provider.present(&target).await?;
        let owner = parse_name(&target.fqdn, "record owner")?;
        let servers = self.propagation_servers(&owner).await?;
        wait_everywhere(
            &servers,
            &owner,
            &target.value,
            self.shared.propagation_timeout,
        )
        .await
    }

    async fn cleanup_record(&self, record: &TxtRecord) -> Result<(), SolverError> {
        let target = self.target(record).await?;
        self.provider.cleanup(&target).await
    }

    /// Where the records for `owners` are really published (the ends of their CNAME chains).
    async fn targets_of(&self, owners: &[String]) -> Result<Vec<String>, SolverError> {
        let mut targets = Vec::with_capacity(owners.len());
        for owner in owners {
            let record = TxtRecord {
                fqdn: owner.clone(),
                value: String::new(),
            };
            targets.push(self.target(&record).await?.fqdn);
        }
        Ok(targets)
    }

    async fn preflight_owners(&self, owners: &[String]) -> Result<(), SolverError> {
        let targets = self.targets_of(owners).await?;
        self.provider.preflight(&targets).await
    }

    async fn verify_owners(&self, owners: &[String]) -> Result<(), SolverError> {
        let targets = self.targets_of(owners).await?;
        self.provider.verify_credentials(&targets).await
    }

    /// The servers that must answer the value at `owner` before the CA is told.
    async fn propagation_servers(&self, owner: &Name) -> Result<Vec<Named>, SolverError> {
        match self.shared.propagation {
            Propagation::None => Ok(Vec::new()),
            Propagation::Primary => match &self.primary {
                Some(primary) => Ok(vec![self.named(primary).await?]),
                None => {
                    let (_, mname) = self.lookup.zone_of(owner).await?;
                    let addrs = self.lookup.addresses(&mname, 53).await?;
                    Ok(vec![Named::new(&mname, 53, addrs, self.query_timeout)])
                }
            },
            Propagation::Authoritative if !self.shared.propagation_servers.is_empty() => {
                let mut out = Vec::new();
                for server in &self.shared.propagation_servers {
                    out.push(self.named(server).await?);
                }
                Ok(out)
            }
            Propagation::Authoritative => self.authoritative(owner).await,
        }
    }

    /// The zone's NS hosts on the rfc2136 server's port (else 53), and that server.
    async fn authoritative(&self, owner: &Name) -> Result<Vec<Named>, SolverError> {
        let port = self
            .primary
            .as_deref()
            .and_then(|p| p.rsplit_once(':'))
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or(53);
        let (zone, _) = self.lookup.zone_of(owner).await?;
        let mut out: Vec<Named> = Vec::new();
        for (host, glue) in self.lookup.ns_of(&zone).await? {
            let addrs = if glue.is_empty() {
                self.lookup.addresses(&host, port).await?
            } else {
                glue.into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()
            };
            out.push(Named::new(&host, port, addrs, self.query_timeout));
        }
        if let Some(primary) = &self.primary {
            let primary = self.named(primary).await?;
            if !out.iter().any(|n| n.addrs == primary.addrs) {
                out.push(primary);
            }
        }
        debug!(%zone, servers = %out.iter().map(|n| n.label.as_str()).collect::<Vec<_>>().join(", "), "authoritative servers");
        Ok(out)
    }

    async fn named(&self, server: &str) -> Result<Named, SolverError> {
        let resolved = Server::resolve(server, self.query_timeout).await?;
        Ok(Named {
            label: server.to_owned(),
            addrs: resolved.addrs,
            query_timeout: self.query_timeout,
        })
    }
}

impl Dns01Solver for LayeredSolver {
    fn present<'a>(&'a self, record: &'a TxtRecord) -> SolverFuture<'a> {
        Box::pin(self.present_record(record))
    }

    fn cleanup<'a>(&'a self, record: &'a TxtRecord) -> SolverFuture<'a> {
        Box::pin(self.cleanup_record(record))
    }

    fn preflight<'a>(&'a self, owners: &'a [String]) -> SolverFuture<'a> {
        Box::pin(self.preflight_owners(owners))
    }

    fn verify_credentials<'a>(&'a self, owners: &'a [String]) -> SolverFuture<'a> {
        Box::pin(self.verify_owners(owners))
    }

    fn resolve<'a>(&'a self, record: &'a TxtRecord) -> ResolveFuture<'a> {
        Box::pin(self.target(record))
    }
}

/// One server to check, owned: its label for messages and its addresses.
struct Named {
    label: String,
    addrs: Vec<SocketAddr>,
    query_timeout: Duration,
}

impl Named {
    fn new(host: &Name, port: u16, addrs: Vec<SocketAddr>, query_timeout: Duration) -> Self {
        let host = host.to_ascii();
        Self {
            label: format!("{}:{port}", host.trim_end_matches('.')),
            addrs,
            query_timeout,
        }
    }

    fn server(&self) -> Server<'_> {
        Server {
            name: &self.label,
            addrs: self.addrs.clone(),
            query_timeout: self.query_timeout,
        }
    }
}

/// Waits until every server answers `value` at `owner`; the error names every server that did not.
async fn wait_everywhere(
    servers: &[Named],
    owner: &Name,
    value: &str,
    timeout: Duration,
) -> Result<(), SolverError> {
    let checks = servers
        .iter()
        .map(|named| async move { named.server().wait_for_txt(owner, value, timeout).await });
    let results = futures_util::future::join_all(checks).await;
    let mut failed: Vec<SolverError> = results.into_iter().filter_map(Result::err).collect();
    if failed.len() <= 1 {
        return failed.pop().map_or(Ok(()), Err);
    }
    let names: Vec<String> = failed
        .iter()
        .filter_map(|e| match e {
            SolverError::PropagationTimeout { server, .. } => Some(server.clone()),
            _ => None,
        })
        .collect();
    Err(match failed.remove(0) {
        SolverError::PropagationTimeout {
            owner,
            waited,
            last,
            ..
        } => SolverError::PropagationTimeout {
            server: names.join(", "),
            owner,
            waited,
            last,
        },
        other => other,
    })
}
