//! ACME issuance with DNS-01: the account (created once, reused), the order, the challenges, finalization
//! and the chain download, on instant-acme.
//!
//! instant-acme talks HTTP through our own reqwest client ([`AcmeHttp`]) so that the CA's HTTPS trusts the
//! system roots *plus* `trust_roots`, and every exchange has a timeout: a CA that hangs must not hang the
//! agent. Polling is fast at first and backs off (Pebble and Let's Encrypt usually validate in well under a
//! second), never a fixed sleep.
//!
//! TXT records are removed after every attempt, successful or not: a stale record is harmless to the CA
//! but litters the operator's zone.

use std::fmt;
use std::time::Duration;

use instant_acme::{Account, ExternalAccountKey, NewAccount, OrderStatus, RetryPolicy};
use secrecy::ExposeSecret as _;
use secrecy::SecretString;
use time::OffsetDateTime;

use crate::certs::{self, Bundle};
use crate::config::{Issuer, KeyType};
use crate::solver::{Dns01Solver, TxtRecord};
use crate::state::{StateStore, StoreError};

/// Timeout of one HTTP exchange with the CA.
pub const ACME_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one wait on the CA may take: for validation, and again for the certificate.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// How [`AcmeClient`] notes a 429's Retry-After in an error's detail.
const RETRY_AFTER_NOTE: &str = " (the CA's Retry-After: ";

/// First poll delay of an order; doubles up to the CA's `Retry-After` or the timeout.
const FIRST_POLL: Duration = Duration::from_millis(50);
/// How often one ACME step (a request on an existing order) is tried when it fails transiently.
const STEP_ATTEMPTS: u32 = 4;
/// How often the certificate download after finalization is tried.
const DOWNLOAD_ATTEMPTS: u32 = 5;
/// First pause between attempts of a transient failure; doubles each time.
pub const RETRY_BASE: Duration = Duration::from_millis(500);
/// Largest ACME response body accepted (certificate chains are a few KiB).
const MAX_ACME_BODY: usize = 1024 * 1024;

/// Evaluates an instant-acme call again, with [`backoff`], while it fails transiently: badNonce (the
/// request was not processed), serverInternal, network trouble. Safe only for requests that may be repeated.
macro_rules! retrying {
    ($call:expr) => {
        retrying!($call, STEP_ATTEMPTS)
    };
    ($call:expr, $attempts:expr) => {{
        let mut attempt = 1;
        loop {
            match $call {
                Ok(value) => break Ok(value),
                Err(e) if transient(&e) && attempt < $attempts => {
                    let wait = backoff(attempt);
                    tracing::debug!("ACME request failed ({e}); trying again in {wait:?}");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => break Err(e),
            }
        }
    }};
}

/// Exponential backoff with ±25 % jitter for attempt `n` (1-based).
pub fn backoff(n: u32) -> Duration {
    (RETRY_BASE * 2u32.saturating_pow(n.saturating_sub(1))).mul_f64(rand::random_range(0.75..1.25))
}

/// What failed while obtaining a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    /// The CA answered with an error, or could not be reached.
    #[error("ACME CA {directory}: {action} failed: {detail}")]
    Ca {
        /// Directory URL.
        directory: String,
        /// What was being done.
        action: &'static str,
        /// Error chain (never secret: requests are signed, not authenticated with secrets).
        detail: String,
        /// Whether trying again soon may succeed (network trouble, badNonce, serverInternal).
        transient: bool,
    },
    /// DNS-01 validation failed for a name.
    #[error(
        "the CA could not validate {name} with DNS-01: {detail} — check that TXT records at {owner} are visible to the public"
    )]
    Validation {
        /// The identifier.
        name: String,
        /// The owner of the TXT record.
        owner: String,
        /// The CA's problem text.
        detail: String,
    },
    /// Publishing a TXT record failed.
    #[error(transparent)]
    Dns(#[from] crate::solver::SolverError),
    /// Key or certificate handling failed.
    #[error(transparent)]
    Cert(#[from] crate::certs::CertError),
    /// The account file could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AcmeError {
    /// The Retry-After of a `rateLimited` answer, when the CA gave one (as [`AcmeClient`] notes it in the
    /// detail: instant-acme's error drops the header).
    pub fn rate_limit_retry_after(&self) -> Option<std::time::Duration> {
        let AcmeError::Ca { detail, .. } = self else {
            return None;
        };
        if !detail.contains("rateLimited") {
            return None;
        }
        let (_, rest) = detail.rsplit_once(RETRY_AFTER_NOTE)?;
        humantime::parse_duration(rest.split(')').next()?).ok()
    }

    /// Returns true if and only if trying again shortly may succeed: the CA or the network hiccuped, or the
    /// DNS server was unreachable. Validation failures are never transient (Let's Encrypt allows five failed
    /// validations per name per hour).
    pub fn is_transient(&self) -> bool {
        match self {
            AcmeError::Ca { transient, .. } => *transient,
            AcmeError::Dns(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// Whether an instant-acme error may heal by itself.
fn transient(e: &instant_acme::Error) -> bool {
    match e {
        instant_acme::Error::Api(problem) => {
            matches!(
                problem.r#type.as_deref(),
                Some(
                    "urn:ietf:params:acme:error:badNonce"
                        | "urn:ietf:params:acme:error:serverInternal"
                )
            ) || problem.status.is_some_and(|s| s >= 500)
        }
        // instant-acme's Timeout means a whole poll ran out (ORDER_TIMEOUT): starting over would only repeat it.
        instant_acme::Error::Other(_) => true,
        _ => false,
    }
}

fn ca_error(directory: &str, action: &'static str, e: instant_acme::Error) -> AcmeError {
    AcmeError::Ca {
        directory: directory.to_owned(),
        action,
        transient: transient(&e),
        detail: crate::deploy::emqx::client::error_chain(&e),
    }
}

/// Persists an order and its key just before finalization (see [`AcmeClient::issue`]).
pub type BeforeFinalize<'a> =
    dyn Fn(&str, &SecretString) -> Result<(), StoreError> + Send + Sync + 'a;

/// 50 ms, 75 ms, 112 ms …: quick for a CA that validates at once, about 20 polls over the whole timeout.
fn poll_policy() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(FIRST_POLL)
        .backoff(1.5)
        .timeout(ORDER_TIMEOUT)
}

/// What to order.
#[derive(Debug, Clone, Copy)]
pub struct OrderSpec<'a> {
    /// Names on the certificate, the primary first.
    pub domains: &'a [String],
    /// Key of the new certificate (always fresh).
    pub key_type: KeyType,
    /// ACME profile, if any.
    pub profile: Option<&'a str>,
    /// PEM of the certificate this one replaces (ARI `replaces`), if any.
    pub replaces: Option<&'a str>,
}

/// An ACME account ready to order certificates.
pub struct AcmeClient {
    account: Account,
    directory: String,
    retry_after: transport::RetryAfter,
}

impl fmt::Debug for AcmeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeClient")
            .field("directory", &self.directory)
            .field("account", &self.account.id())
            .finish()
    }
}

impl AcmeClient {
    /// Loads the account for `directory` (normally `issuer.directory`; the staging directory for a dry
    /// run) from the store, or registers one with the issuer's contacts — and its External Account Binding
    /// when configured — and stores it (0600) before using it.
    ///
    /// Returns also whether the account was registered just now.
    ///
    /// # Errors
    /// [`AcmeError::Ca`] when the CA cannot be reached or refuses; [`AcmeError::Store`].
    pub async fn connect(
        config: &Issuer,
        directory: &str,
        store: &dyn StateStore,
    ) -> Result<(AcmeClient, bool), AcmeError> {
        let directory = directory.to_owned();
        let ca_err = |action: &'static str| {
            let directory = directory.clone();
            move |e: instant_acme::Error| ca_error(&directory, action, e)
        };
        let http =
            AcmeHttp::new(config.trust_roots.as_deref()).map_err(|detail| AcmeError::Ca {
                directory: directory.clone(),
                action: "setting up HTTPS",
                detail,
                transient: false,
            })?;
        let retry_after = http.1.clone();
        if let Some(creds) = store.account(&directory)? {
            let account = Account::builder_with_http(Box::new(http))
                .from_credentials(creds)
                .await
                .map_err(ca_err("loading the stored account"))?;
            tracing::debug!(account = account.id(), "reusing the stored ACME account");
            return Ok((
                AcmeClient {
                    account,
                    directory,
                    retry_after,
                },
                false,
            ));
        }
        let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
        let eab = config
            .eab
            .as_ref()
            .map(|e| ExternalAccountKey::new(e.kid.clone(), e.hmac_key.expose_secret()));
        let (account, creds) = Account::builder_with_http(Box::new(http))
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                directory.clone(),
                eab.as_ref(),
            )
            .await
            .map_err(ca_err("registering an account"))?;
        store.save_account(&directory, &creds)?;
        tracing::info!(account = account.id(), directory = %directory, "registered a new ACME account");
        Ok((
            AcmeClient {
                account,
                directory,
                retry_after,
            },
            true,
        ))
    }

    /// The profiles the CA at `directory` lists, from its directory alone: no account is touched.
    ///
    /// # Errors
    /// [`AcmeError::Ca`] when the directory cannot be fetched or read.
    pub async fn offered_profiles(
        trust_roots: Option<&std::path::Path>,
        directory: &str,
    ) -> Result<Vec<String>, AcmeError> {
        let err = |detail: String| AcmeError::Ca {
            directory: directory.to_owned(),
            action: "reading the directory",
            detail,
            transient: true,
        };
        let http = AcmeHttp::new(trust_roots).map_err(err)?;
        let resp = http
            .0
            .get(directory)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| err(crate::deploy::emqx::client::error_chain(&e)))?;
        let mut resp = resp;
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| err(crate::deploy::emqx::client::error_chain(&e)))?
        {
            if bytes.len() + chunk.len() > MAX_ACME_BODY {
                return Err(err(format!("directory larger than {MAX_ACME_BODY} bytes")));
            }
            bytes.extend_from_slice(&chunk);
        }
        let body: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| err(format!("the directory is not JSON: {e}")))?;
        Ok(body
            .pointer("/meta/profiles")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// Asks the CA for its suggested renewal window (ARI, RFC 9773) of the certificate `leaf_pem`.
    /// Returns `None` when the CA does not offer ARI, else the window and when to ask again.
    ///
    /// # Errors
    /// [`AcmeError::Ca`] when the CA fails to answer; [`AcmeError::Cert`] when the leaf lacks the
    /// Authority Key Identifier ARI needs.
    pub async fn renewal_window(
        &self,
        leaf_pem: &str,
    ) -> Result<Option<(OffsetDateTime, OffsetDateTime, Duration)>, AcmeError> {
        let id = cert_id(leaf_pem)?;
        match self.account.renewal_info(&id).await {
            Ok((info, retry)) => Ok(Some((
                info.suggested_window.start,
                info.suggested_window.end,
                retry,
            ))),
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(ca_error(
                &self.directory,
                "fetching the renewal window (ARI)",
                e,
            )),
        }
    }

    /// Obtains a certificate for `domains` with a fresh key of `key_type`, proving control with DNS-01
    /// through `solver`, ordered with `profile` and, when given, as the replacement of the certificate
    /// `replaces` (PEM; ARI CAs exempt such renewals from rate limits). If the CA rejects the order because of
    /// `replaces`, it is ordered once more without it. TXT records are removed afterwards whatever happened.
    ///
    /// # Errors
    /// See [`AcmeError`].
    ///
    /// `before_finalize` gets the order URL and the new key right before the CA is asked to issue, to persist
    /// them: from then on a certificate may exist, and [`AcmeClient::resume`] can fetch it after a crash.
    pub async fn issue(
        &self,
        spec: &OrderSpec<'_>,
        solver: &dyn Dns01Solver,
        before_finalize: &BeforeFinalize<'_>,
    ) -> Result<Bundle, AcmeError> {
        let mut presented = Vec::new();
        let result = self
            .order(spec, solver, before_finalize, &mut presented)
            .await;
        for record in &presented {
            if let Err(e) = solver.cleanup(record).await {
                tracing::warn!(owner = %record.fqdn, "could not remove the TXT record: {e}");
            }
        }
        result
    }

    /// Fetches the certificate of an order an earlier process was finalizing (saved by `before_finalize`):
    /// finalizes it if the CA never got the request, else downloads what it issued.
    ///
    /// # Errors
    /// [`AcmeError::Ca`]; not transient when the order can no longer give a certificate (invalid, expired).
    pub async fn resume(
        &self,
        url: &str,
        key: &SecretString,
        domains: &[String],
    ) -> Result<Bundle, AcmeError> {
        let mut order = retrying!(self.account.order(url.to_owned()).await)
            .map_err(self.ca_err("reloading the order"))?;
        match order.state().status {
            OrderStatus::Ready => {
                let csr = certs::csr_der(key, domains)?;
                retrying!(order.finalize_csr(&csr).await)
                    .map_err(self.ca_err("finalizing the order"))?;
            }
            OrderStatus::Processing | OrderStatus::Valid => {}
            other => {
                return Err(AcmeError::Ca {
                    directory: self.directory.clone(),
                    action: "resuming the order",
                    detail: format!("the saved order is {other:?}"),
                    transient: false,
                });
            }
        }
        let chain_pem = retrying!(
            order.poll_certificate(&poll_policy()).await,
            DOWNLOAD_ATTEMPTS
        )
        .map_err(self.ca_err("downloading the certificate"))?;
        tracing::info!(order = url, "certificate of the saved order fetched");
        Ok(Bundle {
            key_pkcs8_pem: key.clone(),
            chain_pem,
        })
    }
}

mod order;
mod transport;

use order::cert_id;
use transport::AcmeHttp;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_retry_after_is_read_back_from_the_detail() {
        let err = |detail: &str| AcmeError::Ca {
            directory: "https://ca.example/dir".into(),
            action: "creating the order",
            detail: detail.into(),
            transient: false,
        };
        let noted = format!(
            "urn:ietf:params:acme:error:rateLimited: too many orders{RETRY_AFTER_NOTE}{})",
            humantime::format_duration(std::time::Duration::from_secs(3723))
        );
        assert_eq!(
            err(&noted).rate_limit_retry_after(),
            Some(std::time::Duration::from_secs(3723))
        );
        assert_eq!(
            err("urn:ietf:params:acme:error:rateLimited: too many orders").rate_limit_retry_after(),
            None,
            "no Retry-After: only the rest of the pass"
        );
        let other = noted.replace("rateLimited", "serverInternal");
        assert_eq!(err(&other).rate_limit_retry_after(), None);
    }
}
