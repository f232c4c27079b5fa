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

// ---- certificates and keys ------------------------------------------------------------------

#[test]
fn accepts_an_ec_pkcs8_key_with_leaf_and_chain() {
    let root = ca("Root", None);
    let (cert, key) = leaf(&root);
    let bundle = format!("{cert}{}", root.pem);
    let checked = check(&bundle, &key.serialize_pem()).unwrap();
    let days = (checked.not_after - now()).whole_days();
    assert!((89..=90).contains(&days), "{days}");
}

#[test]
fn accepts_sec1_and_pkcs1_keys() {
    let root = ca("Root", None);
    let (cert, key) = leaf(&root);
    check(&cert, &pem("EC PRIVATE KEY", &inner_key_der(&key))).unwrap();

    let (cert, key) = leaf_with(&root, &PKCS_RSA_SHA256, -1, 90);
    check(&cert, &key.serialize_pem()).unwrap();
    check(&cert, &pem("RSA PRIVATE KEY", &inner_key_der(&key))).unwrap();
}

#[test]
fn accepts_p384_and_refuses_p521() {
    let root = ca("Root", None);
    let (cert, key) = leaf_with(&root, &PKCS_ECDSA_P384_SHA384, -1, 90);
    check(&cert, &key.serialize_pem()).unwrap();
    let (cert, key) = leaf_with(&root, &PKCS_ECDSA_P521_SHA512, -1, 90);
    assert_err_contains(check(&cert, &key.serialize_pem()), "unsupported curve");
}

#[test]
fn refuses_a_key_that_does_not_match_the_leaf() {
    let root = ca("Root", None);
    let (cert, _) = leaf(&root);
    let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    assert_err_contains(check(&cert, &other.serialize_pem()), "does not match");
    // The CA's key is not the leaf's either.
    assert_err_contains(check(&cert, &root.key.serialize_pem()), "does not match");
    // Nor is a key of another type.
    let (_, rsa) = leaf_with(&root, &PKCS_RSA_SHA256, -1, 90);
    assert_err_contains(check(&cert, &rsa.serialize_pem()), "is RSA");
    // Nor a key on another curve.
    let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    assert_err_contains(check(&cert, &p384.serialize_pem()), "P-384");
}

#[test]
fn refuses_an_ec_key_without_its_public_key() {
    let root = ca("Root", None);
    let (cert, key) = leaf(&root);
    let sec1_der = inner_key_der(&key);
    let full = sec1::EcPrivateKey::try_from(sec1_der.as_slice()).unwrap();
    let stripped = sec1::EcPrivateKey {
        private_key: full.private_key,
        parameters: full.parameters,
        public_key: None,
    };
    let der = stripped.to_der().unwrap();
    assert_err_contains(
        check(&cert, &pem("EC PRIVATE KEY", &der)),
        "cannot verify key",
    );
}

#[test]
fn refuses_encrypted_and_unknown_keys() {
    let root = ca("Root", None);
    let (cert, _) = leaf(&root);
    let encrypted =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
    assert_err_contains(check(&cert, encrypted), "encrypted");
    let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nMIIB\n-----END RSA PRIVATE KEY-----\n";
    assert_err_contains(check(&cert, legacy), "encrypted");
    assert_err_contains(check(&cert, "not a key"), "not PEM");
    assert_err_contains(check(&cert, &cert), "CERTIFICATE");
    let garbage = pem("PRIVATE KEY", b"garbage");
    assert_err_contains(check(&cert, &garbage), "not PKCS#8");
}

#[test]
fn refuses_certificates_that_are_not_pem_or_not_x509() {
    let root = ca("Root", None);
    let (_, key) = leaf(&root);
    let key = key.serialize_pem();
    assert_err_contains(check("hello", &key), "not PEM");
    assert_err_contains(check("", &key), "not PEM");
    let bogus = pem("CERTIFICATE", b"not der at all");
    assert_err_contains(check(&bogus, &key), "does not parse as X.509");
    assert_err_contains(check(&key, &key), "expected only CERTIFICATE");
}

#[test]
fn refuses_a_chain_out_of_order() {
    let root = ca("Root", None);
    let intermediate = ca("Intermediate", Some(&root));
    let (cert, key) = leaf(&intermediate);
    let key = key.serialize_pem();
    let good = format!("{cert}{}{}", intermediate.pem, root.pem);
    check(&good, &key).unwrap();
    let swapped = format!("{cert}{}{}", root.pem, intermediate.pem);
    assert_err_contains(check(&swapped, &key), "out of order");
    // Leaf not first: the first certificate is taken as the leaf, and the key does not match.
    let leaf_last = format!("{}{cert}", intermediate.pem);
    assert!(check(&leaf_last, &key).is_err());
}

#[test]
fn refuses_expired_not_yet_valid_and_short_lived_leaves() {
    let root = ca("Root", None);
    let (cert, key) = leaf_with(&root, &PKCS_ECDSA_P256_SHA256, -100, -1);
    assert_err_contains(check(&cert, &key.serialize_pem()), "expired");
    let (cert, key) = leaf_with(&root, &PKCS_ECDSA_P256_SHA256, 1, 100);
    assert_err_contains(check(&cert, &key.serialize_pem()), "not valid yet");
    let (cert, key) = leaf_with(&root, &PKCS_ECDSA_P256_SHA256, -1, 30);
    assert_err_contains(check(&cert, &key.serialize_pem()), "fewer than 60 days");
    let lenient = Policy {
        now: OffsetDateTime::now_utc(),
        min_days_left: 0,
    };
    pki::check_bundle(&cert, &key.serialize_pem(), None, false, lenient).unwrap();
}

// ---- request bodies -------------------------------------------------------------------------

#[test]
fn body_shape_is_checked() {
    let root = ca("Root", None);
    let (cert, key) = leaf(&root);
    let key = key.serialize_pem();

    let ok = upload::parse_upload(&body("one-way", &cert, &key), policy()).unwrap();
    assert_eq!(ok.tls_type, TlsType::OneWay);

    assert_err_contains(
        upload::parse_upload(&body("three-way", &cert, &key), policy()),
        "\"three-way\" is not valid",
    );
    let extra = json!({ "tlsType": "one-way", "cert": cert, "key": key, "name": "x" });
    assert_err_contains(
        upload::parse_upload(extra.to_string().as_bytes(), policy()),
        "unknown field \"name\"",
    );
    let both = json!({ "tlsType": "one-way", "tls_type": "one-way", "cert": cert, "key": key });
    assert_err_contains(
        upload::parse_upload(both.to_string().as_bytes(), policy()),
        "not both",
    );
    let old = json!({ "tls_type": "one-way", "cert": cert, "key": key });
    upload::parse_upload(old.to_string().as_bytes(), policy()).unwrap();
    let missing = json!({ "tlsType": "one-way", "cert": cert });
    assert_err_contains(
        upload::parse_upload(missing.to_string().as_bytes(), policy()),
        "missing field key",
    );
    let number = json!({ "tlsType": "one-way", "cert": cert, "key": 5 });
    assert_err_contains(
        upload::parse_upload(number.to_string().as_bytes(), policy()),
        "must be a string",
    );
    assert_err_contains(upload::parse_upload(b"[]", policy()), "JSON object");
    assert_err_contains(upload::parse_upload(b"{", policy()), "not valid JSON");
}

#[test]
fn two_way_needs_a_cacert() {
    let root = ca("Root", None);
    let (cert, key) = leaf(&root);
    let key = key.serialize_pem();
    assert_err_contains(
        upload::parse_upload(&body("two-way", &cert, &key), policy()),
        "two-way TLS needs a cacert",
    );
    let null = json!({ "tlsType": "two-way", "cert": cert, "key": key, "cacert": null });
    assert_err_contains(
        upload::parse_upload(null.to_string().as_bytes(), policy()),
        "two-way TLS needs a cacert",
    );
    let bad = json!({ "tlsType": "two-way", "cert": cert, "key": key, "cacert": "nope" });
    assert_err_contains(
        upload::parse_upload(bad.to_string().as_bytes(), policy()),
        "cacert: not PEM",
    );
    let good = json!({ "tlsType": "two-way", "cert": cert, "key": key, "cacert": root.pem });
    let upload = upload::parse_upload(good.to_string().as_bytes(), policy()).unwrap();
    assert_eq!(upload.tls_type, TlsType::TwoWay);
    assert!(upload.cacert.is_some());
}

#[test]
fn content_type_must_be_json() {
    assert!(upload::is_json_content_type(Some("application/json")));
    assert!(upload::is_json_content_type(Some(
        "Application/JSON; charset=utf-8"
    )));
    assert!(!upload::is_json_content_type(Some("text/plain")));
    assert!(!upload::is_json_content_type(None));
}

// ---- settings and formatting ------------------------------------------------------------------

#[test]
fn expire_is_written_in_the_zone_without_suffix() {
    let expire = OffsetDateTime::parse(
        "2034-05-22T02:43:21Z",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let mut settings = Settings::default();
    assert_eq!(format_expire(expire, &settings), "2034-05-22 02:43:21");
    settings.zone = parse_zone("+08:00").unwrap();
    assert_eq!(format_expire(expire, &settings), "2034-05-22 10:43:21");
    settings.zone = parse_zone("-05:30").unwrap();
    assert_eq!(format_expire(expire, &settings), "2034-05-21 21:13:21");
    assert_eq!(format_zone(settings.zone), "-05:30");
    assert!(parse_zone("UTC+8").is_err());
}

#[test]
fn settings_patch_is_all_or_nothing_and_strict() {
    let mut settings = Settings::default();
    let patch: SettingsPatch =
        serde_json::from_value(json!({ "get_limit": 3, "zone": "bad" })).unwrap();
    assert!(settings.apply(patch).is_err());
    assert_eq!(settings, Settings::default());
    let patch: SettingsPatch =
        serde_json::from_value(json!({ "get_limit": 3, "zone": "+02:00" })).unwrap();
    settings.apply(patch).unwrap();
    assert_eq!(settings.get_limit, 3);
    assert_eq!(
        serde_json::to_value(&settings).unwrap()["zone"],
        json!("+02:00")
    );
    assert!(serde_json::from_value::<SettingsPatch>(json!({ "nope": 1 })).is_err());
}

// ---- the vendor API on the state --------------------------------------------------------------

const AUTH: &str = "Basic azpz"; // k:s

fn standin() -> Standin {
    let mut standin = Standin::default();
    standin.put_key(
        "k",
        serde_json::from_value::<AdminKey>(json!({ "secret": "s" })).unwrap(),
    );
    standin.put_key(
        "narrow",
        serde_json::from_value::<AdminKey>(json!({ "secret": "s", "deployments": ["other"] }))
            .unwrap(),
    );
    for (id, expire) in [
        ("d", Value::Null),
        ("other", Value::Null),
        ("live", json!("2034-05-22T02:43:21Z")),
    ] {
        let admin: AdminDeployment =
            serde_json::from_value(json!({ "tlsType": "one-way", "expire": expire })).unwrap();
        standin.put_deployment(id, admin).unwrap();
    }
    standin
}

fn upload_body() -> Vec<u8> {
    let root = ca("Root", None);
    let (cert, key) = leaf(&root);
    body(
        "one-way",
        &format!("{cert}{}", root.pem),
        &key.serialize_pem(),
    )
}

#[test]
fn authentication_and_admission_follow_the_documented_order() {
    let mut s = standin();
    let t0 = Instant::now();
    let status = |r: Result<String, crate::state::ApiError>| r.map_err(|e| e.status);
    assert_eq!(status(s.authenticate(None)), Err(StatusCode::UNAUTHORIZED));
    assert_eq!(
        status(s.authenticate(Some("Basic !!!"))),
        Err(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        status(s.authenticate(Some("Basic azp3cm9uZw=="))), // k:wrong
        Err(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        status(s.authenticate(Some("Bearer x"))),
        Err(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(status(s.authenticate(Some(AUTH))), Ok("k".to_owned()));

    let admit = |s: &mut Standin, key: &str, id: &str| {
        s.admit(key, Class::Read, id, t0).map_err(|e| e.status)
    };
    assert_eq!(admit(&mut s, "k", "missing"), Err(StatusCode::NOT_FOUND));
    assert_eq!(admit(&mut s, "narrow", "d"), Err(StatusCode::FORBIDDEN));
    assert_eq!(admit(&mut s, "narrow", "other"), Ok(()));
    assert_eq!(admit(&mut s, "k", "d"), Ok(()));
}

#[test]
fn rate_limit_counts_4xx_and_sets_retry_after() {
    let mut s = standin();
    s.settings.get_limit = 2;
    s.settings.window = 60;
    let t0 = Instant::now();
    // A 404 is counted.
    assert_eq!(
        s.admit("k", Class::Read, "missing", t0).unwrap_err().status,
        StatusCode::NOT_FOUND
    );
    s.admit("k", Class::Read, "d", t0 + Duration::from_secs(10))
        .unwrap();
    let refused = s
        .admit("k", Class::Read, "d", t0 + Duration::from_secs(20))
        .unwrap_err();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.retry_after.as_deref(), Some("40"));
    assert_eq!(refused.body()["code"], json!(429));
    // Writes have their own budget.
    s.admit("k", Class::Write, "d", t0 + Duration::from_secs(20))
        .unwrap();
    // Once the oldest entry leaves the window, one request fits again.
    s.admit("k", Class::Read, "d", t0 + Duration::from_secs(60))
        .unwrap();
}

#[test]
fn write_then_get_goes_from_pending_to_running() {
    let mut s = standin();
    let t0 = Instant::now();
    assert_eq!(s.get_tls("d", t0).unwrap(), json!({}));
    let written = s
        .write_tls(
            WriteOp::Create,
            "d",
            Some("application/json"),
            &upload_body(),
            t0,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    assert_eq!(written["status"], json!("pending"));
    assert_eq!(written["tlsType"], json!("one-way"));
    let expire = written["expire"].as_str().unwrap();
    assert_eq!(expire.len(), "2034-05-22 02:43:21".len());

    let got = s.get_tls("d", t0 + Duration::from_millis(100)).unwrap();
    assert_eq!(got["status"], json!("pending"));
    assert_eq!(got["expire"], json!(expire));
    let got = s.get_tls("d", t0 + Duration::from_millis(500)).unwrap();
    assert_eq!(got["status"], json!("running"));

    let view = s.deployment_view("d", t0).unwrap();
    assert_eq!(view["writes"], json!(1));
    assert!(view["key"].as_str().unwrap().contains("PRIVATE KEY"));

    s.settings.stuck_pending = true;
    let got = s.get_tls("d", t0 + Duration::from_secs(3600)).unwrap();
    assert_eq!(got["status"], json!("pending"));
}

#[test]
fn old_dialect_uses_tls_type_and_a_leading_space() {
    let mut s = standin();
    s.settings.old_dialect = true;
    let t0 = Instant::now();
    let written = s
        .write_tls(
            WriteOp::Create,
            "d",
            Some("application/json"),
            &upload_body(),
            t0,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    assert_eq!(written["status"], json!(" pending"));
    assert_eq!(written["tls_type"], json!("one-way"));
    assert!(written.get("tlsType").is_none());
    let got = s.get_tls("d", t0).unwrap();
    assert_eq!(got["status"], json!(" pending"));
    assert_eq!(got["tls_type"], json!("one-way"));
}

#[test]
fn get_reports_expire_in_the_configured_zone() {
    let mut s = standin();
    s.settings.zone = parse_zone("+08:00").unwrap();
    let got = s.get_tls("live", Instant::now()).unwrap();
    assert_eq!(
        got,
        json!({ "expire": "2034-05-22 10:43:21", "status": "running", "tlsType": "one-way" })
    );
}

#[test]
fn post_and_put_need_the_right_certificate_state() {
    let mut s = standin();
    let t0 = Instant::now();
    let utc = OffsetDateTime::now_utc();
    let json = Some("application/json");
    let err = s
        .write_tls(WriteOp::Create, "live", json, &upload_body(), t0, utc)
        .unwrap_err();
    assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err.message.contains("already has"), "{}", err.message);
    let err = s
        .write_tls(WriteOp::Update, "d", json, &upload_body(), t0, utc)
        .unwrap_err();
    assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
    s.write_tls(WriteOp::Update, "live", json, &upload_body(), t0, utc)
        .unwrap();
    let err = s
        .write_tls(
            WriteOp::Update,
            "live",
            Some("text/plain"),
            &upload_body(),
            t0,
            utc,
        )
        .unwrap_err();
    assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
    s.delete_tls("live").unwrap();
    assert_eq!(s.get_tls("live", t0).unwrap(), json!({}));
}

#[test]
fn injected_failures_answer_500_and_store_nothing() {
    let mut s = standin();
    s.settings.fail_writes = 1;
    s.settings.fail_gets = 1;
    let t0 = Instant::now();
    let utc = OffsetDateTime::now_utc();
    let json = Some("application/json");
    let err = s
        .write_tls(WriteOp::Create, "d", json, &upload_body(), t0, utc)
        .unwrap_err();
    assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(s.deployment_view("d", t0).unwrap()["writes"], json!(0));
    assert_eq!(
        s.get_tls("d", t0).unwrap_err().status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(s.get_tls("d", t0).unwrap(), json!({}));
    s.write_tls(WriteOp::Create, "d", json, &upload_body(), t0, utc)
        .unwrap();
}

#[test]
fn ignored_writes_answer_the_current_state_and_store_nothing() {
    let mut s = standin();
    s.settings.ignore_writes = 1;
    let t0 = Instant::now();
    let utc = OffsetDateTime::now_utc();
    let json = Some("application/json");
    let answer = s
        .write_tls(WriteOp::Update, "live", json, &upload_body(), t0, utc)
        .unwrap();
    assert_eq!(answer["status"], json!("running"));
    assert_eq!(answer["expire"], json!("2034-05-22 02:43:21"));
    assert_eq!(s.deployment_view("live", t0).unwrap()["writes"], json!(0));
    // Only writes that pass every check are ignored: a refused one does not use the setting up.
    s.settings.ignore_writes = 1;
    assert!(
        s.write_tls(WriteOp::Create, "live", json, &upload_body(), t0, utc)
            .is_err()
    );
    assert_eq!(s.settings.ignore_writes, 1);
}

#[test]
fn expire_override_and_throttle_shape_the_answers() {
    let mut s = standin();
    let t0 = Instant::now();
    s.settings
        .expire_override
        .insert("live".to_owned(), "0000-01-01 00:00:00".to_owned());
    assert_eq!(
        s.get_tls("live", t0).unwrap()["expire"],
        json!("0000-01-01 00:00:00")
    );
    s.settings
        .expire_override
        .insert("d".to_owned(), "0000-01-01 00:00:00".to_owned());
    assert_eq!(
        s.get_tls("d", t0).unwrap(),
        json!({}),
        "no certificate, no expire"
    );
    s.settings.throttle_next = 1;
    s.settings.throttle_retry_after = Some("soon".to_owned());
    let refused = s.admit("k", Class::Read, "d", t0).unwrap_err();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.retry_after.as_deref(), Some("soon"));
    assert_eq!(s.admit("k", Class::Read, "d", t0), Ok(()));
}

#[test]
fn nullable_knobs_are_set_kept_and_cleared() {
    let mut settings = Settings::default();
    let patch = |v: Value| serde_json::from_value::<SettingsPatch>(v).unwrap();
    settings
        .apply(patch(
            json!({"redirect": {"status": 307, "location": "http://x"}, "hang_writes": 2}),
        ))
        .unwrap();
    assert_eq!(settings.redirect.as_ref().map(|r| r.status), Some(307));
    settings.apply(patch(json!({"fail_gets": 1}))).unwrap();
    assert!(settings.redirect.is_some(), "absent keeps the value");
    settings.apply(patch(json!({"redirect": null}))).unwrap();
    assert_eq!(settings.redirect, None, "null clears it");
    assert_eq!(settings.hang_writes, 2);
    let err = settings
        .apply(patch(
            json!({"redirect": {"status": 200, "location": "http://x"}}),
        ))
        .unwrap_err();
    assert!(err.contains("not a 3xx"), "{err}");
}
