//! The commands that look rather than renew: `check` (offline and `--online`), `status`, `notify test`,
//! `dns register`.

use super::*;

pub(super) fn check(config: &Config) -> u8 {
    for d in &config.deployments {
        let dns = &config.dns[&d.dns];
        let target = match &d.target {
            TargetConfig::Emqx(e) => {
                let emqx = &config.emqx[&e.account];
                format!(
                    "EMQX [emqx.{}] {}, tls_type {}",
                    emqx.name,
                    emqx.url,
                    e.tls_type
                        .map_or("as reported by EMQX".to_owned(), |t| t.to_string())
                )
            }
            TargetConfig::Files(f) => format!(
                "files {} + {}{}, reload {}",
                f.cert.display(),
                f.key.display(),
                f.chain
                    .as_ref()
                    .map_or(String::new(), |c| format!(" + {}", c.display())),
                if f.reload.is_empty() {
                    "(none)".to_owned()
                } else {
                    format!("`{}`", f.reload.join(" "))
                }
            ),
        };
        println!(
            "{}: {} — {target}, DNS-01 via [dns.{}] {}",
            d.id,
            d.domains.join(", "),
            dns.name,
            dns.describe(),
        );
    }
    let fallbacks: Vec<String> = config.acme.issuers[1..]
        .iter()
        .map(|i| format!("{} {}", i.name, i.directory))
        .collect();
    println!(
        "config {} is valid: {} deployment(s), ACME CA {}{}",
        config.path.display(),
        config.deployments.len(),
        config.acme.directory,
        if fallbacks.is_empty() {
            String::new()
        } else {
            format!(", fallback: {}", fallbacks.join(", "))
        }
    );
    EXIT_OK
}

/// `check --online`: one line per check on stdout; exit 1 when any failed. Nothing is ordered.
pub(super) fn check_online(config: Config) -> u8 {
    let store = match Store::open(&config.state_dir) {
        Ok(s) => s,
        Err(e) => {
            fail!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let Some(runtime) = runtime() else {
        return EXIT_FAILED;
    };
    let agent = match Pipeline::new(config, Arc::new(store)) {
        Ok(a) => a,
        Err(e) => {
            fail!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let checks = runtime.block_on(agent.check_online());
    for check in &checks {
        println!("{check}");
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed > 0 {
        fail!("error: {failed} of {} online check(s) failed", checks.len());
        return EXIT_FAILED;
    }
    println!("all {} online check(s) passed", checks.len());
    EXIT_OK
}

pub(super) fn status(config: &Config, json: bool, only: &[String]) -> u8 {
    if let Some(unknown) = only
        .iter()
        .find(|id| !config.deployments.iter().any(|d| &d.id == *id))
    {
        fail!(
            "error: --deployment {unknown} is not in {}",
            config.path.display()
        );
        return EXIT_USAGE;
    }
    // Read-only, and no state yet is an empty state: `status` never creates or changes anything.
    let state: Arc<dyn certkeeper::state::StateStore> =
        match Store::open_read_only(&config.state_dir) {
            Ok(store) => Arc::new(store),
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Arc::new(certkeeper::state::memory::Memory::default())
            }
            Err(e) => {
                fail!("error: {e}");
                return EXIT_FAILED;
            }
        };
    let agent = match Pipeline::new(config.clone(), state.clone()) {
        Ok(agent) => agent,
        Err(e) => {
            fail!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let mut report = certkeeper::status::report(
        config,
        &*state,
        |name| agent.budget_left(name),
        time::OffsetDateTime::now_utc(),
    );
    if !only.is_empty() {
        report.deployments.retain(|d| only.contains(&d.id));
        report.healthy = report
            .deployments
            .iter()
            .all(|d| d.health == certkeeper::status::Health::Ok);
    }
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                fail!("error: cannot encode the status: {e}");
                return EXIT_FAILED;
            }
        }
    } else {
        for d in &report.deployments {
            println!("{}", d.line());
        }
        for a in &report.accounts {
            println!("{}", a.line());
        }
        for i in &report.dcs_instances {
            println!("{}", i.line());
        }
    }
    if report.healthy { EXIT_OK } else { EXIT_FAILED }
}

pub(super) fn notify_test(config: &Config) -> u8 {
    if config.notify.is_empty() {
        fail!(
            "error: {} has no [[notify]] channel to test",
            config.path.display()
        );
        return EXIT_USAGE;
    }
    let Some(runtime) = runtime() else {
        return EXIT_FAILED;
    };
    let mut code = EXIT_OK;
    for (name, result) in runtime.block_on(certkeeper::notify::test(&config.notify)) {
        match result {
            Ok(()) => println!("{name}: delivered"),
            Err(e) => {
                fail!("{name}: not delivered: {e}");
                code = EXIT_FAILED;
            }
        }
    }
    code
}

pub(super) fn dns_register(config: &Config, dns: &str, domain: &str) -> u8 {
    use certkeeper::config::DnsProvider;
    let Some(section) = config.dns.get(dns) else {
        fail!("error: {} has no [dns.{dns}]", config.path.display());
        return EXIT_USAGE;
    };
    let DnsProvider::AcmeDns(acme_dns) = &section.provider else {
        fail!(
            "error: [dns.{dns}] is not provider = \"acme-dns\"; only acme-dns accounts are registered"
        );
        return EXIT_USAGE;
    };
    let Some(runtime) = runtime() else {
        return EXIT_FAILED;
    };
    match runtime.block_on(certkeeper::solver::acme_dns::register::register(
        acme_dns, domain,
    )) {
        Ok(done) => {
            println!(
                "registered {} at {}; credentials saved in {}",
                done.domain,
                acme_dns.server,
                done.file.display()
            );
            println!("create this record in the zone of {}:", done.domain);
            println!("{}", done.cname());
            EXIT_OK
        }
        Err(e) => {
            fail!("error: {e}");
            EXIT_FAILED
        }
    }
}
