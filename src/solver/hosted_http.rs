//! HTTP for the providers that are web APIs (acme-dns, Cloudflare): one client shape and bounded answers.
//!
//! Like the vendor client (`deploy/emqx/client.rs`): a connect timeout and a whole-request timeout, no
//! redirects (a redirect would carry the credential headers to another host), and bodies read up to
//! [`MAX_BODY`]. What the provider says in an error is shown, cut to [`MESSAGE_SHOWN`] characters.

use std::time::Duration;

use reqwest::StatusCode;

/// How long one request may take, connect included.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read; a longer one is an error.
pub(crate) const MAX_BODY: usize = 1024 * 1024;
/// Most characters of a provider's own message shown in an error.
pub(crate) const MESSAGE_SHOWN: usize = 300;

/// A client for one provider.
///
/// # Errors
/// When the TLS backend cannot be set up.
pub(crate) fn client() -> Result<reqwest::Client, String> {
    // reqwest panics without a process-wide rustls provider; the CLI installs one, a library user may not.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("certkeeper/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| crate::deploy::emqx::client::error_chain(&e))
}

/// Sends `request` and reads the answer, bounded: `(status, body)`, or why nothing usable came back.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, Vec<u8>), String> {
    let mut response = request
        .send()
        .await
        .map_err(|e| crate::deploy::emqx::client::error_chain(&e.without_url()))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| crate::deploy::emqx::client::error_chain(&e.without_url()))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("answer larger than {} KiB", MAX_BODY / 1024));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

/// `text` on one line, at most [`MESSAGE_SHOWN`] characters (an ellipsis marks a cut).
pub(crate) fn bounded(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= MESSAGE_SHOWN {
        line
    } else {
        let cut: String = line.chars().take(MESSAGE_SHOWN).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bounded_keeps_one_short_line() {
        assert_eq!(super::bounded("a\n  b"), "a b");
        let long = "x".repeat(1000);
        assert_eq!(
            super::bounded(&long).chars().count(),
            super::MESSAGE_SHOWN + 1
        );
    }
}
