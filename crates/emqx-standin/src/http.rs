//! The HTTP surface: the vendor API under `/api/v1` and the admin API under `/_admin`.
//!
//! Handlers only translate between HTTP and [`Standin`]; every rule lives there. The state sits
//! behind a `std::sync::Mutex` because no lock is held across an `.await`: a write takes the
//! lock once to admit the request, releases it while the body is read, and takes it again to
//! apply the write. A poisoned lock is recovered, not propagated: the state is plain data and a
//! panic cannot leave it half-updated in a way that matters to a test double.
//!
//! A middleware logs one line per request to stderr (method, path, key, status) and appends
//! vendor API requests to the log served at `/_admin/log`. Bodies, secrets and keys are never
//! logged.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::limiter::Class;
use crate::settings::{HANG_FOR, Redirect, SettingsPatch};
use crate::state::{AdminDeployment, AdminKey, ApiError, LogEntry, Standin, WriteOp};
use crate::upload::MAX_BODY_BYTES;

/// The shared state of all handlers.
pub type Shared = Arc<Mutex<Standin>>;

/// The key a vendor request authenticated as, passed from handler to logging middleware.
#[derive(Clone)]
struct AuthenticatedKey(String);

/// Builds the router with both APIs and the logging middleware.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/api/v1/deployments/{id}/tls", any(tls))
        .route("/_admin/keys/{key}", put(admin_put_key))
        .route(
            "/_admin/deployments/{id}",
            put(admin_put_deployment).get(admin_get_deployment),
        )
        .route(
            "/_admin/settings",
            put(admin_put_settings).get(admin_get_settings),
        )
        .route("/_admin/log", get(admin_log))
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(state.clone(), log_request))
        .with_state(state)
}

fn lock(state: &Shared) -> MutexGuard<'_, Standin> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Logs every request to stderr and records vendor API requests for `/_admin/log`.
async fn log_request(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let at = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let response = next.run(request).await;
    let key = response
        .extensions()
        .get::<AuthenticatedKey>()
        .map(|k| k.0.clone());
    let status = response.status().as_u16();
    tracing::info!(
        "{method} {path} key={} status={status}",
        key.as_deref().unwrap_or("-")
    );
    if path.starts_with("/api/") {
        lock(&state).record(LogEntry {
            method,
            path,
            key,
            status,
            at,
        });
    }
    response
}

/// `GET|POST|PUT|DELETE /api/v1/deployments/{id}/tls`.
async fn tls(
    State(state): State<Shared>,
    method: Method,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(Path(id)) = id else {
        return error_response(&ApiError::new(
            StatusCode::NOT_FOUND,
            "deployment ID is not valid UTF-8",
        ));
    };
    let class = match method {
        Method::GET => Class::Read,
        Method::POST | Method::PUT | Method::DELETE => Class::Write,
        _ => {
            let mut response = error_response(&ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} is not supported; use GET, POST, PUT or DELETE"),
            ));
            response.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, POST, PUT, DELETE"),
            );
            return response;
        }
    };
    let redirect = lock(&state).settings.redirect.clone();
    if let Some(redirect) =
        redirect.filter(|r| r.method.as_deref().is_none_or(|m| m == method.as_str()))
    {
        return redirect_response(&redirect, &id);
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());

    let admitted = {
        let mut standin = lock(&state);
        standin.authenticate(authorization).map(|key| {
            let admission = standin.admit(&key, class, &id, Instant::now());
            (key, admission)
        })
    };
    let key = match admitted {
        Err(error) => return error_response(&error),
        Ok((key, Err(error))) => return with_key(error_response(&error), key),
        Ok((key, Ok(()))) => key,
    };

    let response = match method {
        Method::GET => {
            let result = lock(&state).get_tls(&id, Instant::now());
            json_result(result, StatusCode::OK)
        }
        Method::DELETE => match lock(&state).delete_tls(&id) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(error) => error_response(&error),
        },
        _ => {
            let op = if method == Method::POST {
                WriteOp::Create
            } else {
                WriteOp::Update
            };
            write(&state, op, &id, &headers, body).await
        }
    };
    with_key(response, key)
}

/// Reads the body (outside the lock), then applies the write.
async fn write(state: &Shared, op: WriteOp, id: &str, headers: &HeaderMap, body: Body) -> Response {
    let too_large = || {
        error_response(&ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is larger than 1 MiB (or could not be read)",
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return too_large();
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if take_hang(state, op, id) {
        tokio::time::sleep(HANG_FOR).await;
        return error_response(&ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the write was held unanswered (injected by the stand-in's hang_writes setting)",
        ));
    }
    let result = lock(state).write_tls(
        op,
        id,
        content_type,
        &bytes,
        Instant::now(),
        OffsetDateTime::now_utc(),
    );
    json_result(result, StatusCode::OK)
}

/// Takes one `hang_writes` if any is left, logging the write now: its answer never comes, and a client that
/// gives up drops the handler before the logging middleware sees it.
fn take_hang(state: &Shared, op: WriteOp, id: &str) -> bool {
    let mut standin = lock(state);
    if standin.settings.hang_writes == 0 {
        return false;
    }
    standin.settings.hang_writes -= 1;
    let method = match op {
        WriteOp::Create => "POST",
        WriteOp::Update => "PUT",
    };
    standin.record(LogEntry {
        method: method.to_owned(),
        path: format!("/api/v1/deployments/{id}/tls"),
        key: None,
        status: 0,
        at: OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default(),
    });
    true
}

/// The `redirect` setting's answer: the configured status, `Location` = prefix + the vendor path.
fn redirect_response(redirect: &Redirect, id: &str) -> Response {
    let target = format!("{}/api/v1/deployments/{id}/tls", redirect.location);
    let status = StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::FOUND);
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(&target) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// `PUT /_admin/keys/{key}`.
async fn admin_put_key(
    State(state): State<Shared>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    match parse_admin_body::<AdminKey>(&body) {
        Ok(key) => {
            lock(&state).put_key(&name, key);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(message) => unprocessable(message),
    }
}

/// `PUT /_admin/deployments/{id}`.
async fn admin_put_deployment(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let admin = match parse_admin_body::<AdminDeployment>(&body) {
        Ok(admin) => admin,
        Err(message) => return unprocessable(message),
    };
    match lock(&state).put_deployment(&id, admin) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(message) => unprocessable(message),
    }
}

/// `GET /_admin/deployments/{id}`.
async fn admin_get_deployment(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    match lock(&state).deployment_view(&id, Instant::now()) {
        Some(view) => axum::Json(view).into_response(),
        None => error_response(&ApiError::new(
            StatusCode::NOT_FOUND,
            format!("deployment {id:?} not found; create it with PUT /_admin/deployments/{id}"),
        )),
    }
}

/// `PUT /_admin/settings`.
async fn admin_put_settings(State(state): State<Shared>, body: Bytes) -> Response {
    let patch = match parse_admin_body::<SettingsPatch>(&body) {
        Ok(patch) => patch,
        Err(message) => return unprocessable(message),
    };
    let mut standin = lock(&state);
    match standin.settings.apply(patch) {
        Ok(()) => axum::Json(standin.settings.clone()).into_response(),
        Err(message) => unprocessable(message),
    }
}

/// `GET /_admin/settings` (a convenience beyond the contract).
async fn admin_get_settings(State(state): State<Shared>) -> Response {
    axum::Json(lock(&state).settings.clone()).into_response()
}

/// `GET /_admin/log`.
async fn admin_log(State(state): State<Shared>) -> Response {
    axum::Json(lock(&state).log().to_vec()).into_response()
}

async fn fallback() -> Response {
    error_response(&ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; the vendor API is /api/v1/deployments/{id}/tls",
    ))
}

/// Parses an admin body; an empty body reads as `{}`.
fn parse_admin_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("invalid admin body: {e}"))
}

fn unprocessable(message: String) -> Response {
    error_response(&ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message))
}

fn json_result(result: Result<Value, ApiError>, status: StatusCode) -> Response {
    match result {
        Ok(value) => (status, axum::Json(value)).into_response(),
        Err(error) => error_response(&error),
    }
}

/// Turns an [`ApiError`] into the vendor's error answer.
pub fn error_response(error: &ApiError) -> Response {
    let mut response = (error.status, axum::Json(error.body())).into_response();
    let headers = response.headers_mut();
    if error.status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"emqx-standin\""),
        );
    }
    if let Some(value) = error
        .retry_after
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(header::RETRY_AFTER, value);
    }
    response
}

fn with_key(mut response: Response, key: String) -> Response {
    response.extensions_mut().insert(AuthenticatedKey(key));
    response
}
