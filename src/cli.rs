//! Command line: clap definitions, logging setup, exit codes, and one clear line per failure.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use certkeeper::config::{Config, DEFAULT_CONFIG_PATH, TargetConfig};
use certkeeper::daemon;
use certkeeper::pipeline::{self, LockWait, Pipeline};
use certkeeper::shutdown::{self, Shutdown};
use certkeeper::state::{Store, StoreError};
use certkeeper::systemd::Notifier;

/// Prints one failure line on stderr; under journald with the error priority (`<3>`), so `journalctl -p err`
/// finds it like the daemon's logged errors.
macro_rules! fail {
    ($($arg:tt)*) => {
        eprintln!("{}{}", journal_error_prefix(), format_args!($($arg)*))
    };
}

fn journal_error_prefix() -> &'static str {
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        "<3>"
    } else {
        ""
    }
}

/// Every selected deployment is fine (renewed or not due).
const EXIT_OK: u8 = 0;
/// At least one deployment failed.
const EXIT_FAILED: u8 = 1;
/// Invalid config or usage; nothing touched the network.
const EXIT_USAGE: u8 = 2;
/// Another certkeeper holds the state lock.
const EXIT_LOCKED: u8 = 3;

/// Keeps the TLS certificates of EMQX Cloud deployments fresh with ACME (DNS-01) certificates.
#[derive(Debug, Parser)]
#[command(name = "certkeeper", version, about, long_about = None)]
struct Args {
    /// Config file [default: $CERTKEEPER_CONFIG, else /etc/certkeeper/config.toml]
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Print the cause chain of every failure and debug logs of certkeeper
    #[arg(long, short = 'v', global = true)]
    verbose: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One pass: inspect each deployment, renew those that are due, exit
    Renew {
        /// Renew the selected deployments even if they are not due
        #[arg(long)]
        now: bool,
        /// Only this deployment (repeatable); default: all configured
        #[arg(long = "deployment", value_name = "ID")]
        deployments: Vec<String>,
        /// If another certkeeper holds the state lock, wait up to this long (e.g. "10m") instead of exiting 3
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        wait_lock: Option<std::time::Duration>,
        /// Inspect and plan, issue against [acme] staging_directory when set, never write to the vendor API
        #[arg(long)]
        dry_run: bool,
    },
    /// Obtain a certificate for one deployment and write it to a file, without touching the vendor API
    Issue {
        /// The deployment whose domains, DNS solver and key settings are used
        #[arg(long = "deployment", value_name = "ID")]
        deployment: String,
        /// Where to write the key (in key_format) and the chain, PEM, mode 0600; must not exist
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// If another certkeeper holds the state lock, wait up to this long (e.g. "10m") instead of exiting 3
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        wait_lock: Option<std::time::Duration>,
    },
    /// Run as a service: a renewal pass on every tick of [schedule] cron, until SIGTERM (SIGHUP reloads)
    Run,
    /// Validate the config offline (no network) and print what would be managed
    Check {
        /// Also ask every CA, DNS server and EMQX API key, without ordering: one line per check, exit 1 if any
        /// fails
        #[arg(long)]
        online: bool,
    },
    /// DNS providers: `dns register` creates an acme-dns account for a domain
    Dns {
        #[command(subcommand)]
        action: DnsAction,
    },
    /// Failure notifications: `notify test` sends a test message through every [[notify]] channel
    Notify {
        #[command(subcommand)]
        action: NotifyAction,
    },
    /// One line per deployment from local state (no network, no secrets, no writes); exits 1 when any
    /// selected deployment is failing, at risk, or expires within [alerts] expiry_warning
    Status {
        /// Print the documented JSON document instead of lines
        #[arg(long)]
        json: bool,
        /// Only this deployment (repeatable); default: all configured
        #[arg(long = "deployment", value_name = "ID")]
        deployments: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DnsAction {
    /// Register an acme-dns account for a domain, save it in the section's credentials_file (0600) and
    /// print the CNAME to create
    Register {
        /// The `[dns.NAME]` section (provider = "acme-dns")
        #[arg(long = "dns", value_name = "NAME")]
        dns: String,
        /// The domain the account is for (`*.` and a trailing dot are dropped)
        #[arg(long, value_name = "DOMAIN")]
        domain: String,
    },
}

#[derive(Debug, Subcommand)]
enum NotifyAction {
    /// Send a test message through every configured channel and report each result
    Test,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose);
    // Two rustls crypto providers are in the tree; without a chosen default rustls panics.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let path = config_path(args.config);
    // `status` runs from a shell without the service's credentials: it reads no secret.
    let load = match args.command {
        Command::Status { .. } => Config::load_without_secrets,
        _ => Config::load,
    };
    let config = match load(&path) {
        Ok(c) => c,
        Err(e) => {
            fail!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    ExitCode::from(match args.command {
        Command::Check { online: false } => check(&config),
        Command::Check { online: true } => match check(&config) {
            EXIT_OK => check_online(config),
            code => code,
        },
        Command::Status { json, deployments } => status(&config, json, &deployments),
        Command::Notify {
            action: NotifyAction::Test,
        } => notify_test(&config),
        Command::Renew {
            now,
            deployments,
            wait_lock,
            dry_run,
        } => renew(
            config,
            RenewArgs {
                now,
                only: deployments,
                wait_lock,
                dry_run,
                verbose: args.verbose,
            },
        ),
        Command::Run => run(path, config),
        Command::Dns {
            action: DnsAction::Register { dns, domain },
        } => dns_register(&config, &dns, &domain),
        Command::Issue {
            deployment,
            out,
            wait_lock,
        } => issue(config, &deployment, &out, wait_lock),
    })
}

fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("CERTKEEPER_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

fn init_logging(verbose: bool) {
    let default = if verbose {
        "certkeeper=debug,warn"
    } else {
        "certkeeper=info,warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    // Under systemd the journal stamps each line itself, and reads its priority from a `<N>` prefix.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder
            .with_ansi(false)
            .event_format(certkeeper::systemd::JournalFormat::default())
            .init();
    } else {
        builder.init();
    }
}

fn check(config: &Config) -> u8 {
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
fn check_online(config: Config) -> u8 {
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

fn status(config: &Config, json: bool, only: &[String]) -> u8 {
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

fn notify_test(config: &Config) -> u8 {
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

fn dns_register(config: &Config, dns: &str, domain: &str) -> u8 {
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

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            fail!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

fn issue(
    config: Config,
    id: &str,
    out: &std::path::Path,
    wait_lock: Option<std::time::Duration>,
) -> u8 {
    use std::os::unix::fs::OpenOptionsExt as _;
    if !config.deployments.iter().any(|d| d.id == id) {
        fail!(
            "error: --deployment {id} is not in {}",
            config.path.display()
        );
        return EXIT_USAGE;
    }
    let key_format = config.acme.key_format;
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
    // The account key and pending orders are shared with `renew` and the daemon: one writer at a time.
    let _lock = match take_lock(&runtime, &store, wait_lock) {
        Ok(lock) => lock,
        Err(code) => return code,
    };
    // Not while a pass works on the same deployment: both would use its pending order.
    let _deployment = match runtime.block_on(certkeeper::state::wait_for(
        wait_lock.or(Some(std::time::Duration::ZERO)),
        &Shutdown::never(),
        || store.try_lock_deployment(id),
    )) {
        Ok(lock) => lock,
        Err(e) => {
            fail!("error: {e}");
            return if matches!(e, StoreError::Busy { .. }) {
                EXIT_LOCKED
            } else {
                EXIT_FAILED
            };
        }
    };
    // Create the file first: a name that is taken is an error before any certificate is spent.
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
    {
        Ok(f) => f,
        Err(e) => {
            fail!("error: cannot create {}: {e}", out.display());
            return EXIT_USAGE;
        }
    };
    let agent = match Pipeline::new(config, Arc::new(store)) {
        Ok(a) => a,
        Err(e) => {
            fail!("error: {e}");
            return EXIT_FAILED;
        }
    };
    if let Err(e) = runtime.block_on(agent.check_profiles()) {
        let _ = std::fs::remove_file(out);
        fail!("error: {}: {e}", agent.config().path.display());
        return if matches!(e, pipeline::RenewError::Config(_)) {
            EXIT_USAGE
        } else {
            EXIT_FAILED
        };
    }
    let result = runtime
        .block_on(agent.issue_only(id))
        .and_then(|(bundle, info)| {
            let key = certkeeper::certs::encode_key(&bundle.key_pkcs8_pem, key_format)?;
            Ok((key, bundle, info))
        });
    match result {
        Ok((key, bundle, info)) => write_issued(&mut file, out, id, &key, &bundle, &info),
        Err(e) => {
            let _ = std::fs::remove_file(out);
            fail!("{id}: {e}");
            EXIT_FAILED
        }
    }
}

/// Writes the issued key and chain to `file` (created 0600 at `out`) and says so.
fn write_issued(
    file: &mut std::fs::File,
    out: &std::path::Path,
    id: &str,
    key: &secrecy::SecretString,
    bundle: &certkeeper::certs::Bundle,
    info: &certkeeper::certs::LeafInfo,
) -> u8 {
    use secrecy::ExposeSecret as _;
    use std::io::Write as _;
    if let Err(e) = file
        .write_all(key.expose_secret().as_bytes())
        .and_then(|()| file.write_all(bundle.chain_pem.as_bytes()))
        .and_then(|()| file.sync_all())
    {
        fail!("error: cannot write {}: {e}", out.display());
        return EXIT_FAILED;
    }
    println!(
        "{id}: certificate {} for {} written to {}, expires {}",
        info.serial,
        info.dns_names.join(","),
        out.display(),
        pipeline::day(info.not_after)
    );
    EXIT_OK
}

fn run(path: PathBuf, config: Config) -> u8 {
    let Some(runtime) = runtime() else {
        return EXIT_FAILED;
    };
    let notifier = Notifier::from_env();
    match runtime.block_on(daemon::run(path, config, notifier)) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            fail!("error: {e}");
            match e {
                daemon::DaemonError::Setup(pipeline::RenewError::Config(_)) => EXIT_USAGE,
                _ => EXIT_FAILED,
            }
        }
    }
}

/// SIGTERM/SIGINT during a one-shot pass: stop at the next safe point (see `certkeeper::shutdown`).
fn stop_on_signals() -> std::io::Result<Shutdown> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (trigger, stop) = shutdown::channel();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received: stopping at the next safe point");
        trigger.stop();
    });
    Ok(stop)
}

fn signals(runtime: &tokio::runtime::Runtime) -> Result<Shutdown, u8> {
    runtime.block_on(async { stop_on_signals() }).map_err(|e| {
        fail!("error: cannot install signal handlers: {e}");
        EXIT_FAILED
    })
}

/// The state lock for a one-shot command, with the exit code to return when it cannot be had:
/// 3 when another certkeeper holds it, 0 when a signal ended the wait, 1 otherwise.
fn lock_or_exit(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    wait_lock: Option<std::time::Duration>,
    stop: &Shutdown,
) -> Result<certkeeper::state::StoreLock, u8> {
    let lock = match wait_lock {
        None => store.try_lock_shared().map(Some),
        Some(limit) => runtime.block_on(store.lock_waiting(Some(limit), stop)),
    };
    match lock {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(EXIT_OK),
        Err(e @ StoreError::Locked { .. }) => {
            fail!("error: {e}");
            Err(EXIT_LOCKED)
        }
        Err(e) => {
            fail!("error: {e}");
            Err(EXIT_FAILED)
        }
    }
}

/// `lock_or_exit` for commands that keep the default signal behaviour: a waiting lock listens
/// for SIGTERM/SIGINT only while it waits, so a signal during the work still ends the process.
fn take_lock(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    wait_lock: Option<std::time::Duration>,
) -> Result<certkeeper::state::StoreLock, u8> {
    let stop = match wait_lock {
        None => Shutdown::never(),
        Some(_) => signals(runtime)?,
    };
    lock_or_exit(runtime, store, wait_lock, &stop)
}

/// What `renew` was asked to do.
struct RenewArgs {
    now: bool,
    only: Vec<String>,
    wait_lock: Option<std::time::Duration>,
    dry_run: bool,
    verbose: bool,
}

fn renew(config: Config, args: RenewArgs) -> u8 {
    let RenewArgs {
        now,
        only,
        wait_lock,
        dry_run,
        verbose,
    } = args;
    let only = &only[..];
    if let Some(unknown) = only
        .iter()
        .find(|id| !config.deployments.iter().any(|d| &d.id == *id))
    {
        let known: Vec<&str> = config.deployments.iter().map(|d| d.id.as_str()).collect();
        fail!(
            "error: --deployment {unknown} is not in {} (configured: {})",
            config.path.display(),
            known.join(", ")
        );
        return EXIT_USAGE;
    }
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
    let stop = match signals(&runtime) {
        Ok(stop) => stop,
        Err(code) => return code,
    };
    let _lock = match lock_or_exit(&runtime, &store, wait_lock, &stop) {
        Ok(lock) => lock,
        Err(code) => return code,
    };
    let lock_wait = match wait_lock {
        None => LockWait::Never,
        Some(limit) => LockWait::Upto(limit),
    };
    let exporter = certkeeper::metrics::Exporter::new(&config.metrics);
    let mut agent = match Pipeline::new(config, Arc::new(store)) {
        Ok(a) => a.with_dry_run(dry_run).with_lock_wait(lock_wait),
        Err(e) => {
            fail!("error: {e}");
            return EXIT_FAILED;
        }
    };
    if let Err(e) = runtime.block_on(agent.check_profiles()) {
        fail!("error: {}: {e}", agent.config().path.display());
        return if matches!(e, pipeline::RenewError::Config(_)) {
            EXIT_USAGE
        } else {
            EXIT_FAILED
        };
    }
    let stats = exporter.stats();
    agent.subscribe(move |event| stats.observe(event));
    runtime.block_on(run_pass(&agent, &exporter, only, now, &stop, verbose))
}

/// Runs the pass, printing one line per deployment as it finishes; returns the exit code.
async fn run_pass(
    agent: &Pipeline,
    exporter: &certkeeper::metrics::Exporter,
    only: &[String],
    now: bool,
    stop: &Shutdown,
    verbose: bool,
) -> u8 {
    let (mut failed, mut busy) = (false, false);
    // One line per deployment as it finishes: a long concurrent pass shows its progress.
    let mut print = |report: &pipeline::Report| match &report.result {
        Ok(done) => println!("{}: {done}", report.id),
        // Stopped by a signal at a safe point: nothing failed, the next pass resumes.
        Err(e @ pipeline::RenewError::Interrupted(_)) => println!("{}: {e}", report.id),
        Err(e @ pipeline::RenewError::Store(StoreError::Busy { .. })) => {
            busy = true;
            fail!("{}: {e}", report.id);
        }
        Err(e) => {
            failed = true;
            fail!("{}: {e}", report.id);
            if verbose {
                print_causes(e);
            }
        }
    };
    let started = std::time::Instant::now();
    let since = time::OffsetDateTime::now_utc();
    agent.pass_reporting(only, now, stop, &mut print).await;
    // DCS instances are watched, not renewed: a dry run or a pass limited to some deployments leaves them.
    if only.is_empty() && !agent.is_dry_run() {
        for report in certkeeper::dcs::sync_all(agent.config(), stop).await {
            match &report.result {
                Ok(_) => println!("{}", report.line()),
                Err(_) => {
                    failed = true;
                    fail!("{}", report.line());
                }
            }
        }
    }
    if !stop.is_stopping() {
        agent.notify(since).await;
    }
    // A dry run records nothing, metrics included.
    if !agent.is_dry_run() {
        exporter.publish(
            &agent.status_report(),
            Some(started.elapsed().as_secs_f64()),
        );
    }
    if failed {
        EXIT_FAILED
    } else if busy {
        EXIT_LOCKED
    } else {
        EXIT_OK
    }
}

fn print_causes(err: &dyn std::error::Error) {
    let mut source = err.source();
    while let Some(s) = source {
        fail!("  caused by: {s}");
        source = s.source();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;
    use std::path::Path;

    #[test]
    fn cli_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn config_flag_wins_over_default() {
        assert_eq!(config_path(Some("/x.toml".into())), Path::new("/x.toml"));
    }
}
