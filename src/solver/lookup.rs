//! Looking names up for the layer above the providers: CNAMEs at challenge owners, the zone of a name, its NS
//! hosts and their addresses, its SOA primary.
//!
//! Lookups go to a list of servers asked in turn with the RD bit set: `lookup_servers` when configured, else
//! the rfc2136 `server` (authoritative for its zones, it answers without recursion) and then the system's
//! resolvers (`/etc/resolv.conf`). An answer counts when it is NOERROR or NXDOMAIN; a server that refuses,
//! fails or does not answer passes the question to the next one.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tracing::debug;

use super::SolverError;
use super::dns::{Server, rcode_name};

/// Longest CNAME chain followed from a challenge owner (RFC 1034 allows chains; nobody needs more).
pub const MAX_CNAME_CHAIN: usize = 8;
/// Where the system keeps its resolvers.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The servers names are looked up at, in order.
#[derive(Debug, Clone)]
pub(crate) struct Lookup {
    servers: Vec<String>,
    /// The rfc2136 `server` when it leads the list: if it cannot be reached, neither can the update, so
    /// that is the error (not a lookup failure after the system's resolvers were tried as well).
    primary: Option<String>,
    query_timeout: Duration,
}

impl Lookup {
    /// `configured` when not empty, else `primary` (if any) followed by the system's resolvers.
    pub(crate) fn new(
        configured: &[String],
        primary: Option<&str>,
        query_timeout: Duration,
    ) -> Self {
        let servers = if configured.is_empty() {
            primary
                .map(str::to_owned)
                .into_iter()
                .chain(system_resolvers())
                .collect()
        } else {
            configured.to_vec()
        };
        Self {
            primary: primary.filter(|_| configured.is_empty()).map(str::to_owned),
            servers,
            query_timeout,
        }
    }

    /// Asks each server in turn for `name`/`record_type` until one gives a NOERROR or NXDOMAIN answer.
    pub(crate) async fn ask(
        &self,
        name: &Name,
        record_type: RecordType,
    ) -> Result<Message, SolverError> {
        let mut last = "no lookup server is configured and /etc/resolv.conf names none".to_owned();
        for server in &self.servers {
            let is_primary = self.primary.as_ref() == Some(server);
            let resolved = match Server::resolve(server, self.query_timeout).await {
                Ok(resolved) => resolved,
                Err(e) if is_primary => return Err(e),
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            match resolved
                .query_rd(name, record_type, self.query_timeout, true)
                .await
            {
                Ok(answer)
                    if matches!(
                        answer.response_code,
                        ResponseCode::NoError | ResponseCode::NXDomain
                    ) =>
                {
                    return Ok(answer);
                }
                Ok(answer) => {
                    last = format!("{server} answered {}", rcode_name(answer.response_code))
                }
                Err(e) if is_primary => return Err(e.into_solver_error(server)),
                Err(e) => last = format!("{server}: {e}"),
            }
            debug!(%name, %record_type, %server, %last, "lookup passed on");
        }
        Err(SolverError::Lookup {
            name: name.to_ascii(),
            record_type: record_type.to_string(),
            servers: self.servers.join(", "),
            last,
        })
    }

    /// Follows CNAMEs from `owner` (bounded, loops detected) and returns where the chain ends: `owner` itself
    /// when it is no CNAME.
    pub(crate) async fn follow_cname(&self, owner: &Name) -> Result<Name, SolverError> {
        let mut chain = vec![owner.clone()];
        loop {
            let current = chain.last().cloned().unwrap_or_else(|| owner.clone());
            let answer = self.ask(&current, RecordType::CNAME).await?;
            let next = answer.answers.iter().find_map(|r| match &r.data {
                RData::CNAME(target) if r.name == current => Some(target.0.clone()),
                _ => None,
            });
            let Some(mut next) = next else {
                if chain.len() > 1 {
                    debug!(%owner, target = %current, "challenge owner delegated by CNAME");
                }
                return Ok(current);
            };
            next.set_fqdn(true);
            let looped = chain.contains(&next);
            chain.push(next);
            if looped || chain.len() > MAX_CNAME_CHAIN + 1 {
                return Err(SolverError::CnameChain {
                    owner: owner.to_ascii(),
                    chain: chain
                        .iter()
                        .map(Name::to_ascii)
                        .collect::<Vec<_>>()
                        .join(" → "),
                    looped,
                });
            }
        }
    }

    /// The zone holding `owner`: the owner of the first SOA found asking for `owner`, then each parent.
    pub(crate) async fn zone_of(&self, owner: &Name) -> Result<(Name, Name), SolverError> {
        let mut candidate = owner.clone();
        loop {
            let answer = self.ask(&candidate, RecordType::SOA).await?;
            let soa = answer
                .answers
                .iter()
                .chain(&answer.authorities)
                .find_map(|r| match &r.data {
                    RData::SOA(soa) if r.name.zone_of(owner) => {
                        Some((r.name.clone(), soa.mname.clone()))
                    }
                    _ => None,
                });
            if let Some(found) = soa {
                return Ok(found);
            }
            if candidate.num_labels() <= 1 {
                return Err(SolverError::Lookup {
                    name: owner.to_ascii(),
                    record_type: "SOA".into(),
                    servers: self.servers.join(", "),
                    last: "no SOA at the name or any parent".into(),
                });
            }
            candidate = candidate.base_name();
        }
    }

    /// The NS hosts of `zone`, with the addresses the NS answer carried as glue.
    pub(crate) async fn ns_of(&self, zone: &Name) -> Result<Vec<(Name, Vec<IpAddr>)>, SolverError> {
        let answer = self.ask(zone, RecordType::NS).await?;
        let hosts: Vec<(Name, Vec<IpAddr>)> = answer
            .answers
            .iter()
            .filter(|r| r.name == *zone)
            .filter_map(|r| match &r.data {
                RData::NS(ns) => Some(ns.0.clone()),
                _ => None,
            })
            .map(|host| {
                let glue = addresses_in(&answer, &host);
                (host, glue)
            })
            .collect();
        if hosts.is_empty() {
            return Err(SolverError::Lookup {
                name: zone.to_ascii(),
                record_type: "NS".into(),
                servers: self.servers.join(", "),
                last: "the zone has no NS records".into(),
            });
        }
        Ok(hosts)
    }

    /// The addresses of `host` on `port`: A and AAAA looked up here, else the system's own resolution.
    pub(crate) async fn addresses(
        &self,
        host: &Name,
        port: u16,
    ) -> Result<Vec<SocketAddr>, SolverError> {
        let mut found = Vec::new();
        for record_type in [RecordType::A, RecordType::AAAA] {
            if let Ok(answer) = self.ask(host, record_type).await {
                found.extend(addresses_in(&answer, host));
            }
        }
        if found.is_empty() {
            let text = host.to_ascii();
            let bare = text.trim_end_matches('.');
            if let Ok(Ok(addrs)) =
                tokio::time::timeout(self.query_timeout, tokio::net::lookup_host((bare, port)))
                    .await
            {
                return Ok(addrs.collect());
            }
            return Err(SolverError::Lookup {
                name: text,
                record_type: "A/AAAA".into(),
                servers: self.servers.join(", "),
                last: "the name server host has no address".into(),
            });
        }
        Ok(found
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

/// A and AAAA records of `host` anywhere in `answer` (answer or additional section).
fn addresses_in(answer: &Message, host: &Name) -> Vec<IpAddr> {
    answer
        .answers
        .iter()
        .chain(&answer.additionals)
        .filter(|r| r.name == *host)
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

/// The `nameserver` lines of `/etc/resolv.conf`, as `host:53`.
fn system_resolvers() -> Vec<String> {
    std::fs::read_to_string(RESOLV_CONF)
        .map(|text| parse_resolv_conf(&text))
        .unwrap_or_default()
}

fn parse_resolv_conf(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|ip| ip.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_get_port_53() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\nnameserver\n";
        assert_eq!(parse_resolv_conf(text), ["10.0.0.1:53", "[fe80::1]:53"]);
    }
}
