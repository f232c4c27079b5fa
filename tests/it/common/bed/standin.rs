//! The EMQX stand-in.

use super::*;

/// A running `emqx-standin`; killed on drop.
#[derive(Debug)]
pub struct Standin {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its stderr (one line per request).
    pub log_file: PathBuf,
}

impl Standin {
    /// Spawns `bin` on a free port and waits for its `emqx-standin listening on http://…` line.
    ///
    /// # Errors
    /// When it cannot be spawned, exits, or does not announce its address within a few seconds.
    pub fn start(bin: &Path, log: &Path) -> Result<Self, BedError> {
        let stderr = fs::File::create(log)?;
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        scrub_env(&mut cmd);
        let mut child = spawn_owned(cmd)?;
        // Unwrap: stdout was set to piped above.
        let stdout = child.stdout.take().unwrap();
        let line = first_line(stdout, STARTUP_TIMEOUT);
        let addr = line
            .as_deref()
            .and_then(|l| l.trim().strip_prefix("emqx-standin listening on http://"))
            .and_then(|a| a.parse::<SocketAddr>().ok());
        match addr {
            Some(addr) => Ok(Self {
                child,
                addr,
                log_file: log.to_path_buf(),
            }),
            None => {
                kill_group(&mut child);
                Err(format!(
                    "expected `emqx-standin listening on http://127.0.0.1:PORT` on stdout, got {line:?}; \
                     stderr: {}",
                    tail(log)
                )
                .into())
            }
        }
    }

    /// The vendor API base URL, `http://127.0.0.1:PORT/api/v1` (certkeeper's `[emqx.*] url`).
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// Creates or replaces API key `key` with `secret`, allowed for `deployments` (`None`: all).
    pub fn put_key(&self, key: &str, secret: &str, deployments: Option<&[&str]>) {
        let body = serde_json::json!({"secret": secret, "deployments": deployments});
        self.admin_expect("PUT", &format!("/_admin/keys/{key}"), Some(&body), 204);
    }

    /// Creates or replaces deployment `id`: `body` is `{"tlsType", "expire" (RFC 3339 or null), "status"}`.
    pub fn put_deployment(&self, id: &str, body: &Value) {
        self.admin_expect("PUT", &format!("/_admin/deployments/{id}"), Some(body), 204);
    }

    /// Changes some settings (`pending`, `old_dialect`, `zone`, `fail_writes`, …); returns all of them.
    pub fn settings(&self, patch: &Value) -> Value {
        self.admin_expect("PUT", "/_admin/settings", Some(patch), 200)
    }

    /// The stand-in's full view of deployment `id` (cert, key and cacert as stored, RFC 3339 expire, writes).
    pub fn deployment(&self, id: &str) -> Value {
        self.admin_expect("GET", &format!("/_admin/deployments/{id}"), None, 200)
    }

    /// Every vendor API request so far, in order: `{"method", "path", "key", "status", "at"}`.
    pub fn log(&self) -> Vec<Value> {
        match self.admin_expect("GET", "/_admin/log", None, 200) {
            Value::Array(entries) => entries,
            other => panic!("stand-in log is not an array: {other}"),
        }
    }

    /// A vendor API request with basic auth, as certkeeper would send it: `(status, body)`.
    ///
    /// # Errors
    /// When the stand-in cannot be reached.
    pub fn vendor(
        &self,
        method: &str,
        path: &str,
        key: &str,
        secret: &str,
    ) -> io::Result<(u16, Value)> {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"));
        let (status, body) = http(
            self.addr,
            method,
            &format!("/api/v1{path}"),
            None,
            Some(&auth),
        )?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    fn admin_expect(&self, method: &str, path: &str, body: Option<&Value>, want: u16) -> Value {
        let (status, bytes) = http(self.addr, method, path, body, None)
            .unwrap_or_else(|e| panic!("stand-in admin {method} {path}: {e}"));
        assert_eq!(
            status,
            want,
            "stand-in admin {method} {path} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "stand-in admin {method} {path}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        }
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}
