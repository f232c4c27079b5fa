//! Strict stand-ins of two hosted DNS APIs certkeeper talks to, for its tests: the acme-dns server API
//! ([`acmedns`]) and Cloudflare's API v4 for DNS records ([`cloudflare`]).
//!
//! A stand-in is only right for an API the tests cannot reach, so each is strict and faithful to the public
//! docs (and, for acme-dns, to its open source): auth headers, status codes, error bodies, pagination. Where
//! the docs are silent the stand-in chooses, and its module docs say so.
//!
//! Neither keeps DNS to itself: every record it is given is handed, before the API answers, to a real DNS
//! server as an RFC 2136 update signed with TSIG ([`publish`], through `knsupdate`), so the CA's DNS-01
//! validation of a test is real (Pebble asks knotd, never the stand-in).
//!
//! Both binaries print exactly one line to stdout once listening, `NAME listening on http://HOST:PORT`, log
//! one line per request to stderr (method, path, status, the account or token *id*; never a password, token
//! or body), and keep the API requests they answered for `GET /_admin/log`.
//!
//! # Layout
//!
//! - `publish`: the DNS side: [`Publisher`], `knsupdate` and an in-memory recorder for unit tests.
//! - `serve`: command-line arguments both share, listening, the announce line, the request log.
//! - [`acmedns`]: `POST /register`, `POST /update`.
//! - [`cloudflare`]: `/client/v4/user/tokens/verify`, `/client/v4/zones`, `/client/v4/zones/{id}/dns_records`.

#![warn(missing_docs)]

pub mod acmedns;
pub mod cloudflare;
mod publish;
mod serve;

pub use publish::{Change, Knsupdate, Publisher, Recorder};
pub use serve::{CommonArgs, LogEntry, RequestLog, serve};

#[cfg(test)]
mod tests;
