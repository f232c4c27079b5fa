//! What both stand-ins share: their DNS arguments, listening with the announce line, and the request log.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::publish::Knsupdate;

/// The arguments both stand-ins take: where to listen, and the DNS server they publish into.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// Address to listen on; port 0 picks a free port. Once listening, exactly one line goes to stdout:
    /// `NAME listening on http://HOST:PORT`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The DNS server that takes the RFC 2136 updates, `HOST:PORT` (e.g. the test bed's knotd).
    #[arg(long, value_name = "HOST:PORT")]
    pub dns_server: SocketAddr,
    /// The zone the updates are for (knsupdate needs it named), e.g. `example.test.`.
    #[arg(long, value_name = "ZONE")]
    pub zone: String,
    /// The TSIG key's name.
    #[arg(long, value_name = "NAME")]
    pub tsig_key: String,
    /// A file holding the key's base64 secret (read once at start; never logged).
    #[arg(long, value_name = "FILE")]
    pub tsig_secret_file: PathBuf,
    /// The TSIG algorithm, as knsupdate names it.
    #[arg(long, default_value = "hmac-sha256")]
    pub tsig_algorithm: String,
}

impl CommonArgs {
    /// The publisher these arguments describe.
    ///
    /// # Errors
    /// When the secret file cannot be read or is empty.
    pub fn publisher(&self) -> anyhow::Result<Knsupdate> {
        let secret = std::fs::read_to_string(&self.tsig_secret_file).with_context(|| {
            format!(
                "cannot read --tsig-secret-file {}",
                self.tsig_secret_file.display()
            )
        })?;
        let secret = secret.trim().to_owned();
        anyhow::ensure!(
            !secret.is_empty(),
            "--tsig-secret-file {} is empty",
            self.tsig_secret_file.display()
        );
        Ok(Knsupdate {
            host: self.dns_server.ip().to_string(),
            port: self.dns_server.port(),
            zone: self.zone.clone(),
            key: format!("{}:{}", self.tsig_algorithm, self.tsig_key),
            secret,
        })
    }
}

/// One API request as `GET /_admin/log` shows it. `who` is the account's username (acme-dns) or the token's
/// id (Cloudflare), never a password or token.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    /// The HTTP method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Who the request authenticated as, if anyone.
    pub who: Option<String>,
    /// The status answered.
    pub status: u16,
    /// When it arrived, RFC 3339.
    pub at: String,
}

/// The API requests answered so far (admin requests are not in it).
pub type RequestLog = Arc<Mutex<Vec<LogEntry>>>;

/// Set on a response by a handler that authenticated the request: the identity the log shows.
#[derive(Debug, Clone)]
pub struct Who(pub String);

/// Logs every request to stderr, and API requests (outside `/_admin`) to `log`.
pub async fn log_requests(State(log): State<RequestLog>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let at = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let response = next.run(request).await;
    let who = response.extensions().get::<Who>().map(|w| w.0.clone());
    let status = response.status().as_u16();
    tracing::info!(
        "{method} {path} who={} status={status}",
        who.as_deref().unwrap_or("-")
    );
    if !path.starts_with("/_admin") {
        log.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(LogEntry {
                method,
                path,
                query,
                who,
                status,
                at,
            });
    }
    response
}

/// Listens on `listen`, prints `NAME listening on http://ADDR`, and serves `router` until SIGINT or SIGTERM.
///
/// # Errors
/// When the address cannot be bound, the signal handlers cannot be installed, or the server fails.
pub fn serve(name: &str, listen: SocketAddr, router: Router) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // Handlers first: a test may send SIGTERM as soon as it reads the announce line.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}; pick another --listen address"))?;
        let local = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{name} listening on http://{local}");
        let _ = stdout.flush();
        drop(stdout);
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            })
            .await
            .context("the HTTP server failed")
    })
}
