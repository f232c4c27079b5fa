//! DNS-01 challenge solvers: put the challenge TXT record into DNS, and take it out again.
//!
//! This module owns the [`Dns01Solver`] contract (lego's Present/CleanUp shape), the error type shared by every
//! provider ([`SolverError`]; what only one provider reports is that provider's, e.g. [`Rfc2136Error`]), and:
//! - [`config`]: `[dns.NAME]` — the shared keys and the dispatch on `provider` to each provider's own keys;
//! - `build.rs`: the factory, [`build`], one arm per provider;
//! - `layer.rs` ([`LayeredSolver`]) and `lookup.rs`: what every provider gets — CNAME following at the
//!   challenge owner and the propagation check at the zone's authoritative servers;
//! - `dns.rs`: the DNS wire client they share (queries, zone discovery, polling a server for a value);
//! - [`journal`]: records journaled where they are really published, for the next pass after a crash;
//! - one folder per provider: [`rfc2136`] (RFC 2136 updates signed with TSIG: BIND, Knot, PowerDNS and most
//!   self-hosted primaries), [`exec`] (an operator's hook, lego's `exec` convention).
//!
//! A solver only touches DNS. It knows nothing of ACME orders or of which names share a certificate: the renew
//! pipeline computes the records (see [`challenge_fqdn`]), calls [`Dns01Solver::present`] for each before telling
//! the CA to validate, and [`Dns01Solver::cleanup`] for each afterwards, whatever the outcome.
//!
//! A solver from [`build`] returns from `present` only once the servers the CA asks answer the new value, so
//! the pipeline needs no fixed sleep before asking the CA to validate. The pipeline cleans up only after
//! every authorization of the order is done (`acme::AcmeClient::issue`): some hooks delete the whole TXT set
//! at an owner, which a name and its wildcard share.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub mod acme_dns;
mod build;
pub mod cloudflare;
pub mod config;
pub(crate) mod dns;
pub mod exec;
mod hosted_http;
pub mod journal;
mod layer;
mod lookup;
pub mod rfc2136;

pub use acme_dns::{AcmeDnsError, AcmeDnsSolver};
pub use build::{DNS_QUERY_TIMEOUT, build};
pub use cloudflare::{CloudflareError, CloudflareSolver};
pub use exec::{ExecError, ExecSolver};
pub use layer::LayeredSolver;
pub use lookup::MAX_CNAME_CHAIN;
pub use rfc2136::{Rfc2136Error, Rfc2136Settings, Rfc2136Solver, TsigAlgorithm, TsigErrorCode};

/// The label RFC 8555 §8.4 puts in front of the validated name.
const CHALLENGE_LABEL: &str = "_acme-challenge";

/// One TXT record of a DNS-01 challenge.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TxtRecord {
    /// The owner: `_acme-challenge.<name>.`, absolute (with the trailing dot).
    pub fqdn: String,
    /// The record's value: the base64url SHA-256 digest of the key authorization (RFC 8555 §8.4). Challenge
    /// values are public once presented, so they may be logged.
    pub value: String,
}

impl TxtRecord {
    /// Returns the record that proves control of `domain` (`*.a.example.com` and `a.example.com` both give
    /// owner `_acme-challenge.a.example.com.`).
    pub fn for_domain(domain: &str, value: impl Into<String>) -> Self {
        Self {
            fqdn: challenge_fqdn(domain),
            value: value.into(),
        }
    }
}

/// The future returned by [`Dns01Solver`] methods: boxed so the trait stays object-safe.
pub type SolverFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SolverError>> + Send + 'a>>;

/// The future returned by [`Dns01Solver::resolve`].
pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<TxtRecord, SolverError>> + Send + 'a>>;

/// A way to publish and withdraw DNS-01 challenge records.
///
/// Object-safe, so the renew pipeline can hold a `Box<dyn Dns01Solver>` chosen by configuration.
///
/// Contract for implementations:
/// - Several values may live at one owner at the same time: a certificate for `example.com` and
///   `*.example.com` needs two values at `_acme-challenge.example.com.`. `present` adds, it never replaces.
/// - `cleanup` removes exactly the given value and nothing else, and succeeds when the value is already gone,
///   so the pipeline can call it after any failure (and again after a crash) without checking first.
/// - Calls for different records may run concurrently on one solver.
/// - No error or log line ever carries a credential.
pub trait Dns01Solver: Send + Sync {
    /// Adds `record` and returns only once the zone's authoritative server answers its value.
    ///
    /// # Errors
    ///
    /// When the update is rejected or cannot be sent, or when the value does not become visible within the
    /// solver's propagation timeout ([`SolverError::PropagationTimeout`]).
    fn present<'a>(&'a self, record: &'a TxtRecord) -> SolverFuture<'a>;

    /// Removes exactly this record (this value only). Removing an absent record is `Ok`.
    ///
    /// # Errors
    ///
    /// When the removal is rejected or cannot be sent.
    fn cleanup<'a>(&'a self, record: &'a TxtRecord) -> SolverFuture<'a>;

    /// Checks, before an ACME order is placed, that the records for these owners can be published: the
    /// server answers and holds their zone. An order placed against a dead DNS server only leaves pending
    /// orders behind. The default does nothing.
    ///
    /// # Errors
    /// The same errors `present` would give for the server or the zone.
    fn preflight<'a>(&'a self, owners: &'a [String]) -> SolverFuture<'a> {
        let _ = owners;
        Box::pin(async { Ok(()) })
    }

    /// Checks, for `certkeeper check --online`, that the provider accepts the credentials for these owners:
    /// more than [`Dns01Solver::preflight`] where the provider allows a change that leaves nothing behind
    /// (RFC 2136: add and remove one harmless TXT record). Never leaves a record, never waits for propagation.
    /// The default is [`Dns01Solver::preflight`]; providers that can prove their credentials override it.
    ///
    /// # Errors
    /// The errors `present` or `cleanup` would give for the server, the zone or the credentials.
    fn verify_credentials<'a>(&'a self, owners: &'a [String]) -> SolverFuture<'a> {
        self.preflight(owners)
    }

    /// Returns the record as it is really published: with CNAME following, at the end of the owner's CNAME
    /// chain. `present` and `cleanup` of the returned record act on the same RR, so the journal keeps it and
    /// a later pass removes exactly that even if the CNAME changed. The default: `record` itself.
    ///
    /// # Errors
    /// The CNAME chain cannot be looked up, loops, or is too long.
    fn resolve<'a>(&'a self, record: &'a TxtRecord) -> ResolveFuture<'a> {
        Box::pin(async move { Ok(record.clone()) })
    }
}

/// Returns the absolute owner of the DNS-01 TXT record for `domain`.
///
/// A leading `*.` is dropped (a wildcard is validated at its base name, RFC 8555 §8.4), a trailing dot is
/// accepted, and the result is lower-cased, so every spelling of one name gives one owner.
///
/// # Examples
///
/// ```
/// use certkeeper::solver::challenge_fqdn;
///
/// assert_eq!(challenge_fqdn("*.a.example.com"), "_acme-challenge.a.example.com.");
/// assert_eq!(challenge_fqdn("Example.COM."), "_acme-challenge.example.com.");
/// ```
pub fn challenge_fqdn(domain: &str) -> String {
    let domain = domain.trim();
    let domain = domain.strip_prefix("*.").unwrap_or(domain);
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    format!("{CHALLENGE_LABEL}.{}.", domain.to_ascii_lowercase())
}

/// Why a solver could not present or clean up a record.
///
/// Every message names the DNS server and, where there is one, the record owner, and says what to check next.
/// None carries a TSIG secret or other credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SolverError {
    /// The server could not be reached: name resolution failed, the connection was refused or reset, or no
    /// answer came within the query timeout (after the retries an update gets).
    #[error(
        "DNS server {server} unreachable ({reason}) — is it running? check the DNS provider's `server` setting"
    )]
    Unreachable {
        /// The server as configured (`host:port`).
        server: String,
        /// What went wrong, e.g. `connection refused` or `no answer within 3s`.
        reason: String,
    },

    /// A failure only an RFC 2136 server reports (TSIG, REFUSED, NOTAUTH, an update RCODE).
    #[error(transparent)]
    Rfc2136(#[from] rfc2136::Rfc2136Error),

    /// A failure only an exec hook reports (cannot start, non-zero exit, timeout).
    #[error(transparent)]
    Exec(#[from] exec::ExecError),

    /// A failure only acme-dns reports (credentials, a refused update).
    #[error(transparent)]
    AcmeDns(#[from] acme_dns::AcmeDnsError),

    /// A failure only Cloudflare's API reports (token, zone, a refused record).
    #[error(transparent)]
    Cloudflare(#[from] cloudflare::CloudflareError),

    /// A name the layer above the providers needed (a CNAME, a zone, its NS hosts) could not be looked up.
    #[error(
        "cannot look up {record_type} of `{name}` (asked {servers}; last: {last}) — set the DNS provider's `lookup_servers`, `propagation_servers` or `follow_cname = false`"
    )]
    Lookup {
        /// The name asked for.
        name: String,
        /// The record type asked for.
        record_type: String,
        /// The servers asked, in order.
        servers: String,
        /// What the last of them said.
        last: String,
    },

    /// The CNAME chain at a challenge owner loops or is longer than [`MAX_CNAME_CHAIN`].
    #[error(
        "the CNAME chain at `{owner}` {} ({chain}) — fix the CNAME records of the challenge owner",
        if *looped { "loops" } else { "is too long" }
    )]
    CnameChain {
        /// The challenge owner.
        owner: String,
        /// The names followed, in order.
        chain: String,
        /// True if and only if a name came back (a loop) rather than the chain being too long.
        looped: bool,
    },

    /// The owner is not inside the zone (RCODE NOTZONE, or found out before sending).
    #[error(
        "TXT `{owner}` is not inside zone `{zone}` (server {server}) — fix the DNS provider's `zone` setting, or leave it out to have the zone discovered"
    )]
    NotZone {
        /// The server as configured.
        server: String,
        /// The record owner.
        owner: String,
        /// The zone the update named.
        zone: String,
    },

    /// Zone discovery found no SOA for the owner or any of its parents on the server.
    #[error(
        "DNS server {server} serves no zone containing `{owner}` (no SOA at the owner or any parent) — set the DNS provider's `zone`, or point `server` at the zone's primary"
    )]
    ZoneNotFound {
        /// The server as configured.
        server: String,
        /// The record owner.
        owner: String,
    },

    /// The update succeeded, but the server did not answer the value within the propagation timeout.
    #[error(
        "DNS server {server} did not answer TXT `{owner}` with the challenge value within {waited:?} (last look: {last}) — check the server's log, or raise the propagation timeout"
    )]
    PropagationTimeout {
        /// The server as configured.
        server: String,
        /// The record owner.
        owner: String,
        /// How long the solver waited.
        waited: Duration,
        /// What the last query returned, e.g. `NOERROR with 1 other value`.
        last: String,
    },

    /// A name in the record or in the settings is not a valid DNS name.
    #[error("`{name}` is not a valid DNS name ({reason}) — check the {what}")]
    InvalidName {
        /// The offending text.
        name: String,
        /// What the name was meant to be, e.g. `TSIG key name`.
        what: &'static str,
        /// The parser's complaint.
        reason: String,
    },

    /// The DNS message for a record could not be built (a bug, or a value far longer than any challenge).
    #[error(
        "cannot encode the DNS message for TXT `{owner}` ({reason}) — this is a bug; please report it"
    )]
    Encode {
        /// The record owner.
        owner: String,
        /// The encoder's complaint.
        reason: String,
    },

    /// The server sent something that is not a valid answer to our message.
    #[error(
        "DNS server {server} sent a malformed answer ({reason}) — is `server` really a DNS server?"
    )]
    Protocol {
        /// The server as configured.
        server: String,
        /// What was wrong with the answer.
        reason: String,
    },
}

impl SolverError {
    /// Returns true if and only if trying again later may succeed without changing configuration
    /// (the server was unreachable or slow), as opposed to a rejection that will repeat until someone acts.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::PropagationTimeout { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_fqdn_drops_wildcard_and_adds_trailing_dot() {
        assert_eq!(
            challenge_fqdn("*.a.example.com"),
            "_acme-challenge.a.example.com."
        );
        assert_eq!(
            challenge_fqdn("a.example.com"),
            "_acme-challenge.a.example.com."
        );
        assert_eq!(
            challenge_fqdn("a.example.com."),
            "_acme-challenge.a.example.com."
        );
        assert_eq!(
            challenge_fqdn(" Example.COM "),
            "_acme-challenge.example.com."
        );
    }

    #[test]
    fn apex_and_wildcard_share_one_owner() {
        let apex = TxtRecord::for_domain("example.com", "a");
        let wildcard = TxtRecord::for_domain("*.example.com", "b");
        assert_eq!(apex.fqdn, wildcard.fqdn);
    }

    #[test]
    fn solver_is_object_safe() {
        fn takes(_: Option<Box<dyn Dns01Solver>>) {}
        takes(None);
    }
}
