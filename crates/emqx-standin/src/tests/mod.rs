//! Unit tests of the stand-in's rules, with certificates and keys made by rcgen.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::Engine as _;
use pkcs8::der::Encode as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384, PKCS_ECDSA_P521_SHA512, PKCS_RSA_SHA256, RsaKeySize,
    SignatureAlgorithm,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::limiter::Class;
use crate::pki::{self, Policy};
use crate::settings::{Settings, SettingsPatch, format_zone, parse_zone};
use crate::state::{AdminDeployment, AdminKey, Standin, WriteOp, format_expire};
use crate::upload::{self, TlsType};

// ---- helpers -------------------------------------------------------------------------------

fn now() -> OffsetDateTime {
    // Whole seconds: X.509 times have no fractions.
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

fn policy() -> Policy {
    Policy {
        now: OffsetDateTime::now_utc(),
        min_days_left: 60,
    }
}

/// A CA certificate with its key.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca(name: &str, issuer: Option<&Ca>) -> Ca {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = match issuer {
        Some(issuer) => params
            .signed_by(&key, &Issuer::from_params(&issuer.params, &issuer.key))
            .unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    Ca {
        pem: cert.pem(),
        params,
        key,
    }
}

/// A leaf for `example.test`, valid from `now + from_days` to `now + to_days`.
fn leaf_with(
    issuer: &Ca,
    alg: &'static SignatureAlgorithm,
    from_days: i64,
    to_days: i64,
) -> (String, KeyPair) {
    let key = if alg == &PKCS_RSA_SHA256 {
        KeyPair::generate_rsa_for(alg, RsaKeySize::_2048).unwrap()
    } else {
        KeyPair::generate_for(alg).unwrap()
    };
    let mut params = CertificateParams::new(vec!["example.test".to_owned()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.not_before = now() + time::Duration::days(from_days);
    params.not_after = now() + time::Duration::days(to_days);
    let cert = params
        .signed_by(&key, &Issuer::from_params(&issuer.params, &issuer.key))
        .unwrap();
    (cert.pem(), key)
}

fn leaf(issuer: &Ca) -> (String, KeyPair) {
    leaf_with(issuer, &PKCS_ECDSA_P256_SHA256, -1, 90)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The inner key of a PKCS#8 key: PKCS#1 for RSA, SEC1 for EC.
fn inner_key_der(key: &KeyPair) -> Vec<u8> {
    let der = key.serialize_der();
    pkcs8::PrivateKeyInfo::try_from(der.as_slice())
        .unwrap()
        .private_key
        .to_vec()
}

fn body(tls_type: &str, cert: &str, key: &str) -> Vec<u8> {
    json!({ "tlsType": tls_type, "cert": cert, "key": key })
        .to_string()
        .into_bytes()
}

fn check(cert: &str, key: &str) -> Result<pki::CheckedBundle, String> {
    pki::check_bundle(cert, key, None, false, policy())
}

fn assert_err_contains<T: std::fmt::Debug>(result: Result<T, String>, needle: &str) {
    match result {
        Ok(value) => panic!("expected an error containing {needle:?}, got Ok({value:?})"),
        Err(message) => assert!(
            message.contains(needle),
            "expected {needle:?} in {message:?}"
        ),
    }
}

mod bodies;
mod certs_keys;
mod settings;
mod vendor_api;
