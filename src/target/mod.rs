//! Where certificates are deployed. One file per kind of target; `emqx` (EMQX Cloud / EMQX Platform's TLS
//! API) is the only one so far.
//!
//! The design names a `Target { inspect, deploy, wait_active }` trait; with a single kind it would be an
//! indirection without a second user, so `renew` calls [`emqx::EmqxClient`] directly. The trait is extracted
//! when a second kind arrives, from the shape `EmqxClient` already has.

pub mod emqx;
