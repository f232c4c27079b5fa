//! The questions a renewal asks before it spends a push or an order: is the saved bundle pushable, is it
//! worth keeping, does the target already run it, and what does the endpoint serve.

use time::OffsetDateTime;

use super::{Pipeline, RenewError, sni};
use crate::certs::{self, Bundle, CertError};
use crate::config::Deployment;
use crate::deploy::{Deployed, Status, TargetError};
use crate::plan;
use crate::state::{CertRecord, Record};

impl Pipeline {
    /// Checks that go beyond a well-formed bundle: what the target will accept.
    pub(super) fn check_pushable(
        &self,
        d: &Deployment,
        bundle: &Bundle,
        now: OffsetDateTime,
    ) -> Result<certs::LeafInfo, RenewError> {
        let info = certs::validate(bundle, &d.domains, now)?;
        match self.target(d).accept(bundle, &info, now) {
            Ok(()) => Ok(info),
            Err(TargetError::Unacceptable(why)) => Err(CertError::Invalid(why).into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Returns true if and only if a saved bundle that fails the push checks may still become pushable as it
    /// is: not yet valid (clock skew), or failing only a target rule the operator can relax. An expired one,
    /// one for other names, or one with another key type than configured is not.
    pub(super) fn worth_keeping(
        &self,
        d: &Deployment,
        bundle: &Bundle,
        now: OffsetDateTime,
    ) -> bool {
        let Some(info) = certs::parse_pem_certs(bundle.chain_pem.as_bytes())
            .ok()
            .and_then(|ders| ders.first().and_then(|der| certs::leaf_info(der).ok()))
        else {
            return false;
        };
        if now < info.not_before {
            return true;
        }
        certs::validate(bundle, &d.domains, now).is_ok()
            && certs::key_type(bundle).is_some_and(|k| k == self.config.acme.key_type)
    }

    /// Returns true if and only if the target is shown to have the saved bundle `info` already (an earlier
    /// push was accepted but not recorded), so that it is waited for rather than pushed again.
    ///
    /// Only a certificate the target is applying or runs counts: one it reports in an unknown status (e.g.
    /// "failed") is pushed again. A serial the target reports decides. Otherwise `expire` decides only when it
    /// tells the bundle from the certificate the deployment ran before; when both expire within
    /// [`plan::SAME_CERT_TOLERANCE`] (a forced re-issue the same day), the endpoint's serial decides, and
    /// without an endpoint the bundle is pushed again — a second push of the same bundle is harmless,
    /// recording a certificate the target does not serve is not.
    pub(super) async fn target_shows(
        &self,
        d: &Deployment,
        record: &Record,
        deployed: &Deployed,
        info: &certs::LeafInfo,
    ) -> bool {
        if !matches!(deployed.status, Status::Running | Status::Pending) {
            return false;
        }
        if let Some(serial) = &deployed.serial {
            return *serial == info.serial;
        }
        let close = |t: OffsetDateTime| (t - info.not_after).abs() <= plan::SAME_CERT_TOLERANCE;
        if !deployed.expire.is_some_and(close) {
            return false;
        }
        let mut before = record
            .expire
            .into_iter()
            .chain(self.active_cert(record).map(|c| c.not_after));
        if !before.any(close) {
            return true;
        }
        let Some(endpoint) = d.endpoint.as_deref() else {
            tracing::info!(
                "the vendor's expiry cannot tell the saved certificate from the one it ran before; pushing it \
                 again to be sure"
            );
            return false;
        };
        match crate::verify::served_leaf(endpoint, &sni(d)).await {
            Ok(served) if served.serial == info.serial => true,
            Ok(served) => {
                tracing::info!(
                    served = %served.serial,
                    saved = %info.serial,
                    "the endpoint serves another certificate than the saved one; pushing it again"
                );
                false
            }
            Err(e) => {
                tracing::info!(
                    endpoint,
                    "cannot read the served certificate ({e}); pushing the saved one again"
                );
                false
            }
        }
    }

    /// With `endpoint` configured, reads the certificate the deployment serves from a handshake: when it is the
    /// one `expire` describes, its lifetime is known and the lifetime rule can plan its renewal.
    pub(super) async fn learn_served(
        &self,
        d: &Deployment,
        expire: Option<OffsetDateTime>,
    ) -> Option<CertRecord> {
        let (endpoint, expire) = (d.endpoint.as_deref()?, expire?);
        match crate::verify::served_leaf(endpoint, &sni(d)).await {
            Ok(served) if (served.not_after - expire).abs() <= plan::SAME_CERT_TOLERANCE => {
                Some(CertRecord {
                    serial: served.serial,
                    not_before: served.not_before,
                    not_after: served.not_after,
                    domains: Vec::new(),
                    leaf_pem: None,
                })
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(endpoint, "cannot read the served certificate: {e}");
                None
            }
        }
    }
}
