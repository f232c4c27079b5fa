//! What only the Cloudflare provider reports. Wrapped in [`SolverError::Cloudflare`](super::super::SolverError).

/// Why Cloudflare did not take or remove a record. No message carries the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloudflareError {
    /// The API could not be reached or sent no usable answer.
    #[error(
        "Cloudflare API {api} unreachable ({reason}) — check the network, or the DNS provider's `api_url`"
    )]
    Unreachable {
        /// The API base URL.
        api: String,
        /// What went wrong.
        reason: String,
    },

    /// The API refused a request; `message` is Cloudflare's own (`code: message`, bounded).
    #[error("Cloudflare refused {what} ({status}: {message}) — {hint}")]
    Refused {
        /// What was asked, e.g. `POST /zones/…/dns_records for _acme-challenge.x.example.com`.
        what: String,
        /// The HTTP status.
        status: u16,
        /// Cloudflare's `errors`, bounded.
        message: String,
        /// What to check.
        hint: String,
    },

    /// No zone the token can see contains the owner.
    #[error(
        "no Cloudflare zone visible to the API token contains `{owner}` — check the token's Zone Resources (it needs Zone:DNS:Edit on that zone), or set `zone_id`"
    )]
    NoZone {
        /// The record owner.
        owner: String,
    },
}
