//! What only an RFC 2136 server reports: TSIG rejections, REFUSED, NOTAUTH, other update RCODEs, and success
//! answers that do not authenticate. Wrapped in [`SolverError::Rfc2136`](super::super::SolverError::Rfc2136).

use std::fmt;

/// Why an RFC 2136 server did not take an update.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rfc2136Error {
    /// The server refused the TSIG signature of an update (RCODE NOTAUTH with a TSIG error, RFC 8945 §5.2).
    #[error(
        "DNS server {server} rejected TSIG key `{key_name}` ({code}) for the update of TXT `{owner}` — {}",
        code.hint()
    )]
    TsigRejected {
        /// The server as configured.
        server: String,
        /// The TSIG key name that signed the update.
        key_name: String,
        /// The record owner the update was for.
        owner: String,
        /// The TSIG error the server returned.
        code: TsigErrorCode,
    },

    /// The server refused the update (RCODE REFUSED): typically its update policy does not cover this key,
    /// owner or record type.
    #[error(
        "DNS server {server} refused the update of TXT `{owner}` — check that the server's ACL allows key `{key_name}` to update TXT records there"
    )]
    Refused {
        /// The server as configured.
        server: String,
        /// The record owner the update was for.
        owner: String,
        /// The TSIG key name that signed the update.
        key_name: String,
    },

    /// The server is not authoritative for the zone named in the update (RCODE NOTAUTH without a TSIG error).
    #[error(
        "DNS server {server} is not authoritative for zone `{zone}` (NOTAUTH) — check the DNS provider's `zone` setting, or point `server` at the zone's primary"
    )]
    NotAuthoritative {
        /// The server as configured.
        server: String,
        /// The zone named in the update.
        zone: String,
    },

    /// Any other failure RCODE for an update (SERVFAIL, FORMERR, NOTIMP, ...).
    #[error(
        "DNS server {server} failed the update of TXT `{owner}` in zone `{zone}` ({rcode}) — check the server's log"
    )]
    UpdateFailed {
        /// The server as configured.
        server: String,
        /// The record owner the update was for.
        owner: String,
        /// The zone the update named.
        zone: String,
        /// The RCODE mnemonic, e.g. `SERVFAIL`.
        rcode: String,
    },

    /// The server claimed success, but the answer did not carry a valid TSIG signature for our key. The
    /// change may or may not have happened; the answer cannot be trusted.
    #[error(
        "the answer of DNS server {server} to the update of TXT `{owner}` is not authenticated ({reason}) — check that the server signs answers with key `{key_name}`, and that nothing between us rewrites DNS"
    )]
    Unauthenticated {
        /// The server as configured.
        server: String,
        /// The record owner the update was for.
        owner: String,
        /// The TSIG key name that signed the update.
        key_name: String,
        /// Why verification failed.
        reason: String,
    },
}

/// The TSIG error a server returned for a signed message (RFC 8945 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TsigErrorCode {
    /// BADKEY (17): the server does not know the key name or algorithm. Knot also answers BADKEY when its
    /// ACL does not allow the key the update (owner or type outside the rule).
    BadKey,
    /// BADSIG (16): the MAC does not verify: the secrets differ.
    BadSig,
    /// BADTIME (18): the signing time is outside the server's fudge window: the clocks differ.
    BadTime,
    /// BADTRUNC (22): the server refused a truncated MAC.
    BadTrunc,
    /// Any other TSIG error code.
    Other(u16),
}

impl TsigErrorCode {
    /// Returns what to check for this error.
    fn hint(self) -> &'static str {
        match self {
            Self::BadKey => {
                "check that tsig_key and tsig_algorithm match a key the server knows, and that the server's ACL \
                 lets this key update TXT records at this owner (Knot reports an ACL denial as BADKEY)"
            }
            Self::BadSig => {
                "the TSIG secret does not match the server's: check tsig_key, tsig_algorithm and the tsig secret"
            }
            Self::BadTime => {
                "this host's clock and the server's differ by more than the 300 s fudge: check NTP on both"
            }
            Self::BadTrunc | Self::Other(_) => {
                "check tsig_key, tsig_algorithm and the tsig secret match the server's key"
            }
        }
    }
}

impl fmt::Display for TsigErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadKey => f.write_str("BADKEY"),
            Self::BadSig => f.write_str("BADSIG"),
            Self::BadTime => f.write_str("BADTIME"),
            Self::BadTrunc => f.write_str("BADTRUNC"),
            Self::Other(code) => write!(f, "TSIG error {code}"),
        }
    }
}
