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

mod inspect;
mod renew;

use inspect::{check, check_online, dns_register, notify_test, status};
use renew::{RenewArgs, issue, renew, run};

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
