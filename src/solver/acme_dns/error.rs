//! What only the acme-dns provider reports. Wrapped in [`SolverError::AcmeDns`](super::super::SolverError).

use std::path::PathBuf;

/// Why acme-dns could not take a challenge value, or its credentials could not be used. No message carries a
/// password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeDnsError {
    /// The credentials file has no account for the record's domain.
    #[error(
        "no acme-dns account for `{domain}` in {} — run `certkeeper dns register --dns {dns} --domain {domain}` and create the CNAME it prints",
        file.display()
    )]
    NoAccount {
        /// The `[dns.NAME]` section.
        dns: String,
        /// The domain the record proves (or the owner, when it names no domain).
        domain: String,
        /// The credentials file.
        file: PathBuf,
    },

    /// The credentials file cannot be read or is not in the acme-dns clients' JSON format.
    #[error(
        "cannot use acme-dns credentials file {} ({reason}) — it holds {{\"<domain>\": {{\"username\", \"password\", \"fulldomain\", \"subdomain\"}}}}, as `certkeeper dns register` writes it",
        file.display()
    )]
    Credentials {
        /// The credentials file.
        file: PathBuf,
        /// What was wrong.
        reason: String,
    },

    /// The server could not be reached or sent no usable answer.
    #[error(
        "acme-dns server {server} unreachable ({reason}) — check the DNS provider's `server` setting"
    )]
    Unreachable {
        /// The server's URL.
        server: String,
        /// What went wrong.
        reason: String,
    },

    /// The server refused the request; `message` is its own (bounded).
    #[error("acme-dns server {server} refused {what} ({status}: {message}) — {hint}")]
    Refused {
        /// The server's URL.
        server: String,
        /// What was asked, e.g. `the update of 8e57….auth.example.net`.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The server's `error` field, or its body, bounded.
        message: String,
        /// What to check.
        hint: String,
    },

    /// `dns register` for a domain the credentials file already has an account for.
    #[error(
        "`{domain}` already has an acme-dns account in {} (CNAME target {fulldomain}) — nothing registered; remove its entry from the file first to register anew",
        file.display()
    )]
    AlreadyRegistered {
        /// The domain.
        domain: String,
        /// The credentials file.
        file: PathBuf,
        /// The existing account's `fulldomain`.
        fulldomain: String,
    },

    /// The credentials file could not be written.
    #[error("cannot write acme-dns credentials file {} ({reason}) — check the directory exists and is writable", file.display())]
    Write {
        /// The credentials file.
        file: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// `_acme-challenge.<domain>` is not delegated to the account (no CNAME to its `fulldomain`), so the CA
    /// would never see what acme-dns serves. Found before an order is placed.
    #[error(
        "`{owner}` is not a CNAME to the acme-dns account's {fulldomain} — create `{owner} CNAME {fulldomain}.` in the zone of `{domain}`"
    )]
    NotDelegated {
        /// The challenge owner, `_acme-challenge.<domain>`.
        owner: String,
        /// The domain.
        domain: String,
        /// The account's `fulldomain`.
        fulldomain: String,
    },
}
