//! When to renew: the lifetime rule, the operator's override, and the fallback when only `expire` is known.
//!
//! Never a fixed "30 days before expiry" when more is known: lifetimes shrink (Let's Encrypt goes to 64 and
//! then 45 days), so the rule is derived from the lifetime of the certificate the agent itself pushed —
//! renew with 1/3 of it left (1/2 for lifetimes of 10 days or less). The 30-day rule applies only to a
//! certificate the agent knows nothing about but its expiry.

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;

use crate::store::CertRecord;

/// Used when the vendor reports only `expire` for a certificate the agent did not push.
pub const UNKNOWN_CERT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Lifetimes up to this renew at half their life instead of a third.
pub const SHORT_LIFETIME: Duration = Duration::from_secs(10 * 24 * 3600);
/// How far apart the vendor's `expire` and a pushed certificate's notAfter may be and still be the same
/// certificate (the vendor shows seconds; a wrong `expire_timezone` shifts it by hours).
const SAME_CERT_TOLERANCE: time::Duration = time::Duration::days(1);

/// Which rule set the renewal time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The deployment has no certificate.
    NoCertificate,
    /// `renew_before` from the config.
    Override,
    /// A fraction of the lifetime of the certificate the agent pushed.
    Lifetime,
    /// Only `expire` is known.
    ExpiryOnly,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::NoCertificate => "no certificate yet",
            Rule::Override => "renew_before",
            Rule::Lifetime => "lifetime rule",
            Rule::ExpiryOnly => "30 days before expiry (lifetime unknown)",
        })
    }
}

/// When renewal is due and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Renew at or after this moment.
    pub renew_at: OffsetDateTime,
    /// The rule that chose it.
    pub rule: Rule,
}

impl Plan {
    /// Returns true if and only if renewal is due at `now`.
    pub fn is_due(&self, now: OffsetDateTime) -> bool {
        now >= self.renew_at
    }
}

/// Plans the renewal of a deployment whose current certificate expires at `expire` (`None`: none yet).
/// `pushed` is the certificate the agent last made active there, if any.
pub fn plan(expire: Option<OffsetDateTime>, pushed: Option<&CertRecord>, renew_before: Option<Duration>) -> Plan {
    let Some(expire) = expire else {
        return Plan {
            renew_at: OffsetDateTime::UNIX_EPOCH,
            rule: Rule::NoCertificate,
        };
    };
    if let Some(before) = renew_before {
        return Plan {
            renew_at: expire - before,
            rule: Rule::Override,
        };
    }
    if let Some(cert) = pushed.filter(|c| (c.not_after - expire).abs() <= SAME_CERT_TOLERANCE) {
        let lifetime = (cert.not_after - cert.not_before).max(time::Duration::ZERO);
        let left = if lifetime <= SHORT_LIFETIME { lifetime / 2 } else { lifetime / 3 };
        return Plan {
            renew_at: cert.not_after - left,
            rule: Rule::Lifetime,
        };
    }
    Plan {
        renew_at: expire - UNKNOWN_CERT_RENEW_BEFORE,
        rule: Rule::ExpiryOnly,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn cert(days: i64) -> CertRecord {
        let nb = datetime!(2026-01-01 0:00 UTC);
        CertRecord {
            serial: "01".into(),
            not_before: nb,
            not_after: nb + time::Duration::days(days),
            domains: vec![],
        }
    }

    #[test]
    fn no_certificate_is_due_at_once() {
        let p = plan(None, None, None);
        assert!(p.is_due(OffsetDateTime::now_utc()));
        assert_eq!(p.rule, Rule::NoCertificate);
    }

    #[test]
    fn ninety_day_cert_renews_with_a_third_left() {
        let c = cert(90);
        let p = plan(Some(c.not_after), Some(&c), None);
        assert_eq!(p.rule, Rule::Lifetime);
        assert_eq!(p.renew_at, c.not_after - time::Duration::days(30));
    }

    #[test]
    fn six_day_cert_renews_at_half_life() {
        let c = cert(6);
        let p = plan(Some(c.not_after), Some(&c), None);
        assert_eq!(p.renew_at, c.not_after - time::Duration::days(3));
    }

    #[test]
    fn foreign_certificate_uses_thirty_days_and_override_wins() {
        let c = cert(90);
        let other_expiry = c.not_after + time::Duration::days(200);
        let p = plan(Some(other_expiry), Some(&c), None);
        assert_eq!(p.rule, Rule::ExpiryOnly);
        assert_eq!(p.renew_at, other_expiry - time::Duration::days(30));
        let p = plan(Some(c.not_after), Some(&c), Some(Duration::from_secs(5 * 86400)));
        assert_eq!((p.rule, p.renew_at), (Rule::Override, c.not_after - time::Duration::days(5)));
    }
}
