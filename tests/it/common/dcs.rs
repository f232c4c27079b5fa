//! The DCS stand-in (crates/dcs-standin) and a real Redis with TLS (Debian's `redis-server`), for the DCS
//! tests (issue 15). Each test starts its own of both.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::bed::{first_line, free_tcp_ports, http, kill_group, scrub_env, spawn_owned, tail};

/// Debian's Redis server and client.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
/// `redis-cli`.
pub const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// A running `dcs-standin`; killed on drop.
#[derive(Debug)]
pub struct DcsStandin {
    child: Child,
    /// The DCS API (and `/_admin`).
    pub api: SocketAddr,
    /// Its stderr.
    pub log_file: PathBuf,
}

impl DcsStandin {
    /// Starts the stand-in found beside the certkeeper binary (`cargo build -p dcs-standin`).
    ///
    /// # Panics
    /// When it is missing or does not announce its addresses.
    pub fn start(dir: &Path) -> DcsStandin {
        let bin = std::env::var_os("DCS_STANDIN_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                super::bed()
                    .binaries
                    .certkeeper
                    .with_file_name("dcs-standin")
            });
        assert!(
            bin.is_file(),
            "{} not found; run `cargo build -p dcs-standin` (or cargo test --workspace)",
            bin.display()
        );
        let log_file = dir.join("dcs-standin.log");
        let mut cmd = Command::new(&bin);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log_file).expect("create the stand-in log"));
        scrub_env(&mut cmd);
        let mut child = spawn_owned(cmd).expect("spawn dcs-standin");
        // Unwrap: stdout was set to piped above.
        let line = first_line(child.stdout.take().unwrap(), Duration::from_secs(20));
        let api = line
            .as_deref()
            .and_then(|l| l.trim().strip_prefix("dcs-standin listening on http://"))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|a| a.parse().ok());
        match api {
            Some(api) => DcsStandin {
                child,
                api,
                log_file,
            },
            None => {
                kill_group(&mut child);
                panic!(
                    "dcs-standin did not announce itself: {line:?}; {}",
                    tail(&log_file)
                );
            }
        }
    }

    /// `http://127.0.0.1:PORT` for `[dcs.*] endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.api)
    }

    /// An admin call that must answer `want`.
    pub fn admin(&self, method: &str, path: &str, body: &Value, want: u16) -> Value {
        let (status, bytes) = http(
            self.api,
            method,
            &format!("/_admin/{path}"),
            Some(body),
            None,
        )
        .unwrap_or_else(|e| panic!("dcs-standin admin {method} {path}: {e}"));
        assert_eq!(
            status,
            want,
            "admin {method} {path}: {}",
            String::from_utf8_lossy(&bytes)
        );
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    /// Registers `ak` with `sk`.
    pub fn put_key(&self, ak: &str, sk: &str) {
        self.admin("PUT", &format!("keys/{ak}"), &json!({"sk": sk}), 204);
    }

    /// Creates or patches instance `id` (`project`, `ssl`, `validated`, `shape`, `fail_next`).
    pub fn instance(&self, id: &str, patch: &Value) {
        self.admin("PUT", &format!("instances/{id}"), patch, 200);
    }

    /// Rotates the instance's CA; the new `ca.pem`, `server.pem` and `server.key` land in `dir`.
    pub fn rotate(&self, id: &str, dir: &Path) -> Value {
        self.admin(
            "POST",
            &format!("instances/{id}/rotate"),
            &json!({"dir": dir}),
            200,
        )
    }

    /// Every DCS API and object-storage request so far.
    pub fn log(&self) -> Vec<Value> {
        match self.admin("GET", "log", &Value::Null, 200) {
            Value::Array(a) => a,
            other => panic!("log is not an array: {other}"),
        }
    }

    /// How many logged requests match `listener`, `method` and a path ending in `suffix`.
    pub fn count(&self, listener: &str, method: &str, suffix: &str) -> usize {
        self.log()
            .iter()
            .filter(|e| e["listener"] == listener && e["method"] == method)
            .filter(|e| e["path"].as_str().is_some_and(|p| p.ends_with(suffix)))
            .count()
    }
}

impl Drop for DcsStandin {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// A Redis with only a TLS port, serving the server certificate in a rotation directory; killed on drop.
#[derive(Debug)]
pub struct Redis {
    child: Option<Child>,
    /// The TLS port.
    pub port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts Redis in `dir` with `certs/server.pem`, `server.key` and `ca.pem`, and waits until a PING
    /// trusting `certs/ca.pem` answers.
    ///
    /// # Panics
    /// When redis-server is missing (`apt-get install redis-server redis-tools`) or does not come up.
    pub fn start(dir: &Path, certs: &Path) -> Redis {
        let [port] = free_tcp_ports::<1>().expect("a free port");
        let mut redis = Redis {
            child: None,
            port,
            dir: dir.to_path_buf(),
        };
        redis.restart(certs);
        redis
    }

    /// Stops Redis and starts it again on the same port with the certificates in `certs`.
    pub fn restart(&mut self, certs: &Path) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
        let mut cmd = Command::new(REDIS_SERVER);
        cmd.args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--tls-port")
        .arg(self.port.to_string())
        .arg("--tls-cert-file")
        .arg(certs.join("server.pem"))
        .arg("--tls-key-file")
        .arg(certs.join("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(certs.join("ca.pem"))
        .args(["--tls-auth-clients", "no", "--dir"])
        .arg(&self.dir)
        .stdin(Stdio::null())
        .stdout(fs::File::create(self.dir.join("redis.log")).expect("create redis.log"))
        .stderr(Stdio::null());
        let child = spawn_owned(cmd).unwrap_or_else(|e| {
            panic!("cannot start {REDIS_SERVER} ({e}); apt-get install redis-server redis-tools")
        });
        self.child = Some(child);
        let start = Instant::now();
        while !self.ping(&certs.join("ca.pem")) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis did not answer PING over TLS within 20 s: {}",
                tail(&self.dir.join("redis.log"))
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis-cli --tls --cacert CA -p PORT PING` answers PONG.
    pub fn ping(&self, ca_file: &Path) -> bool {
        Command::new(REDIS_CLI)
            .args(["--tls", "--cacert"])
            .arg(ca_file)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "PING"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
    }

    /// `host:port` for `[[dcs_instance]] endpoint`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}
