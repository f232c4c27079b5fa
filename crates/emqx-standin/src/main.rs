//! `emqx-standin`: a strict stand-in of the EMQX Cloud TLS certificate API, for tests and the
//! README sandbox.
//!
//! It serves `GET|POST|PUT|DELETE /api/v1/deployments/{id}/tls` with HTTP basic auth, the
//! documented status codes (401, 403, 404, 422, 429 with `Retry-After`) and the documented rate
//! limits, faithful to the vendor's docs (the seed docs in `shared/seeds`, Chinese and English,
//! including the older dialect with `tls_type` and `" pending"`). An admin API under `/_admin`
//! (no auth) creates keys and deployments, changes settings, injects failures and lists the
//! vendor requests received. The binding contract is `standin.md`.
//!
//! It is *strict*: it checks uploaded certificates and keys itself (with `x509-parser`,
//! `pkcs8`, `sec1`), independently of the certkeeper library, so that a bug in certkeeper's own
//! checks is not hidden by the same bug here.
//!
//! Where the docs are silent, the stand-in chooses, and says so where it does:
//! - a deployment without a certificate answers GET with `200 {}`;
//! - POST on a deployment that has a certificate, and PUT on one that has none, answer 422;
//! - unknown body fields, both `tlsType` and `tls_type` at once, a wrong Content-Type answer 422;
//! - a request refused with 429 is not counted against the limit (see `limiter`);
//! - DELETE answers 204 whether or not a certificate was present;
//! - an EC key without its embedded public key answers 422 ("cannot verify key").
//!
//! # Layout
//!
//! - `settings`: the run-time knobs and their defaults.
//! - `limiter`: per-key sliding-window rate limits.
//! - `pki`: certificate, chain and key checks.
//! - `upload`: the JSON body of POST/PUT.
//! - `state`: the stand-in's state and the vendor API's behaviour on it.
//! - `http`: the axum router, handlers and request logging.

#![warn(missing_docs)]

mod http;
mod limiter;
mod pki;
mod settings;
mod state;
mod upload;

#[cfg(test)]
mod tests;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::Parser;

/// The address used when `--listen` is not given: loopback, any free port.
const DEFAULT_LISTEN: &str = "127.0.0.1:0";

/// A strict stand-in of the EMQX Cloud TLS certificate API, for tests.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    ///
    /// Once listening, the stand-in prints exactly one line to stdout,
    /// `emqx-standin listening on http://HOST:PORT`, and logs one line per request to stderr.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("emqx-standin: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        // Install the handlers before announcing the address: a test may send SIGTERM as soon
        // as it reads the line, and must not hit the default action (death by signal).
        let shutdown = shutdown_signal().context("cannot install the SIGINT/SIGTERM handlers")?;
        run(args.listen, shutdown).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("emqx-standin: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Serves both APIs on `listen` until `shutdown` completes; in-flight requests are finished.
///
/// # Errors
///
/// When the address cannot be bound or the server fails.
async fn run(
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}; pick another --listen address"))?;
    let local = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // Tests wait for this line: write it in one piece and flush. A closed stdout is no reason
    // to stop serving, so errors are ignored.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "emqx-standin listening on http://{local}");
    let _ = stdout.flush();
    drop(stdout);

    let state = Arc::new(Mutex::new(state::Standin::default()));
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("the HTTP server failed")?;
    tracing::info!("shut down");
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now, and returns a future that completes when
/// either signal arrives.
///
/// # Errors
///
/// When a handler cannot be installed.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Returns a future that completes on Ctrl-C (there is no SIGTERM off Unix).
///
/// # Errors
///
/// Never; the signature matches the Unix version.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
