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

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse,
    CertificateIdentifier, ChallengeType, ExternalAccountKey, HttpClient, Identifier, NewAccount,
    NewOrder, Order, OrderStatus, RetryPolicy,
};
use secrecy::ExposeSecret as _;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::certs::{self, Bundle};
use crate::config::{AcmeConfig, KeyType};
use crate::solver::{Dns01Solver, TxtRecord};
use crate::state::{Store, StoreError};

/// Timeout of one HTTP exchange with the CA.
pub const ACME_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one wait on the CA may take: for validation, and again for the certificate.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
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

/// Persisted accounts, one per directory URL, so switching CAs never discards an account key.
#[derive(Default, Serialize, Deserialize)]
struct Accounts {
    accounts: BTreeMap<String, AccountCredentials>,
}

/// An ACME account ready to order certificates.
pub struct AcmeClient {
    account: Account,
    directory: String,
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
    /// Loads the account for `directory` (normally `config.directory`; the staging directory for a dry
    /// run) from the store, or registers one — with External Account Binding when configured — and stores
    /// it (0600) before using it.
    ///
    /// # Errors
    /// [`AcmeError::Ca`] when the CA cannot be reached or refuses; [`AcmeError::Store`].
    pub async fn connect(
        config: &AcmeConfig,
        directory: &str,
        store: &Store,
    ) -> Result<AcmeClient, AcmeError> {
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
        let mut accounts: Accounts = store.accounts()?.unwrap_or_default();
        if let Some(creds) = accounts.accounts.get(&directory) {
            // AccountCredentials is not Clone; a JSON round trip copies it.
            let creds: AccountCredentials =
                serde_json::from_value(serde_json::to_value(creds).map_err(|e| {
                    StoreError::Corrupt {
                        path: store.accounts_path(),
                        detail: e.to_string(),
                    }
                })?)
                .map_err(|e| StoreError::Corrupt {
                    path: store.accounts_path(),
                    detail: e.to_string(),
                })?;
            let account = Account::builder_with_http(Box::new(http))
                .from_credentials(creds)
                .await
                .map_err(ca_err("loading the stored account"))?;
            tracing::debug!(account = account.id(), "reusing the stored ACME account");
            return Ok(AcmeClient { account, directory });
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
        accounts.accounts.insert(directory.clone(), creds);
        store.save_accounts(&accounts)?;
        tracing::info!(account = account.id(), directory = %directory, "registered a new ACME account");
        Ok(AcmeClient { account, directory })
    }

    /// The profiles the CA at `directory` lists, from its directory alone: no account is touched.
    ///
    /// # Errors
    /// [`AcmeError::Ca`] when the directory cannot be fetched or read.
    pub async fn offered_profiles(
        config: &AcmeConfig,
        directory: &str,
    ) -> Result<Vec<String>, AcmeError> {
        let err = |detail: String| AcmeError::Ca {
            directory: directory.to_owned(),
            action: "reading the directory",
            detail,
            transient: true,
        };
        let http = AcmeHttp::new(config.trust_roots.as_deref()).map_err(err)?;
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
        let ca_err = |action: &'static str| {
            move |e: instant_acme::Error| ca_error(&self.directory, action, e)
        };
        let mut order = retrying!(self.account.order(url.to_owned()).await)
            .map_err(ca_err("reloading the order"))?;
        match order.state().status {
            OrderStatus::Ready => {
                let csr = certs::csr_der(key, domains)?;
                retrying!(order.finalize_csr(&csr).await)
                    .map_err(ca_err("finalizing the order"))?;
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
        .map_err(ca_err("downloading the certificate"))?;
        tracing::info!(order = url, "certificate of the saved order fetched");
        Ok(Bundle {
            key_pkcs8_pem: key.clone(),
            chain_pem,
        })
    }

    async fn order(
        &self,
        spec: &OrderSpec<'_>,
        solver: &dyn Dns01Solver,
        before_finalize: &BeforeFinalize<'_>,
        presented: &mut Vec<TxtRecord>,
    ) -> Result<Bundle, AcmeError> {
        let mut order = self.new_order(spec).await?;
        tracing::info!(order = order.url(), names = %spec.domains.join(","), "ACME order created");
        self.answer_challenges(&mut order, solver, presented)
            .await?;
        // 50 ms, 75 ms, 112 ms …: quick for a CA that validates at once, ~20 polls over the whole timeout.
        let policy = poll_policy();
        self.wait_ready(&mut order, &policy).await?;
        self.finalize(&mut order, spec, before_finalize, &policy)
            .await
    }

    /// Creates the order, with `replaces` when the replaced certificate is known; once more without it when
    /// the CA refuses that for a reason that would not heal.
    async fn new_order(&self, spec: &OrderSpec<'_>) -> Result<Order, AcmeError> {
        let OrderSpec {
            domains,
            profile,
            replaces,
            ..
        } = *spec;
        let ca_err = |action: &'static str| {
            move |e: instant_acme::Error| ca_error(&self.directory, action, e)
        };
        let identifiers: Vec<Identifier> =
            domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
        // NewOrder is not Clone: build it where needed.
        let new_order = || match profile {
            Some(profile) => NewOrder::new(&identifiers).profile(profile),
            None => NewOrder::new(&identifiers),
        };
        let replaced = match replaces.map(cert_id).transpose() {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(
                    "cannot identify the certificate being replaced ({e}); ordering without `replaces`"
                );
                None
            }
        };
        let order = match replaced {
            Some(id) => match retrying!(
                self.account
                    .new_order(&new_order().replaces(id.clone()))
                    .await
            ) {
                Ok(order) => order,
                // Trouble reaching the CA is no reason to give up `replaces` (and its rate-limit exemption).
                Err(e) if transient(&e) => return Err(ca_err("creating the order")(e)),
                // Already replaced, unknown to this CA, another account's, or a reply instant-acme finds
                // inconsistent ("replaces field mismatch"): none of these heal; an order without it does.
                Err(e) => {
                    tracing::warn!(
                        "the order with `replaces` failed ({e}); ordering once more without it"
                    );
                    retrying!(self.account.new_order(&new_order()).await)
                        .map_err(ca_err("creating the order"))?
                }
            },
            None => retrying!(self.account.new_order(&new_order()).await)
                .map_err(ca_err("creating the order"))?,
        };
        Ok(order)
    }

    /// Answers every authorization of `order` with DNS-01, publishing each record once (`presented`).
    async fn answer_challenges(
        &self,
        order: &mut Order,
        solver: &dyn Dns01Solver,
        presented: &mut Vec<TxtRecord>,
    ) -> Result<(), AcmeError> {
        let ca_err = |action: &'static str| {
            move |e: instant_acme::Error| ca_error(&self.directory, action, e)
        };
        // Answer every authorization. A transient failure on one is retried in a further round over the same
        // order: instant-acme keeps the authorizations it fetched and refetches only the ones that failed, and
        // `done` skips those already answered (a rejected nonce means the request was not processed).
        let mut done: HashSet<String> = HashSet::new();
        for round in 1..=STEP_ATTEMPTS {
            let mut failed: Option<instant_acme::Error> = None;
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = match authz {
                    Ok(authz) => authz,
                    Err(e) if transient(&e) => {
                        failed = Some(e);
                        continue;
                    }
                    Err(e) => return Err(ca_err("fetching an authorization")(e)),
                };
                let url = authz.url().to_owned();
                if done.contains(&url) {
                    continue;
                }
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => {
                        done.insert(url);
                        continue;
                    }
                    other => {
                        return Err(AcmeError::Ca {
                            directory: self.directory.clone(),
                            action: "authorizing",
                            detail: format!("an authorization is {other:?}; retry later"),
                            transient: false,
                        });
                    }
                }
                let mut challenge =
                    authz
                        .challenge(ChallengeType::Dns01)
                        .ok_or_else(|| AcmeError::Ca {
                            directory: self.directory.clone(),
                            action: "authorizing",
                            detail: "the CA offers no dns-01 challenge".into(),
                            transient: false,
                        })?;
                let name = challenge.identifier().to_string();
                let record =
                    TxtRecord::for_domain(&name, challenge.key_authorization().dns_value());
                if !presented.contains(&record) {
                    tracing::debug!(owner = %record.fqdn, "publishing the DNS-01 record");
                    presented.push(record.clone());
                    solver.present(&record).await?;
                }
                match challenge.set_ready().await {
                    Ok(()) => {
                        done.insert(url);
                    }
                    Err(e) if transient(&e) => failed = Some(e),
                    Err(e) => return Err(ca_err("answering a challenge")(e)),
                }
            }
            match failed {
                None => break,
                Some(e) if round == STEP_ATTEMPTS => {
                    return Err(ca_err("answering the challenges")(e));
                }
                Some(e) => {
                    let wait = backoff(round);
                    tracing::debug!("a challenge step failed ({e}); another round in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Ok(())
    }

    /// Waits until the CA validated every authorization; a failure names the identifier in the CA's words.
    async fn wait_ready(&self, order: &mut Order, policy: &RetryPolicy) -> Result<(), AcmeError> {
        let ca_err = |action: &'static str| {
            move |e: instant_acme::Error| ca_error(&self.directory, action, e)
        };
        let status = retrying!(order.poll_ready(policy).await);
        if !matches!(status, Ok(OrderStatus::Ready)) {
            // Name the failing identifier with the CA's own words, which is what the operator needs.
            let mut authorizations = order.authorizations();
            while let Some(Ok(mut authz)) = authorizations.next().await {
                let _ = authz.refresh().await;
                for challenge in &authz.challenges {
                    if let Some(problem) = &challenge.error {
                        let name = authz.identifier().to_string();
                        return Err(AcmeError::Validation {
                            owner: crate::solver::challenge_fqdn(&name),
                            name,
                            detail: problem
                                .detail
                                .clone()
                                .unwrap_or_else(|| problem.to_string()),
                        });
                    }
                }
            }
            return Err(match status {
                Err(e) => ca_err("waiting for validation")(e),
                Ok(s) => AcmeError::Ca {
                    directory: self.directory.clone(),
                    action: "waiting for validation",
                    detail: format!("the order became {s:?}"),
                    transient: false,
                },
            });
        }
        Ok(())
    }

    /// Generates the certificate's key, saves the order (`before_finalize`), finalizes and downloads.
    async fn finalize(
        &self,
        order: &mut Order,
        spec: &OrderSpec<'_>,
        before_finalize: &BeforeFinalize<'_>,
        policy: &RetryPolicy,
    ) -> Result<Bundle, AcmeError> {
        let OrderSpec {
            domains, key_type, ..
        } = *spec;
        let ca_err = |action: &'static str| {
            move |e: instant_acme::Error| ca_error(&self.directory, action, e)
        };
        let key: SecretString = certs::generate_key(key_type)?;
        let csr = certs::csr_der(&key, domains)?;
        before_finalize(order.url(), &key)?;
        fail::fail_point!("order-saved");
        if let Err(e) = retrying!(order.finalize_csr(&csr).await) {
            // A finalization the CA processed before the connection broke leaves the order processing or
            // valid: then download. Anything else is a real failure.
            let state = retrying!(order.refresh().await.map(|s| s.status));
            if !matches!(state, Ok(OrderStatus::Processing | OrderStatus::Valid)) {
                return Err(ca_err("finalizing the order")(e));
            }
        }
        // The CA may have issued by now: a hiccup from here on is retried on this order, never with a new one,
        // so that no second certificate is issued for the same renewal.
        let chain_pem = retrying!(order.poll_certificate(policy).await, DOWNLOAD_ATTEMPTS)
            .map_err(ca_err("downloading the certificate"))?;
        fail::fail_point!("certificate-downloaded");
        tracing::info!(names = %domains.join(","), "certificate issued");
        Ok(Bundle {
            key_pkcs8_pem: key,
            chain_pem,
        })
    }
}

/// The ARI identifier of a leaf: base64url of its Authority Key Identifier and of its serial's bytes.
fn cert_id(leaf_pem: &str) -> Result<CertificateIdentifier<'static>, AcmeError> {
    use base64::Engine as _;
    use x509_parser::prelude::{FromDer as _, ParsedExtension, X509Certificate};
    let bad = |what: &str| {
        AcmeError::Cert(certs::CertError::Invalid(format!(
            "cannot identify the certificate for ARI: {what}"
        )))
    };
    let der = certs::parse_pem_certs(leaf_pem.as_bytes())?
        .into_iter()
        .next()
        .ok_or_else(|| bad("no certificate"))?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|_| bad("unparsable"))?;
    let aki = cert
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .ok_or_else(|| bad("no Authority Key Identifier"))?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Ok(CertificateIdentifier {
        authority_key_identifier: b64.encode(aki).into(),
        serial: b64.encode(cert.raw_serial()).into(),
    })
}

/// instant-acme's HTTP through reqwest: system roots plus extra roots, and timeouts.
struct AcmeHttp(reqwest::Client);

impl AcmeHttp {
    fn new(trust_roots: Option<&std::path::Path>) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(ACME_REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("certkeeper/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = trust_roots {
            let pem = crate::config::read_bounded(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            for der in certs::parse_pem_certs(&pem).map_err(|e| e.to_string())? {
                let cert = reqwest::Certificate::from_der(&der).map_err(|e| e.to_string())?;
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().map(AcmeHttp).map_err(|e| e.to_string())
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = match http_body_util::BodyExt::collect(body).await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let req = reqwest::Request::try_from(http::Request::from_parts(parts, bytes))
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let mut resp = client
                .execute(req)
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            // Read the body here, bounded, so a misbehaving server cannot make the agent buffer without limit.
            let status = resp.status();
            let headers = std::mem::take(resp.headers_mut());
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?
            {
                if body.len() + chunk.len() > MAX_ACME_BODY {
                    return Err(instant_acme::Error::Other(
                        format!("ACME response body larger than {MAX_ACME_BODY} bytes").into(),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            let mut out = http::Response::new(http_body_util::Full::new(Bytes::from(body)));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok(BytesResponse::from(out))
        })
    }
}
