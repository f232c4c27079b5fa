//! `certkeeper check --online`: proves, without ordering anything, that every outside party will do its part
//! when a renewal comes: each issuer (directory reachable, profiles offered, account exists or can be
//! registered — with its External Account Binding), each DNS solver in use (zone found, credentials
//! accepted, nothing left in the zone), and each EMQX API key (one `GET`, charged to its budget like any
//! other).
//!
//! One [`Check`] per question, so the operator sees every problem of a broken setup at once.

use std::collections::BTreeSet;

use super::Pipeline;
use crate::acme::AcmeClient;
use crate::config::Issuer;
use crate::deploy::emqx::client::error_chain;

/// The answer to one question of `check --online`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked: `issuer acme: directory https://…`.
    pub subject: String,
    /// Returns true if and only if it passed.
    pub ok: bool,
    /// What was found, or what failed and what to do.
    pub detail: String,
}

impl Check {
    fn new(subject: impl Into<String>, result: Result<String, String>) -> Check {
        let subject = subject.into();
        match result {
            Ok(detail) => Check {
                subject,
                ok: true,
                detail,
            },
            Err(detail) => Check {
                subject,
                ok: false,
                detail,
            },
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.ok { "ok" } else { "FAILED" };
        write!(f, "{verdict}: {}: {}", self.subject, self.detail)
    }
}

impl Pipeline {
    /// Runs every online check, in config order: issuers, DNS solvers, EMQX API keys.
    pub async fn check_online(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        for (index, issuer) in self.config.acme.issuers.iter().enumerate() {
            checks.extend(self.check_issuer(index, issuer).await);
        }
        checks.extend(self.check_solvers().await);
        checks.extend(self.check_api_keys().await);
        checks
    }

    /// Directory, profiles, account of one issuer. Without a reachable directory the rest is not asked.
    async fn check_issuer(&self, index: usize, issuer: &Issuer) -> Vec<Check> {
        let subject = |what: &str| format!("issuer {} {what}", issuer.name);
        let mut checks = Vec::new();
        let offered =
            match AcmeClient::offered_profiles(issuer.trust_roots.as_deref(), &issuer.directory)
                .await
            {
                Ok(offered) => offered,
                Err(e) => {
                    checks.push(Check::new(
                        subject("directory"),
                        Err(format!("{e} — check the URL, the network and trust_roots")),
                    ));
                    return checks;
                }
            };
        checks.push(Check::new(
            subject("directory"),
            Ok(format!("{} reachable", issuer.directory)),
        ));
        let mut wanted: BTreeSet<&str> = issuer.profile.as_deref().into_iter().collect();
        wanted.extend(
            self.config
                .deployments
                .iter()
                .filter(|d| d.issuer.is_none_or(|p| p == index))
                .filter_map(|d| crate::issuers::profile(d, index, issuer)),
        );
        for profile in wanted {
            let result = if offered.iter().any(|o| o == profile) {
                Ok("offered".to_owned())
            } else {
                Err(format!(
                    "not offered by {} (offered: {}) — fix `profile` of this issuer or of the deployments using it",
                    issuer.directory,
                    if offered.is_empty() {
                        "none".to_owned()
                    } else {
                        offered.join(", ")
                    }
                ))
            };
            checks.push(Check::new(subject(&format!("profile `{profile}`")), result));
        }
        let result = match AcmeClient::connect(issuer, &issuer.directory, &*self.state).await {
            Ok((_, false)) => Ok("exists in the state directory".to_owned()),
            Ok((_, true)) if issuer.eab.is_some() => {
                Ok("registered now (External Account Binding accepted)".to_owned())
            }
            Ok((_, true)) => Ok("registered now".to_owned()),
            Err(e) => Err(format!(
                "{e} — check contact{}",
                if issuer.eab.is_some() {
                    " and the EAB key id and HMAC key from the CA's console"
                } else {
                    ", and whether the CA requires External Account Binding (eab_kid, eab_hmac_key_file)"
                }
            )),
        };
        checks.push(Check::new(subject("account"), result));
        checks
    }

    /// Each DNS solver some deployment uses, with the challenge owners of those deployments.
    async fn check_solvers(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        for (name, solver) in &self.solvers {
            let mut owners: Vec<String> = self
                .config
                .deployments
                .iter()
                .filter(|d| d.dns == *name)
                .flat_map(|d| d.domains.iter().map(|n| crate::solver::challenge_fqdn(n)))
                .collect();
            owners.sort();
            owners.dedup();
            if owners.is_empty() {
                continue;
            }
            let result = solver
                .verify_credentials(&owners)
                .await
                .map(|()| {
                    format!(
                        "{} challenge owner(s) can be published (from {}), credentials accepted",
                        owners.len(),
                        owners[0]
                    )
                })
                .map_err(|e| e.to_string());
            checks.push(Check::new(format!("dns {name}"), result));
        }
        checks
    }

    /// One `GET` per API key (not per deployment): the first deployment behind it.
    async fn check_api_keys(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
        for (name, account) in &self.accounts {
            let config = &self.config.emqx[name];
            if !seen.insert((config.url.clone(), config.key.clone())) {
                continue;
            }
            let Some(d) = self
                .config
                .deployments
                .iter()
                .find(|d| d.emqx().is_some_and(|e| e.account == *name))
            else {
                continue;
            };
            let result = account
                .client()
                .inspect(&d.id)
                .await
                .map(|_| format!("key {} accepted (GET of deployment {})", config.key, d.id))
                .map_err(|e| error_chain(&e));
            checks.push(Check::new(format!("emqx {name}"), result));
        }
        checks
    }
}
