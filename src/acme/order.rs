//! Placing one order: create it (with `replaces` when possible), answer its DNS-01 challenges, wait for the CA
//! to validate, then generate the key, save the order, finalize and download — each request retried only where
//! repeating it cannot issue a second certificate.

use std::collections::HashSet;

use instant_acme::{
    AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewOrder, Order,
    OrderStatus, RetryPolicy,
};
use secrecy::SecretString;

use super::*;

impl AcmeClient {
    /// Maps an instant-acme failure of `action` to an [`AcmeError`] naming this CA.
    pub(super) fn ca_err(
        &self,
        action: &'static str,
    ) -> impl Fn(instant_acme::Error) -> AcmeError + '_ {
        move |e| {
            let mut err = ca_error(&self.directory, action, e);
            let waited = self
                .retry_after
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let (AcmeError::Ca { detail, .. }, Some(wait)) = (&mut err, waited) {
                detail.push_str(&format!(
                    "{RETRY_AFTER_NOTE}{})",
                    humantime::format_duration(wait)
                ));
            }
            err
        }
    }

    pub(super) async fn order(
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
                Err(e) if transient(&e) => return Err(self.ca_err("creating the order")(e)),
                // Already replaced, unknown to this CA, another account's, or a reply instant-acme finds
                // inconsistent ("replaces field mismatch"): none of these heal; an order without it does.
                Err(e) => {
                    tracing::warn!(
                        "the order with `replaces` failed ({e}); ordering once more without it"
                    );
                    retrying!(self.account.new_order(&new_order()).await)
                        .map_err(self.ca_err("creating the order"))?
                }
            },
            None => retrying!(self.account.new_order(&new_order()).await)
                .map_err(self.ca_err("creating the order"))?,
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
                    Err(e) => return Err(self.ca_err("fetching an authorization")(e)),
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
                    Err(e) => return Err(self.ca_err("answering a challenge")(e)),
                }
            }
            match failed {
                None => break,
                Some(e) if round == STEP_ATTEMPTS => {
                    return Err(self.ca_err("answering the challenges")(e));
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
                Err(e) => self.ca_err("waiting for validation")(e),
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
        let key: SecretString = certs::generate_key(key_type)?;
        let csr = certs::csr_der(&key, domains)?;
        before_finalize(order.url(), &key)?;
        fail::fail_point!("order-saved");
        if let Err(e) = retrying!(order.finalize_csr(&csr).await) {
            // A finalization the CA processed before the connection broke leaves the order processing or
            // valid: then download. Anything else is a real failure.
            let state = retrying!(order.refresh().await.map(|s| s.status));
            if !matches!(state, Ok(OrderStatus::Processing | OrderStatus::Valid)) {
                return Err(self.ca_err("finalizing the order")(e));
            }
        }
        // The CA may have issued by now: a hiccup from here on is retried on this order, never with a new one,
        // so that no second certificate is issued for the same renewal.
        let chain_pem = retrying!(order.poll_certificate(policy).await, DOWNLOAD_ATTEMPTS)
            .map_err(self.ca_err("downloading the certificate"))?;
        fail::fail_point!("certificate-downloaded");
        tracing::info!(names = %domains.join(","), "certificate issued");
        Ok(Bundle {
            key_pkcs8_pem: key,
            chain_pem,
        })
    }
}

/// The ARI identifier of a leaf: base64url of its Authority Key Identifier and of its serial's bytes.
pub(super) fn cert_id(leaf_pem: &str) -> Result<CertificateIdentifier<'static>, AcmeError> {
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
