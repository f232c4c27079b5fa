//! Strictness tests: the routers driven without a socket, the DNS side recorded.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::{Change, Recorder};

const VALUE_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const VALUE_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const VALUE_C: &str = "ccccccccccccccccccccccccccccccccccccccccccc";
const TOKEN: &str = "tok0123456789abcdefghijklmnopqrstuvwxyzA";

async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    // Unwrap: the test's own request is well-formed.
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn acmedns() -> (Router, Recorder) {
    let recorder = Recorder::default();
    (
        crate::acmedns::router("auth.example.test", Arc::new(recorder.clone())),
        recorder,
    )
}

async fn register(router: &Router) -> Value {
    let (status, account) = call(router, "POST", "/register", &[], None).await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    account
}

async fn update(router: &Router, account: &Value, txt: &str) -> (StatusCode, Value) {
    let user = account["username"].as_str().unwrap();
    let key = account["password"].as_str().unwrap();
    let body = json!({"subdomain": account["subdomain"], "txt": txt});
    call(
        router,
        "POST",
        "/update",
        &[("X-Api-User", user), ("X-Api-Key", key)],
        Some(body),
    )
    .await
}

#[tokio::test]
async fn acmedns_register_answers_the_documented_fields() {
    let (router, _) = acmedns();
    let account = register(&router).await;
    let subdomain = account["subdomain"].as_str().unwrap();
    assert_eq!(
        account["fulldomain"],
        format!("{subdomain}.auth.example.test")
    );
    assert_eq!(account["password"].as_str().unwrap().len(), 40);
    assert_eq!(account["username"].as_str().unwrap().len(), 36);
    assert_eq!(account["allowfrom"], json!([]));
    let (status, body) = call(
        &router,
        "POST",
        "/register",
        &[],
        Some(json!({"allowfrom": ["nope"]})),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_allowfrom_cidr"})
        )
    );
}

#[tokio::test]
async fn acmedns_update_keeps_the_last_two_values() {
    let (router, recorder) = acmedns();
    let account = register(&router).await;
    let full = account["fulldomain"].as_str().unwrap().to_owned();
    for value in [VALUE_A, VALUE_B, VALUE_C] {
        let (status, body) = update(&router, &account, value).await;
        assert_eq!((status, body), (StatusCode::OK, json!({"txt": value})));
    }
    assert_eq!(
        recorder.changes(),
        vec![
            Change::Add(full.clone(), VALUE_A.into()),
            Change::Add(full.clone(), VALUE_B.into()),
            Change::Delete(full.clone(), VALUE_A.into()),
            Change::Add(full.clone(), VALUE_C.into()),
        ]
    );
    let (_, records) = call(&router, "GET", "/_admin/records", &[], None).await;
    let mut held: Vec<String> = serde_json::from_value(records[&full].clone()).unwrap();
    held.sort();
    assert_eq!(held, vec![VALUE_B.to_owned(), VALUE_C.to_owned()]);
}

#[tokio::test]
async fn acmedns_rejects_wrong_credentials_subdomain_and_txt() {
    let (router, recorder) = acmedns();
    let account = register(&router).await;
    let mut wrong = account.clone();
    wrong["password"] = json!("x".repeat(40));
    assert_eq!(
        update(&router, &wrong, VALUE_A).await,
        (StatusCode::UNAUTHORIZED, json!({"error": "forbidden"}))
    );
    let mut other = account.clone();
    other["subdomain"] = register(&router).await["subdomain"].clone();
    assert_eq!(
        update(&router, &other, VALUE_A).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        update(&router, &account, "short").await,
        (StatusCode::BAD_REQUEST, json!({"error": "bad_txt"}))
    );
    assert_eq!(
        update(&router, &account, &format!("{}=", &VALUE_A[..42]))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let (status, _) = call(&router, "POST", "/update", &[], Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(recorder.changes().is_empty());
    let (_, log) = call(&router, "GET", "/_admin/log", &[], None).await;
    assert!(
        !log.to_string()
            .contains(account["password"].as_str().unwrap()),
        "the log shows a password"
    );
}

fn cloudflare() -> (Router, Recorder) {
    let recorder = Recorder::default();
    (
        crate::cloudflare::router(Arc::new(recorder.clone())),
        recorder,
    )
}

async fn cf_setup(router: &Router, edit: bool) -> String {
    let (_, zone) = call(router, "PUT", "/_admin/zones/example.test", &[], None).await;
    call(router, "PUT", "/_admin/zones/other.test", &[], None).await;
    let (_, _) = call(
        router,
        "PUT",
        &format!("/_admin/tokens/{TOKEN}"),
        &[],
        Some(json!({"zones": ["example.test"], "edit": edit})),
    )
    .await;
    zone["id"].as_str().unwrap().to_owned()
}

const AUTH: (&str, &str) = (
    "Authorization",
    "Bearer tok0123456789abcdefghijklmnopqrstuvwxyzA",
);
const JSON: (&str, &str) = ("Content-Type", "application/json");

#[tokio::test]
async fn cloudflare_auth_failures_have_their_codes() {
    let (router, _) = cloudflare();
    cf_setup(&router, true).await;
    let code = |v: &Value| v["errors"][0]["code"].as_u64().unwrap();
    let (status, body) = call(&router, "GET", "/client/v4/zones", &[], None).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, 9106));
    let (status, body) = call(
        &router,
        "GET",
        "/client/v4/zones",
        &[("Authorization", "Bearer short")],
        None,
    )
    .await;
    assert_eq!(
        (status, code(&body), body["success"].clone()),
        (StatusCode::BAD_REQUEST, 6003, json!(false))
    );
    let unknown = format!("Bearer {}", "z".repeat(40));
    let (status, body) = call(
        &router,
        "GET",
        "/client/v4/zones",
        &[("Authorization", &unknown)],
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, 9109));
    let (status, body) = call(
        &router,
        "GET",
        "/client/v4/user/tokens/verify",
        &[("Authorization", &unknown)],
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, 1000));
    let (status, body) = call(
        &router,
        "GET",
        "/client/v4/user/tokens/verify",
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(
        (status, body["result"]["status"].clone()),
        (StatusCode::OK, json!("active"))
    );
}

#[tokio::test]
async fn cloudflare_zones_are_scoped_and_paginated() {
    let (router, _) = cloudflare();
    let id = cf_setup(&router, true).await;
    let (status, body) = call(
        &router,
        "GET",
        "/client/v4/zones?name=example.test",
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"][0]["id"], json!(id));
    assert_eq!(body["result_info"]["total_count"], json!(1));
    let (_, body) = call(
        &router,
        "GET",
        "/client/v4/zones?name=other.test",
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(
        body["result"],
        json!([]),
        "a zone the token may not use is not listed"
    );
    let (status, body) = call(&router, "GET", "/client/v4/zones?page=zero", &[AUTH], None).await;
    assert_eq!(
        (status, body["success"].clone()),
        (StatusCode::BAD_REQUEST, json!(false))
    );
}

#[tokio::test]
async fn cloudflare_records_publish_list_and_delete() {
    let (router, recorder) = cloudflare();
    let zone = cf_setup(&router, true).await;
    call(
        &router,
        "PUT",
        "/_admin/settings",
        &[],
        Some(json!({"max_per_page": 1})),
    )
    .await;
    let url = format!("/client/v4/zones/{zone}/dns_records");
    let mut ids = Vec::new();
    for value in [VALUE_A, VALUE_B] {
        let body = json!({"type": "TXT", "name": "_acme-challenge.x.example.test", "content": value, "ttl": 60});
        let (status, answer) = call(&router, "POST", &url, &[AUTH, JSON], Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        ids.push(answer["result"]["id"].as_str().unwrap().to_owned());
    }
    let again = json!({"type": "TXT", "name": "_acme-challenge.x", "content": VALUE_A, "ttl": 60});
    let (status, answer) = call(&router, "POST", &url, &[AUTH, JSON], Some(again)).await;
    assert_eq!(
        (status, answer["errors"][0]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(81058)),
        "a relative name gets the zone"
    );
    let list = format!("{url}?type=TXT&name=_acme-challenge.x.example.test&page=2");
    let (_, page2) = call(&router, "GET", &list, &[AUTH], None).await;
    assert_eq!(
        page2["result_info"],
        json!({"page": 2, "per_page": 1, "count": 1, "total_count": 2, "total_pages": 2})
    );
    let (status, _) = call(
        &router,
        "DELETE",
        &format!("{url}/{}", ids[0]),
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &router,
        "DELETE",
        &format!("{url}/{}", ids[0]),
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["code"].clone()),
        (StatusCode::NOT_FOUND, json!(81044))
    );
    let owner = "_acme-challenge.x.example.test".to_owned();
    assert_eq!(
        recorder.changes(),
        vec![
            Change::Add(owner.clone(), VALUE_A.into()),
            Change::Add(owner.clone(), VALUE_B.into()),
            Change::Delete(owner, VALUE_A.into()),
        ]
    );
}

#[tokio::test]
async fn cloudflare_rejects_bad_writes() {
    let (router, recorder) = cloudflare();
    let zone = cf_setup(&router, false).await;
    let url = format!("/client/v4/zones/{zone}/dns_records");
    let record = json!({"type": "TXT", "name": "_acme-challenge.y.example.test", "content": VALUE_A, "ttl": 60});
    let (status, body) = call(&router, "POST", &url, &[AUTH, JSON], Some(record.clone())).await;
    assert_eq!(
        (status, body["errors"][0]["code"].clone()),
        (StatusCode::FORBIDDEN, json!(10000)),
        "read-only token"
    );
    call(
        &router,
        "PUT",
        &format!("/_admin/tokens/{TOKEN}"),
        &[],
        Some(json!({"zones": null, "edit": true})),
    )
    .await;
    let (status, body) = call(&router, "POST", &url, &[AUTH], Some(record.clone())).await;
    assert_eq!(
        (status, body["errors"][0]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(6003)),
        "no content type"
    );
    let mut bad_ttl = record.clone();
    bad_ttl["ttl"] = json!(5);
    let (_, body) = call(&router, "POST", &url, &[AUTH, JSON], Some(bad_ttl)).await;
    assert_eq!(body["errors"][0]["code"], json!(9021));
    let (status, body) = call(
        &router,
        "POST",
        "/client/v4/zones/nope/dns_records",
        &[AUTH, JSON],
        Some(record),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(7003))
    );
    assert!(recorder.changes().is_empty());
}
