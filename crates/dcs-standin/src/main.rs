//! `dcs-standin`: a strict stand-in of the Huawei Cloud / Open Telekom Cloud DCS SSL API (status and
//! certificate download, `SDK-HMAC-SHA256`-signed) and of the object storage its download links point at,
//! for certkeeper's tests. An admin API under `/_admin` (unsigned) creates keys and instances, rotates an
//! instance's CA (writing the new server certificate and key for the test's Redis), and switches the
//! answers (SSL off, 204, DCS.4201, hostile archives, 5xx).
//!
//! # Layout
//!
//! - `signature`: the signature check, with its own code.
//! - `api`: the DCS API, the admin API and the object-storage listener.
//! - `pki`: the CA and server certificate of a rotation.
//! - `zips`: honest and hostile certificate archives.

#![warn(missing_docs)]

mod api;
mod pki;
mod signature;
mod zips;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::Parser;

/// A strict stand-in of the DCS SSL API and its object storage, for tests.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of the DCS API (and `/_admin`); port 0 picks a free port.
    ///
    /// Once both listeners are bound the stand-in prints one line to stdout,
    /// `dcs-standin listening on http://API storage http://STORAGE`.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address of the object-storage listener; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    storage_listen: SocketAddr,
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
        Ok(r) => r,
        Err(e) => {
            eprintln!("dcs-standin: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dcs-standin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let api = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let storage = tokio::net::TcpListener::bind(args.storage_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.storage_listen))?;
    let (api_addr, storage_addr) = (api.local_addr()?, storage.local_addr()?);
    let state = Arc::new(Mutex::new(api::Standin::new(format!(
        "http://{storage_addr}"
    ))));
    let api_router = axum::Router::new()
        .fallback(api::api)
        .with_state(state.clone());
    let storage_router = axum::Router::new().fallback(api::storage).with_state(state);
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "dcs-standin listening on http://{api_addr} storage http://{storage_addr}"
    );
    let _ = stdout.flush();
    drop(stdout);
    tokio::select! {
        served = axum::serve(api, api_router) => served.context("the API server failed")?,
        served = axum::serve(storage, storage_router) => served.context("the storage server failed")?,
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}
