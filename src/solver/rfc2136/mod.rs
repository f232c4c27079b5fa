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
//! - **Propagation.** After the addition the solver asks the configured server for the TXT RRset until the
//!   value is among the answers, polling from [`POLL_FIRST_DELAY`] doubling to [`POLL_MAX_DELAY`], until the
//!   propagation timeout. Secondaries are not asked: a CA that reaches a stale secondary is the zone's problem
//!   to fix (NOTIFY), not ours to wait out blindly.
//! - **Zone discovery.** Without a configured zone, the solver asks the server for the SOA of the owner, then
//!   of each parent in turn, and takes the owner of the first SOA in the answer or authority section. Results
//!   are cached per owner for the life of the solver. An owner that is a CNAME into another zone (challenge
//!   delegation) is not followed.
//! - **Secrets.** The TSIG secret stays in its [`SecretSlice`]; a plain copy exists only while one message is
//!   signed or verified (hickory's `TSigner` wants an owned `Vec`). No error or log line carries it.

pub mod config;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm as HickoryTsigAlgorithm, TsigError};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigVerifier, TSigner};
use secrecy::{ExposeSecret, SecretSlice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, lookup_host};
use tokio::time::{Instant, sleep, timeout};
use tracing::debug;

use super::{Dns01Solver, SolverError, SolverFuture, TsigErrorCode, TxtRecord};

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
/// First pause of the propagation check; each later pause doubles, up to [`POLL_MAX_DELAY`].
const POLL_FIRST_DELAY: Duration = Duration::from_millis(20);
/// Longest pause of the propagation check.
const POLL_MAX_DELAY: Duration = Duration::from_millis(500);
/// EDNS UDP payload size we advertise (the DNS Flag Day 2020 value, safe from IP fragmentation).
const UDP_PAYLOAD: u16 = 1232;
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

    async fn present_record(&self, record: &TxtRecord) -> Result<(), SolverError> {
        let owner = parse_name(&record.fqdn, "record owner")?;
        let addrs = self.resolve().await?;
        let zone = self.zone_for(&owner, &addrs).await?;
        self.update(&addrs, &zone, &owner, &record.value, Change::Add)
            .await?;
        self.wait_until_visible(&addrs, &owner, &record.value).await
    }

    async fn cleanup_record(&self, record: &TxtRecord) -> Result<(), SolverError> {
        let owner = parse_name(&record.fqdn, "record owner")?;
        let addrs = self.resolve().await?;
        let zone = self.zone_for(&owner, &addrs).await?;
        self.update(&addrs, &zone, &owner, &record.value, Change::Delete)
            .await
    }

    /// Asks the server for the SOA of each owner's zone: proves it answers and serves the zone.
    async fn preflight_owners(&self, owners: &[String]) -> Result<(), SolverError> {
        let addrs = self.resolve().await?;
        for fqdn in owners {
            let owner = parse_name(fqdn, "record owner")?;
            let zone = self.zone_for(&owner, &addrs).await?;
            // A configured zone is not discovered, so ask for its SOA to reach the server at all.
            if self.settings.zone.is_some() {
                self.query(&addrs, &zone, RecordType::SOA, self.settings.query_timeout)
                    .await
                    .map_err(|err| err.into_solver_error(&self.settings.server))?;
            }
        }
        Ok(())
    }

    /// Resolves the configured `host:port` to the addresses to try, in order.
    async fn resolve(&self) -> Result<Vec<SocketAddr>, SolverError> {
        let server = &self.settings.server;
        let unreachable = |reason: String| SolverError::Unreachable {
            server: server.clone(),
            reason,
        };
        let addrs: Vec<SocketAddr> =
            match timeout(self.settings.query_timeout, lookup_host(server.as_str())).await {
                Ok(Ok(addrs)) => addrs.collect(),
                Ok(Err(err)) => {
                    let has_port = server
                        .rsplit_once(':')
                        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
                    let hint = if has_port { "" } else { "; expected host:port" };
                    return Err(unreachable(format!("cannot resolve it: {err}{hint}")));
                }
                Err(_) => {
                    return Err(unreachable(
                        "cannot resolve it: name lookup timed out".into(),
                    ));
                }
            };
        if addrs.is_empty() {
            return Err(unreachable("its name resolves to no address".into()));
        }
        Ok(addrs)
    }

    /// Returns the zone that holds `owner`: the configured one, or the one found by SOA queries.
    async fn zone_for(&self, owner: &Name, addrs: &[SocketAddr]) -> Result<Name, SolverError> {
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

        let mut candidate = owner.clone();
        loop {
            let answer = self
                .query(
                    addrs,
                    &candidate,
                    RecordType::SOA,
                    self.settings.query_timeout,
                )
                .await
                .map_err(|err| err.into_solver_error(&self.settings.server))?;
            let soa_owner = answer
                .answers
                .iter()
                .chain(&answer.authorities)
                .find(|r| r.record_type() == RecordType::SOA && r.name.zone_of(owner))
                .map(|r| r.name.clone());
            if let Some(zone) = soa_owner {
                debug!(server = %self.settings.server, %owner, %zone, "zone discovered");
                self.zones
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key, zone.clone());
                return Ok(zone);
            }
            if candidate.num_labels() <= 1 {
                return Err(SolverError::ZoneNotFound {
                    server: self.settings.server.clone(),
                    owner: owner.to_ascii(),
                });
            }
            candidate = candidate.base_name();
        }
    }

    /// Sends one update (retrying network failures, see the module docs) and checks its answer.
    async fn update(
        &self,
        addrs: &[SocketAddr],
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
                addrs,
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

    /// Polls the server until `owner` has a TXT record with `value`, or the propagation timeout passes.
    async fn wait_until_visible(
        &self,
        addrs: &[SocketAddr],
        owner: &Name,
        value: &str,
    ) -> Result<(), SolverError> {
        let started = Instant::now();
        let deadline = started + self.settings.propagation_timeout;
        let mut delay = POLL_FIRST_DELAY;
        let mut last;
        loop {
            let limit = self
                .settings
                .query_timeout
                .min(deadline.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1));
            match self.query(addrs, owner, RecordType::TXT, limit).await {
                Ok(answer) => {
                    let values: Vec<&TXT> = answer
                        .answers
                        .iter()
                        .filter(|r| r.name == *owner)
                        .filter_map(|r| match &r.data {
                            RData::TXT(txt) => Some(txt),
                            _ => None,
                        })
                        .collect();
                    if values.iter().any(|txt| txt_matches(txt, value)) {
                        debug!(server = %self.settings.server, %owner, %value, waited = ?started.elapsed(), "TXT visible");
                        return Ok(());
                    }
                    last = format!(
                        "{} with {} other value(s)",
                        rcode_name(answer.response_code),
                        values.len()
                    );
                }
                Err(err) => last = err.to_string(),
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(POLL_MAX_DELAY);
        }
        Err(SolverError::PropagationTimeout {
            server: self.settings.server.clone(),
            owner: owner.to_ascii(),
            waited: started.elapsed(),
            last,
        })
    }

    /// Asks the server (non-recursively) for `name`/`record_type`: UDP first, TCP if the answer is truncated.
    async fn query(
        &self,
        addrs: &[SocketAddr],
        name: &Name,
        record_type: RecordType,
        limit: Duration,
    ) -> Result<Message, NetError> {
        let id = rand::random();
        let mut request = Message::new(id, MessageType::Query, OpCode::Query);
        request.metadata.recursion_desired = false;
        request.add_query(Query::query(name.clone(), record_type));
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        request.set_edns(edns);
        let request = request
            .to_vec()
            .map_err(|err| NetError::Malformed(format!("cannot encode the query: {err}")))?;

        let mut answer = parse_answer(
            &exchange(addrs, Transport::Udp, &request, id, limit).await?,
            id,
        )?;
        if answer.truncation {
            answer = parse_answer(
                &exchange(addrs, Transport::Tcp, &request, id, limit).await?,
                id,
            )?;
        }
        debug!(
            server = %self.settings.server,
            %name,
            %record_type,
            rcode = %rcode_name(answer.response_code),
            answers = answer.answers.len(),
            "query answered"
        );
        Ok(answer)
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

/// Returns true if and only if the character-strings of `txt`, concatenated, equal `value`.
fn txt_matches(txt: &TXT, value: &str) -> bool {
    txt.txt_data
        .iter()
        .flat_map(|s| s.iter())
        .copied()
        .eq(value.bytes())
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
    let rejected = |code| SolverError::TsigRejected {
        server: server.clone(),
        key_name: key_name.clone(),
        owner: owner.clone(),
        code,
    };
    if let Some(error) = tsig_error {
        return Err(rejected(tsig_error_code(error)));
    }
    match message.response_code {
        ResponseCode::NoError => {}
        ResponseCode::BADSIG => return Err(rejected(TsigErrorCode::BadSig)),
        ResponseCode::BADKEY => return Err(rejected(TsigErrorCode::BadKey)),
        ResponseCode::BADTIME => return Err(rejected(TsigErrorCode::BadTime)),
        ResponseCode::BADTRUNC => return Err(rejected(TsigErrorCode::BadTrunc)),
        ResponseCode::Refused => {
            return Err(SolverError::Refused {
                server,
                owner,
                key_name,
            });
        }
        ResponseCode::NotAuth => return Err(SolverError::NotAuthoritative { server, zone }),
        ResponseCode::NotZone => {
            return Err(SolverError::NotZone {
                server,
                owner,
                zone,
            });
        }
        other => {
            return Err(SolverError::UpdateFailed {
                server,
                owner,
                zone,
                rcode: rcode_name(other),
            });
        }
    }

    let unauthenticated = |reason: String| SolverError::Unauthenticated {
        server: server.clone(),
        owner: owner.clone(),
        key_name: key_name.clone(),
        reason,
    };
    if message.signature().is_none() {
        return Err(unauthenticated("the answer carries no TSIG record".into()));
    }
    let Some(mut verifier) = verifier else {
        return Err(unauthenticated("the request was not signed".into()));
    };
    verifier
        .verify(answer)
        .map(drop)
        .map_err(|err| unauthenticated(err.to_string()))
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

/// Returns the RFC mnemonic of `rcode`, e.g. `SERVFAIL`.
fn rcode_name(rcode: ResponseCode) -> String {
    let name = match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::YXDomain => "YXDOMAIN",
        ResponseCode::YXRRSet => "YXRRSET",
        ResponseCode::NXRRSet => "NXRRSET",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::NotZone => "NOTZONE",
        ResponseCode::BADSIG => "BADSIG",
        ResponseCode::BADKEY => "BADKEY",
        ResponseCode::BADTIME => "BADTIME",
        other => return format!("RCODE {}", u16::from(other)),
    };
    name.to_owned()
}

/// Parses `text` as an absolute DNS name.
fn parse_name(text: &str, what: &'static str) -> Result<Name, SolverError> {
    let invalid = |reason: String| SolverError::InvalidName {
        name: text.to_owned(),
        what,
        reason,
    };
    let mut name = Name::from_ascii(text.trim()).map_err(|err| invalid(err.to_string()))?;
    if name.is_root() {
        return Err(invalid("the root is not allowed here".into()));
    }
    name.set_fqdn(true);
    Ok(name)
}

/// Seconds since the Unix epoch, for the TSIG time. A clock before 1970 gives 0, which the server then
/// rejects as BADTIME: the error the user needs to see.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Why one exchange failed below the DNS layer.
#[derive(Debug)]
enum NetError {
    /// Connecting, sending or receiving failed.
    Io(io::Error),
    /// No answer within the limit.
    Timeout(Duration),
    /// The bytes that came back are not an answer to our message.
    Malformed(String),
}

impl NetError {
    fn into_solver_error(self, server: &str) -> SolverError {
        let server = server.to_owned();
        match self {
            Self::Malformed(reason) => SolverError::Protocol { server, reason },
            other => SolverError::Unreachable {
                server,
                reason: other.to_string(),
            },
        }
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(err) => match err.kind() {
                io::ErrorKind::ConnectionRefused => f.write_str("connection refused"),
                io::ErrorKind::ConnectionReset => f.write_str("connection reset"),
                io::ErrorKind::UnexpectedEof => f.write_str("connection closed before the answer"),
                io::ErrorKind::HostUnreachable => f.write_str("host unreachable"),
                io::ErrorKind::NetworkUnreachable => f.write_str("network unreachable"),
                _ => write!(f, "{err}"),
            },
            Self::Timeout(limit) => write!(f, "no answer within {limit:?}"),
            Self::Malformed(reason) => write!(f, "malformed answer: {reason}"),
        }
    }
}

impl From<io::Error> for NetError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Udp,
    Tcp,
}

/// Sends `request` to each address in turn until one answers; returns the answer or the last failure.
async fn exchange(
    addrs: &[SocketAddr],
    transport: Transport,
    request: &[u8],
    id: u16,
    limit: Duration,
) -> Result<Vec<u8>, NetError> {
    let mut last = NetError::Malformed("no address to send to".into());
    for &addr in addrs {
        let result = match transport {
            Transport::Udp => timeout(limit, udp_exchange(addr, request, id)).await,
            Transport::Tcp => timeout(limit, tcp_exchange(addr, request)).await,
        };
        match result {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(err)) => last = NetError::Io(err),
            Err(_) => last = NetError::Timeout(limit),
        }
        debug!(%addr, ?transport, error = %last, "DNS exchange failed");
    }
    Err(last)
}

/// One datagram out, the first datagram back that carries our message id.
async fn udp_exchange(addr: SocketAddr, request: &[u8], id: u16) -> io::Result<Vec<u8>> {
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    // Connecting filters datagrams from other sources and reports ICMP port-unreachable as ECONNREFUSED.
    socket.connect(addr).await?;
    socket.send(request).await?;
    let mut buffer = vec![0; usize::from(u16::MAX)];
    loop {
        let len = socket.recv(&mut buffer).await?;
        // A late answer to an earlier query carries another id: skip it.
        if len >= 2 && buffer[..2] == id.to_be_bytes() {
            buffer.truncate(len);
            return Ok(buffer);
        }
    }
}

/// One connection: the length-prefixed request out, the length-prefixed answer back (RFC 1035 §4.2.2).
async fn tcp_exchange(addr: SocketAddr, request: &[u8]) -> io::Result<Vec<u8>> {
    let len = u16::try_from(request.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "DNS message longer than 65535 bytes",
        )
    })?;
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(request);
    stream.write_all(&framed).await?;
    let mut len = [0; 2];
    stream.read_exact(&mut len).await?;
    let mut answer = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

/// Decodes `bytes` and checks it answers message `id`.
fn parse_answer(bytes: &[u8], id: u16) -> Result<Message, NetError> {
    let message = Message::from_vec(bytes).map_err(|err| NetError::Malformed(err.to_string()))?;
    if message.id != id || message.message_type != MessageType::Response {
        return Err(NetError::Malformed(format!(
            "expected the answer to message {id}, got {:?} {}",
            message.message_type, message.id
        )));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::TSigResponseContext;
    use hickory_proto::rr::rdata::tsig::{TSIG, make_tsig_record};

    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn name(text: &str) -> Name {
        parse_name(text, "test name").unwrap()
    }

    fn signer(key: &[u8]) -> TSigner {
        TSigner::new(
            key.to_vec(),
            HickoryTsigAlgorithm::HmacSha256,
            name("acme-update."),
            TSIG_FUDGE,
        )
        .unwrap()
    }

    fn context<'a>(owner: &'a Name, zone: &'a Name, key_name: &'a Name) -> UpdateContext<'a> {
        UpdateContext {
            server: "127.0.0.1:15353",
            owner,
            zone,
            key_name,
            change: Change::Add,
            value: "v",
        }
    }

    /// Returns a signed update and its verifier, as `Rfc2136Solver::sign` makes them.
    fn signed_update(id: u16) -> (Message, Option<TSigVerifier>) {
        let mut message = update_message(
            id,
            &name("example.test."),
            &name("_acme-challenge.example.test."),
            "v",
            Change::Add,
        );
        let verifier = message.finalize(&signer(KEY), unix_now()).unwrap();
        (message, verifier)
    }

    /// Returns the server's answer to `request` with `rcode`, signed with `key` (or unsigned).
    fn answer(request: &Message, rcode: ResponseCode, key: Option<&[u8]>) -> Vec<u8> {
        let mut response = Message::response(request.id, OpCode::Update);
        response.metadata.response_code = rcode;
        response.add_zone(request.queries[0].clone());
        if let Some(key) = key {
            let request_mac = request.signature().unwrap().data.mac.clone();
            let context =
                TSigResponseContext::new(request.id, unix_now(), signer(key), request_mac, None);
            let tsig = context.sign(&response.to_vec().unwrap()).unwrap();
            response.set_signature(tsig);
        }
        response.to_vec().unwrap()
    }

    #[test]
    fn algorithm_parses_from_config_spelling_and_displays_it() {
        for (text, algorithm) in [
            ("hmac-sha256", TsigAlgorithm::HmacSha256),
            ("hmac-sha384", TsigAlgorithm::HmacSha384),
            ("hmac-sha512", TsigAlgorithm::HmacSha512),
        ] {
            let parsed: TsigAlgorithm = serde_json::from_str(&format!("\"{text}\"")).unwrap();
            assert_eq!(parsed, algorithm);
            assert_eq!(algorithm.to_string(), text);
            assert_eq!(algorithm.to_hickory().to_name().to_ascii(), text);
        }
        assert!(serde_json::from_str::<TsigAlgorithm>("\"hmac-md5\"").is_err());
    }

    #[test]
    fn add_message_has_zone_and_one_txt_rr() {
        let message = update_message(
            7,
            &name("example.test"),
            &name("_acme-challenge.a.example.test."),
            "token",
            Change::Add,
        );
        assert_eq!(message.op_code, OpCode::Update);
        assert!(!message.recursion_desired);
        let zone = &message.zones()[0];
        assert_eq!(zone.name().to_ascii(), "example.test.");
        assert_eq!(zone.query_type(), RecordType::SOA);
        assert_eq!(zone.query_class(), DNSClass::IN);
        assert!(message.prerequisites().is_empty());
        let [update] = message.updates() else {
            panic!("expected one update RR")
        };
        assert_eq!(update.name.to_ascii(), "_acme-challenge.a.example.test.");
        assert_eq!(update.dns_class, DNSClass::IN);
        assert_eq!(update.ttl, TXT_TTL);
        let RData::TXT(txt) = &update.data else {
            panic!("expected TXT")
        };
        assert!(txt_matches(txt, "token"));
    }

    #[test]
    fn delete_message_removes_only_this_rdata() {
        let message = update_message(
            7,
            &name("example.test."),
            &name("_acme-challenge.example.test."),
            "token",
            Change::Delete,
        );
        let [update] = message.updates() else {
            panic!("expected one update RR")
        };
        assert_eq!(update.dns_class, DNSClass::NONE);
        assert_eq!(update.ttl, 0);
        let RData::TXT(txt) = &update.data else {
            panic!("expected TXT")
        };
        assert!(txt_matches(txt, "token"));
    }

    #[test]
    fn update_survives_the_wire_and_its_signature_verifies() {
        let (message, _) = signed_update(9);
        let bytes = message.to_vec().unwrap();
        let decoded = Message::from_vec(&bytes).unwrap();
        assert_eq!(decoded.updates().len(), 1);
        assert_eq!(decoded.signature().unwrap().name.to_ascii(), "acme-update.");
        signer(KEY).verify_message_byte(&bytes, None, true).unwrap();
        assert!(
            signer(b"another key")
                .verify_message_byte(&bytes, None, true)
                .is_err()
        );
    }

    #[test]
    fn long_values_split_into_255_byte_strings() {
        let value = "x".repeat(600);
        let txt = txt_rdata(&value);
        let lengths: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
        assert_eq!(lengths, [255, 255, 90]);
        assert!(txt_matches(&txt, &value));
        assert!(!txt_matches(&txt, "x"));
    }

    #[test]
    fn signed_noerror_answer_is_success() {
        let (request, verifier) = signed_update(11);
        let (owner, zone, key) = (
            name("_acme-challenge.example.test."),
            name("example.test."),
            name("acme-update."),
        );
        let bytes = answer(&request, ResponseCode::NoError, Some(KEY));
        check_update_answer(&bytes, 11, verifier, &context(&owner, &zone, &key)).unwrap();
    }

    #[test]
    fn unsigned_or_badly_signed_noerror_is_unauthenticated() {
        let (owner, zone, key) = (
            name("_acme-challenge.example.test."),
            name("example.test."),
            name("acme-update."),
        );
        for signing_key in [None, Some(&b"forged"[..])] {
            let (request, verifier) = signed_update(12);
            let bytes = answer(&request, ResponseCode::NoError, signing_key);
            let err = check_update_answer(&bytes, 12, verifier, &context(&owner, &zone, &key))
                .unwrap_err();
            assert!(matches!(err, SolverError::Unauthenticated { .. }), "{err}");
        }
    }

    #[test]
    fn rcodes_map_to_errors_that_say_what_to_check() {
        let (owner, zone, key) = (
            name("_acme-challenge.example.test."),
            name("example.test."),
            name("acme-update."),
        );
        let cases = [
            (
                ResponseCode::Refused,
                "refused the update of TXT `_acme-challenge.example.test.`",
            ),
            (
                ResponseCode::NotAuth,
                "not authoritative for zone `example.test.`",
            ),
            (ResponseCode::NotZone, "is not inside zone `example.test.`"),
            (ResponseCode::ServFail, "(SERVFAIL)"),
        ];
        for (rcode, expected) in cases {
            let (request, verifier) = signed_update(13);
            let bytes = answer(&request, rcode, None);
            let err = check_update_answer(&bytes, 13, verifier, &context(&owner, &zone, &key))
                .unwrap_err();
            let text = err.to_string();
            assert!(text.contains(expected), "{rcode:?}: {text}");
            assert!(text.contains("127.0.0.1:15353"), "{text}");
        }
    }

    #[test]
    fn unsigned_tsig_error_answer_is_a_tsig_rejection() {
        let (owner, zone, key) = (
            name("_acme-challenge.example.test."),
            name("example.test."),
            name("acme-update."),
        );
        for (error, code) in [
            (TsigError::BadKey, TsigErrorCode::BadKey),
            (TsigError::BadSig, TsigErrorCode::BadSig),
            (TsigError::BadTime, TsigErrorCode::BadTime),
        ] {
            let (request, verifier) = signed_update(16);
            // As RFC 8945 §5.3.2 has it (and Knot does): NOTAUTH, and a TSIG RR with the error and no MAC.
            let mut response =
                Message::from_vec(&answer(&request, ResponseCode::NotAuth, None)).unwrap();
            let stub = TSIG::new(
                HickoryTsigAlgorithm::HmacSha256,
                unix_now(),
                TSIG_FUDGE,
                Vec::new(),
                16,
                Some(error),
                Vec::new(),
            );
            response.set_signature(Box::new(make_tsig_record(key.clone(), stub)));
            let bytes = response.to_vec().unwrap();
            let err = check_update_answer(&bytes, 16, verifier, &context(&owner, &zone, &key))
                .unwrap_err();
            assert!(
                matches!(&err, SolverError::TsigRejected { code: c, .. } if *c == code),
                "{error:?}: {err}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("rejected TSIG key `acme-update.` ({code})")),
                "{err}"
            );
        }
    }

    #[test]
    fn answer_to_another_message_is_malformed() {
        let (owner, zone, key) = (
            name("_acme-challenge.example.test."),
            name("example.test."),
            name("acme-update."),
        );
        let (request, verifier) = signed_update(14);
        let bytes = answer(&request, ResponseCode::NoError, Some(KEY));
        let err =
            check_update_answer(&bytes, 15, verifier, &context(&owner, &zone, &key)).unwrap_err();
        assert!(matches!(err, SolverError::Protocol { .. }), "{err}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let settings = Rfc2136Settings::new(
            "127.0.0.1:53",
            "acme-update.",
            TsigAlgorithm::HmacSha256,
            SecretSlice::from(b"hunter2-secret".to_vec()),
        );
        let solver = Rfc2136Solver::new(settings.clone());
        for text in [format!("{settings:?}"), format!("{solver:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }

    #[test]
    fn names_must_be_valid_and_not_root() {
        assert_eq!(name("example.test").to_ascii(), "example.test.");
        assert!(parse_name(".", "zone").is_err());
        assert!(parse_name("a..b", "zone").is_err());
    }
}
