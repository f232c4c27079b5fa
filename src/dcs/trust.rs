//! The trust file a DCS instance's clients read (`ca_file`): parsing a CA bundle, merging an old CA in while
//! it is still valid (`ca_overlap`), and writing it atomically with the previous version kept as
//! `<ca_file>.prev` (mode 0644: CA certificates are public, and every client must read them).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// Mode of `ca_file` and `<ca_file>.prev`.
pub const CA_MODE: u32 = 0o644;

/// One CA certificate of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCert {
    /// DER.
    pub der: Vec<u8>,
    /// SHA-256 of the DER, lower-case hex.
    pub fingerprint: String,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// Why a CA bundle is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// No PEM certificate, or one that does not parse.
    #[error("{what} holds no parsable PEM certificate")]
    NoCertificate {
        /// What was read.
        what: String,
    },
    /// A certificate that is no CA (a leaf, or without basicConstraints CA:TRUE).
    #[error(
        "{what} holds a certificate that is not a CA ({subject}); clients need the CA, not a server certificate"
    )]
    NotCa {
        /// What was read.
        what: String,
        /// Its subject.
        subject: String,
    },
    /// A certificate outside its validity period.
    #[error(
        "{what} holds a CA certificate that is not valid now ({subject}, valid until {not_after})"
    )]
    NotValidNow {
        /// What was read.
        what: String,
        /// Its subject.
        subject: String,
        /// End of validity.
        not_after: String,
    },
    /// A file operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_err<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> TrustError + 'p {
    move |source| TrustError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Parses `pem` as a CA bundle: at least one certificate, each a CA valid at `now`.
///
/// # Errors
/// A [`TrustError`] naming `what`.
pub fn parse_ca_bundle(
    pem: &[u8],
    what: &str,
    now: OffsetDateTime,
) -> Result<Vec<CaCert>, TrustError> {
    let none = || TrustError::NoCertificate {
        what: what.to_owned(),
    };
    let ders = crate::certs::parse_pem_certs(pem).map_err(|_| none())?;
    if ders.is_empty() {
        return Err(none());
    }
    let mut out = Vec::new();
    for der in ders {
        let (_, cert) = X509Certificate::from_der(&der).map_err(|_| none())?;
        let subject = cert.subject().to_string();
        if !cert.is_ca() {
            return Err(TrustError::NotCa {
                what: what.to_owned(),
                subject,
            });
        }
        let not_after = cert.validity().not_after.to_datetime();
        if cert.validity().not_before.to_datetime() > now || not_after < now {
            return Err(TrustError::NotValidNow {
                what: what.to_owned(),
                subject,
                not_after: crate::pipeline::day(not_after),
            });
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
        out.push(CaCert {
            fingerprint: super::sign::hex(digest.as_ref()),
            der,
            not_after,
        });
    }
    Ok(out)
}

/// The CAs in `path` now; `None` when the file is missing or does not hold a usable bundle (so it is
/// replaced), an error only when it cannot be read.
///
/// # Errors
/// The file exists but cannot be read.
pub fn in_place(path: &Path, now: OffsetDateTime) -> Result<Option<Vec<CaCert>>, TrustError> {
    match crate::config::read_bounded(path) {
        Ok(bytes) => Ok(parse_ca_bundle(&bytes, "ca_file", now).ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// What `ca_file` should hold: the new CAs, followed (with `overlap`) by the old ones still valid at `now`
/// that the new bundle does not already contain.
pub fn merged(
    new: &[CaCert],
    old: Option<&[CaCert]>,
    overlap: bool,
    now: OffsetDateTime,
) -> Vec<CaCert> {
    let mut out = new.to_vec();
    if overlap {
        for cert in old.unwrap_or_default() {
            if cert.not_after > now && !out.iter().any(|c| c.fingerprint == cert.fingerprint) {
                out.push(cert.clone());
            }
        }
    }
    out
}

/// Returns true if and only if both bundles hold the same certificates (in any order).
pub fn same(a: &[CaCert], b: &[CaCert]) -> bool {
    let mut x: Vec<&str> = a.iter().map(|c| c.fingerprint.as_str()).collect();
    let mut y: Vec<&str> = b.iter().map(|c| c.fingerprint.as_str()).collect();
    x.sort_unstable();
    y.sort_unstable();
    x == y
}

/// PEM text of `certs`.
pub fn to_pem(certs: &[CaCert]) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    for cert in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&cert.der);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// `<path>.prev`.
pub fn prev(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".prev");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically, mode [`CA_MODE`], as the files target writes its certificates.
///
/// # Errors
/// A [`TrustError::Io`] naming the file; the old file is intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrustError> {
    crate::deploy::files::write_file_atomically(path, bytes, CA_MODE, None, None).map_err(|e| {
        TrustError::Io {
            what: e.what,
            path: e.path,
            source: e.source,
        }
    })
}

/// Replaces `path` with `pem`, keeping what it held as `<path>.prev`. Returns the previous bytes (`None` when
/// there was no file) for a roll-back.
///
/// # Errors
/// A [`TrustError::Io`]; `path` is intact.
pub fn replace(path: &Path, pem: &[u8]) -> Result<Option<Vec<u8>>, TrustError> {
    let before = match crate::config::read_bounded(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("read", path)(e)),
    };
    if let Some(bytes) = &before {
        write_atomic(&prev(path), bytes)?;
    }
    write_atomic(path, pem)?;
    Ok(before)
}

/// Puts `before` back (or removes the new file when there was none).
///
/// # Errors
/// A [`TrustError::Io`].
pub fn restore(path: &Path, before: Option<&[u8]>) -> Result<(), TrustError> {
    match before {
        Some(bytes) => write_atomic(path, bytes),
        None => fs::remove_file(path).map_err(io_err("remove", path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use std::os::unix::fs::PermissionsExt as _;

    fn ca(days: i64, is_ca: bool) -> String {
        let mut params = CertificateParams::new(vec!["test".to_owned()]).unwrap();
        if is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        params.not_before = OffsetDateTime::now_utc() - time::Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + time::Duration::days(days);
        params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .pem()
    }

    #[test]
    fn leaves_and_expired_cas_are_refused() {
        let now = OffsetDateTime::now_utc();
        assert!(matches!(
            parse_ca_bundle(ca(10, false).as_bytes(), "x", now),
            Err(TrustError::NotCa { .. })
        ));
        assert!(matches!(
            parse_ca_bundle(ca(-1, true).as_bytes(), "x", now),
            Err(TrustError::NotValidNow { .. })
        ));
        assert!(matches!(
            parse_ca_bundle(b"junk", "x", now),
            Err(TrustError::NoCertificate { .. })
        ));
        assert_eq!(
            parse_ca_bundle(ca(10, true).as_bytes(), "x", now)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn overlap_keeps_the_old_ca_and_writes_keep_prev() {
        let now = OffsetDateTime::now_utc();
        let old = parse_ca_bundle(ca(10, true).as_bytes(), "x", now).unwrap();
        let new = parse_ca_bundle(ca(20, true).as_bytes(), "x", now).unwrap();
        let both = merged(&new, Some(&old), true, now);
        assert_eq!(both.len(), 2);
        assert!(same(&merged(&new, Some(&old), false, now), &new));
        assert_eq!(
            parse_ca_bundle(to_pem(&both).as_bytes(), "x", now).unwrap(),
            both
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        assert_eq!(replace(&path, to_pem(&old).as_bytes()).unwrap(), None);
        let before = replace(&path, to_pem(&both).as_bytes()).unwrap();
        assert_eq!(before.as_deref(), Some(to_pem(&old).as_bytes()));
        assert_eq!(fs::read(prev(&path)).unwrap(), to_pem(&old).as_bytes());
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            CA_MODE
        );
        restore(&path, before.as_deref()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), to_pem(&old).as_bytes());
    }
}
