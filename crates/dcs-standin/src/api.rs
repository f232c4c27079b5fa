//! The DCS API (signed), the admin API (`/_admin`, unsigned) and the object-storage listener.
//!
//! Documented behaviour (DCS API reference, "Querying/Downloading the SSL Certificate of an Instance"):
//! `GET /v2/{project_id}/instances/{instance_id}/ssl` answers 200 `{enabled, ip, port, domain_name,
//! ssl_expired_at, ssl_validated}` or 204; `POST …/ssl-certs/download` answers `{bucket_name, file_name,
//! link}` or 400 `{error_code: "DCS.4201", error_msg: "Do not support SSL."}`. Failed signatures answer 401
//! `{error_msg, error_code: "APIGW.0301", request_id}` as the IAM-authenticating gateway does. Where the docs
//! are silent the stand-in chooses: an unknown instance (or one of another project) answers 404
//! `{error_code: "DCS.4001", error_msg: "Instance does not exist."}`; `PUT …/ssl` is refused with 405 and
//! logged (certkeeper must never send it). Object storage refuses an `Authorization` header beside the
//! link's query signature with 400 (S3/OBS: "only one auth mechanism allowed"), a wrong signature with 403
//! `SignatureDoesNotMatch` and an expired link with 403 `AccessDenied`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use aws_lc_rs::hmac;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::zips::Shape;

/// The largest request body read.
const MAX_BODY: usize = 64 * 1024;

/// How DCS answers the SSL status of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ssl {
    /// Enabled, with a certificate.
    On,
    /// `enabled: false`.
    Off,
    /// 204, no SSL information.
    NoContent,
    /// The instance does not support SSL: status and download answer 400 DCS.4201.
    Unsupported,
}

/// One instance.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    project: String,
    ssl: Ssl,
    validated: bool,
    shape: Shape,
    ca_pem: String,
    server_pem: String,
    ssl_expired_at: String,
    generation: u32,
    fail_next: u32,
}

/// One logged request.
#[derive(Debug, Clone, Serialize)]
pub struct Logged {
    listener: &'static str,
    method: String,
    path: String,
    status: u16,
    authorization: bool,
}

/// The stand-in's state.
pub struct Standin {
    keys: HashMap<String, String>,
    instances: HashMap<String, Instance>,
    log: Vec<Logged>,
    link_key: Vec<u8>,
    link_ttl: i64,
    /// `http://127.0.0.1:PORT` of the object-storage listener.
    pub storage: String,
    archives: HashMap<String, Vec<u8>>,
}

/// Shared by the handlers; no lock is held across an `.await`.
pub type Shared = Arc<Mutex<Standin>>;

impl Standin {
    /// A stand-in whose links point at `storage`.
    pub fn new(storage: String) -> Standin {
        let seed = OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .to_le_bytes()
            .to_vec();
        Standin {
            keys: HashMap::new(),
            instances: HashMap::new(),
            log: Vec::new(),
            link_key: seed,
            link_ttl: 300,
            storage,
            archives: HashMap::new(),
        }
    }
}

fn lock(state: &Shared) -> MutexGuard<'_, Standin> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn dcs_error(status: StatusCode, code: &str, msg: &str) -> Response {
    reply(
        status,
        json!({"error_code": code, "error_msg": msg, "error_ext_msg": null}),
    )
}

/// The DCS API and admin listener.
pub async fn api(State(state): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return dcs_error(StatusCode::PAYLOAD_TOO_LARGE, "DCS.4000", "body too large");
    };
    let path = parts.uri.path().to_owned();
    let response = if let Some(admin) = path.strip_prefix("/_admin/") {
        admin_call(&state, &parts.method, admin, &body)
    } else {
        dcs_call(&state, &parts, &body)
    };
    let status = response.status().as_u16();
    tracing::info!("api {} {path} status={status}", parts.method);
    if !path.starts_with("/_admin/") {
        lock(&state).log.push(Logged {
            listener: "api",
            method: parts.method.to_string(),
            path,
            status,
            authorization: parts.headers.contains_key("authorization"),
        });
    }
    response
}

fn dcs_call(state: &Shared, parts: &axum::http::request::Parts, body: &[u8]) -> Response {
    let keys = lock(state).keys.clone();
    let verified = crate::signature::verify(
        &parts.method,
        &parts.uri,
        &parts.headers,
        body,
        |ak| keys.get(ak).cloned(),
        OffsetDateTime::now_utc(),
    );
    if let Err(refusal) = verified {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"error_msg": refusal.message(), "error_code": "APIGW.0301", "request_id": "standin"}),
        );
    }
    let segments: Vec<&str> = parts.uri.path().trim_matches('/').split('/').collect();
    let (project, id, tail) = match segments.as_slice() {
        ["v2", project, "instances", id, tail @ ..] => (*project, *id, tail.join("/")),
        _ => return dcs_error(StatusCode::NOT_FOUND, "DCS.4000", "No such API."),
    };
    let mut guard = lock(state);
    let standin = &mut *guard;
    let Some(instance) = standin
        .instances
        .get_mut(id)
        .filter(|i| i.project == project)
    else {
        return dcs_error(
            StatusCode::NOT_FOUND,
            "DCS.4001",
            "Instance does not exist.",
        );
    };
    if instance.fail_next > 0 {
        instance.fail_next -= 1;
        return dcs_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "DCS.5000",
            "Internal service error.",
        );
    }
    match (&parts.method, tail.as_str()) {
        (&Method::GET, "ssl") => match instance.ssl {
            Ssl::NoContent => StatusCode::NO_CONTENT.into_response(),
            Ssl::Unsupported => {
                dcs_error(StatusCode::BAD_REQUEST, "DCS.4201", "Do not support SSL.")
            }
            ssl => reply(
                StatusCode::OK,
                json!({
                    "enabled": ssl == Ssl::On,
                    "ip": "127.0.0.1",
                    "port": "6379",
                    "domain_name": "redis.dcs.standin",
                    "ssl_expired_at": instance.ssl_expired_at,
                    "ssl_validated": instance.validated,
                }),
            ),
        },
        (&Method::POST, "ssl-certs/download") => download(standin, id),
        (&Method::PUT, "ssl") => dcs_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "DCS.4999",
            "the stand-in refuses to switch SSL: it restarts the instance",
        ),
        _ => dcs_error(StatusCode::NOT_FOUND, "DCS.4000", "No such API."),
    }
}

/// `POST …/ssl-certs/download`: builds the archive, keeps it for object storage, hands out a signed link.
fn download(standin: &mut Standin, id: &str) -> Response {
    let Some(instance) = standin.instances.get(id) else {
        return dcs_error(
            StatusCode::NOT_FOUND,
            "DCS.4001",
            "Instance does not exist.",
        );
    };
    if instance.ssl == Ssl::Unsupported || instance.ca_pem.is_empty() {
        return dcs_error(StatusCode::BAD_REQUEST, "DCS.4201", "Do not support SSL.");
    }
    let archive = match crate::zips::build(instance.shape, &instance.ca_pem, &instance.server_pem) {
        Ok(a) => a,
        Err(e) => {
            return dcs_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "DCS.5010",
                &e.to_string(),
            );
        }
    };
    let object = format!(
        "ssl-{id}-{}/dcs-ssl-{}.zip",
        instance.generation, instance.generation
    );
    standin.archives.insert(object.clone(), archive);
    let expires = OffsetDateTime::now_utc().unix_timestamp() + standin.link_ttl;
    let signature = link_signature(&standin.link_key, &object, expires);
    let link = format!(
        "{}/dcs-certs/{object}?AWSAccessKeyId=STANDINOBS&Expires={expires}&Signature={signature}",
        standin.storage
    );
    reply(
        StatusCode::OK,
        json!({"bucket_name": "dcs-certs", "file_name": object.rsplit('/').next(), "link": link}),
    )
}

fn link_signature(key: &[u8], object: &str, expires: i64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(
        &key,
        format!("GET\n{expires}\n/dcs-certs/{object}").as_bytes(),
    )
    .as_ref()
    .iter()
    .map(|b| format!("{b:02x}"))
    .collect()
}

/// The object-storage listener: pre-signed GETs only.
pub async fn storage(State(state): State<Shared>, request: Request<Body>) -> Response {
    let (parts, _) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let response = storage_call(&state, &parts);
    let status = response.status().as_u16();
    tracing::info!("storage {} {path} status={status}", parts.method);
    lock(&state).log.push(Logged {
        listener: "storage",
        method: parts.method.to_string(),
        path,
        status,
        authorization: parts.headers.contains_key("authorization"),
    });
    response
}

fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (status, [("content-type", "application/xml")], body).into_response()
}

fn storage_call(state: &Shared, parts: &axum::http::request::Parts) -> Response {
    if parts.headers.contains_key("authorization") {
        return s3_error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified",
        );
    }
    if parts.method != Method::GET {
        return s3_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "only GET",
        );
    }
    let query: HashMap<&str, &str> = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
        .collect();
    let Some(object) = parts.uri.path().strip_prefix("/dcs-certs/") else {
        return s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist",
        );
    };
    let expires: i64 = query
        .get("Expires")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    let standin = lock(state);
    let expected = link_signature(&standin.link_key, object, expires);
    if query.get("AWSAccessKeyId") != Some(&"STANDINOBS")
        || query.get("Signature") != Some(&expected.as_str())
    {
        return s3_error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    if expires < OffsetDateTime::now_utc().unix_timestamp() {
        return s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired");
    }
    match standin.archives.get(object) {
        Some(bytes) => (
            StatusCode::OK,
            [("content-type", "application/zip")],
            bytes.clone(),
        )
            .into_response(),
        None => s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        ),
    }
}

/// `PUT /_admin/instances/{id}` body: every field optional (a patch).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstancePatch {
    project: Option<String>,
    ssl: Option<Ssl>,
    validated: Option<bool>,
    shape: Option<Shape>,
    fail_next: Option<u32>,
}

/// `POST /_admin/instances/{id}/rotate` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotate {
    dir: String,
    #[serde(default = "default_ca_days")]
    ca_days: i64,
    #[serde(default = "default_server_days")]
    server_days: i64,
}

fn default_ca_days() -> i64 {
    3650
}
fn default_server_days() -> i64 {
    365
}

fn admin_call(state: &Shared, method: &Method, path: &str, body: &[u8]) -> Response {
    let bad =
        |e: &dyn std::fmt::Display| reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}));
    let segments: Vec<&str> = path.split('/').collect();
    let mut standin = lock(state);
    match (method, segments.as_slice()) {
        (&Method::PUT, ["keys", ak]) => {
            let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body) else {
                return bad(&"body must be {\"sk\": …}");
            };
            let Some(sk) = o.get("sk").and_then(Value::as_str) else {
                return bad(&"body must be {\"sk\": …}");
            };
            standin.keys.insert((*ak).to_owned(), sk.to_owned());
            StatusCode::NO_CONTENT.into_response()
        }
        (&Method::PUT, ["instances", id]) => put_instance(&mut standin, id, body),
        (&Method::POST, ["instances", id, "rotate"]) => rotate(&mut standin, id, body),
        (&Method::PUT, ["settings"]) => {
            let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body) else {
                return bad(&"body must be {\"link_ttl\": seconds}");
            };
            if let Some(ttl) = o.get("link_ttl").and_then(Value::as_i64) {
                standin.link_ttl = ttl;
            }
            StatusCode::NO_CONTENT.into_response()
        }
        (&Method::GET, ["log"]) => reply(
            StatusCode::OK,
            serde_json::to_value(&standin.log).unwrap_or(Value::Null),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({"error": "no such admin call"}),
        ),
    }
}

/// `PUT /_admin/instances/{id}`: creates or patches an instance.
fn put_instance(standin: &mut Standin, id: &str, body: &[u8]) -> Response {
    let bad =
        |e: &dyn std::fmt::Display| reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}));
    let patch: InstancePatch = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return bad(&e),
    };
    let entry = standin
        .instances
        .entry((*id).to_owned())
        .or_insert_with(|| Instance {
            project: String::new(),
            ssl: Ssl::On,
            validated: true,
            shape: Shape::Honest,
            ca_pem: String::new(),
            server_pem: String::new(),
            ssl_expired_at: String::new(),
            generation: 0,
            fail_next: 0,
        });
    if let Some(p) = patch.project {
        entry.project = p;
    }
    if let Some(s) = patch.ssl {
        entry.ssl = s;
    }
    if let Some(v) = patch.validated {
        entry.validated = v;
    }
    if let Some(s) = patch.shape {
        entry.shape = s;
    }
    if let Some(n) = patch.fail_next {
        entry.fail_next = n;
    }
    reply(
        StatusCode::OK,
        serde_json::to_value(&*entry).unwrap_or(Value::Null),
    )
}

/// `POST /_admin/instances/{id}/rotate`: a new CA and server certificate.
fn rotate(standin: &mut Standin, id: &str, body: &[u8]) -> Response {
    let bad =
        |e: &dyn std::fmt::Display| reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}));
    let rotate: Rotate = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return bad(&e),
    };
    let Some(instance) = standin.instances.get_mut(id) else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": "no such instance; PUT it first"}),
        );
    };
    instance.generation += 1;
    let issued = match crate::pki::rotate(
        std::path::Path::new(&rotate.dir),
        instance.generation,
        rotate.ca_days,
        rotate.server_days,
    ) {
        Ok(i) => i,
        Err(e) => {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": format!("{e:#}")}),
            );
        }
    };
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    instance.ca_pem = issued.ca_pem;
    instance.server_pem = issued.server_pem;
    instance.ssl_expired_at = issued.server_not_after.format(&format).unwrap_or_default();
    reply(
        StatusCode::OK,
        json!({"ssl_expired_at": instance.ssl_expired_at, "ca_pem": instance.ca_pem}),
    )
}
