//! Metrics (issue 12, "## Metrics"): the textfile after a one-shot `renew`, and the daemon's `/metrics`
//! scraped by a real Prometheus (Debian `prometheus`), both accepted by `promtool check metrics`.

use crate::common;
use crate::common::probe::due;

use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::bed::{free_tcp_ports, http, spawn_owned};
use common::daemon::{Daemon, wait_until};
use common::{Case, bed};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Appends `[metrics]` with `entries` to the config at `path`.
fn with_metrics(path: &Path, entries: &str) {
    let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
    write!(file, "\n[metrics]\n{entries}\n").unwrap();
}

/// `promtool check metrics` over `text`: its verdict and what it said.
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The expiry the stand-in runs for `id`, Unix seconds.
fn deployed_expiry(case: &Case, id: &str) -> i64 {
    let view = case.standin.deployment(id);
    let expire = view["expire"].as_str().unwrap_or_else(|| panic!("{view}"));
    OffsetDateTime::parse(expire, &Rfc3339)
        .unwrap()
        .unix_timestamp()
}

/// The value of the sample of `family` labelled `deployment="id"` in exposition `text`.
fn sample(text: &str, family: &str, id: &str) -> Option<f64> {
    let prefix = format!("{family}{{deployment=\"{id}\"");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn renew_writes_a_textfile_promtool_accepts() {
    let case = Case::new("textfile");
    let id = "t-textfile";
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .deployment(id, &["t-textfile.example.test"])
        .write();
    let prom = case.dir.path().join("certkeeper.prom");
    with_metrics(
        &config,
        &format!("textfile = {:?}", prom.display().to_string()),
    );

    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");
    let text = fs::read_to_string(&prom).expect("the textfile is written after the pass");
    let (ok, said) = promtool(&text);
    assert!(ok, "promtool: {said}\n{text}");
    let expiry = sample(
        &text,
        "certkeeper_certificate_expiration_timestamp_seconds",
        id,
    );
    assert_eq!(
        expiry.map(|v| v as i64),
        Some(deployed_expiry(&case, id)),
        "{text}"
    );
    assert_eq!(
        sample(&text, "certkeeper_certificate_ready", id),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "certkeeper_renewal_failures_total", id),
        Some(0.0),
        "{text}"
    );
    assert!(
        text.contains("certkeeper_acme_orders_total{result=\"issued\"} 1\n"),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o644,
        "readable by a node exporter running as another user"
    );
    case.assert_invariants();
}

/// Prometheus's instant query for `query`, as JSON.
fn query(prometheus: SocketAddr, query: &str) -> Value {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    match http(
        prometheus,
        "GET",
        &format!("/api/v1/query?query={encoded}"),
        None,
        None,
    ) {
        Ok((200, body)) => serde_json::from_slice(&body).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

#[test]
fn a_real_prometheus_scrapes_the_daemon_and_sees_the_pushed_expiry() {
    let case = Case::new("scrape");
    let id = "t-scrape";
    case.deployment(id, "one-way", due());
    let [metrics_port, prometheus_port] = free_tcp_ports::<2>().unwrap();
    let config = case
        .config()
        .schedule("cron", "0 0 0 1 1 *")
        .schedule("jitter", "0s")
        .deployment(id, &["t-scrape.example.test"])
        .write();
    // The daemon's cron is yearly: it serves what the state directory knows, from a hand-run renewal.
    let run = case.run(&config, &["renew"]);
    assert_eq!(run.code(), Some(0), "{run}");
    with_metrics(&config, &format!("listen = \"127.0.0.1:{metrics_port}\""));
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let mut daemon = Daemon::start(bed(), &config, &[], &case.dir.path().join("daemon.log"));
    wait_until(
        "/metrics answers",
        Duration::from_secs(20),
        || http(metrics, "GET", "/metrics", None, None).is_ok_and(|(s, _)| s == 200),
        || daemon.text(),
    );
    let (status, body) = http(metrics, "GET", "/metrics", None, None).unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    let (ok, said) = promtool(&text);
    assert!(ok, "promtool: {said}\n{text}");
    // Sleeping until its next tick is healthy.
    assert_eq!(http(metrics, "GET", "/healthz", None, None).unwrap().0, 200);
    assert_eq!(http(metrics, "GET", "/nothing", None, None).unwrap().0, 404);

    let dir = case.dir.path().join("prometheus");
    fs::create_dir_all(&dir).unwrap();
    let prom_config = dir.join("prometheus.yml");
    fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: certkeeper\n    \
             static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.join("stdout")).unwrap())
        .stderr(fs::File::create(dir.join("stderr")).unwrap());
    let mut prometheus = spawn_owned(cmd).expect("prometheus runs (Debian package prometheus)");
    let api: SocketAddr = format!("127.0.0.1:{prometheus_port}").parse().unwrap();
    let wanted = deployed_expiry(&case, id);
    let q = format!("certkeeper_certificate_expiration_timestamp_seconds{{deployment=\"{id}\"}}");
    let mut seen = Value::Null;
    let found = wait_until_value(Duration::from_secs(60), || {
        seen = query(api, &q);
        seen["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
    });
    common::bed::kill_group(&mut prometheus);
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(Duration::from_secs(10));
    let got = found.unwrap_or_else(|| {
        panic!(
            "Prometheus never had the metric: {seen}\n{}",
            fs::read_to_string(dir.join("stderr")).unwrap_or_default()
        )
    });
    assert_eq!(got as i64, wanted, "{seen}");
    assert_eq!(
        seen["data"]["result"][0]["metric"]["target"], "emqx",
        "{seen}"
    );
}

/// Polls `probe` until it gives a value or `timeout` passes.
fn wait_until_value(timeout: Duration, mut probe: impl FnMut() -> Option<f64>) -> Option<f64> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(v) = probe() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}
