//! Shared helpers of the integration tests: one [`Bed`] (knotd + Pebble) per test binary, and a [`Case`] per
//! test (its own directory, stand-in and config), plus assertions every renewal test makes.
//!
//! Tests run in parallel threads of one process, so every test uses its own domain names under `example.test`
//! and its own stand-in; only knotd and Pebble are shared.

#![allow(dead_code)] // Each test binary uses a different subset.

pub mod ari;
pub mod bed;
pub mod daemon;
pub mod dcs;
pub mod dns_standins;
pub mod mosquitto;
pub mod probe;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;

#[allow(unused_imports)] // Each test binary uses a different subset.
pub use bed::{Bed, BedDir, Binaries, ConfigBuilder, PebbleCounts, Run, Standin};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// The stand-in API key every case creates, allowed for all deployments.
pub const KEY: &str = "app-key";
/// The secret of [`KEY`].
pub const SECRET: &str = "app-secret-0123456789";

static BED: OnceLock<Bed> = OnceLock::new();

/// The test bed of this test binary, started on first use.
///
/// # Panics
/// When knotd or Pebble cannot be started (not installed: `apt-get install pebble knot knot-dnsutils`).
pub fn bed() -> &'static Bed {
    BED.get_or_init(|| {
        let binaries = Binaries {
            certkeeper: env!("CARGO_BIN_EXE_certkeeper").into(),
            standin: standin_binary(),
        };
        let bed = Bed::start(binaries, BedDir::Temporary)
            .unwrap_or_else(|e| panic!("the test bed did not start: {e}"));
        // Statics are never dropped: stop the servers and remove the bed directory when the process exits.
        // (If the process is killed instead, PDEATHSIG still takes the servers down.)
        extern "C" fn shutdown() {
            if let Some(bed) = BED.get() {
                bed.shutdown();
            }
        }
        // SAFETY: registers a plain function; it runs once at exit.
        unsafe {
            libc::atexit(shutdown);
        }
        bed
    })
}

/// The stand-in's binary: another workspace package's, so no `CARGO_BIN_EXE_` names it. It sits in this test
/// binary's profile directory (`target/debug/`) once `cargo test --workspace` has built the workspace;
/// `EMQX_STANDIN_BIN` overrides.
///
/// # Panics
/// When it is not there: the suite was started without `--workspace`.
fn standin_binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("EMQX_STANDIN_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/TEST-HASH → target/debug/emqx-standin
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/PROFILE/deps")
        .join("emqx-standin");
    assert!(
        path.is_file(),
        "{} is missing: run the suite as `cargo test --workspace --all-features` (it builds crates/emqx-standin), \
         or set EMQX_STANDIN_BIN",
        path.display()
    );
    path
}

/// The key id of the External Account Binding that [`eab_pebble`] knows.
pub const EAB_KID: &str = "kid-1";
/// The HMAC key of [`EAB_KID`], base64url as a CA's console shows it (Pebble's example key).
pub const EAB_HMAC_KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

static EAB_PEBBLE: OnceLock<bed::Pebble> = OnceLock::new();

/// A Pebble of this test binary's bed that requires External Account Binding with [`EAB_KID`] /
/// [`EAB_HMAC_KEY`], started on first use.
///
/// # Panics
/// When it cannot be started.
pub fn eab_pebble() -> &'static bed::Pebble {
    EAB_PEBBLE.get_or_init(|| {
        bed()
            .extra_pebble(
                "pebble-eab",
                &json!({
                    "externalAccountBindingRequired": true,
                    "externalAccountMACKeys": {EAB_KID: EAB_HMAC_KEY},
                }),
            )
            .unwrap_or_else(|e| panic!("the EAB Pebble did not start: {e}"))
    })
}

/// One test's world: a directory (config, secrets, state), a fresh stand-in with [`KEY`] and its deployments.
pub struct Case {
    /// The test's name, for messages.
    pub name: String,
    /// Removed when the case drops.
    pub dir: tempfile::TempDir,
    /// The test's own EMQX API stand-in.
    pub standin: Standin,
}

impl Case {
    /// A new case: a fresh directory and a stand-in that knows [`KEY`]/[`SECRET`] (allowed everywhere).
    pub fn new(name: &str) -> Self {
        let bed = bed();
        let dir = tempfile::Builder::new()
            .prefix(&format!("certkeeper-{name}-"))
            .tempdir()
            .expect("create the case directory");
        let standin = bed.standin(&dir.path().join("standin.log"));
        standin.put_key(KEY, SECRET, None);
        Self {
            name: name.to_owned(),
            dir,
            standin,
        }
    }

    /// A config for this case's stand-in with the right credentials; add deployments and write it.
    pub fn config(&self) -> ConfigBuilder {
        bed().config(self.dir.path(), &self.standin, KEY, SECRET)
    }

    /// [`Case::config`] with another API secret than the stand-in's: every vendor request gets a 401.
    pub fn config_with_secret(&self, secret: &str) -> ConfigBuilder {
        bed().config(self.dir.path(), &self.standin, KEY, secret)
    }

    /// The state directory the case's configs name.
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    /// Runs `certkeeper --config CONFIG ARGS...`.
    pub fn run(&self, config: &Path, args: &[&str]) -> Run {
        bed().run_certkeeper(config, args)
    }

    /// Creates deployment `id` in the stand-in: `tls_type`, running, with a certificate expiring at `expire`
    /// (`None`: no certificate yet).
    pub fn deployment(&self, id: &str, tls_type: &str, expire: Option<OffsetDateTime>) {
        let expire = expire.map(rfc3339);
        self.standin.put_deployment(
            id,
            &json!({"tlsType": tls_type, "expire": expire, "status": "running"}),
        );
    }

    /// How many vendor API requests with `method` the stand-in saw.
    pub fn requests(&self, method: &str) -> usize {
        self.standin
            .log()
            .iter()
            .filter(|entry| entry["method"] == method)
            .count()
    }

    /// The methods of all vendor API requests, in order (for failure messages).
    pub fn request_summary(&self) -> String {
        self.standin
            .log()
            .iter()
            .map(|e| format!("{} {} -> {}", e["method"], e["path"], e["status"]))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Asserts what holds after every run: no DELETE ever reached the vendor API (it disconnects clients), and
    /// the state directory, if any, is private.
    pub fn assert_invariants(&self) {
        assert_eq!(
            self.requests("DELETE"),
            0,
            "{}: certkeeper sent DELETE:\n{}",
            self.name,
            self.request_summary()
        );
        let state = self.state_dir();
        if state.exists() {
            assert_private(&state);
        }
    }
}

/// `t` as RFC 3339 in UTC (the stand-in's admin API format).
pub fn rfc3339(t: OffsetDateTime) -> String {
    // Unwrap: every UTC date in the years we use formats as RFC 3339.
    t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap()
}

/// Now plus `d`.
pub fn from_now(d: Duration) -> OffsetDateTime {
    OffsetDateTime::now_utc() + d
}

/// Asserts the state directory is 0700, and every directory below it 0700 and every file 0600.
pub fn assert_private(dir: &Path) {
    let mode = fs::metadata(dir)
        .expect("stat state dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "{} has mode {mode:o}, want 700", dir.display());
    for entry in fs::read_dir(dir).expect("list state dir") {
        let entry = entry.expect("read state dir entry");
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).expect("stat state entry");
        if meta.is_dir() {
            assert_private(&path);
        } else {
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(
                mode,
                0o600,
                "{} has mode {mode:o}, want 600",
                path.display()
            );
        }
    }
}

/// Asserts no TXT record is left at the `_acme-challenge` owner of any of `domains`.
pub fn assert_no_txt(domains: &[&str]) {
    for domain in domains {
        let owner = Bed::challenge_owner(domain);
        let left = bed().txt_records(&owner);
        assert!(left.is_empty(), "TXT records left at {owner}: {left:?}");
    }
}

/// What a test checks of a PEM certificate chain.
#[derive(Debug)]
pub struct Chain {
    /// DNS names in the leaf's subjectAltName.
    pub names: Vec<String>,
    /// The leaf's notAfter.
    pub not_after: OffsetDateTime,
    /// The leaf's subject, RFC 4514-ish.
    pub subject: String,
    /// The leaf's issuer.
    pub issuer: String,
    /// Number of certificates in the PEM.
    pub len: usize,
    /// The leaf's key type in config terms: `ecdsa-p256`, `ecdsa-p384`, `rsa-2048`, or `other-…`.
    pub key_type: String,
}

/// Parses a PEM chain (leaf first).
///
/// # Panics
/// When it holds no parsable certificate.
pub fn parse_chain(pem: &str) -> Chain {
    use x509_parser::extensions::GeneralName;
    let blocks: Vec<_> = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("the cert is PEM");
    assert!(!blocks.is_empty(), "no PEM block in cert");
    let leaf = blocks[0].parse_x509().expect("the leaf parses as X.509");
    let names = leaf
        .subject_alternative_name()
        .expect("a valid SAN extension")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    use x509_parser::public_key::PublicKey;
    let key_type = match leaf.public_key().parsed() {
        Ok(PublicKey::EC(point)) => format!("ecdsa-p{}", point.key_size()),
        Ok(PublicKey::RSA(rsa)) => format!("rsa-{}", rsa.key_size()),
        Ok(other) => format!("other-{}", other.key_size()),
        Err(e) => format!("other-unparsable ({e})"),
    };
    Chain {
        key_type,
        names,
        not_after: leaf.validity().not_after.to_datetime(),
        subject: leaf.subject().to_string(),
        issuer: leaf.issuer().to_string(),
        len: blocks.len(),
    }
}

/// Asserts the stand-in holds a fresh certificate for exactly `domains` on deployment `id`, with a key, running;
/// returns the stand-in's view.
pub fn assert_deployed(case: &Case, id: &str, domains: &[&str]) -> Value {
    let view = case.standin.deployment(id);
    let cert = view["cert"]
        .as_str()
        .unwrap_or_else(|| panic!("{id}: no cert in the stand-in: {view}"));
    assert!(
        view["key"].is_string(),
        "{id}: no key in the stand-in: {view}"
    );
    let chain = parse_chain(cert);
    let mut want: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
    let mut got = chain.names.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "{id}: SANs of the pushed leaf");
    assert!(
        chain.len >= 2,
        "{id}: pushed cert has no chain ({} block)",
        chain.len
    );
    assert!(
        chain.not_after > from_now(Duration::days(60)),
        "{id}: pushed leaf expires {}",
        chain.not_after
    );
    assert_eq!(view["status"], "running", "{id}: stand-in view {view}");
    view
}

/// The stand-in's `expire` of deployment `id`.
pub fn deployed_expire(case: &Case, id: &str) -> Option<OffsetDateTime> {
    case.standin.deployment(id)["expire"]
        .as_str()
        .map(|s| OffsetDateTime::parse(s, &Rfc3339).expect("stand-in expire is RFC 3339"))
}

/// Writes a throwaway client CA (PEM) to `path`, for two-way TLS.
pub fn write_client_ca(path: &Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let key = KeyPair::generate().expect("generate a client CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "certkeeper test client CA");
    let pem = params.self_signed(&key).expect("self-sign client CA").pem();
    fs::write(path, &pem).expect("write client CA");
    pem
}

/// Runs certkeeper like [`common::Bed::run_certkeeper`], with extra environment variables.
pub fn run_with_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let bed = self::bed();
    let _shared = bed.shared();
    let mut cmd = std::process::Command::new(&bed.binaries.certkeeper);
    cmd.arg("--config").arg(config).args(args);
    bed::scrub_env(&mut cmd);
    cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    bed::run_captured(cmd, std::time::Duration::from_secs(120))
}

/// A throwaway CA and a leaf for `127.0.0.1` and `localhost` it signed: for the test's own TLS servers.
pub struct ThrowawayTls {
    /// The CA certificate, PEM (what a client trusts).
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: rustls_pki_types::CertificateDer<'static>,
    /// The leaf, PEM.
    pub leaf_pem: String,
    /// The leaf, DER.
    pub leaf_der: rustls_pki_types::CertificateDer<'static>,
    /// The leaf's key, PKCS#8 PEM.
    pub key_pem: String,
    /// The leaf's key, DER.
    pub key_der: rustls_pki_types::PrivateKeyDer<'static>,
}

impl ThrowawayTls {
    /// A new CA named `ca_name` and its leaf.
    pub fn new(ca_name: &str) -> ThrowawayTls {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("generate a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("generate a leaf key");
        let mut leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("leaf params");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("sign the leaf");
        ThrowawayTls {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            leaf_pem: leaf.pem(),
            leaf_der: leaf.der().clone(),
            key_pem: leaf_key.serialize_pem(),
            key_der: rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        }
    }
}
