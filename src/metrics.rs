//! Prometheus metrics: the text exposition format (version 0.0.4), written to `[metrics] textfile` after every
//! pass and served by `certkeeper run` on `[metrics] listen` (`GET /metrics`, `GET /healthz`).
//!
//! The metric names and labels are a contract (README, "Alerting and monitoring"). Per-deployment values come
//! from local state (the same [`crate::status::Report`] `status` prints), so they survive restarts;
//! `certkeeper_renewal_failures_total` is persisted in each record. Pass timings and ACME order counts are the
//! process's own, from the pipeline's events.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::config::MetricsConfig;
use crate::pipeline::Event;
use crate::status::{Health, Report};

/// What this process saw of its passes and orders.
#[derive(Debug, Default)]
pub struct PassStats {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    last_pass_end: Option<OffsetDateTime>,
    last_pass_seconds: Option<f64>,
    orders: BTreeMap<&'static str, u64>,
}

impl PassStats {
    /// Counts what `event` says (an ACME order's result).
    pub fn observe(&self, event: &Event) {
        if let Event::Order { issued, .. } = event {
            let result = if *issued { "issued" } else { "failed" };
            *self.lock().orders.entry(result).or_default() += 1;
        }
    }

    /// A pass ended after `seconds`.
    pub fn pass_ended(&self, seconds: f64) {
        let mut inner = self.lock();
        inner.last_pass_end = Some(OffsetDateTime::now_utc());
        inner.last_pass_seconds = Some(seconds);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One metric family being written: HELP and TYPE once, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = if labels.is_empty() {
            writeln!(self.out, "{name} {value}")
        } else {
            writeln!(self.out, "{name}{{{}}} {value}", labels.join(","))
        };
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(t: OffsetDateTime) -> f64 {
    t.unix_timestamp_nanos() as f64 / 1e9
}

/// Per-deployment gauges: (name, help, value of a deployment if known).
type DeploymentGauge = (
    &'static str,
    &'static str,
    fn(&crate::status::DeploymentStatus, OffsetDateTime) -> Option<f64>,
);

const DEPLOYMENT_GAUGES: &[DeploymentGauge] = &[
    (
        "certkeeper_certificate_expiration_timestamp_seconds",
        "When the certificate the deployment runs expires (Unix time).",
        |d, _| d.expires.map(seconds),
    ),
    (
        "certkeeper_certificate_renewal_timestamp_seconds",
        "When certkeeper plans to renew the deployment's certificate (Unix time).",
        |d, _| d.renewal.as_ref().map(|r| seconds(r.at)),
    ),
    (
        "certkeeper_certificate_ready",
        "1 when the deployment serves an unexpired certificate and is neither failing nor at risk.",
        |d, now| {
            let ready = d.expires.is_some_and(|e| e > now)
                && !matches!(
                    d.health,
                    Health::Failing | Health::AtRisk | Health::Unreadable
                );
            Some(f64::from(u8::from(ready)))
        },
    ),
    (
        "certkeeper_last_success_timestamp_seconds",
        "When a pass over the deployment last ended well (Unix time).",
        |d, _| d.last_success.map(seconds),
    ),
    (
        "certkeeper_deployment_at_risk",
        "1 when the vendor's request budget cannot renew the deployment before its deadline.",
        |d, _| Some(f64::from(u8::from(d.at_risk.is_some()))),
    ),
];

/// The exposition text for `report` and this process's `stats`.
pub fn render(report: &Report, stats: &PassStats) -> String {
    let mut out = String::new();
    let now = report.generated_at;
    for (name, help, value) in DEPLOYMENT_GAUGES {
        let mut family = Family::new(&mut out, name, "gauge", help);
        for d in &report.deployments {
            if let Some(v) = value(d, now) {
                family.sample(name, &[("deployment", &d.id), ("target", d.target)], v);
            }
        }
    }
    let name = "certkeeper_renewal_failures_total";
    let mut family = Family::new(
        &mut out,
        name,
        "counter",
        "Passes over the deployment that failed, since it was first configured.",
    );
    for d in &report.deployments {
        family.sample(
            name,
            &[("deployment", &d.id), ("target", d.target)],
            d.failures_total as f64,
        );
    }
    let name = "certkeeper_vendor_requests_remaining";
    let mut family = Family::new(
        &mut out,
        name,
        "gauge",
        "Requests left in the vendor's current window, per API account and kind.",
    );
    for a in &report.accounts {
        family.sample(
            name,
            &[("account", &a.name), ("kind", "get")],
            f64::from(a.gets_left),
        );
        family.sample(
            name,
            &[("account", &a.name), ("kind", "write")],
            f64::from(a.writes_left),
        );
    }
    dcs_families(&mut out, report);
    let inner = stats.lock();
    let name = "certkeeper_last_pass_timestamp_seconds";
    let mut family = Family::new(
        &mut out,
        name,
        "gauge",
        "When this process's last pass ended (Unix time).",
    );
    if let Some(t) = inner.last_pass_end {
        family.sample(name, &[], seconds(t));
    }
    let name = "certkeeper_pass_duration_seconds";
    let mut family = Family::new(
        &mut out,
        name,
        "gauge",
        "How long this process's last pass took.",
    );
    if let Some(s) = inner.last_pass_seconds {
        family.sample(name, &[], s);
    }
    let name = "certkeeper_acme_orders_total";
    let mut family = Family::new(
        &mut out,
        name,
        "counter",
        "Attempts to obtain a certificate from the CA in this process, by result (issued, failed).",
    );
    for result in ["issued", "failed"] {
        let n = inner.orders.get(result).copied().unwrap_or(0);
        family.sample(name, &[("result", result)], n as f64);
    }
    out
}

/// DCS instances, only when some are configured (a config without them exports what it always did).
fn dcs_families(out: &mut String, report: &Report) {
    if report.dcs_instances.is_empty() {
        return;
    }
    let name = "certkeeper_dcs_instance_healthy";
    let mut family = Family::new(
        out,
        name,
        "gauge",
        "1 when the DCS instance's last sync succeeded, 0 when it failed (see `certkeeper status`).",
    );
    for i in &report.dcs_instances {
        let value = if i.is_healthy() { 1.0 } else { 0.0 };
        family.sample(name, &[("instance", &i.id), ("dcs", &i.dcs)], value);
    }
}

/// Replaces `path` with `text` atomically (temp file in the same directory, fsync, rename), mode 0644: a
/// node exporter's textfile collector never reads half a file, and may run as another user.
///
/// # Errors
/// The I/O error, to be logged: metrics never fail a renewal.
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".certkeeper-metrics")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The daemon's metrics: the text of the last pass, served on `[metrics] listen` and written to
/// `[metrics] textfile`, and whether the loop is healthy.
pub struct Exporter {
    stats: Arc<PassStats>,
    text: Mutex<String>,
    textfile: Option<PathBuf>,
    /// When the pass in flight started.
    running_since: Mutex<Option<Instant>>,
    textfile_failed: std::sync::atomic::AtomicBool,
}

/// A pass running longer than this makes `/healthz` answer 503: every network wait inside a pass is bounded
/// well below it, so the loop is stuck.
pub const STUCK_PASS: Duration = Duration::from_secs(6 * 3600);

impl Exporter {
    /// An exporter for `config`; nothing is served until [`Exporter::serve`].
    pub fn new(config: &MetricsConfig) -> Arc<Exporter> {
        Arc::new(Exporter {
            stats: Arc::new(PassStats::default()),
            text: Mutex::new(String::new()),
            textfile: config.textfile.clone(),
            running_since: Mutex::new(None),
            textfile_failed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The counters a pipeline's events go to.
    pub fn stats(&self) -> Arc<PassStats> {
        self.stats.clone()
    }

    /// A pass starts.
    pub fn pass_started(&self) {
        *lock(&self.running_since) = Some(Instant::now());
    }

    /// A pass ended (`seconds` long, when one ran): renders `report`, keeps it for `/metrics`, rewrites the
    /// textfile. A textfile that cannot be written is logged once, never an error of the pass.
    pub fn publish(&self, report: &Report, seconds: Option<f64>) {
        if let Some(seconds) = seconds {
            self.stats.pass_ended(seconds);
        }
        *lock(&self.running_since) = None;
        let text = render(report, &self.stats);
        if let Some(path) = &self.textfile {
            match write_textfile(path, &text) {
                Ok(()) => self.textfile_failed.store(false, Ordering::Relaxed),
                Err(e) if !self.textfile_failed.swap(true, Ordering::Relaxed) => {
                    tracing::warn!(file = %path.display(), "cannot write the metrics textfile: {e}");
                }
                Err(_) => {}
            }
        }
        *lock(&self.text) = text;
    }

    /// No pass has been running for longer than [`STUCK_PASS`]. (A loop that does not turn at all cannot
    /// answer: the server shares its runtime, so a hung loop is a timeout, which a checker also counts.)
    pub fn healthy(&self) -> bool {
        !lock(&self.running_since).is_some_and(|since| since.elapsed() > STUCK_PASS)
    }

    /// Serves `GET /metrics` and `GET /healthz` on `listener` until the process ends.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // Out of file descriptors, most likely: do not spin, and leave some to the renewals.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let exporter = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let answer = exporter.answer(&req);
                    async move { Ok::<_, std::convert::Infallible>(answer) }
                });
                // A scraper that opens a connection and sends nothing is dropped, not kept forever.
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    }

    fn answer<B>(
        &self,
        req: &hyper::Request<B>,
    ) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
        let (status, content_type, body) = match (req.method(), req.uri().path()) {
            (&hyper::Method::GET, "/metrics") => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                lock(&self.text).clone(),
            ),
            (&hyper::Method::GET, "/healthz") if self.healthy() => {
                (200, "text/plain", "ok\n".into())
            }
            (&hyper::Method::GET, "/healthz") => {
                (503, "text/plain", "the pass in flight is stuck\n".into())
            }
            _ => (404, "text/plain", "GET /metrics or /healthz\n".into()),
        };
        let mut response =
            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, v);
        }
        response
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_every_family_has_help_and_type() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let report = Report {
            schema: 1,
            generated_at: OffsetDateTime::now_utc(),
            healthy: true,
            deployments: Vec::new(),
            accounts: Vec::new(),
            dcs_instances: Vec::new(),
        };
        let stats = PassStats::default();
        stats.observe(&Event::Order {
            id: "x".into(),
            issued: true,
        });
        let text = render(&report, &stats);
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!((helps, types), (10, 10), "{text}");
        assert!(
            text.contains("certkeeper_acme_orders_total{result=\"issued\"} 1\n"),
            "{text}"
        );
    }
}
