//! Request bodies.

use super::*;

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
