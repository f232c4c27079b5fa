//! The instance's CA and server certificate, as DCS would issue them: a fresh CA on each rotation and a
//! server certificate for `127.0.0.1` and `localhost` signed by it, written where a test hands them to Redis.

use std::path::Path;

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use time::OffsetDateTime;

/// One rotation's output.
pub struct Issued {
    /// The CA, PEM.
    pub ca_pem: String,
    /// The server certificate, PEM (a leaf: the "leaf instead of a CA" hostile archive uses it).
    pub server_pem: String,
    /// The server certificate's end of validity.
    pub server_not_after: OffsetDateTime,
}

/// Generates a CA valid `ca_days` and a server certificate valid `server_days`, and writes `ca.pem`,
/// `server.pem` and `server.key` into `dir`.
///
/// # Errors
/// Key generation, signing or a file write failed.
pub fn rotate(
    dir: &Path,
    generation: u32,
    ca_days: i64,
    server_days: i64,
) -> anyhow::Result<Issued> {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate().context("CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    ca.distinguished_name
        .push(DnType::CommonName, format!("DCS stand-in CA {generation}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::days(ca_days);
    let ca_cert = ca.self_signed(&ca_key).context("CA self-signature")?;
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().context("server key")?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .context("server params")?;
    server
        .distinguished_name
        .push(DnType::CommonName, "redis.dcs.standin");
    let server_not_after = now + time::Duration::days(server_days);
    server.not_before = now - time::Duration::hours(1);
    server.not_after = server_not_after;
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .context("server signature")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for (name, text) in [
        ("ca.pem", ca_cert.pem()),
        ("server.pem", server_cert.pem()),
        ("server.key", server_key.serialize_pem()),
    ] {
        std::fs::write(dir.join(name), text).with_context(|| format!("write {name}"))?;
    }
    Ok(Issued {
        ca_pem: ca_cert.pem(),
        server_pem: server_cert.pem(),
        server_not_after,
    })
}
