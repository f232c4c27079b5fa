//! The CA's renewal window (ARI, RFC 9773) for the active certificate: asked again only when the last
//! answer's Retry-After has passed, with a moment chosen at random inside the window.

use time::OffsetDateTime;

use super::{Pipeline, RenewError, day};
use crate::state::{AriRecord, Record};

/// Bounds on how soon to ask the CA for a renewal window again, whatever its Retry-After says.
const ARI_RECHECK_MIN: time::Duration = time::Duration::minutes(1);
const ARI_RECHECK_MAX: time::Duration = time::Duration::days(1);

impl Pipeline {
    /// Asks the CA for its renewal window of the active certificate when the last answer has expired, and
    /// picks a moment uniformly at random inside a new window.
    pub(super) async fn refresh_ari(
        &self,
        record: &mut Record,
        now: OffsetDateTime,
    ) -> Result<(), RenewError> {
        let Some(cert) = self.active_cert(record).cloned() else {
            return Ok(());
        };
        let Some(leaf) = cert.leaf_pem.as_deref() else {
            return Ok(());
        };
        let fresh = record.ari_next_check.is_some_and(|t| t > now)
            && record.ari.as_ref().is_none_or(|a| a.serial == cert.serial);
        if fresh {
            return Ok(());
        }
        // Only the CA that issued a certificate knows its renewal window.
        let Some(issuer) = self.issuer_at(record.cert_issuer.as_deref()) else {
            record.ari = None;
            return Ok(());
        };
        let acme = self.acme(issuer).await?;
        match acme.renewal_window(leaf).await? {
            None => {
                record.ari = None;
                record.ari_next_check = Some(now + ARI_RECHECK_MAX);
            }
            Some((start, end, retry)) => {
                let same = record
                    .ari
                    .as_ref()
                    .filter(|a| a.serial == cert.serial && a.start == start && a.end == end);
                let chosen = match same {
                    Some(a) => a.chosen,
                    None => {
                        let span = (end - start).max(time::Duration::ZERO);
                        start + span * rand::random::<f64>()
                    }
                };
                tracing::info!(start = %day(start), end = %day(end), chosen = %day(chosen), "the CA's renewal window (ARI)");
                record.ari = Some(AriRecord {
                    serial: cert.serial.clone(),
                    start,
                    end,
                    chosen,
                });
                let retry = time::Duration::try_from(retry).unwrap_or(ARI_RECHECK_MAX);
                record.ari_next_check = Some(now + retry.clamp(ARI_RECHECK_MIN, ARI_RECHECK_MAX));
            }
        }
        Ok(())
    }
}
