//! The DNS wire client the solvers share: one authoritative server asked directly (non-recursive), over UDP
//! with a TCP retry on truncation; zone discovery by SOA; and the propagation check that waits until the server
//! answers a TXT value. RFC 2136 updates use its exchange; propagation checks and CNAME following of other
//! providers build on the same [`Server`].

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, lookup_host};
use tokio::time::{Instant, sleep, timeout};
use tracing::debug;

use super::SolverError;

/// First pause of the propagation check; each later pause doubles, up to [`POLL_MAX_DELAY`].
const POLL_FIRST_DELAY: Duration = Duration::from_millis(20);
/// Longest delay between two propagation queries.
const POLL_MAX_DELAY: Duration = Duration::from_millis(500);
/// EDNS UDP payload size we advertise (the DNS Flag Day 2020 value, safe from IP fragmentation).
const UDP_PAYLOAD: u16 = 1232;

/// One server, resolved: `host:port` as configured (for messages) and its addresses.
#[derive(Debug, Clone)]
pub(crate) struct Server<'a> {
    /// `host:port` as configured.
    pub name: &'a str,
    /// The addresses to try, in order.
    pub addrs: Vec<SocketAddr>,
    /// Limit for one exchange.
    pub query_timeout: Duration,
}

impl<'a> Server<'a> {
    /// Resolves the configured `host:port` to the addresses to try, in order.
    pub(crate) async fn resolve(
        server: &'a str,
        query_timeout: Duration,
    ) -> Result<Server<'a>, SolverError> {
        let unreachable = |reason: String| SolverError::Unreachable {
            server: server.to_owned(),
            reason,
        };
        let addrs: Vec<SocketAddr> = match timeout(query_timeout, lookup_host(server)).await {
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
        Ok(Server {
            name: server,
            addrs,
            query_timeout,
        })
    }

    /// The zone that holds `owner` on this server: the owner of the first SOA found asking for `owner`, then
    /// each parent in turn.
    pub(crate) async fn find_zone(&self, owner: &Name) -> Result<Name, SolverError> {
        let mut candidate = owner.clone();
        loop {
            let answer = self
                .query(&candidate, RecordType::SOA, self.query_timeout)
                .await
                .map_err(|err| err.into_solver_error(self.name))?;
            let soa_owner = answer
                .answers
                .iter()
                .chain(&answer.authorities)
                .find(|r| r.record_type() == RecordType::SOA && r.name.zone_of(owner))
                .map(|r| r.name.clone());
            if let Some(zone) = soa_owner {
                debug!(server = %self.name, %owner, %zone, "zone discovered");
                return Ok(zone);
            }
            if candidate.num_labels() <= 1 {
                return Err(SolverError::ZoneNotFound {
                    server: self.name.to_owned(),
                    owner: owner.to_ascii(),
                });
            }
            candidate = candidate.base_name();
        }
    }

    /// Polls the server until `owner` has a TXT record with `value`, or `propagation_timeout` passes.
    pub(crate) async fn wait_for_txt(
        &self,
        owner: &Name,
        value: &str,
        propagation_timeout: Duration,
    ) -> Result<(), SolverError> {
        let started = Instant::now();
        let deadline = started + propagation_timeout;
        let mut delay = POLL_FIRST_DELAY;
        let mut last;
        loop {
            let limit = self
                .query_timeout
                .min(deadline.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1));
            match self.query(owner, RecordType::TXT, limit).await {
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
                        debug!(server = %self.name, %owner, %value, waited = ?started.elapsed(), "TXT visible");
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
            server: self.name.to_owned(),
            owner: owner.to_ascii(),
            waited: started.elapsed(),
            last,
        })
    }

    /// Asks the server (non-recursively) for `name`/`record_type`: UDP first, TCP if the answer is truncated.
    pub(crate) async fn query(
        &self,
        name: &Name,
        record_type: RecordType,
        limit: Duration,
    ) -> Result<Message, NetError> {
        self.query_rd(name, record_type, limit, false).await
    }

    /// [`Server::query`] with the RD bit as given: set for lookups through a recursive resolver (CNAMEs,
    /// zones, NS records of zones the server does not serve), clear for authoritative servers.
    pub(crate) async fn query_rd(
        &self,
        name: &Name,
        record_type: RecordType,
        limit: Duration,
        recursion_desired: bool,
    ) -> Result<Message, NetError> {
        let id = rand::random();
        let mut request = Message::new(id, MessageType::Query, OpCode::Query);
        request.metadata.recursion_desired = recursion_desired;
        request.add_query(Query::query(name.clone(), record_type));
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        request.set_edns(edns);
        let request = request
            .to_vec()
            .map_err(|err| NetError::Malformed(format!("cannot encode the query: {err}")))?;

        let mut answer = parse_answer(
            &exchange(&self.addrs, Transport::Udp, &request, id, limit).await?,
            id,
        )?;
        if answer.truncation {
            answer = parse_answer(
                &exchange(&self.addrs, Transport::Tcp, &request, id, limit).await?,
                id,
            )?;
        }
        debug!(
            server = %self.name,
            %name,
            %record_type,
            rcode = %rcode_name(answer.response_code),
            answers = answer.answers.len(),
            "query answered"
        );
        Ok(answer)
    }
}

/// Returns true if and only if the character-strings of `txt`, concatenated, equal `value`.
pub(crate) fn txt_matches(txt: &TXT, value: &str) -> bool {
    txt.txt_data
        .iter()
        .flat_map(|s| s.iter())
        .copied()
        .eq(value.bytes())
}

/// Returns the RFC mnemonic of `rcode`, e.g. `SERVFAIL`.
pub(crate) fn rcode_name(rcode: ResponseCode) -> String {
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
pub(crate) fn parse_name(text: &str, what: &'static str) -> Result<Name, SolverError> {
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

/// Why one exchange failed below the DNS layer.
#[derive(Debug)]
pub(crate) enum NetError {
    /// Connecting, sending or receiving failed.
    Io(io::Error),
    /// No answer within the limit.
    Timeout(Duration),
    /// The bytes that came back are not an answer to our message.
    Malformed(String),
}

impl NetError {
    pub(crate) fn into_solver_error(self, server: &str) -> SolverError {
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

/// How a message travels.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Transport {
    /// One datagram each way.
    Udp,
    /// Length-prefixed over one connection (RFC 1035 §4.2.2).
    Tcp,
}

/// Sends `request` to each address in turn until one answers; returns the answer or the last failure.
pub(crate) async fn exchange(
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
pub(crate) fn parse_answer(bytes: &[u8], id: u16) -> Result<Message, NetError> {
    let message = Message::from_vec(bytes).map_err(|err| NetError::Malformed(err.to_string()))?;
    if message.id != id || message.message_type != MessageType::Response {
        return Err(NetError::Malformed(format!(
            "expected the answer to message {id}, got {:?} {}",
            message.message_type, message.id
        )));
    }
    Ok(message)
}
