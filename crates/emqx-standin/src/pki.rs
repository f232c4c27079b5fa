//! Certificate and private-key checks, done the way the vendor describes them.
//!
//! This module owns every rule about the PEM material a client uploads: which PEM blocks are
//! accepted, which key types the vendor allows, whether the key belongs to the leaf, whether the
//! chain is in order and whether the leaf is inside its validity period.
//!
//! It deliberately shares no code with the certkeeper library: it parses with `x509-parser`
//! (certificates) and the `pkcs8`/`sec1`/`der` crates (keys), so a bug in certkeeper's own
//! checks cannot hide behind the same bug here. It works on plain values and never touches the
//! stand-in's state, which keeps it easy to unit-test. Every failure is a human-readable
//! message naming the problem; it becomes the `message` of a 422 answer.

use pkcs8::der::asn1::UintRef;
use pkcs8::der::{Reader, SliceReader};
use pkcs8::{ObjectIdentifier, PrivateKeyInfo};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;
use x509_parser::public_key::PublicKey;

/// `rsaEncryption` (RFC 8017, appendix A.1).
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// `id-ecPublicKey` (RFC 5480, section 2.1.1).
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `secp256r1`, also known as P-256 (RFC 5480, section 2.1.1.1).
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// `secp384r1`, also known as P-384 (RFC 5480, section 2.1.1.1).
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// The RSA modulus sizes the vendor accepts ("RSA 2048 (1024)").
const ALLOWED_RSA_BITS: [usize; 2] = [1024, 2048];

/// The PEM labels of private keys the vendor accepts (PKCS#1, SEC1, PKCS#8).
const ACCEPTED_KEY_LABELS: [&str; 3] = ["RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY"];

/// An elliptic curve, named by its OID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
    /// Any other curve (never accepted).
    Other,
}

impl Curve {
    fn from_oid(oid: &ObjectIdentifier) -> Curve {
        if *oid == OID_P256 {
            Curve::P256
        } else if *oid == OID_P384 {
            Curve::P384
        } else {
            Curve::Other
        }
    }

    fn from_der_oid_content(content: &[u8]) -> Curve {
        match ObjectIdentifier::from_bytes(content) {
            Ok(oid) => Curve::from_oid(&oid),
            Err(_) => Curve::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::Other => "an unsupported curve",
        }
    }
}

/// The public half of an uploaded private key, derived from the private key structure.
///
/// `Debug` is written by hand so that nothing derived from the key reaches a log by accident.
#[derive(PartialEq, Eq)]
pub enum KeyPublicPart {
    /// An RSA key: big-endian modulus and public exponent, without leading zero bytes.
    Rsa {
        /// The modulus `n`.
        modulus: Vec<u8>,
        /// The public exponent `e`.
        exponent: Vec<u8>,
    },
    /// An EC key: its curve when the key names one, and its public point when the key embeds it.
    Ec {
        /// The curve, if named in the SEC1 or PKCS#8 structure.
        curve: Option<Curve>,
        /// The SEC1-encoded public point, if embedded in the key.
        public_point: Option<Vec<u8>>,
    },
}

impl std::fmt::Debug for KeyPublicPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyPublicPart::Rsa { .. } => f.write_str("KeyPublicPart::Rsa"),
            KeyPublicPart::Ec { curve, .. } => write!(f, "KeyPublicPart::Ec({curve:?})"),
        }
    }
}

/// The public key of the leaf certificate, restricted to the types the vendor accepts.
#[derive(Debug, PartialEq, Eq)]
pub enum LeafKey {
    /// RSA with its modulus and exponent (no leading zero bytes).
    Rsa {
        /// The modulus `n`.
        modulus: Vec<u8>,
        /// The public exponent `e`.
        exponent: Vec<u8>,
    },
    /// ECDSA on P-256 or P-384 with its SEC1-encoded public point.
    Ec {
        /// The curve (never [`Curve::Other`]).
        curve: Curve,
        /// The SEC1-encoded public point.
        point: Vec<u8>,
    },
}

/// What a successful check of a certificate bundle yields.
#[derive(Debug)]
pub struct CheckedBundle {
    /// The leaf's notAfter: what the vendor reports as `expire`.
    pub not_after: OffsetDateTime,
}

/// The rules that depend on the stand-in's settings or the caller's clock.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// The current time.
    pub now: OffsetDateTime,
    /// A leaf with fewer days than this left is refused.
    pub min_days_left: u32,
}

/// Checks an upload the way the vendor does.
///
/// `cacert` is required for two-way TLS; when present for one-way TLS it must still parse.
///
/// # Errors
///
/// A message naming the first problem found, meant for a 422 answer.
pub fn check_bundle(
    cert: &str,
    key: &str,
    cacert: Option<&str>,
    two_way: bool,
    policy: Policy,
) -> Result<CheckedBundle, String> {
    let chain_der = parse_certificates(cert, "cert")?;
    let chain = chain_der
        .iter()
        .map(|der| parse_x509(der, "cert"))
        .collect::<Result<Vec<_>, _>>()?;
    // parse_certificates never returns an empty list, so the leaf exists; stay defensive anyway.
    let leaf = chain
        .first()
        .ok_or_else(|| "cert: no CERTIFICATE block found".to_owned())?;

    let leaf_key = leaf_key(leaf)?;
    let key_part = parse_private_key(key)?;
    check_key_matches(&key_part, &leaf_key)?;
    check_validity(leaf, policy)?;
    check_chain_order(&chain)?;

    match cacert {
        Some(pem) => {
            let ca_der = parse_certificates(pem, "cacert")?;
            for der in &ca_der {
                parse_x509(der, "cacert")?;
            }
        }
        None if two_way => {
            return Err(
                "cacert: two-way TLS needs a cacert holding at least one X.509 certificate"
                    .to_owned(),
            );
        }
        None => {}
    }

    Ok(CheckedBundle {
        not_after: leaf.validity().not_after.to_datetime(),
    })
}

/// Returns the DER of every `CERTIFICATE` block in `pem`, in order.
///
/// # Errors
///
/// When the text is not PEM, holds no `CERTIFICATE` block, or holds another kind of block.
pub fn parse_certificates(pem: &str, field: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut ders = Vec::new();
    for (index, block) in Pem::iter_from_buffer(pem.as_bytes()).enumerate() {
        let block =
            block.map_err(|e| format!("{field}: PEM block {} is not valid PEM: {e}", index + 1))?;
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "{field}: PEM block {} is a {:?}, expected only CERTIFICATE blocks",
                index + 1,
                block.label
            ));
        }
        ders.push(block.contents);
    }
    if ders.is_empty() {
        return Err(format!(
            "{field}: not PEM: no -----BEGIN CERTIFICATE----- block found"
        ));
    }
    Ok(ders)
}

/// Parses one DER certificate, refusing trailing bytes.
fn parse_x509<'a>(der: &'a [u8], field: &str) -> Result<X509Certificate<'a>, String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(format!(
            "{field}: a CERTIFICATE block has trailing bytes after the X.509 structure"
        )),
        Err(e) => Err(format!(
            "{field}: a CERTIFICATE block does not parse as X.509: {e}"
        )),
    }
}

/// Reads the leaf's public key and checks that its type is one the vendor accepts.
///
/// # Errors
///
/// When the key is not RSA 1024/2048 or ECDSA P-256/P-384, or cannot be parsed.
pub fn leaf_key(leaf: &X509Certificate<'_>) -> Result<LeafKey, String> {
    let spki = leaf.public_key();
    let parsed = spki
        .parsed()
        .map_err(|e| format!("cert: the leaf's public key cannot be parsed: {e}"))?;
    match parsed {
        PublicKey::RSA(rsa) => {
            let modulus = strip_leading_zeros(rsa.modulus).to_vec();
            let bits = bit_length(&modulus);
            if !ALLOWED_RSA_BITS.contains(&bits) {
                return Err(format!(
                    "cert: the leaf has an RSA {bits} key; only RSA 1024 or 2048 and ECDSA P-256 or P-384 are accepted"
                ));
            }
            Ok(LeafKey::Rsa {
                modulus,
                exponent: strip_leading_zeros(rsa.exponent).to_vec(),
            })
        }
        PublicKey::EC(point) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .map_or(Curve::Other, |any| Curve::from_der_oid_content(any.data));
            if curve == Curve::Other {
                return Err("cert: the leaf has an EC key on an unsupported curve; only RSA 1024 or 2048 and ECDSA P-256 or P-384 are accepted".to_owned());
            }
            Ok(LeafKey::Ec {
                curve,
                point: point.data().to_vec(),
            })
        }
        _ => Err(format!(
            "cert: the leaf's key algorithm {} is not accepted; only RSA 1024 or 2048 and ECDSA P-256 or P-384 are",
            spki.algorithm.algorithm
        )),
    }
}

/// Parses the `key` field and derives its public part.
///
/// # Errors
///
/// When the text is not PEM, is encrypted, has an unaccepted label, or does not parse.
pub fn parse_private_key(pem: &str) -> Result<KeyPublicPart, String> {
    if is_encrypted(pem) {
        return Err(
            "key: encrypted private keys are not accepted; upload the key without a password"
                .to_owned(),
        );
    }
    let mut key_block = None;
    for (index, block) in Pem::iter_from_buffer(pem.as_bytes()).enumerate() {
        let block =
            block.map_err(|e| format!("key: PEM block {} is not valid PEM: {e}", index + 1))?;
        // `openssl ecparam -genkey` writes an EC PARAMETERS block before the key: harmless.
        if block.label == "EC PARAMETERS" {
            continue;
        }
        if !ACCEPTED_KEY_LABELS.contains(&block.label.as_str()) {
            return Err(format!(
                "key: a {:?} block is not accepted; expected one of RSA PRIVATE KEY, EC PRIVATE KEY, PRIVATE KEY",
                block.label
            ));
        }
        if key_block.is_some() {
            return Err("key: more than one private key block".to_owned());
        }
        key_block = Some(block);
    }
    let block = key_block
        .ok_or_else(|| "key: not PEM: no -----BEGIN ... PRIVATE KEY----- block found".to_owned())?;
    match block.label.as_str() {
        "RSA PRIVATE KEY" => rsa_public_of_pkcs1(&block.contents).ok_or_else(|| {
            "key: the RSA PRIVATE KEY block is not a PKCS#1 RSAPrivateKey".to_owned()
        }),
        "EC PRIVATE KEY" => ec_public_of_sec1(&block.contents, None)
            .ok_or_else(|| "key: the EC PRIVATE KEY block is not a SEC1 ECPrivateKey".to_owned()),
        _ => public_of_pkcs8(&block.contents),
    }
}

/// Derives the public part of a PKCS#8 `PrivateKeyInfo` (RFC 5208 / RFC 5958).
fn public_of_pkcs8(der: &[u8]) -> Result<KeyPublicPart, String> {
    let info = PrivateKeyInfo::try_from(der)
        .map_err(|e| format!("key: the PRIVATE KEY block is not PKCS#8: {e}"))?;
    let oid = info.algorithm.oid;
    if oid == OID_RSA_ENCRYPTION {
        rsa_public_of_pkcs1(info.private_key).ok_or_else(|| {
            "key: the PKCS#8 RSA key does not hold a PKCS#1 RSAPrivateKey".to_owned()
        })
    } else if oid == OID_EC_PUBLIC_KEY {
        let curve = info
            .algorithm
            .parameters_oid()
            .ok()
            .map(|oid| Curve::from_oid(&oid));
        let mut part = ec_public_of_sec1(info.private_key, curve)
            .ok_or_else(|| "key: the PKCS#8 EC key does not hold a SEC1 ECPrivateKey".to_owned())?;
        // A PKCS#8 v2 (OneAsymmetricKey) may carry the public key outside the SEC1 structure.
        if let KeyPublicPart::Ec { public_point, .. } = &mut part
            && public_point.is_none()
        {
            *public_point = info.public_key.map(<[u8]>::to_vec);
        }
        Ok(part)
    } else {
        Err(format!(
            "key: key algorithm {oid} is not accepted; only RSA and ECDSA P-256 or P-384 keys are"
        ))
    }
}

/// Reads modulus and public exponent from a PKCS#1 `RSAPrivateKey` (RFC 8017, appendix A.1.2).
fn rsa_public_of_pkcs1(der: &[u8]) -> Option<KeyPublicPart> {
    let mut reader = SliceReader::new(der).ok()?;
    let part = reader
        .sequence(|seq| {
            let _version: UintRef<'_> = seq.decode()?;
            let modulus: UintRef<'_> = seq.decode()?;
            let exponent: UintRef<'_> = seq.decode()?;
            // privateExponent, prime1, prime2, exponent1, exponent2, coefficient.
            for _ in 0..6 {
                let _: UintRef<'_> = seq.decode()?;
            }
            // Multi-prime keys carry otherPrimeInfos here; they need no check.
            let rest = seq.remaining_len();
            seq.read_slice(rest)?;
            Ok(KeyPublicPart::Rsa {
                modulus: modulus.as_bytes().to_vec(),
                exponent: exponent.as_bytes().to_vec(),
            })
        })
        .ok()?;
    reader.finish(part).ok()
}

/// Reads curve and public point from a SEC1 `ECPrivateKey` (RFC 5915, section 3).
///
/// `outer_curve` is the curve named by an enclosing PKCS#8 structure, if any.
fn ec_public_of_sec1(der: &[u8], outer_curve: Option<Curve>) -> Option<KeyPublicPart> {
    let key = sec1::EcPrivateKey::try_from(der).ok()?;
    let inner_curve = key
        .parameters
        .and_then(|p| p.named_curve())
        .map(|oid| Curve::from_oid(&oid));
    Some(KeyPublicPart::Ec {
        curve: inner_curve.or(outer_curve),
        public_point: key.public_key.map(<[u8]>::to_vec),
    })
}

/// Checks that the private key belongs to the leaf certificate.
///
/// # Errors
///
/// On a type, curve or public-key mismatch, and when an EC key does not embed its public key
/// (the stand-in cannot derive it, and refuses rather than accept blindly).
pub fn check_key_matches(key: &KeyPublicPart, leaf: &LeafKey) -> Result<(), String> {
    const MISMATCH: &str =
        "key: the private key does not match the public key of the leaf (first) certificate";
    match (key, leaf) {
        (
            KeyPublicPart::Rsa { modulus, exponent },
            LeafKey::Rsa {
                modulus: leaf_modulus,
                exponent: leaf_exponent,
            },
        ) => {
            if strip_leading_zeros(modulus) == strip_leading_zeros(leaf_modulus)
                && strip_leading_zeros(exponent) == strip_leading_zeros(leaf_exponent)
            {
                Ok(())
            } else {
                Err(MISMATCH.to_owned())
            }
        }
        (
            KeyPublicPart::Ec {
                curve,
                public_point,
            },
            LeafKey::Ec {
                curve: leaf_curve,
                point,
            },
        ) => {
            if let Some(curve) = curve
                && curve != leaf_curve
            {
                return Err(format!(
                    "key: the private key is on {} but the leaf certificate's key is on {}",
                    curve.name(),
                    leaf_curve.name()
                ));
            }
            match public_point {
                Some(public_point) if public_point == point => Ok(()),
                Some(_) => Err(MISMATCH.to_owned()),
                None => Err("key: cannot verify key: the EC private key does not embed its public key; export it with the public key included".to_owned()),
            }
        }
        (KeyPublicPart::Rsa { .. }, LeafKey::Ec { .. }) => {
            Err("key: the private key is RSA but the leaf certificate has an EC key".to_owned())
        }
        (KeyPublicPart::Ec { .. }, LeafKey::Rsa { .. }) => {
            Err("key: the private key is EC but the leaf certificate has an RSA key".to_owned())
        }
    }
}

/// Checks the leaf's validity period against the policy.
fn check_validity(leaf: &X509Certificate<'_>, policy: Policy) -> Result<(), String> {
    let validity = leaf.validity();
    let not_before = validity.not_before.to_datetime();
    let not_after = validity.not_after.to_datetime();
    if policy.now < not_before {
        return Err(format!(
            "cert: the leaf certificate is not valid yet (notBefore {not_before})"
        ));
    }
    if policy.now > not_after {
        return Err(format!(
            "cert: the leaf certificate has expired (notAfter {not_after})"
        ));
    }
    let left = not_after - policy.now;
    if left < Duration::days(i64::from(policy.min_days_left)) {
        return Err(format!(
            "cert: the leaf certificate has only {} days left (notAfter {not_after}); certificates with fewer than {} days left are refused",
            left.whole_days(),
            policy.min_days_left
        ));
    }
    Ok(())
}

/// Checks that each certificate was issued by the next one: leaf first, then the chain.
fn check_chain_order(chain: &[X509Certificate<'_>]) -> Result<(), String> {
    for (index, pair) in chain.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        let same = child.issuer().as_raw() == parent.subject().as_raw()
            || child.issuer().to_string() == parent.subject().to_string();
        if !same {
            return Err(format!(
                "cert: the chain is out of order: certificate {} is issued by \"{}\" but certificate {} is \"{}\"; put the leaf first, then each issuer",
                index + 1,
                child.issuer(),
                index + 2,
                parent.subject()
            ));
        }
    }
    Ok(())
}

/// Returns true if and only if `pem` holds a PKCS#8 `ENCRYPTED PRIVATE KEY` block or a legacy
/// OpenSSL encrypted key (`Proc-Type: 4,ENCRYPTED` header).
fn is_encrypted(pem: &str) -> bool {
    pem.lines().map(str::trim).any(|line| {
        (line.starts_with("-----BEGIN ") || line.starts_with("Proc-Type:"))
            && line.contains("ENCRYPTED")
    })
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Bit length of a big-endian unsigned integer.
fn bit_length(bytes: &[u8]) -> usize {
    let bytes = strip_leading_zeros(bytes);
    match bytes.first() {
        Some(&first) => bytes.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}
