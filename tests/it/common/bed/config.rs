//! Config files.

use super::*;

/// Writes a certkeeper config for the bed, with the test's choices on top of defaults fit for tests
/// (`poll_interval = "100ms"`, `wait_timeout = "10s"`, ECDSA P-256, traditional key format).
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    dir: PathBuf,
    top: Vec<(String, String)>,
    acme: Vec<(String, String)>,
    dns: Vec<(String, String)>,
    emqx: Vec<(String, String)>,
    emqx_secret: String,
    /// More `[emqx.NAME]` accounts: (name, key, secret), otherwise as `[emqx.standin]`.
    more_emqx: Vec<(String, String, String)>,
    schedule: Vec<(String, String)>,
    deployments: Vec<Vec<(String, String)>>,
    /// Sub-tables of deployments: (deployment index, table name, entries written as is).
    deployment_tables: Vec<(usize, String, Entries)>,
}

/// TOML `key = value` lines of one table, values written as is.
pub(crate) type Entries = Vec<(String, String)>;

impl ConfigBuilder {
    pub(crate) fn new(bed: &Bed, dir: &Path, api_url: String, key: &str, secret: &str) -> Self {
        let path = |p: &Path| quote(&p.display().to_string());
        Self {
            dir: dir.to_path_buf(),
            top: vec![("state_dir".into(), path(&dir.join("state")))],
            acme: vec![
                ("directory".into(), quote(&bed.pebble.directory_url)),
                ("trust_roots".into(), path(&bed.pebble.ca_pem)),
                ("key_type".into(), quote("ecdsa-p256")),
                ("key_format".into(), quote("traditional")),
            ],
            dns: vec![
                ("provider".into(), quote("rfc2136")),
                ("server".into(), quote(&bed.knot.server())),
                ("tsig_key".into(), quote(TSIG_KEY)),
                ("tsig_algorithm".into(), quote("hmac-sha256")),
                ("tsig_secret_file".into(), path(&bed.knot.tsig_secret_file)),
            ],
            emqx: vec![
                ("url".into(), quote(&api_url)),
                ("key".into(), quote(key)),
                ("secret_file".into(), path(&dir.join("emqx.secret"))),
                ("poll_interval".into(), quote("100ms")),
                ("wait_timeout".into(), quote("10s")),
            ],
            emqx_secret: secret.to_owned(),
            more_emqx: Vec::new(),
            schedule: Vec::new(),
            deployments: Vec::new(),
            deployment_tables: Vec::new(),
        }
    }

    /// The state directory the config names (`DIR/state`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Uses `pebble` (directory and HTTPS trust root) instead of the bed's main Pebble.
    pub fn pebble(mut self, pebble: &Pebble) -> Self {
        set(&mut self.acme, "directory", quote(&pebble.directory_url));
        set(
            &mut self.acme,
            "trust_roots",
            quote(&pebble.ca_pem.display().to_string()),
        );
        self
    }

    /// Sets a top-level string key (e.g. `state_dir`).
    pub fn top(mut self, key: &str, value: &str) -> Self {
        set(&mut self.top, key, quote(value));
        self
    }

    /// Sets a string key in `[acme]` (e.g. `key_type`, `key_format`).
    pub fn acme(mut self, key: &str, value: &str) -> Self {
        set(&mut self.acme, key, quote(value));
        self
    }

    /// Sets a string key in `[dns.bed]` (e.g. `zone`).
    pub fn dns(mut self, key: &str, value: &str) -> Self {
        set(&mut self.dns, key, quote(value));
        self
    }

    /// Sets a string key in `[emqx.standin]` (e.g. `expire_timezone`, `wait_timeout`).
    pub fn emqx(mut self, key: &str, value: &str) -> Self {
        set(&mut self.emqx, key, quote(value));
        self
    }

    /// Sets a string key in `[schedule]` (`cron`, `jitter`); without any, the config has no `[schedule]`.
    pub fn schedule(mut self, key: &str, value: &str) -> Self {
        set(&mut self.schedule, key, quote(value));
        self
    }

    /// Adds an `[emqx.NAME]` account with its own API key and secret, otherwise like `[emqx.standin]` (as it
    /// is when the config is written). With several accounts, each deployment names its own (`emqx`).
    pub fn emqx_account(mut self, name: &str, key: &str, secret: &str) -> Self {
        self.more_emqx
            .push((name.to_owned(), key.to_owned(), secret.to_owned()));
        self
    }

    /// Sets a key in `[schedule]` to a TOML value written as is (e.g. `concurrency`, `1`).
    pub fn schedule_raw(mut self, key: &str, value: &str) -> Self {
        set(&mut self.schedule, key, value.to_owned());
        self
    }

    /// Sets a key in `[emqx.standin]` to a TOML value written as is (e.g. `get_limit`, `6`).
    pub fn emqx_raw(mut self, key: &str, value: &str) -> Self {
        set(&mut self.emqx, key, value.to_owned());
        self
    }

    /// Adds a `[[deployment]]` with `id` and `domains`.
    pub fn deployment(mut self, id: &str, domains: &[&str]) -> Self {
        let domains: Vec<String> = domains.iter().map(|d| quote(d)).collect();
        self.deployments.push(vec![
            ("id".into(), quote(id)),
            ("domains".into(), format!("[{}]", domains.join(", "))),
        ]);
        self
    }

    /// Sets a string key in the last added deployment (e.g. `tls_type`, `client_ca_file`, `renew_before`).
    ///
    /// # Panics
    /// When no deployment was added yet: a bug in the test.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        let last = self
            .deployments
            .last_mut()
            .expect("ConfigBuilder::with needs a deployment first");
        set(last, key, quote(value));
        self
    }

    /// Adds `[deployment.NAME]` to the last added deployment, with values written as TOML as is
    /// (e.g. `("reload", "[\"true\"]")`).
    ///
    /// # Panics
    /// When no deployment was added yet: a bug in the test.
    pub fn table(mut self, name: &str, entries: &[(&str, String)]) -> Self {
        assert!(
            !self.deployments.is_empty(),
            "ConfigBuilder::table needs a deployment first"
        );
        self.deployment_tables.push((
            self.deployments.len() - 1,
            name.to_owned(),
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        ));
        self
    }

    /// The config as TOML text.
    pub fn toml(&self) -> String {
        let mut out = String::from("# Written by the certkeeper test bed.\n");
        let section = |out: &mut String, header: &str, entries: &[(String, String)]| {
            if !header.is_empty() {
                out.push_str(&format!("\n{header}\n"));
            }
            for (k, v) in entries {
                out.push_str(&format!("{k} = {v}\n"));
            }
        };
        section(&mut out, "", &self.top);
        section(&mut out, "[acme]", &self.acme);
        section(&mut out, "[dns.bed]", &self.dns);
        section(&mut out, "[emqx.standin]", &self.emqx);
        for (name, key, _) in &self.more_emqx {
            let mut entries = self.emqx.clone();
            set(&mut entries, "key", quote(key));
            let secret = self.dir.join(format!("emqx-{name}.secret"));
            set(
                &mut entries,
                "secret_file",
                quote(&secret.display().to_string()),
            );
            section(&mut out, &format!("[emqx.{name}]"), &entries);
        }
        if !self.schedule.is_empty() {
            section(&mut out, "[schedule]", &self.schedule);
        }
        for (i, deployment) in self.deployments.iter().enumerate() {
            section(&mut out, "[[deployment]]", deployment);
            for (_, name, entries) in self.deployment_tables.iter().filter(|(at, ..)| *at == i) {
                section(&mut out, &format!("[deployment.{name}]"), entries);
            }
        }
        out
    }

    /// Writes `DIR/config.toml` and `DIR/emqx.secret` (both 0600) and returns the config's path.
    ///
    /// # Panics
    /// When the files cannot be written.
    pub fn write(&self) -> PathBuf {
        fs::create_dir_all(&self.dir).expect("create the config directory");
        write_private(&self.dir.join("emqx.secret"), self.emqx_secret.as_bytes())
            .expect("write emqx.secret");
        for (name, _, secret) in &self.more_emqx {
            write_private(
                &self.dir.join(format!("emqx-{name}.secret")),
                secret.as_bytes(),
            )
            .expect("write an account's secret");
        }
        let config = self.dir.join("config.toml");
        write_private(&config, self.toml().as_bytes()).expect("write config.toml");
        config
    }
}

pub(crate) fn set(entries: &mut Vec<(String, String)>, key: &str, value: String) {
    match entries.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => entries.push((key.to_owned(), value)),
    }
}

/// A TOML basic string: JSON's string escapes are valid TOML escapes.
pub fn quote(s: &str) -> String {
    // Unwrap: serializing a str cannot fail.
    serde_json::to_string(s).unwrap()
}

/// Writes `contents` to a new or truncated file with mode 0600.
///
/// # Errors
/// I/O errors.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    // The mode only applies to a new file; make an existing one private too.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}
