//! When to renew: the CA's ARI window, the lifetime rule, the operator's override, the fallback when only
//! `expire` is known — and, per vendor API key, a schedule that fits every renewal into six writes an hour.
//!
//! Never a fixed "30 days before expiry" when more is known: lifetimes shrink (Let's Encrypt goes to 64 and
//! then 45 days), so the rule is derived from the lifetime of the certificate the agent itself pushed —
//! renew with 1/3 of it left (1/2 for lifetimes of 10 days or less). The CA's ARI window (RFC 9773) may move
//! that earlier, never later, and is ignored once less than 1/20 of the lifetime is left: then it is now.
//! The 30-day rule applies only to a certificate the agent knows nothing about but its expiry.
//!
//! [`schedule`] then looks at all deployments sharing one API key: with `W` writes per window, renewals
//! must start at least `window / W` apart, so it walks back from the latest deadline and moves renewals
//! earlier where they would otherwise queue past their certificate's expiry, and flags the ones that
//! cannot make it even if started now.

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;

use crate::state::CertRecord;

/// Used when the vendor reports only `expire` for a certificate the agent did not push.
pub const UNKNOWN_CERT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Lifetimes up to this renew at half their life instead of a third.
pub const SHORT_LIFETIME: Duration = Duration::from_secs(10 * 24 * 3600);
/// How far apart the vendor's `expire` and a certificate's notAfter may be and still be that certificate: the
/// vendor shows seconds, and a wrong `expire_timezone` shifts it by up to 14 hours, while a renewal moves the
/// expiry by weeks.
pub const SAME_CERT_TOLERANCE: time::Duration = time::Duration::days(1);

/// Which rule set the renewal time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The deployment has no certificate.
    NoCertificate,
    /// `renew_before` from the config.
    Override,
    /// A fraction of the lifetime of the certificate the agent pushed.
    Lifetime,
    /// A moment inside the CA's ARI window.
    Ari,
    /// Less than 1/20 of the lifetime is left.
    NearlyExpired,
    /// Only `expire` is known.
    ExpiryOnly,
    /// Moved earlier so that the vendor's write budget can renew every deployment of the key in time.
    Budget,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::NoCertificate => "no certificate yet",
            Rule::Override => "renew_before",
            Rule::Lifetime => "lifetime rule",
            Rule::Ari => "ARI window",
            Rule::NearlyExpired => "less than 1/20 of the lifetime left",
            Rule::ExpiryOnly => "30 days before expiry (lifetime unknown)",
            Rule::Budget => "moved earlier to fit the vendor's write budget",
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
/// `pushed` is the certificate the agent last made active there, if any; `ari` the moment chosen inside the
/// CA's window for it, if the CA offers one.
pub fn plan(
    expire: Option<OffsetDateTime>,
    pushed: Option<&CertRecord>,
    renew_before: Option<Duration>,
    ari: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Plan {
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
        if now >= cert.not_after - lifetime / 20 {
            return Plan {
                renew_at: now,
                rule: Rule::NearlyExpired,
            };
        }
        let left = if lifetime <= SHORT_LIFETIME {
            lifetime / 2
        } else {
            lifetime / 3
        };
        let by_lifetime = cert.not_after - left;
        return match ari {
            Some(at) if at < by_lifetime => Plan {
                renew_at: at,
                rule: Rule::Ari,
            },
            _ => Plan {
                renew_at: by_lifetime,
                rule: Rule::Lifetime,
            },
        };
    }
    Plan {
        renew_at: expire - UNKNOWN_CERT_RENEW_BEFORE,
        rule: Rule::ExpiryOnly,
    }
}

/// One deployment's place in its API key's write schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The plan before scheduling; replaced by an earlier one where the budget needs it.
    pub plan: Plan,
    /// The latest moment its renewal may start (its certificate's expiry less a margin); `None`: no certificate.
    pub deadline: Option<OffsetDateTime>,
    /// Set by [`schedule`]: the renewal cannot start early enough to finish before the deadline.
    pub at_risk: bool,
}

/// How long before expiry a renewal must have started (one push, its wait, and a retry).
pub const DEADLINE_MARGIN: time::Duration = time::Duration::days(1);

/// Schedules the renewals of deployments sharing one API key that allows `writes` per `window`: moves plans
/// earlier so that consecutive renewals are `window / writes` apart and each starts before its deadline, and
/// marks those that cannot. Returns the indices of `slots` in the order renewals should run (earliest
/// deadline first; deployments without a certificate lead).
pub fn schedule(
    slots: &mut [Slot],
    writes: u32,
    window: Duration,
    now: OffsetDateTime,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..slots.len()).collect();
    order.sort_by_key(|&i| {
        (
            slots[i].deadline.unwrap_or(OffsetDateTime::UNIX_EPOCH),
            slots[i].plan.renew_at,
        )
    });
    let spacing = time::Duration::try_from(window / writes.max(1)).unwrap_or(time::Duration::HOUR);
    // Walk back from the latest deadline: each renewal must start no later than both its own deadline and one
    // spacing before the next one's latest start.
    let mut next_latest: Option<OffsetDateTime> = None;
    for &i in order.iter().rev() {
        let slot = &mut slots[i];
        let Some(deadline) = slot.deadline else {
            continue;
        };
        let latest = match next_latest {
            Some(next) => deadline.min(next - spacing),
            None => deadline,
        };
        next_latest = Some(latest);
        if latest < slot.plan.renew_at {
            slot.plan = Plan {
                renew_at: latest,
                rule: Rule::Budget,
            };
        }
        slot.at_risk = latest < now;
    }
    order
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
            leaf_pem: None,
        }
    }

    #[test]
    fn no_certificate_is_due_at_once() {
        let p = plan(None, None, None, None, OffsetDateTime::now_utc());
        assert!(p.is_due(OffsetDateTime::now_utc()));
        assert_eq!(p.rule, Rule::NoCertificate);
    }

    #[test]
    fn ninety_day_cert_renews_with_a_third_left() {
        let c = cert(90);
        let p = plan(Some(c.not_after), Some(&c), None, None, c.not_before);
        assert_eq!(p.rule, Rule::Lifetime);
        assert_eq!(p.renew_at, c.not_after - time::Duration::days(30));
    }

    #[test]
    fn six_day_cert_renews_at_half_life() {
        let c = cert(6);
        let p = plan(Some(c.not_after), Some(&c), None, None, c.not_before);
        assert_eq!(p.renew_at, c.not_after - time::Duration::days(3));
    }

    #[test]
    fn foreign_certificate_uses_thirty_days_and_override_wins() {
        let c = cert(90);
        let other_expiry = c.not_after + time::Duration::days(200);
        let p = plan(Some(other_expiry), Some(&c), None, None, c.not_before);
        assert_eq!(p.rule, Rule::ExpiryOnly);
        assert_eq!(p.renew_at, other_expiry - time::Duration::days(30));
        let p = plan(
            Some(c.not_after),
            Some(&c),
            Some(Duration::from_secs(5 * 86400)),
            None,
            c.not_before,
        );
        assert_eq!(
            (p.rule, p.renew_at),
            (Rule::Override, c.not_after - time::Duration::days(5))
        );
    }

    #[test]
    fn ari_moves_earlier_never_later_and_is_ignored_near_the_end() {
        let c = cert(90);
        let early = c.not_before + time::Duration::days(10);
        let p = plan(Some(c.not_after), Some(&c), None, Some(early), c.not_before);
        assert_eq!((p.rule, p.renew_at), (Rule::Ari, early));
        let late = c.not_after - time::Duration::days(2);
        let p = plan(Some(c.not_after), Some(&c), None, Some(late), c.not_before);
        assert_eq!(p.rule, Rule::Lifetime);
        let now = c.not_after - time::Duration::days(4);
        let p = plan(Some(c.not_after), Some(&c), None, Some(late), now);
        assert_eq!((p.rule, p.renew_at), (Rule::NearlyExpired, now));
    }

    fn slot(renew_at: OffsetDateTime, deadline: OffsetDateTime) -> Slot {
        Slot {
            plan: Plan {
                renew_at,
                rule: Rule::Lifetime,
            },
            deadline: Some(deadline),
            at_risk: false,
        }
    }

    #[test]
    fn budget_spreads_renewals_before_their_deadlines() {
        let now = datetime!(2026-01-01 0:00 UTC);
        let deadline = now + time::Duration::hours(10);
        // 20 deployments due at the same moment just before one deadline: 6 writes an hour cannot do that
        // in the last hour, so the schedule starts them earlier, 10 minutes apart.
        let mut slots: Vec<Slot> = (0..20).map(|_| slot(deadline, deadline)).collect();
        let order = schedule(&mut slots, 6, Duration::from_secs(3600), now);
        assert_eq!(order.len(), 20);
        let mut starts: Vec<OffsetDateTime> = slots.iter().map(|s| s.plan.renew_at).collect();
        starts.sort();
        for pair in starts.windows(2) {
            assert!(pair[1] - pair[0] >= time::Duration::minutes(10), "{pair:?}");
        }
        assert!(
            slots
                .iter()
                .all(|s| !s.at_risk && s.plan.renew_at <= deadline)
        );
        // With the deadline in 1 hour, 20 renewals cannot all start in time: the earliest are flagged.
        let soon = now + time::Duration::hours(1);
        let mut slots: Vec<Slot> = (0..20).map(|_| slot(soon, soon)).collect();
        schedule(&mut slots, 6, Duration::from_secs(3600), now);
        assert_eq!(slots.iter().filter(|s| s.at_risk).count(), 13);
    }

    #[test]
    fn schedule_orders_by_deadline_with_new_deployments_first() {
        let now = datetime!(2026-01-01 0:00 UTC);
        let mut slots = vec![
            slot(
                now + time::Duration::days(50),
                now + time::Duration::days(80),
            ),
            slot(
                now + time::Duration::days(5),
                now + time::Duration::days(20),
            ),
            Slot {
                plan: plan(None, None, None, None, now),
                deadline: None,
                at_risk: false,
            },
        ];
        assert_eq!(
            schedule(&mut slots, 6, Duration::from_secs(3600), now),
            [2, 1, 0]
        );
        assert_eq!(
            slots[0].plan.rule,
            Rule::Lifetime,
            "far plans are left alone"
        );
    }
}
