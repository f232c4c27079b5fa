//! The RFC 2136 solver: DNS UPDATE messages signed with TSIG (RFC 8945), sent to the zone's primary.
//!
//! Works with any primary that accepts TSIG-signed dynamic updates (BIND, Knot, PowerDNS, ...). The server only
//! needs to let the key add and delete TXT records at the `_acme-challenge` owners.
//!
//! Decisions made here:
//! - **Transport.** Updates always go over TCP (RFC 1035 §4.2.2 length prefix): one connection per update, so a
//!   refused connection shows at once, a lost datagram cannot be mistaken for a slow server, and truncation
//!   never arises. Queries (zone discovery, the propagation check) are plain non-recursive UDP to the same
//!   server, repeated over TCP when the answer comes back truncated.
//! - **Authenticity.** Every update is signed, and a success answer counts only if its TSIG verifies with our
//!   key and its time is within the fudge ([`TSIG_FUDGE`]). Error answers are believed even unsigned: RFC 8945
//!   §5.3.2 requires BADKEY and BADSIG answers to be unsigned, and a forged error can make us fail but never
//!   make us believe a record exists.
//! - **Retries.** An update that fails below DNS (connection refused or reset, timeout) is sent again, up to
//!   [`UPDATE_ATTEMPTS`] times in all, freshly signed each time. That is safe because both changes are
//!   idempotent: RFC 2136 §3.4.2 ignores the addition of an RR that exists and the deletion of one that does
//!   not. An answer with an RCODE is final.
//! - **Propagation.** Used alone, after the addition the solver asks the configured server for the TXT RRset
//!   until the value is among the answers, polling from 20 ms doubling to 500 ms (`solver/dns.rs`), until the
//!   propagation timeout. Configured through `[dns.*]` it runs under the shared layer (`solver/layer.rs`),
//!   which asks every authoritative server instead (`check_propagation` off).
//! - **Zone discovery.** Without a configured zone, the solver asks the server for the SOA of the owner, then
//!   of each parent in turn, and takes the owner of the first SOA in the answer or authority section. Results
//!   are cached per owner for the life of the solver. CNAMEs at the owner (challenge delegation) are the
//!   shared layer's to follow: this solver updates the name it is given.
//! - **Secrets.** The TSIG secret stays in its [`SecretSlice`]; a plain copy exists only while one message is
//!   signed or verified (hickory's `TSigner` wants an owned `Vec`). No error or log line carries it.

pub mod config;
mod error;

pub use error::{Rfc2136Error, TsigErrorCode};

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm as HickoryTsigAlgorithm, TsigError};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigVerifier, TSigner};
use secrecy::{ExposeSecret, SecretSlice};
use tokio::time::sleep;
use tracing::debug;

#[cfg(test)]
use super::dns::txt_matches;
use super::dns::{NetError, Server, Transport, exchange, parse_answer, parse_name, rcode_name};
use super::{Dns01Solver, SolverError, SolverFuture, TxtRecord};

/// Suggested [`Rfc2136Settings::query_timeout`].
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Suggested [`Rfc2136Settings::propagation_timeout`].
pub const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(120);

/// TTL of the challenge records we add: short, so resolvers that cached a value forget it soon.
const TXT_TTL: u32 = 60;
/// Allowed difference between our clock and the server's, in seconds (RFC 8945 §10 recommends 300).
const TSIG_FUDGE: u16 = 300;
/// How many times an update is sent when the network fails (the first try included).
const UPDATE_ATTEMPTS: u32 = 3;
/// Pause before the second try of an update; the third waits twice as long.
const UPDATE_RETRY_DELAY: Duration = Duration::from_millis(200);
/// Longest character-string in TXT RDATA (RFC 1035 §3.3).
const TXT_STRING_MAX: usize = 255;

/// A TSIG MAC algorithm, as spelled in configuration and in BIND/Knot key files (`hmac-sha256`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TsigAlgorithm {
    /// `hmac-sha256`
    HmacSha256,
    /// `hmac-sha384`
    HmacSha384,
    /// `hmac-sha512`
    HmacSha512,
}

impl TsigAlgorithm {
    /// Returns the algorithm's name as configuration and RFC 8945 spell it, e.g. `hmac-sha256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::HmacSha384 => "hmac-sha384",
            Self::HmacSha512 => "hmac-sha512",
        }
    }

    fn to_hickory(self) -> HickoryTsigAlgorithm {
        match self {
            Self::HmacSha256 => HickoryTsigAlgorithm::HmacSha256,
            Self::HmacSha384 => HickoryTsigAlgorithm::HmacSha384,
            Self::HmacSha512 => HickoryTsigAlgorithm::HmacSha512,
        }
    }
}

impl fmt::Display for TsigAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where and how to send updates.
#[derive(Clone)]
pub struct Rfc2136Settings {
    /// `host:port` of the zone's primary, the server that accepts updates. Resolved at every operation.
    pub server: String,
    /// Name of the TSIG key as the server knows it, e.g. `acme-update.` (the trailing dot is optional).
    pub key_name: String,
    /// MAC algorithm of the key.
    pub algorithm: TsigAlgorithm,
    /// The key's secret: the decoded bytes, not the base64 text.
    pub secret: SecretSlice<u8>,
    /// The zone to update, e.g. `example.com.`. When `None`, found by SOA queries at `server`.
    pub zone: Option<String>,
    /// Limit for one DNS exchange (connect, send, answer).
    pub query_timeout: Duration,
    /// How long `present` waits for the server to answer the new value.
    pub propagation_timeout: Duration,
    /// Whether `present` waits for the server to answer the value itself. Off under
    /// [`LayeredSolver`](crate::solver::LayeredSolver), which checks propagation for every provider.
    pub check_propagation: bool,
}

impl Rfc2136Settings {
    /// Returns settings with zone discovery and the default timeouts ([`DEFAULT_QUERY_TIMEOUT`],
    /// [`DEFAULT_PROPAGATION_TIMEOUT`]).
    pub fn new(
        server: impl Into<String>,
        key_name: impl Into<String>,
        algorithm: TsigAlgorithm,
        secret: SecretSlice<u8>,
    ) -> Self {
        Self {
            server: server.into(),
            key_name: key_name.into(),
            algorithm,
            secret,
            zone: None,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            propagation_timeout: DEFAULT_PROPAGATION_TIMEOUT,
            check_propagation: true,
        }
    }
}

impl fmt::Debug for Rfc2136Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rfc2136Settings")
            .field("server", &self.server)
            .field("key_name", &self.key_name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .field("zone", &self.zone)
            .field("query_timeout", &self.query_timeout)
            .field("propagation_timeout", &self.propagation_timeout)
            .field("check_propagation", &self.check_propagation)
            .finish()
    }
}

/// A [`Dns01Solver`] that updates the zone's primary with TSIG-signed RFC 2136 messages.
pub struct Rfc2136Solver {
    settings: Rfc2136Settings,
    /// Discovered zones by lower-cased owner. A std mutex: no lock is held across an `.await`.
    zones: Mutex<HashMap<String, Name>>,
}

impl Rfc2136Solver {
    /// Returns a solver for `settings`. Nothing is checked or sent until the first `present` or `cleanup`.
    pub fn new(settings: Rfc2136Settings) -> Self {
        Self {
            settings,
            zones: Mutex::new(HashMap::new()),
        }
    }

    async fn server(&self) -> Result<Server<'_>, SolverError> {
        Server::resolve(&self.settings.server, self.settings.query_timeout).await
    }

    async fn present_record(&self, record: &TxtRecord) -> Result<(), SolverError> {
        let owner = parse_name(&record.fqdn, "record owner")?;
        let server = self.server().await?;
        let zone = self.zone_for(&owner, &server).await?;
        self.update(&server, &zone, &owner, &record.value, Change::Add)
            .await?;
        if !self.settings.check_propagation {
            return Ok(());
        }
        server
            .wait_for_txt(&owner, &record.value, self.settings.propagation_timeout)
            .await
    }

    async fn cleanup_record(&self, record: &TxtRecord) -> Result<(), SolverError> {
        let owner = parse_name(&record.fqdn, "record owner")?;
        let server = self.server().await?;
        let zone = self.zone_for(&owner, &server).await?;
        self.update(&server, &zone, &owner, &record.value, Change::Delete)
            .await
    }

    /// Asks the server for the SOA of each owner's zone: proves it answers and serves the zone.
    async fn preflight_owners(&self, owners: &[String]) -> Result<(), SolverError> {
        let server = self.server().await?;
        for fqdn in owners {
            let owner = parse_name(fqdn, "record owner")?;
            let zone = self.zone_for(&owner, &server).await?;
            // A configured zone is not discovered, so ask for its SOA to reach the server at all.
            if self.settings.zone.is_some() {
                server
                    .query(&zone, RecordType::SOA, self.settings.query_timeout)
                    .await
                    .map_err(|err| err.into_solver_error(&self.settings.server))?;
            }
        }
        Ok(())
    }

    /// Finds each owner's zone, then adds and deletes one TXT record at the first owner with its own random
    /// value: the server checks the TSIG signature and the key's permission on both, and nothing stays.
    async fn verify_owners(&self, owners: &[String]) -> Result<(), SolverError> {
        self.preflight_owners(owners).await?;
        let Some(first) = owners.first() else {
            return Ok(());
        };
        let owner = parse_name(first, "record owner")?;
        let server = self.server().await?;
        let zone = self.zone_for(&owner, &server).await?;
        let value = format!(
            "certkeeper-credentials-check-{:016x}",
            rand::random::<u64>()
        );
        self.update(&server, &zone, &owner, &value, Change::Add)
            .await?;
        self.update(&server, &zone, &owner, &value, Change::Delete)
            .await
    }

    /// Returns the zone that holds `owner`: the configured one, or the one found by SOA queries (cached).
    async fn zone_for(&self, owner: &Name, server: &Server<'_>) -> Result<Name, SolverError> {
        if let Some(zone) = &self.settings.zone {
            let zone = parse_name(zone, "DNS provider's `zone` setting")?;
            if !zone.zone_of(owner) {
                return Err(SolverError::NotZone {
                    server: self.settings.server.clone(),
                    owner: owner.to_ascii(),
                    zone: zone.to_ascii(),
                });
            }
            return Ok(zone);
        }
        let key = owner.to_lowercase().to_ascii();
        if let Some(zone) = self
            .zones
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(zone.clone());
        }
        let zone = server.find_zone(owner).await?;
        self.zones
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, zone.clone());
        Ok(zone)
    }

    /// Sends one update (retrying network failures, see the module docs) and checks its answer.
    async fn update(
        &self,
        server: &Server<'_>,
        zone: &Name,
        owner: &Name,
        value: &str,
        change: Change,
    ) -> Result<(), SolverError> {
        let key_name = parse_name(&self.settings.key_name, "TSIG key name (tsig_key)")?;
        let context = UpdateContext {
            server: &self.settings.server,
            owner,
            zone,
            key_name: &key_name,
            change,
            value,
        };
        let mut attempt = 1;
        loop {
            let id = rand::random();
            let mut message = update_message(id, zone, owner, value, change);
            let (request, verifier) = self.sign(&mut message, &key_name, owner)?;
            match exchange(
                &server.addrs,
                Transport::Tcp,
                &request,
                id,
                self.settings.query_timeout,
            )
            .await
            {
                Ok(answer) => return check_update_answer(&answer, id, verifier, &context),
                Err(err @ NetError::Malformed(_)) => {
                    return Err(err.into_solver_error(context.server));
                }
                Err(err) if attempt < UPDATE_ATTEMPTS => {
                    debug!(server = %context.server, %owner, %change, attempt, error = %err, "UPDATE failed, retrying");
                    sleep(UPDATE_RETRY_DELAY * attempt).await;
                    attempt += 1;
                }
                Err(err) => return Err(err.into_solver_error(context.server)),
            }
        }
    }

    /// Signs `message` with the configured key at the current time; returns its wire form and the verifier
    /// for the answer.
    fn sign(
        &self,
        message: &mut Message,
        key_name: &Name,
        owner: &Name,
    ) -> Result<(Vec<u8>, Option<TSigVerifier>), SolverError> {
        let encode_error = |err: hickory_proto::ProtoError| SolverError::Encode {
            owner: owner.to_ascii(),
            reason: err.to_string(),
        };
        let signer = TSigner::new(
            self.settings.secret.expose_secret().to_vec(),
            self.settings.algorithm.to_hickory(),
            key_name.clone(),
            TSIG_FUDGE,
        )
        // Cannot fail: TSigner::new only rejects algorithms hickory cannot compute, and every TsigAlgorithm
        // variant maps to one it can (hmac-sha256/384/512).
        .expect("hickory supports every TsigAlgorithm");
        let verifier = message
            .finalize(&signer, unix_now())
            .map_err(encode_error)?;
        let request = message.to_vec().map_err(encode_error)?;
        Ok((request, verifier))
    }
}

impl Dns01Solver for Rfc2136Solver {
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
}

impl fmt::Debug for Rfc2136Solver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rfc2136Solver")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The two changes a solver makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// Add one RR to the RRset (RFC 2136 §2.5.1).
    Add,
    /// Delete one RR from the RRset, matched by RDATA (RFC 2136 §2.5.4).
    Delete,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Add => "add",
            Self::Delete => "delete",
        })
    }
}

/// Builds the unsigned UPDATE: zone section `zone SOA IN`, update section one TXT RR at `owner`.
fn update_message(id: u16, zone: &Name, owner: &Name, value: &str, change: Change) -> Message {
    let mut message = Message::new(id, MessageType::Query, OpCode::Update);
    message.metadata.recursion_desired = false;
    let mut zone_section = Query::query(zone.clone(), RecordType::SOA);
    zone_section.set_query_class(DNSClass::IN);
    message.add_zone(zone_section);

    let mut record = Record::from_rdata(owner.clone(), TXT_TTL, RData::TXT(txt_rdata(value)));
    if change == Change::Delete {
        // RFC 2136 §2.5.4: class NONE and TTL 0 delete the RR with this exact RDATA, and only it.
        record.dns_class = DNSClass::NONE;
        record.ttl = 0;
    }
    message.add_update(record);
    message
}

/// Returns the TXT RDATA for `value`, split into character-strings of at most 255 bytes.
fn txt_rdata(value: &str) -> TXT {
    let mut chunks: Vec<&[u8]> = value.as_bytes().chunks(TXT_STRING_MAX).collect();
    if chunks.is_empty() {
        chunks.push(b"");
    }
    TXT::from_bytes(chunks)
}

/// What an update was about, for error messages.
struct UpdateContext<'a> {
    server: &'a str,
    owner: &'a Name,
    zone: &'a Name,
    key_name: &'a Name,
    change: Change,
    value: &'a str,
}

/// Turns the answer to an update into the outcome: `Ok` only for NOERROR with a valid TSIG.
fn check_update_answer(
    answer: &[u8],
    id: u16,
    verifier: Option<TSigVerifier>,
    context: &UpdateContext<'_>,
) -> Result<(), SolverError> {
    let server = context.server.to_owned();
    let owner = context.owner.to_ascii();
    let zone = context.zone.to_ascii();
    let key_name = context.key_name.to_ascii();
    let message = parse_answer(answer, id).map_err(|err| err.into_solver_error(context.server))?;

    let tsig_error = message.signature().and_then(|tsig| tsig.data.error);
    debug!(
        %server,
        %owner,
        %zone,
        change = %context.change,
        value = context.value,
        rcode = %rcode_name(message.response_code),
        ?tsig_error,
        "UPDATE answered"
    );
    let rejected = |code| Rfc2136Error::TsigRejected {
        server: server.clone(),
        key_name: key_name.clone(),
        owner: owner.clone(),
        code,
    };
    if let Some(error) = tsig_error {
        return Err(rejected(tsig_error_code(error)).into());
    }
    match message.response_code {
        ResponseCode::NoError => {}
        ResponseCode::BADSIG => return Err(rejected(TsigErrorCode::BadSig).into()),
        ResponseCode::BADKEY => return Err(rejected(TsigErrorCode::BadKey).into()),
        ResponseCode::BADTIME => return Err(rejected(TsigErrorCode::BadTime).into()),
        ResponseCode::BADTRUNC => return Err(rejected(TsigErrorCode::BadTrunc).into()),
        ResponseCode::Refused => {
            return Err(Rfc2136Error::Refused {
                server,
                owner,
                key_name,
            }
            .into());
        }
        ResponseCode::NotAuth => {
            return Err(Rfc2136Error::NotAuthoritative { server, zone }.into());
        }
        ResponseCode::NotZone => {
            return Err(SolverError::NotZone {
                server,
                owner,
                zone,
            });
        }
        other => {
            return Err(Rfc2136Error::UpdateFailed {
                server,
                owner,
                zone,
                rcode: rcode_name(other),
            }
            .into());
        }
    }

    let unauthenticated = |reason: String| Rfc2136Error::Unauthenticated {
        server: server.clone(),
        owner: owner.clone(),
        key_name: key_name.clone(),
        reason,
    };
    if message.signature().is_none() {
        return Err(unauthenticated("the answer carries no TSIG record".into()).into());
    }
    let Some(mut verifier) = verifier else {
        return Err(unauthenticated("the request was not signed".into()).into());
    };
    verifier
        .verify(answer)
        .map(drop)
        .map_err(|err| unauthenticated(err.to_string()).into())
}

fn tsig_error_code(error: TsigError) -> TsigErrorCode {
    match error {
        TsigError::BadSig => TsigErrorCode::BadSig,
        TsigError::BadKey => TsigErrorCode::BadKey,
        TsigError::BadTime => TsigErrorCode::BadTime,
        TsigError::BadTrunc => TsigErrorCode::BadTrunc,
        TsigError::Unknown(code) => TsigErrorCode::Other(code),
    }
}

/// Seconds since the Unix epoch, for the TSIG time. A clock before 1970 gives 0, which the server then
/// rejects as BADTIME: the error the user needs to see.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests;
