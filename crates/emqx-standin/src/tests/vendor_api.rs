//! The vendor API on the state.

use super::*;

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
