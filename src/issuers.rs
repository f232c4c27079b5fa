//! Which certificate authority serves which deployment, decided before any order.
//!
//! Each deployment tries the configured issuers in order (`[acme]`, then each `[[acme.fallback]]`; only the
//! pinned one with `issuer = "NAME"`). An issuer is skipped up front when the lifetime its certificates are
//! expected to have breaks the target's rule on lifetimes — EMQX refuses a certificate with less than
//! `import_minimum` left, so a CA issuing 45-day certificates can never serve it. The expected lifetime comes,
//! best first, from Let's Encrypt's published schedule (its directories give no lifetime in their profile
//! metadata, only a link to prose), from the certificate the issuer last gave (the [`IssuerLog`]), or from the
//! issuer's declared `lifetime`. An issuer whose lifetime is unknown is tried: what it gives is learned.
//!
//! Pure: no request, so `status` shows the same decision the next pass makes.

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;

use crate::config::{
    Config, Deployment, Issuer, IssuerKeyMatch, LETSENCRYPT, LETSENCRYPT_STAGING, TargetConfig,
};
use crate::state::{IssuerLog, issuer_key};

const DAY: u64 = 24 * 3600;

/// A target's rule on the lifetime of the certificates it accepts, known before ordering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifetimeRule {
    /// A fresh certificate must have more than this left when pushed.
    pub minimum: Duration,
    /// The rule in words, naming the setting: `EMQX's 60-day import rule ([emqx.prod] import_minimum)`.
    pub name: String,
    /// What the operator may change besides the CA.
    pub setting_hint: String,
}

/// The lifetime rule of deployment `d`'s target, if it has one. Files targets accept any lifetime.
pub fn lifetime_rule(config: &Config, d: &Deployment) -> Option<LifetimeRule> {
    match &d.target {
        TargetConfig::Emqx(e) => {
            let account = config.emqx.get(&e.account)?;
            Some(LifetimeRule {
                minimum: account.import_minimum,
                name: format!(
                    "EMQX's {} import rule ([emqx.{}] import_minimum)",
                    span_adjective(account.import_minimum),
                    e.account
                ),
                setting_hint: format!(
                    "lower [emqx.{}] import_minimum only if your EMQX plan accepts it",
                    e.account
                ),
            })
        }
        #[allow(unreachable_patterns)]
        // Targets without a lifetime rule (files, and kinds added later).
        _ => None,
    }
}

/// The name of deployment `d`'s rule that the leaf's key algorithm be the one of its issuer, when its target
/// enforces it: `EMQX's issuer key match rule ([emqx.prod] issuer_key_match = "enforce")`.
pub fn key_match_rule(config: &Config, d: &Deployment) -> Option<String> {
    match &d.target {
        TargetConfig::Emqx(e) => {
            let account = config.emqx.get(&e.account)?;
            (account.issuer_key_match == IssuerKeyMatch::Enforce).then(|| {
                format!(
                    "EMQX's issuer key match rule ([emqx.{}] issuer_key_match = \"enforce\")",
                    e.account
                )
            })
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Why `issuer` cannot serve a deployment under key match rule `rule`: the intermediate of its last
/// certificate (ordered with `profile`) has another key algorithm than the key this deployment would order.
fn key_mismatch(
    rule: Option<&str>,
    issuer: &Issuer,
    profile: Option<&str>,
    log: &IssuerLog,
) -> Option<String> {
    let rule = rule?;
    let learned = log.get(&issuer_key(&issuer.directory, profile))?;
    let intermediate = learned.issuer_key.as_deref()?;
    (intermediate != issuer.key_type.algorithm()).then(|| {
        format!(
            "{rule} refuses it: the certificate it issued on {} was signed by an {intermediate} intermediate, \
             and this deployment's key is {} ({})",
            crate::pipeline::day(learned.issued),
            issuer.key_type,
            issuer.key_type.algorithm()
        )
    })
}

/// Why `issuer` takes no order now: it answered `rateLimited` with a Retry-After that has not passed.
fn rate_limited(
    issuer: &Issuer,
    profile: Option<&str>,
    log: &IssuerLog,
    now: OffsetDateTime,
) -> Option<String> {
    let until = log
        .get(&issuer_key(&issuer.directory, profile))?
        .rate_limited_until
        .filter(|until| *until > now)?;
    Some(format!(
        "the CA rate-limited it until {} (its Retry-After); it is tried again after that",
        until
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    ))
}

/// Where an expected lifetime comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Let's Encrypt's published lifetime of the profile on that date.
    Published,
    /// The last certificate the issuer gave (notBefore given).
    Learned(OffsetDateTime),
    /// The issuer's `lifetime` setting.
    Declared,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Published => f.write_str("Let's Encrypt's published schedule"),
            Source::Learned(at) => write!(
                f,
                "the certificate it issued on {}",
                crate::pipeline::day(*at)
            ),
            Source::Declared => f.write_str("its `lifetime` setting"),
        }
    }
}

/// What one issuer is for one deployment.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Index into [`crate::config::AcmeConfig::issuers`].
    pub index: usize,
    /// The issuer's name.
    pub name: String,
    /// The profile a deployment's order to it carries.
    pub profile: Option<String>,
    /// The lifetime its certificates are expected to have, and why; `None` when unknown.
    pub expected: Option<(Duration, Source)>,
    /// Why it cannot serve the deployment, when it cannot.
    pub refused: Option<String>,
}

impl Candidate {
    /// Returns true if and only if the issuer may be ordered from.
    pub fn acceptable(&self) -> bool {
        self.refused.is_none()
    }

    /// `acme (45 days, from the certificate it issued on 2026-12-03)`.
    pub fn describe(&self) -> String {
        match self.expected {
            Some((lifetime, source)) => {
                format!("{} ({}, from {source})", self.name, span(lifetime))
            }
            None => format!("{} (lifetime not known yet)", self.name),
        }
    }
}

/// The issuers deployment `d` may use, in the order tried, each with its verdict.
pub fn candidates(
    config: &Config,
    d: &Deployment,
    log: &IssuerLog,
    now: OffsetDateTime,
) -> Vec<Candidate> {
    let rule = lifetime_rule(config, d);
    let key_rule = key_match_rule(config, d);
    config
        .acme
        .issuers
        .iter()
        .enumerate()
        .filter(|(i, _)| d.issuer.is_none_or(|pinned| pinned == *i))
        .map(|(index, issuer)| {
            let profile = profile(d, index, issuer).map(str::to_owned);
            let expected = expected_lifetime(issuer, profile.as_deref(), log, now);
            let refused = match (&rule, expected) {
                (Some(rule), Some((lifetime, _))) if lifetime <= rule.minimum => Some(format!(
                    "{} refuses it: its certificates last {}, and a certificate must have more than {} left \
                     when pushed",
                    rule.name,
                    span(lifetime),
                    span(rule.minimum)
                )),
                _ => key_mismatch(key_rule.as_deref(), issuer, profile.as_deref(), log)
                    .or_else(|| rate_limited(issuer, profile.as_deref(), log, now)),
            };
            Candidate {
                index,
                name: issuer.name.clone(),
                profile,
                expected,
                refused,
            }
        })
        .collect()
}

/// The profile of an order of deployment `d` to issuer `index`: the deployment's `profile` applies to the
/// issuer it is pinned to, or to the first issuer when it is not pinned; other issuers keep their own.
pub fn profile<'a>(d: &'a Deployment, index: usize, issuer: &'a Issuer) -> Option<&'a str> {
    let own = d.issuer.unwrap_or(0) == index;
    d.profile
        .as_deref()
        .filter(|_| own)
        .or(issuer.profile.as_deref())
}

/// The lifetime certificates of `issuer` ordered with `profile` are expected to have, and from where.
pub fn expected_lifetime(
    issuer: &Issuer,
    profile: Option<&str>,
    log: &IssuerLog,
    now: OffsetDateTime,
) -> Option<(Duration, Source)> {
    if let Some(published) = letsencrypt_lifetime(&issuer.directory, profile, now) {
        return Some((published, Source::Published));
    }
    if let Some(learned) = log
        .get(&issuer_key(&issuer.directory, profile))
        .filter(|l| l.lifetime_secs > 0)
    {
        return Some((
            Duration::from_secs(learned.lifetime_secs),
            Source::Learned(learned.issued),
        ));
    }
    issuer.lifetime.map(|l| (l, Source::Declared))
}

/// Let's Encrypt's lifetimes as announced: `tlsserver` 45 days, `shortlived` 160 hours, `classic` (the
/// default) 90 days, 64 days from 2027-02-10 and 45 days from 2028-02-16. Unknown profiles: `None`.
pub fn letsencrypt_lifetime(
    directory: &str,
    profile: Option<&str>,
    now: OffsetDateTime,
) -> Option<Duration> {
    if directory != LETSENCRYPT && directory != LETSENCRYPT_STAGING {
        return None;
    }
    match profile {
        Some("tlsserver") => Some(Duration::from_secs(45 * DAY)),
        Some("shortlived") => Some(Duration::from_secs(160 * 3600)),
        None | Some("classic") if now >= datetime!(2028-02-16 00:00 UTC) => {
            Some(Duration::from_secs(45 * DAY))
        }
        None | Some("classic") if now >= datetime!(2027-02-10 00:00 UTC) => {
            Some(Duration::from_secs(64 * DAY))
        }
        None | Some("classic") => Some(Duration::from_secs(90 * DAY)),
        Some(_) => None,
    }
}

/// `45 days`, `160 hours`, to the nearest hour or day (CAs often end validity a second early).
pub fn span(d: Duration) -> String {
    let hours = (d.as_secs() + 1800) / 3600;
    if hours.is_multiple_of(24) || hours >= 240 {
        format!("{} days", (hours + 12) / 24)
    } else {
        format!("{hours} hours")
    }
}

/// `60-day`, `36-hour`.
fn span_adjective(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(DAY) {
        format!("{}-day", secs / DAY)
    } else {
        format!("{}-hour", secs / 3600)
    }
}

/// The message of a deployment no issuer can serve: the rule, each issuer's lifetime, and what to do.
pub fn none_acceptable(config: &Config, d: &Deployment, candidates: &[Candidate]) -> String {
    let lifetime_name = lifetime_rule(config, d).map(|r| r.name);
    if candidates.iter().any(|c| {
        c.refused
            .as_deref()
            .is_some_and(|r| lifetime_name.as_deref().is_none_or(|n| !r.starts_with(n)))
    }) {
        let why: Vec<String> = candidates
            .iter()
            .map(|c| {
                format!(
                    "{}: {}",
                    c.name,
                    c.refused.as_deref().unwrap_or("acceptable")
                )
            })
            .collect();
        return format!(
            "no issuer can serve this deployment: {}; nothing was ordered. For a rate limit, wait or add a \
             [[acme.fallback]] CA; for the key match, set the issuer's key_type to its intermediate's algorithm, \
             add a [[acme.fallback]] CA that signs with the same algorithm as your key, or set \
             issuer_key_match = \"warn\" if your EMQX plan accepts a mixed chain",
            why.join("; ")
        );
    }
    let rule = lifetime_rule(config, d);
    let (rule_name, hint) =
        rule.as_ref()
            .map_or(("the target's rule".to_owned(), String::new()), |r| {
                (
                    format!(
                        "{} (a certificate must have more than {} left when pushed)",
                        r.name,
                        span(r.minimum)
                    ),
                    format!(", or {}", r.setting_hint),
                )
            });
    let issuers: Vec<String> = candidates.iter().map(Candidate::describe).collect();
    let pinned = if d.issuer.is_some() {
        " (the deployment is pinned to it with `issuer`)"
    } else {
        ""
    };
    format!(
        "no issuer can serve this deployment: {rule_name} refuses the certificates of every issuer it may use — \
         {}{pinned}; nothing was ordered. Order with a profile that gives longer certificates, add a [[acme.fallback]] CA with \
         longer ones (90-day CAs such as ZeroSSL or Google Trust Services){hint}",
        issuers.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letsencrypt_schedule() {
        let le = LETSENCRYPT;
        let at = |t| letsencrypt_lifetime(le, None, t).map(|d| d.as_secs() / DAY);
        assert_eq!(at(datetime!(2026-12-03 00:00 UTC)), Some(90));
        assert_eq!(at(datetime!(2027-02-10 00:00 UTC)), Some(64));
        assert_eq!(at(datetime!(2028-02-16 00:00 UTC)), Some(45));
        let now = datetime!(2026-12-03 00:00 UTC);
        assert_eq!(
            letsencrypt_lifetime(le, Some("tlsserver"), now),
            Some(Duration::from_secs(45 * DAY))
        );
        assert_eq!(
            letsencrypt_lifetime(le, Some("shortlived"), now),
            Some(Duration::from_secs(160 * 3600))
        );
        assert_eq!(letsencrypt_lifetime(le, Some("other"), now), None);
        assert_eq!(
            letsencrypt_lifetime("https://acme.zerossl.com/v2/DV90", None, now),
            None
        );
    }

    fn config(extra: &str) -> Result<Config, crate::config::ConfigError> {
        let text = format!(
            r#"state_dir = "/tmp/x"
[acme]
directory = "https://ca.example/dir"
name = "first"
lifetime = "45d"
contact = ["mailto:ops@example.com"]
[[acme.fallback]]
name = "second"
directory = "https://other.example/dir"
eab_kid = "kid"
eab_hmac_key = "c2VjcmV0"
key_type = "rsa-2048"
[[acme.fallback]]
directory = "letsencrypt"
profile = "tlsserver"
[dns.primary]
provider = "rfc2136"
server = "127.0.0.1:53"
tsig_key = "k"
tsig_secret = "c2VjcmV0"
[emqx.prod]
url = "https://api.example/api/v1/"
key = "app"
secret = "s3cret"
[[deployment]]
id = "a"
domains = ["a.example.com"]
{extra}"#
        );
        Config::parse(std::path::Path::new("c.toml"), &text)
    }

    #[test]
    fn fallbacks_resolve_with_names_defaults_and_pins() {
        let c = config(
            "[[deployment]]\nid = \"b\"\ndomains = [\"b.example.com\"]\nissuer = \"second\"\n",
        )
        .unwrap();
        let names: Vec<&str> = c.acme.issuers.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["first", "second", "fallback-2"]);
        let second = &c.acme.issuers[1];
        assert_eq!(
            second.contact,
            ["mailto:ops@example.com"],
            "contacts inherited"
        );
        assert_eq!(second.key_type, crate::config::KeyType::Rsa2048);
        assert!(second.eab.is_some());
        assert_eq!(c.acme.issuers[2].directory, LETSENCRYPT);
        assert_eq!(c.deployments[0].issuer, None);
        assert_eq!(c.deployments[1].issuer, Some(1));
    }

    #[test]
    fn bad_names_and_pins_are_config_errors() {
        let e = config(
            "[[deployment]]\nid = \"b\"\ndomains = [\"b.example.com\"]\nissuer = \"nope\"\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("names no issuer (configured: first, second, fallback-2)"),
            "{e}"
        );
        let e =
            config("[[acme.fallback]]\nname = \"first\"\ndirectory = \"https://x.example/dir\"\n")
                .unwrap_err();
        assert!(
            e.to_string().contains("issuer name `first` is used twice"),
            "{e}"
        );
    }

    #[test]
    fn emqx_skips_short_lifetimes_before_ordering() {
        let c = config("").unwrap();
        let now = datetime!(2026-12-03 00:00 UTC);
        let d = &c.deployments[0];
        let mut log = IssuerLog::new();
        let verdicts = |log: &IssuerLog| {
            candidates(&c, d, log, now)
                .into_iter()
                .map(|c| (c.name.clone(), c.acceptable()))
                .collect::<Vec<_>>()
        };
        // first: declared 45 days; second: unknown, tried; Let's Encrypt tlsserver: 45 days published.
        assert_eq!(
            verdicts(&log),
            [
                ("first".into(), false),
                ("second".into(), true),
                ("fallback-2".into(), false)
            ]
        );
        // What a CA gave wins over what it was declared to give.
        log.insert(
            issuer_key("https://ca.example/dir", None),
            crate::state::LearnedLifetime {
                lifetime_secs: 90 * DAY,
                serial: "01".into(),
                issued: now,
                issuer_key: Some("RSA".into()),
                rate_limited_until: None,
            },
        );
        log.insert(
            issuer_key("https://other.example/dir", None),
            crate::state::LearnedLifetime {
                lifetime_secs: 30 * DAY,
                serial: "02".into(),
                issued: now,
                issuer_key: None,
                rate_limited_until: None,
            },
        );
        assert_eq!(
            verdicts(&log),
            [
                ("first".into(), true),
                ("second".into(), false),
                ("fallback-2".into(), false)
            ]
        );
        let message = none_acceptable(&c, d, &candidates(&c, d, &IssuerLog::new(), now));
        assert!(message.contains("60-day import rule"), "{message}");
    }

    #[test]
    fn enforced_key_match_skips_an_issuer_whose_intermediate_differs() {
        let mut c = config("").unwrap();
        let now = datetime!(2026-12-03 00:00 UTC);
        let d = c.deployments[0].clone();
        let mut log = IssuerLog::new();
        // "second" orders rsa-2048 keys; its last certificate came from an ECDSA intermediate.
        log.insert(
            issuer_key("https://other.example/dir", None),
            crate::state::LearnedLifetime {
                lifetime_secs: 90 * DAY,
                serial: "02".into(),
                issued: now,
                issuer_key: Some("ECDSA".into()),
                rate_limited_until: None,
            },
        );
        let acceptable = |c: &Config, log: &IssuerLog| -> Vec<bool> {
            candidates(c, &d, log, now)
                .iter()
                .map(Candidate::acceptable)
                .collect()
        };
        assert_eq!(
            acceptable(&c, &log),
            [false, true, false],
            "warn: not checked"
        );
        for account in c.emqx.values_mut() {
            account.issuer_key_match = IssuerKeyMatch::Enforce;
        }
        assert_eq!(acceptable(&c, &log), [false, false, false]);
        let refused = candidates(&c, &d, &log, now)[1].refused.clone().unwrap();
        assert!(
            refused.contains("ECDSA intermediate") && refused.contains("rsa-2048"),
            "{refused}"
        );
        let message = none_acceptable(&c, &d, &candidates(&c, &d, &log, now));
        assert!(message.contains("issuer_key_match"), "{message}");
        // A matching intermediate passes.
        log.get_mut(&issuer_key("https://other.example/dir", None))
            .unwrap()
            .issuer_key = Some("RSA".into());
        assert_eq!(acceptable(&c, &log), [false, true, false]);
    }

    #[test]
    fn a_persisted_rate_limit_skips_the_issuer_until_it_ends() {
        let c = config("").unwrap();
        let now = datetime!(2026-12-03 00:00 UTC);
        let d = &c.deployments[0];
        let mut log = IssuerLog::new();
        log.insert(
            issuer_key("https://other.example/dir", None),
            crate::state::LearnedLifetime {
                lifetime_secs: 0,
                serial: String::new(),
                issued: now,
                issuer_key: None,
                rate_limited_until: Some(now + time::Duration::hours(1)),
            },
        );
        let second = |at| candidates(&c, d, &log, at)[1].clone();
        let refused = second(now).refused.unwrap();
        assert!(
            refused.contains("rate-limited it until 2026-12-03T01:00:00Z"),
            "{refused}"
        );
        assert!(
            second(now).expected.is_none(),
            "a hold alone teaches no lifetime"
        );
        assert!(second(now + time::Duration::hours(2)).acceptable());
        let message = none_acceptable(&c, d, &candidates(&c, d, &log, now));
        assert!(
            message.contains("second: the CA rate-limited it"),
            "{message}"
        );
    }

    #[test]
    fn spans() {
        assert_eq!(span(Duration::from_secs(45 * DAY)), "45 days");
        assert_eq!(span(Duration::from_secs(160 * 3600)), "160 hours");
        assert_eq!(span(Duration::from_secs(45 * DAY - 1)), "45 days");
        assert_eq!(span_adjective(Duration::from_secs(60 * DAY)), "60-day");
    }
}
