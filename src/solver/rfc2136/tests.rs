//! Wire-level tests of the RFC 2136 solver: messages, signatures, answers; no server needed.

use hickory_proto::rr::TSigResponseContext;
use hickory_proto::rr::rdata::tsig::{TSIG, make_tsig_record};

use super::*;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn name(text: &str) -> Name {
    parse_name(text, "test name").unwrap()
}

fn signer(key: &[u8]) -> TSigner {
    TSigner::new(
        key.to_vec(),
        HickoryTsigAlgorithm::HmacSha256,
        name("acme-update."),
        TSIG_FUDGE,
    )
    .unwrap()
}

fn context<'a>(owner: &'a Name, zone: &'a Name, key_name: &'a Name) -> UpdateContext<'a> {
    UpdateContext {
        server: "127.0.0.1:15353",
        owner,
        zone,
        key_name,
        change: Change::Add,
        value: "v",
    }
}

/// Returns a signed update and its verifier, as `Rfc2136Solver::sign` makes them.
fn signed_update(id: u16) -> (Message, Option<TSigVerifier>) {
    let mut message = update_message(
        id,
        &name("example.test."),
        &name("_acme-challenge.example.test."),
        "v",
        Change::Add,
    );
    let verifier = message.finalize(&signer(KEY), unix_now()).unwrap();
    (message, verifier)
}

/// Returns the server's answer to `request` with `rcode`, signed with `key` (or unsigned).
fn answer(request: &Message, rcode: ResponseCode, key: Option<&[u8]>) -> Vec<u8> {
    let mut response = Message::response(request.id, OpCode::Update);
    response.metadata.response_code = rcode;
    response.add_zone(request.queries[0].clone());
    if let Some(key) = key {
        let request_mac = request.signature().unwrap().data.mac.clone();
        let context =
            TSigResponseContext::new(request.id, unix_now(), signer(key), request_mac, None);
        let tsig = context.sign(&response.to_vec().unwrap()).unwrap();
        response.set_signature(tsig);
    }
    response.to_vec().unwrap()
}

#[test]
fn algorithm_parses_from_config_spelling_and_displays_it() {
    for (text, algorithm) in [
        ("hmac-sha256", TsigAlgorithm::HmacSha256),
        ("hmac-sha384", TsigAlgorithm::HmacSha384),
        ("hmac-sha512", TsigAlgorithm::HmacSha512),
    ] {
        let parsed: TsigAlgorithm = serde_json::from_str(&format!("\"{text}\"")).unwrap();
        assert_eq!(parsed, algorithm);
        assert_eq!(algorithm.to_string(), text);
        assert_eq!(algorithm.to_hickory().to_name().to_ascii(), text);
    }
    assert!(serde_json::from_str::<TsigAlgorithm>("\"hmac-md5\"").is_err());
}

#[test]
fn add_message_has_zone_and_one_txt_rr() {
    let message = update_message(
        7,
        &name("example.test"),
        &name("_acme-challenge.a.example.test."),
        "token",
        Change::Add,
    );
    assert_eq!(message.op_code, OpCode::Update);
    assert!(!message.recursion_desired);
    let zone = &message.zones()[0];
    assert_eq!(zone.name().to_ascii(), "example.test.");
    assert_eq!(zone.query_type(), RecordType::SOA);
    assert_eq!(zone.query_class(), DNSClass::IN);
    assert!(message.prerequisites().is_empty());
    let [update] = message.updates() else {
        panic!("expected one update RR")
    };
    assert_eq!(update.name.to_ascii(), "_acme-challenge.a.example.test.");
    assert_eq!(update.dns_class, DNSClass::IN);
    assert_eq!(update.ttl, TXT_TTL);
    let RData::TXT(txt) = &update.data else {
        panic!("expected TXT")
    };
    assert!(txt_matches(txt, "token"));
}

#[test]
fn delete_message_removes_only_this_rdata() {
    let message = update_message(
        7,
        &name("example.test."),
        &name("_acme-challenge.example.test."),
        "token",
        Change::Delete,
    );
    let [update] = message.updates() else {
        panic!("expected one update RR")
    };
    assert_eq!(update.dns_class, DNSClass::NONE);
    assert_eq!(update.ttl, 0);
    let RData::TXT(txt) = &update.data else {
        panic!("expected TXT")
    };
    assert!(txt_matches(txt, "token"));
}

#[test]
fn update_survives_the_wire_and_its_signature_verifies() {
    let (message, _) = signed_update(9);
    let bytes = message.to_vec().unwrap();
    let decoded = Message::from_vec(&bytes).unwrap();
    assert_eq!(decoded.updates().len(), 1);
    assert_eq!(decoded.signature().unwrap().name.to_ascii(), "acme-update.");
    signer(KEY).verify_message_byte(&bytes, None, true).unwrap();
    assert!(
        signer(b"another key")
            .verify_message_byte(&bytes, None, true)
            .is_err()
    );
}

#[test]
fn long_values_split_into_255_byte_strings() {
    let value = "x".repeat(600);
    let txt = txt_rdata(&value);
    let lengths: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
    assert_eq!(lengths, [255, 255, 90]);
    assert!(txt_matches(&txt, &value));
    assert!(!txt_matches(&txt, "x"));
}

#[test]
fn signed_noerror_answer_is_success() {
    let (request, verifier) = signed_update(11);
    let (owner, zone, key) = (
        name("_acme-challenge.example.test."),
        name("example.test."),
        name("acme-update."),
    );
    let bytes = answer(&request, ResponseCode::NoError, Some(KEY));
    check_update_answer(&bytes, 11, verifier, &context(&owner, &zone, &key)).unwrap();
}

#[test]
fn unsigned_or_badly_signed_noerror_is_unauthenticated() {
    let (owner, zone, key) = (
        name("_acme-challenge.example.test."),
        name("example.test."),
        name("acme-update."),
    );
    for signing_key in [None, Some(&b"forged"[..])] {
        let (request, verifier) = signed_update(12);
        let bytes = answer(&request, ResponseCode::NoError, signing_key);
        let err =
            check_update_answer(&bytes, 12, verifier, &context(&owner, &zone, &key)).unwrap_err();
        assert!(
            matches!(
                err,
                SolverError::Rfc2136(Rfc2136Error::Unauthenticated { .. })
            ),
            "{err}"
        );
    }
}

#[test]
fn rcodes_map_to_errors_that_say_what_to_check() {
    let (owner, zone, key) = (
        name("_acme-challenge.example.test."),
        name("example.test."),
        name("acme-update."),
    );
    let cases = [
        (
            ResponseCode::Refused,
            "refused the update of TXT `_acme-challenge.example.test.`",
        ),
        (
            ResponseCode::NotAuth,
            "not authoritative for zone `example.test.`",
        ),
        (ResponseCode::NotZone, "is not inside zone `example.test.`"),
        (ResponseCode::ServFail, "(SERVFAIL)"),
    ];
    for (rcode, expected) in cases {
        let (request, verifier) = signed_update(13);
        let bytes = answer(&request, rcode, None);
        let err =
            check_update_answer(&bytes, 13, verifier, &context(&owner, &zone, &key)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(expected), "{rcode:?}: {text}");
        assert!(text.contains("127.0.0.1:15353"), "{text}");
    }
}

#[test]
fn unsigned_tsig_error_answer_is_a_tsig_rejection() {
    let (owner, zone, key) = (
        name("_acme-challenge.example.test."),
        name("example.test."),
        name("acme-update."),
    );
    for (error, code) in [
        (TsigError::BadKey, TsigErrorCode::BadKey),
        (TsigError::BadSig, TsigErrorCode::BadSig),
        (TsigError::BadTime, TsigErrorCode::BadTime),
    ] {
        let (request, verifier) = signed_update(16);
        // As RFC 8945 §5.3.2 has it (and Knot does): NOTAUTH, and a TSIG RR with the error and no MAC.
        let mut response =
            Message::from_vec(&answer(&request, ResponseCode::NotAuth, None)).unwrap();
        let stub = TSIG::new(
            HickoryTsigAlgorithm::HmacSha256,
            unix_now(),
            TSIG_FUDGE,
            Vec::new(),
            16,
            Some(error),
            Vec::new(),
        );
        response.set_signature(Box::new(make_tsig_record(key.clone(), stub)));
        let bytes = response.to_vec().unwrap();
        let err =
            check_update_answer(&bytes, 16, verifier, &context(&owner, &zone, &key)).unwrap_err();
        assert!(
            matches!(&err, SolverError::Rfc2136(Rfc2136Error::TsigRejected { code: c, .. }) if *c == code),
            "{error:?}: {err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("rejected TSIG key `acme-update.` ({code})")),
            "{err}"
        );
    }
}

#[test]
fn answer_to_another_message_is_malformed() {
    let (owner, zone, key) = (
        name("_acme-challenge.example.test."),
        name("example.test."),
        name("acme-update."),
    );
    let (request, verifier) = signed_update(14);
    let bytes = answer(&request, ResponseCode::NoError, Some(KEY));
    let err = check_update_answer(&bytes, 15, verifier, &context(&owner, &zone, &key)).unwrap_err();
    assert!(matches!(err, SolverError::Protocol { .. }), "{err}");
}

#[test]
fn debug_never_shows_the_secret() {
    let settings = Rfc2136Settings::new(
        "127.0.0.1:53",
        "acme-update.",
        TsigAlgorithm::HmacSha256,
        SecretSlice::from(b"hunter2-secret".to_vec()),
    );
    let solver = Rfc2136Solver::new(settings.clone());
    for text in [format!("{settings:?}"), format!("{solver:?}")] {
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}

#[test]
fn names_must_be_valid_and_not_root() {
    assert_eq!(name("example.test").to_ascii(), "example.test.");
    assert!(parse_name(".", "zone").is_err());
    assert!(parse_name("a..b", "zone").is_err());
}

#[test]
fn tsig_rejection_message_names_key_and_says_what_to_check() {
    let err = SolverError::from(Rfc2136Error::TsigRejected {
        server: "127.0.0.1:15353".into(),
        key_name: "acme-update.".into(),
        owner: "_acme-challenge.example.test.".into(),
        code: TsigErrorCode::BadSig,
    });
    let text = err.to_string();
    assert!(text.contains("`acme-update.` (BADSIG)"), "{text}");
    assert!(text.contains("tsig secret"), "{text}");
    assert!(!err.is_transient());
}
