//! The commands that renew: `renew`, `run` (the daemon), `issue`; the locks and signals they share.

use super::*;

pub(super) fn issue(
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
pub(super) fn write_issued(
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

pub(super) fn run(path: PathBuf, config: Config) -> u8 {
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
pub(super) fn stop_on_signals() -> std::io::Result<Shutdown> {
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

pub(super) fn signals(runtime: &tokio::runtime::Runtime) -> Result<Shutdown, u8> {
    runtime.block_on(async { stop_on_signals() }).map_err(|e| {
        fail!("error: cannot install signal handlers: {e}");
        EXIT_FAILED
    })
}

/// The state lock for a one-shot command, with the exit code to return when it cannot be had:
/// 3 when another certkeeper holds it, 0 when a signal ended the wait, 1 otherwise.
pub(super) fn lock_or_exit(
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
pub(super) fn take_lock(
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
pub(super) struct RenewArgs {
    pub(super) now: bool,
    pub(super) only: Vec<String>,
    pub(super) wait_lock: Option<std::time::Duration>,
    pub(super) dry_run: bool,
    pub(super) verbose: bool,
}

pub(super) fn renew(config: Config, args: RenewArgs) -> u8 {
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
pub(super) async fn run_pass(
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
