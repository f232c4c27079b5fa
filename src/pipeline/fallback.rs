//! A renewal's issuers in order: which may serve the deployment (decided before any order, see
//! [`crate::issuers`]), and ordering from them one after another when a CA fails or gives a certificate the
//! target refuses.
//!
//! A certificate the target refuses is saved before anything else, as every issued certificate is, and its
//! lifetime learned, so the next pass skips that issuer up front; the next issuer's certificate replaces it
//! as the bundle in flight. A CA failure falls back only before the CA was asked to finalize: after that a
//! certificate may exist and the same order is resumed instead. DNS and validation failures do not fall
//! back: the next CA would check the same records.

use time::OffsetDateTime;

use super::{Pipeline, RenewError, cert_record};
use crate::acme::{AcmeError, OrderSpec};
use crate::certs::{self, Bundle, CertError};
use crate::config::Deployment;
use crate::deploy::TargetError;
use crate::issuers::{self, Candidate};
use crate::state::{LearnedLifetime, Record, Step, issuer_key};

impl Pipeline {
    /// The issuers deployment `d` may order from, in order, each skipped one logged with why. Costs no
    /// request.
    ///
    /// # Errors
    /// [`RenewError::NoIssuer`] naming the rule, the lifetimes and what to do when none can serve it.
    pub(super) fn choose(&self, d: &Deployment) -> Result<Vec<Candidate>, RenewError> {
        let log = self.state.issuer_log().unwrap_or_else(|e| {
            tracing::warn!("cannot read the learned issuer lifetimes, deciding without them: {e}");
            Default::default()
        });
        let all = issuers::candidates(&self.config, d, &log, OffsetDateTime::now_utc());
        for c in all.iter().filter(|c| !c.acceptable()) {
            tracing::warn!(
                issuer = %c.name,
                "issuer {} skipped before ordering: {}",
                c.describe(),
                c.refused.as_deref().unwrap_or_default()
            );
        }
        let usable: Vec<Candidate> = all.iter().filter(|c| c.acceptable()).cloned().collect();
        if usable.is_empty() {
            return Err(RenewError::NoIssuer(issuers::none_acceptable(
                &self.config,
                d,
                &all,
            )));
        }
        Ok(usable)
    }

    /// Orders from `candidates` in turn until one gives a certificate the target accepts; each certificate is
    /// saved (step `issued`) before it is checked. `replaces` (the active leaf and the directory of the CA that
    /// issued it) is sent only to that CA. Returns the bundle to push.
    pub(super) async fn issue_with_fallback(
        &self,
        d: &Deployment,
        record: &mut Record,
        candidates: &[Candidate],
        replaces: Option<(&str, &str)>,
        create: bool,
    ) -> Result<Bundle, RenewError> {
        let mut tried = candidates.iter().peekable();
        while let Some(c) = tried.next() {
            let more = tried.peek().is_some();
            let issuer = &self.config.acme.issuers[c.index];
            let spec = OrderSpec {
                domains: &d.domains,
                key_type: issuer.key_type,
                profile: c.profile.as_deref(),
                replaces: replaces
                    .filter(|(_, from)| *from == issuer.directory)
                    .map(|(leaf, _)| leaf),
            };
            if more && let Some(why) = self.unavailable_now(c.index) {
                tracing::warn!(
                    issuer = %c.name,
                    "issuer {} skipped: it failed earlier in this pass ({why})",
                    c.name
                );
                continue;
            }
            if candidates.len() > 1 {
                tracing::info!(issuer = %c.name, "ordering from issuer {} ({})", c.name, issuer.directory);
            }
            let bundle = match self
                .obtain(
                    &self.acme[c.index],
                    issuer,
                    &issuer.directory,
                    d,
                    &spec,
                    true,
                )
                .await
            {
                Ok(bundle) => bundle,
                Err(RenewError::Acme(e @ AcmeError::Ca { .. })) if more => {
                    tracing::warn!(issuer = %c.name, "{e}; falling back to the next issuer");
                    self.mark_unavailable(c.index, &e);
                    self.hold_rate_limited(c, &e);
                    continue;
                }
                Err(RenewError::Acme(e @ AcmeError::Ca { .. })) => {
                    // The last issuer too: the next pass must not spend a request on a CA still limiting.
                    self.hold_rate_limited(c, &e);
                    return Err(RenewError::Acme(e));
                }
                Err(e) => return Err(e),
            };
            self.save_issued(d, record, &bundle, c, create)?;
            let now = OffsetDateTime::now_utc();
            match self.check_pushable(d, &bundle, now) {
                Ok(_) => return Ok(bundle),
                Err(e) if more && self.target_refuses(d, &bundle, now) => {
                    tracing::warn!(
                        issuer = %c.name,
                        "the certificate from issuer {} is kept but cannot be pushed ({e}); its lifetime is \
                         recorded so later passes skip it; trying the next issuer",
                        c.name
                    );
                }
                Err(e) => return Err(e),
            }
        }
        // `choose` gives at least one candidate, and the last one's outcome is returned in the loop.
        Err(RenewError::Config("no issuer is configured".into()))
    }

    /// Remembers for the rest of the pass that issuer `index` is down or rate-limits (a refused order may be
    /// about this deployment's names only, and is not remembered).
    fn mark_unavailable(&self, index: usize, e: &AcmeError) {
        let rate_limited =
            matches!(e, AcmeError::Ca { detail, .. } if detail.contains("rateLimited"));
        if e.is_transient() || rate_limited {
            self.unavailable
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(index, e.to_string());
        }
    }

    /// Records a `rateLimited` answer's Retry-After in the issuers state so later passes (other processes
    /// too) skip the issuer until then, and says so in one line.
    fn hold_rate_limited(&self, c: &Candidate, e: &AcmeError) {
        let Some(wait) = e.rate_limit_retry_after() else {
            return;
        };
        let until = OffsetDateTime::now_utc() + wait;
        let issuer = &self.config.acme.issuers[c.index];
        let key = issuer_key(&issuer.directory, c.profile.as_deref());
        let mut entry = self
            .state
            .issuer_log()
            .ok()
            .and_then(|mut log| log.remove(&key))
            .unwrap_or(LearnedLifetime {
                lifetime_secs: 0,
                serial: String::new(),
                issued: until,
                issuer_key: None,
                rate_limited_until: None,
            });
        entry.rate_limited_until = Some(until);
        let at = until
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        match self.state.save_issuer_lifetime(&key, &entry) {
            Ok(()) => tracing::warn!(
                issuer = %c.name,
                "issuer {} rate-limits: later passes skip it until {at}",
                c.name
            ),
            Err(e) => tracing::warn!(
                issuer = %c.name,
                "cannot record that issuer {} rate-limits until {at}: {e}",
                c.name
            ),
        }
    }

    fn unavailable_now(&self, index: usize) -> Option<String> {
        self.unavailable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&index)
            .cloned()
    }

    /// Starts a pass with every issuer presumed available again.
    pub(super) fn forget_unavailable(&self) {
        self.unavailable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Saves a just-issued bundle and its record (step `issued`), and learns its issuer's lifetime.
    fn save_issued(
        &self,
        d: &Deployment,
        record: &mut Record,
        bundle: &Bundle,
        c: &Candidate,
        create: bool,
    ) -> Result<(), RenewError> {
        // Saved before any check: an issued certificate is never thrown away, whatever the checks say.
        self.state.save_bundle(&d.id, bundle)?;
        self.state.remove_pending_order(&d.id)?;
        fail::fail_point!("issued-saved");
        let leaf = certs::parse_pem_certs(bundle.chain_pem.as_bytes())?
            .into_iter()
            .next()
            .ok_or_else(|| CertError::Invalid("the CA sent no certificate".into()))?;
        let info = certs::leaf_info(&leaf)?;
        let directory = &self.config.acme.issuers[c.index].directory;
        let learned = LearnedLifetime {
            lifetime_secs: u64::try_from((info.not_after - info.not_before).whole_seconds())
                .unwrap_or(0),
            serial: info.serial.clone(),
            issued: info.not_before,
            issuer_key: certs::issuer_key_algorithm(bundle),
            rate_limited_until: None,
        };
        if let Err(e) = self
            .state
            .save_issuer_lifetime(&issuer_key(directory, c.profile.as_deref()), &learned)
        {
            tracing::warn!(issuer = %c.name, "cannot record the issuer's certificate lifetime: {e}");
        }
        record.create = create;
        record.ari = None;
        record.ari_next_check = None;
        record.cert = Some(cert_record(bundle, info, d));
        record.cert_issuer = Some(directory.clone());
        self.persist(d, record, Some(Step::Issued))
    }

    /// Returns true if and only if `bundle` is a good certificate that only the target's own rules refuse
    /// (EMQX's import minimum, the issuer's key): another CA's certificate may pass.
    pub(super) fn target_refuses(
        &self,
        d: &Deployment,
        bundle: &Bundle,
        now: OffsetDateTime,
    ) -> bool {
        certs::validate(bundle, &d.domains, now).is_ok_and(|info| {
            matches!(
                self.target(d).accept(bundle, &info, now),
                Err(TargetError::Unacceptable(_))
            )
        })
    }
}
