//! The factory: one [`Dns01Solver`] from one `[dns.NAME]`. Adding a provider is one arm here.

use std::time::Duration;

use secrecy::ExposeSecret as _;

use super::acme_dns::AcmeDnsSolver;
use super::cloudflare::CloudflareSolver;
use super::config::{DnsConfig, DnsProvider};
use super::exec::ExecSolver;
use super::rfc2136::{Rfc2136Settings, Rfc2136Solver};
use super::{Dns01Solver, LayeredSolver};

/// Per-exchange timeout of DNS queries and updates.
pub const DNS_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the solver `config` describes: its provider under the shared layer (CNAME following,
/// propagation). Nothing is sent or started until it is used.
pub fn build(config: &DnsConfig) -> Box<dyn Dns01Solver> {
    let primary = config.rfc2136().map(|c| c.server.clone());
    Box::new(LayeredSolver::new(
        provider(config),
        config.shared.clone(),
        primary,
        DNS_QUERY_TIMEOUT,
    ))
}

/// The provider alone: one arm per provider.
fn provider(config: &DnsConfig) -> Box<dyn Dns01Solver> {
    match &config.provider {
        DnsProvider::Rfc2136(c) => Box::new(Rfc2136Solver::new(Rfc2136Settings {
            server: c.server.clone(),
            key_name: c.tsig_key.clone(),
            algorithm: c.tsig_algorithm,
            secret: c.tsig_secret.expose_secret().to_vec().into(),
            zone: c.zone.clone(),
            query_timeout: DNS_QUERY_TIMEOUT,
            propagation_timeout: config.shared.propagation_timeout,
            check_propagation: false,
        })),
        DnsProvider::Exec(c) => Box::new(ExecSolver::new(c.clone())),
        DnsProvider::AcmeDns(c) => Box::new(AcmeDnsSolver::new(
            &config.name,
            c.clone(),
            config.shared.follow_cname,
        )),
        DnsProvider::Cloudflare(c) => Box::new(CloudflareSolver::new(c.clone())),
    }
}
