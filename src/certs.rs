//! Certificates and keys: PEM parsing, key generation and encodings, and the checks a bundle must pass
//! before it is pushed.
//!
//! A bundle is checked here, not by the vendor, because each rejected push costs one of six writes an hour
//! and says little more than "422". The checks mirror what EMQX documents: leaf first then the chain, key
//! matching the leaf, a key type it accepts, every configured name covered, valid now.
//!
//! Private keys are kept as PKCS#8 internally (that is what rcgen produces and reads back); the
//! "traditional" SEC 1 / PKCS#1 encodings the vendor's docs show are produced only for the push.

use std::fmt;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData as _};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

/// Key algorithm of an issued certificate: only what EMQX accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// RSA 2048 with SHA-256.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

impl KeyType {
    /// The algorithm family, as [`issuer_key_algorithm`] names it: `ECDSA` or `RSA`.
    pub fn algorithm(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 | KeyType::EcdsaP384 => "ECDSA",
            KeyType::Rsa2048 => "RSA",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
        })
    }
}

/// How the private key is written in PEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyFormat {
    /// `EC PRIVATE KEY` (SEC 1) or `RSA PRIVATE KEY` (PKCS#1), as the vendor's docs show.
    Traditional,
    /// `PRIVATE KEY` (PKCS#8).
    Pkcs8,
}

/// The most certificates a chain may hold.
pub const MAX_CHAIN: usize = 10;

/// Why a certificate, key or bundle is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The text is not PEM, or a block in it is not a certificate.
    #[error("{what} is not a valid PEM certificate bundle: {detail}")]
    BadPem {
        /// Which input.
        what: &'static str,
        /// Parser detail.
        detail: String,
    },
    /// The private key cannot be read or generated.
    #[error("private key: {0}")]
    Key(String),
    /// A check on the bundle failed.
    #[error("{0}")]
    Invalid(String),
}

/// A certificate chain (leaf first) with its private key.
#[derive(Clone)]
pub struct Bundle {
    /// PKCS#8 PEM of the private key.
    pub key_pkcs8_pem: SecretString,
    /// Leaf then intermediates, PEM.
    pub chain_pem: String,
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("key_pkcs8_pem", &"[redacted]")
            .field("chain_pem", &format_args!("{} bytes", self.chain_pem.len()))
            .finish()
    }
}

/// What the agent needs to remember about a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// dNSName subject alternative names.
    pub dns_names: Vec<String>,
}

/// Generates a fresh private key of `key_type`; returns it as PKCS#8 PEM.
///
/// # Errors
/// [`CertError::Key`] if the crypto library fails.
pub fn generate_key(key_type: KeyType) -> Result<SecretString, CertError> {
    let key = match key_type {
        KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyType::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
    }
    .map_err(|e| CertError::Key(format!("cannot generate a {key_type} key: {e}")))?;
    Ok(key.serialize_pem().into())
}

/// Builds a DER CSR for `domains` (first is the primary name) signed by `key_pkcs8_pem`.
///
/// # Errors
/// [`CertError::Key`] for an unreadable key or a name rcgen refuses.
pub fn csr_der(key_pkcs8_pem: &SecretString, domains: &[String]) -> Result<Vec<u8>, CertError> {
    let key = load_key(key_pkcs8_pem)?;
    let mut params = CertificateParams::new(domains.to_vec())
        .map_err(|e| CertError::Key(format!("cannot build the CSR: {e}")))?;
    // rcgen's default subject is "CN=rcgen self signed cert"; that must not reach the CA.
    params.distinguished_name = DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| CertError::Key(format!("cannot sign the CSR: {e}")))?;
    Ok(csr.der().to_vec())
}

fn load_key(key_pkcs8_pem: &SecretString) -> Result<KeyPair, CertError> {
    // rcgen's own error text never includes key material.
    KeyPair::from_pem(key_pkcs8_pem.expose_secret())
        .map_err(|e| CertError::Key(format!("unreadable key: {e}")))
}

/// Re-encodes a PKCS#8 PEM key in `format` for the vendor.
///
/// # Errors
/// [`CertError::Key`] when the key is not a PKCS#8 EC or RSA key.
pub fn encode_key(
    key_pkcs8_pem: &SecretString,
    format: KeyFormat,
) -> Result<SecretString, CertError> {
    if format == KeyFormat::Pkcs8 {
        return Ok(key_pkcs8_pem.clone());
    }
    use pkcs8::der::{Decode as _, Encode as _, pem::LineEnding};
    let bad = |what: &str| {
        CertError::Key(format!(
            "cannot re-encode the key as traditional PEM: {what}"
        ))
    };
    let (_, der) = pkcs8::der::pem::decode_vec(key_pkcs8_pem.expose_secret().as_bytes())
        .map_err(|_| bad("not PEM"))?;
    let info = pkcs8::PrivateKeyInfo::from_der(&der).map_err(|_| bad("not PKCS#8"))?;
    let (label, body) = match info.algorithm.oid {
        sec1::ALGORITHM_OID => {
            // Inside PKCS#8 the curve lives in the algorithm parameters; a standalone SEC 1 key must carry it
            // itself or OpenSSL-based importers cannot tell the curve.
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|_| bad("EC key without a named curve"))?;
            let mut ec = sec1::EcPrivateKey::from_der(info.private_key)
                .map_err(|_| bad("malformed EC key"))?;
            ec.parameters = Some(sec1::EcParameters::NamedCurve(curve));
            (
                "EC PRIVATE KEY",
                ec.to_der().map_err(|_| bad("cannot encode the EC key"))?,
            )
        }
        // rsaEncryption: the PKCS#8 payload already is the PKCS#1 RSAPrivateKey.
        oid if oid.to_string() == "1.2.840.113549.1.1.1" => {
            ("RSA PRIVATE KEY", info.private_key.to_vec())
        }
        other => return Err(bad(&format!("unsupported key algorithm {other}"))),
    };
    let pem = pkcs8::der::pem::encode_string(label, LineEnding::LF, &body)
        .map_err(|_| bad("PEM encoding failed"))?;
    Ok(pem.into())
}

/// Parses every `CERTIFICATE` block of a PEM text into DER; other block types are ignored.
///
/// # Errors
/// [`CertError::BadPem`] when the PEM framing or a certificate inside is broken.
pub fn parse_pem_certs(pem: &[u8]) -> Result<Vec<Vec<u8>>, CertError> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| CertError::BadPem {
            what: "certificate",
            detail: e.to_string(),
        })?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        X509Certificate::from_der(&block.contents).map_err(|e| CertError::BadPem {
            what: "certificate",
            detail: e.to_string(),
        })?;
        out.push(block.contents);
    }
    Ok(out)
}

/// Reads the facts the planner needs from a DER leaf.
///
/// # Errors
/// [`CertError::BadPem`] when the DER is not a certificate.
pub fn leaf_info(der: &[u8]) -> Result<LeafInfo, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::BadPem {
        what: "leaf",
        detail: e.to_string(),
    })?;
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                dns_names.push(n.to_ascii_lowercase());
            }
        }
    }
    Ok(LeafInfo {
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        dns_names,
    })
}

/// Checks a bundle before it is pushed: chain order and signatures, key ↔ leaf, names, validity, key type.
/// Returns the leaf's facts.
///
/// # Errors
/// [`CertError::Invalid`] naming the first check that failed.
pub fn validate(
    bundle: &Bundle,
    domains: &[String],
    now: OffsetDateTime,
) -> Result<LeafInfo, CertError> {
    let ders = parse_pem_certs(bundle.chain_pem.as_bytes())?;
    let Some(leaf_der) = ders.first() else {
        return Err(CertError::Invalid("the bundle holds no certificate".into()));
    };
    // Real chains have two or three certificates; each pair costs a signature check.
    if ders.len() > MAX_CHAIN {
        return Err(CertError::Invalid(format!(
            "the chain has {} certificates, more than the {MAX_CHAIN} a CA sends",
            ders.len()
        )));
    }
    let certs: Vec<X509Certificate<'_>> = ders
        .iter()
        // parse_pem_certs already parsed each one successfully.
        .filter_map(|d| X509Certificate::from_der(d).ok().map(|(_, c)| c))
        .collect();
    let leaf = &certs[0];
    if leaf.is_ca() {
        return Err(CertError::Invalid(
            "the first certificate is a CA, not the leaf: wrong order".into(),
        ));
    }
    for (i, pair) in certs.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        if child.issuer() != parent.subject()
            || child.verify_signature(Some(parent.public_key())).is_err()
        {
            return Err(CertError::Invalid(format!(
                "certificate {} of the chain is not signed by certificate {} (issuer `{}`, next subject `{}`)",
                i + 1,
                i + 2,
                child.issuer(),
                parent.subject()
            )));
        }
    }
    let key = load_key(&bundle.key_pkcs8_pem)?;
    if key.subject_public_key_info() != leaf.public_key().raw {
        return Err(CertError::Invalid(
            "the private key does not match the leaf certificate".into(),
        ));
    }
    check_key_type(leaf)?;
    let info = leaf_info(leaf_der)?;
    for domain in domains {
        if !info.dns_names.iter().any(|n| n == domain) {
            return Err(CertError::Invalid(format!(
                "the certificate does not cover `{domain}` (it names {})",
                info.dns_names.join(", ")
            )));
        }
    }
    if now < info.not_before || now >= info.not_after {
        return Err(CertError::Invalid(format!(
            "the certificate is not valid now (valid {} to {})",
            info.not_before, info.not_after
        )));
    }
    Ok(info)
}

/// Whether the PKCS#8 PEM key `key_pem` belongs to the certificate `leaf_der`; `None` when either cannot be
/// read (a key in another format, say), so that callers can tell "does not match" from "cannot tell".
pub fn key_matches(key_pem: &SecretString, leaf_der: &[u8]) -> Option<bool> {
    let key = load_key(key_pem).ok()?;
    let leaf = spki(leaf_der).ok()?;
    Some(key.subject_public_key_info() == leaf)
}

/// Splits a PEM chain into its first certificate (the leaf, with a trailing newline) and the rest.
pub fn split_leaf(chain: &str) -> Option<(String, String)> {
    const END: &str = "-----END CERTIFICATE-----";
    let end = chain.find(END)? + END.len();
    let leaf = format!("{}\n", chain[..end].trim_start());
    let rest = chain[end..].trim_start();
    Some((
        leaf,
        if rest.is_empty() {
            String::new()
        } else {
            rest.to_owned()
        },
    ))
}

/// The SubjectPublicKeyInfo (DER) of a certificate.
///
/// # Errors
/// [`CertError::BadPem`] when the DER is not a certificate.
pub fn spki(der: &[u8]) -> Result<Vec<u8>, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::BadPem {
        what: "certificate",
        detail: e.to_string(),
    })?;
    Ok(cert.public_key().raw.to_vec())
}

/// The key algorithm of a certificate: `ECDSA`, `RSA`, or the OID of another.
fn key_algorithm(der: &[u8]) -> Result<String, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::BadPem {
        what: "certificate",
        detail: e.to_string(),
    })?;
    Ok(
        match cert
            .public_key()
            .algorithm
            .algorithm
            .to_id_string()
            .as_str()
        {
            "1.2.840.10045.2.1" => "ECDSA".to_owned(),
            "1.2.840.113549.1.1.1" => "RSA".to_owned(),
            other => other.to_owned(),
        },
    )
}

/// The key algorithm (`ECDSA`, `RSA`) of the certificate that issued the bundle's leaf, when the chain has one.
pub fn issuer_key_algorithm(bundle: &Bundle) -> Option<String> {
    let ders = parse_pem_certs(bundle.chain_pem.as_bytes()).ok()?;
    key_algorithm(ders.get(1)?).ok()
}

/// Checks that the leaf's key algorithm (EC or RSA) is the one of the certificate that issued it, as EMQX's
/// docs require.
///
/// # Errors
/// [`CertError::Invalid`] naming both algorithms; a bundle without an issuer passes.
pub fn check_issuer_key_match(bundle: &Bundle) -> Result<(), CertError> {
    let ders = parse_pem_certs(bundle.chain_pem.as_bytes())?;
    let alg = key_algorithm;
    match (ders.first(), ders.get(1)) {
        (Some(leaf), Some(issuer)) => {
            let (l, i) = (alg(leaf)?, alg(issuer)?);
            if l == i {
                Ok(())
            } else {
                Err(CertError::Invalid(format!(
                    "the leaf's key is {l} but its issuer's is {i}"
                )))
            }
        }
        _ => Ok(()),
    }
}

/// The key type of the bundle's leaf, when it is one certkeeper issues.
pub fn key_type(bundle: &Bundle) -> Option<KeyType> {
    use x509_parser::public_key::PublicKey;
    let ders = parse_pem_certs(bundle.chain_pem.as_bytes()).ok()?;
    let (_, leaf) = X509Certificate::from_der(ders.first()?).ok()?;
    match leaf.public_key().parsed().ok()? {
        PublicKey::RSA(rsa) if rsa.key_size() == 2048 => Some(KeyType::Rsa2048),
        PublicKey::EC(_) => {
            let curve = leaf
                .public_key()
                .algorithm
                .parameters
                .as_ref()?
                .as_oid()
                .ok()?
                .to_id_string();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => Some(KeyType::EcdsaP256),
                "1.3.132.0.34" => Some(KeyType::EcdsaP384),
                _ => None,
            }
        }
        _ => None,
    }
}

/// EMQX accepts RSA 1024/2048 and ECDSA P-256/P-384 leaves only.
fn check_key_type(leaf: &X509Certificate<'_>) -> Result<(), CertError> {
    use x509_parser::public_key::PublicKey;
    match leaf.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) if matches!(rsa.key_size(), 1024 | 2048) => Ok(()),
        Ok(PublicKey::EC(_)) => {
            let curve = leaf
                .public_key()
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" | "1.3.132.0.34" => Ok(()),
                other => Err(CertError::Invalid(format!(
                    "EMQX accepts ECDSA P-256/P-384 only; the leaf uses curve {other}"
                ))),
            }
        }
        Ok(PublicKey::RSA(rsa)) => Err(CertError::Invalid(format!(
            "EMQX accepts RSA 1024/2048 only; the leaf has RSA {}",
            rsa.key_size()
        ))),
        _ => Err(CertError::Invalid(
            "EMQX accepts RSA or ECDSA leaves only".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa};
    use time::Duration;

    fn bundle(names: &[&str], key_type: KeyType, days: i64) -> Bundle {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key_pem = generate_key(key_type).unwrap();
        let key = KeyPair::from_pem(key_pem.expose_secret()).unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        p.not_after = OffsetDateTime::now_utc() + Duration::days(days);
        let leaf = p.signed_by(&key, &ca).unwrap();
        Bundle {
            key_pkcs8_pem: key_pem,
            chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn good_bundle_passes_and_reports_names() {
        let b = bundle(
            &["a.example.com", "*.a.example.com"],
            KeyType::EcdsaP256,
            90,
        );
        let info = validate(
            &b,
            &["a.example.com".into(), "*.a.example.com".into()],
            now(),
        )
        .unwrap();
        assert_eq!(info.dns_names, ["a.example.com", "*.a.example.com"]);
    }

    #[test]
    fn wrong_order_missing_name_and_foreign_key_fail() {
        let b = bundle(&["a.example.com"], KeyType::EcdsaP256, 90);
        let certs: Vec<&str> = b
            .chain_pem
            .split_inclusive("-----END CERTIFICATE-----\n")
            .collect();
        let reversed = Bundle {
            key_pkcs8_pem: b.key_pkcs8_pem.clone(),
            chain_pem: format!("{}{}", certs[1], certs[0]),
        };
        assert!(validate(&reversed, &["a.example.com".into()], now()).is_err());
        let e = validate(&b, &["b.example.com".into()], now()).unwrap_err();
        assert!(e.to_string().contains("b.example.com"), "{e}");
        let other = Bundle {
            key_pkcs8_pem: generate_key(KeyType::EcdsaP256).unwrap(),
            chain_pem: b.chain_pem.clone(),
        };
        let e = validate(&other, &["a.example.com".into()], now()).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
    }

    #[test]
    fn expired_is_rejected() {
        let b = bundle(&["a.example.com"], KeyType::EcdsaP256, 90);
        let later = now() + Duration::days(100);
        assert!(validate(&b, &["a.example.com".into()], later).is_err());
    }

    #[test]
    fn traditional_encodings_round_trip() {
        for (kt, label) in [
            (KeyType::EcdsaP256, "EC PRIVATE KEY"),
            (KeyType::EcdsaP384, "EC PRIVATE KEY"),
            (KeyType::Rsa2048, "RSA PRIVATE KEY"),
        ] {
            let key = generate_key(kt).unwrap();
            let trad = encode_key(&key, KeyFormat::Traditional).unwrap();
            assert!(
                trad.expose_secret()
                    .starts_with(&format!("-----BEGIN {label}-----")),
                "{kt}"
            );
            // rustls reads SEC 1 / PKCS#1 too: proves the encoding is well-formed with the curve included.
            use rustls_pki_types::{PrivateKeyDer, pem::PemObject as _};
            let der = PrivateKeyDer::from_pem_slice(trad.expose_secret().as_bytes()).unwrap();
            assert!(!matches!(der, PrivateKeyDer::Pkcs8(_)));
            let pk8 = encode_key(&key, KeyFormat::Pkcs8).unwrap();
            assert!(
                pk8.expose_secret()
                    .starts_with("-----BEGIN PRIVATE KEY-----")
            );
        }
        let b = bundle(&["a.example.com"], KeyType::Rsa2048, 90);
        assert!(validate(&b, &["a.example.com".into()], now()).is_ok());
    }

    #[test]
    fn key_type_of_the_leaf() {
        for kt in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048] {
            assert_eq!(key_type(&bundle(&["a.example.com"], kt, 90)), Some(kt));
        }
    }

    #[test]
    fn bundle_debug_is_redacted() {
        let b = bundle(&["a.example.com"], KeyType::EcdsaP256, 90);
        assert!(!format!("{b:?}").contains("PRIVATE"));
    }
}
