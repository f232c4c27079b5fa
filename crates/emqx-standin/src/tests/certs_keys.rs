//! Certificates and keys.

use super::*;

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
