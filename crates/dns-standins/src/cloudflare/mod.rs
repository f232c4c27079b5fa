//! Cloudflare's API v4, the part a DNS-01 client uses: `GET /user/tokens/verify`, `GET /zones`, and
//! `GET|POST /zones/{zone_id}/dns_records`, `GET|DELETE /zones/{zone_id}/dns_records/{id}`, all under
//! `/client/v4` (so certkeeper's `api_url` is `http://HOST:PORT/client/v4`).
//!
//! Faithful to the public docs and to what the API is seen to answer:
//! - Every answer is the envelope `{"success", "errors": [{"code", "message"}], "messages", "result"}`, lists
//!   with `result_info: {page, per_page, count, total_count, total_pages}`.
//! - Auth is `Authorization: Bearer TOKEN` (40 characters of `[A-Za-z0-9_-]`). No header: `400`, code 9106;
//!   not `Bearer` + a well-formed token: `400`, code 6003 with `error_chain` 6111; an unknown token: `403`,
//!   code 9109 "Invalid access token"; a token without access to the zone, or without DNS edit on a write:
//!   `403`, code 10000 "Authentication error". `GET /user/tokens/verify` with an unknown token: `401`, code 1000.
//! - `GET /zones` filters by `name` (exact) and lists only the zones the token may read; `page` from 1,
//!   `per_page` 5–50 (default 20). `GET .../dns_records` filters by `type`, `name` / `name.exact`,
//!   `content` / `content.exact`; `per_page` 5–5000 (default 100). Out-of-range `per_page` is clamped.
//! - A zone id that is not 32 hex digits: `400`, code 7003 "Could not route to ...". A record that is not
//!   there: `404`, code 81044 "Record does not exist.". A second identical record: `400`, code 81058.
//! - A record `name` not ending in the zone's name gets the zone appended, `@` is the apex; `ttl` is 1 (auto)
//!   or 60–86400 (else code 9021). A POST needs `Content-Type: application/json` (else 6003 / 6105).
//!
//! The stand-in's own choices, where the docs leave the code open: a body that is not JSON is code 9207, any
//! other invalid record (not TXT, empty or over 2048 characters) code 1004 "DNS Validation Error", a `page` or
//! `per_page` that is not a number code 1001. `PUT /_admin/settings {"max_per_page": N}` lowers every page
//! size, so tests see clients walk the pages. Only TXT records are kept; each is published to DNS before the
//! API answers, and removed from DNS before a DELETE answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use rand::Rng as _;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::publish::{Change, Publisher};
use crate::serve::{RequestLog, Who, log_requests};

mod admin;
use admin::{admin_log, admin_records, admin_settings, admin_token, admin_zone};

/// The length of an API token.
pub const TOKEN_LEN: usize = 40;
const MAX_BODY: usize = 64 * 1024;
const MAX_CONTENT: usize = 2048;

#[derive(Debug, Clone)]
struct Zone {
    id: String,
    name: String,
}

#[derive(Debug, Clone)]
struct Token {
    id: String,
    /// Zone names the token may use; `None`: all.
    zones: Option<Vec<String>>,
    /// Zone:DNS:Edit (else read only).
    edit: bool,
}

impl Token {
    fn covers(&self, zone: &Zone) -> bool {
        self.zones.as_ref().is_none_or(|z| z.contains(&zone.name))
    }
}

#[derive(Debug, Clone)]
struct Record {
    id: String,
    zone_id: String,
    zone_name: String,
    name: String,
    content: String,
    ttl: u32,
    created_on: String,
}

impl Record {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id, "zone_id": self.zone_id, "zone_name": self.zone_name, "name": self.name,
            "type": "TXT", "content": self.content, "proxiable": false, "proxied": false, "ttl": self.ttl,
            "settings": {}, "meta": {}, "comment": null, "tags": [],
            "created_on": self.created_on, "modified_on": self.created_on,
        })
    }
}

#[derive(Debug, Default)]
struct Cloudflare {
    zones: Vec<Zone>,
    tokens: HashMap<String, Token>,
    records: Vec<Record>,
    max_per_page: Option<usize>,
}

#[derive(Clone)]
struct App {
    state: Arc<Mutex<Cloudflare>>,
    publisher: Arc<dyn Publisher>,
    log: RequestLog,
}

impl App {
    fn lock(&self) -> MutexGuard<'_, Cloudflare> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The router: the API under `/client/v4` and the admin API under `/_admin` (no auth): `PUT /_admin/zones/NAME`
/// → `{"id"}`, `PUT /_admin/tokens/TOKEN {"zones": [NAME, ...] | null, "edit": bool}` → `{"id"}`,
/// `PUT /_admin/settings {"max_per_page": N | null}`, `GET /_admin/records`, `GET /_admin/log`.
pub fn router(publisher: Arc<dyn Publisher>) -> Router {
    let log = RequestLog::default();
    let app = App {
        state: Arc::default(),
        publisher,
        log: log.clone(),
    };
    Router::new()
        .route("/client/v4/user/tokens/verify", get(verify))
        .route("/client/v4/zones", get(zones))
        .route(
            "/client/v4/zones/{zone}/dns_records",
            get(list_records).post(create_record),
        )
        .route(
            "/client/v4/zones/{zone}/dns_records/{id}",
            get(get_record).delete(delete_record),
        )
        .route("/_admin/zones/{name}", put(admin_zone))
        .route("/_admin/tokens/{token}", put(admin_token))
        .route("/_admin/settings", put(admin_settings))
        .route("/_admin/records", get(admin_records))
        .route("/_admin/log", get(admin_log))
        .fallback(|| async { fail(StatusCode::BAD_REQUEST, 7000, "No route for that URI") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(log, log_requests))
        .with_state(app)
}

fn envelope(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn fail(status: StatusCode, code: u32, message: &str) -> Response {
    envelope(
        status,
        json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null}),
    )
}

fn ok(result: Value, info: Option<Value>, who: &Token) -> Response {
    let mut body = json!({"success": true, "errors": [], "messages": [], "result": result});
    if let Some(info) = info {
        body["result_info"] = info;
    }
    let mut response = envelope(StatusCode::OK, body);
    response.extensions_mut().insert(Who(who.id.clone()));
    response
}

fn with_who(mut response: Response, who: &Token) -> Response {
    response.extensions_mut().insert(Who(who.id.clone()));
    response
}

/// The token a request carries, or the answer Cloudflare gives without one.
fn authenticate(state: &Cloudflare, headers: &HeaderMap) -> Result<Token, Box<Response>> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Box::new(fail(
            StatusCode::BAD_REQUEST,
            9106,
            "Missing X-Auth-Key, X-Auth-Email or Authorization headers",
        )));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| well_formed_token(t));
    let Some(token) = token else {
        return Err(Box::new(envelope(
            StatusCode::BAD_REQUEST,
            json!({"success": false, "messages": [], "result": null, "errors": [{
                "code": 6003, "message": "Invalid request headers",
                "error_chain": [{"code": 6111, "message": "Invalid format for Authorization header"}],
            }]}),
        )));
    };
    state
        .tokens
        .get(token)
        .cloned()
        .ok_or_else(|| Box::new(fail(StatusCode::FORBIDDEN, 9109, "Invalid access token")))
}

fn well_formed_token(t: &str) -> bool {
    t.len() == TOKEN_LEN
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn auth_error() -> Response {
    fail(StatusCode::FORBIDDEN, 10000, "Authentication error")
}

async fn verify(State(app): State<App>, headers: HeaderMap) -> Response {
    let state = app.lock();
    match authenticate(&state, &headers) {
        // The verify endpoint answers an unknown token with 401 and its own code.
        Err(response) if response.status() == StatusCode::FORBIDDEN => {
            fail(StatusCode::UNAUTHORIZED, 1000, "Invalid API Token")
        }
        Err(response) => *response,
        Ok(token) => {
            let body = json!({
                "success": true, "errors": [], "result": {"id": token.id, "status": "active"},
                "messages": [{"code": 10000, "message": "This API Token is valid and active", "type": null}],
            });
            with_who(envelope(StatusCode::OK, body), &token)
        }
    }
}

/// `page` and `per_page` from a query, with Cloudflare's defaults and bounds and the stand-in's page cap.
fn paging(
    query: &HashMap<String, String>,
    default: usize,
    bounds: (usize, usize),
    cap: Option<usize>,
) -> Result<(usize, usize), Box<Response>> {
    let number = |key: &str, fallback: usize| match query.get(key) {
        None => Ok(fallback),
        Some(v) => v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            Box::new(fail(
                StatusCode::BAD_REQUEST,
                1001,
                &format!("{key} must be a positive integer"),
            ))
        }),
    };
    let page = number("page", 1)?;
    let per_page = number("per_page", default)?.clamp(bounds.0, bounds.1);
    Ok((page, cap.map_or(per_page, |c| per_page.min(c.max(1)))))
}

fn one_page(items: Vec<Value>, page: usize, per_page: usize) -> (Value, Value) {
    let total = items.len();
    let shown: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let info = json!({
        "page": page, "per_page": per_page, "count": shown.len(), "total_count": total,
        "total_pages": total.div_ceil(per_page),
    });
    (Value::Array(shown), info)
}

async fn zones(
    State(app): State<App>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let state = app.lock();
    let token = match authenticate(&state, &headers) {
        Ok(token) => token,
        Err(response) => return *response,
    };
    let (page, per_page) = match paging(&query, 20, (5, 50), state.max_per_page) {
        Ok(p) => p,
        Err(response) => return with_who(*response, &token),
    };
    let name = query.get("name").map(|n| normal(n));
    let mut found: Vec<&Zone> = state
        .zones
        .iter()
        .filter(|z| token.covers(z) && name.as_ref().is_none_or(|n| *n == z.name))
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    let items = found
        .iter()
        .map(|z| json!({"id": z.id, "name": z.name, "status": "active", "paused": false, "type": "full"}))
        .collect();
    let (result, info) = one_page(items, page, per_page);
    ok(result, Some(info), &token)
}

/// Authenticates and finds the zone of a `/zones/{zone}/...` request the token may use.
fn zone_for(
    state: &Cloudflare,
    headers: &HeaderMap,
    zone_id: &str,
    write: bool,
) -> Result<(Token, Zone), Box<Response>> {
    let token = authenticate(state, headers)?;
    if zone_id.len() != 32 || !zone_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        let message = format!(
            "Could not route to /zones/{zone_id}/dns_records, perhaps your object identifier is invalid?"
        );
        return Err(Box::new(with_who(
            fail(StatusCode::BAD_REQUEST, 7003, &message),
            &token,
        )));
    }
    match state.zones.iter().find(|z| z.id == zone_id) {
        Some(zone) if token.covers(zone) && (token.edit || !write) => Ok((token, zone.clone())),
        _ => Err(Box::new(with_who(auth_error(), &token))),
    }
}

async fn list_records(
    State(app): State<App>,
    headers: HeaderMap,
    Path(zone_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let state = app.lock();
    let (token, zone) = match zone_for(&state, &headers, &zone_id, false) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let (page, per_page) = match paging(&query, 100, (5, 5000), state.max_per_page) {
        Ok(p) => p,
        Err(response) => return with_who(*response, &token),
    };
    let filter = |a: &str, b: &str| query.get(a).or_else(|| query.get(b)).cloned();
    let name = filter("name.exact", "name").map(|n| normal(&n));
    let content = filter("content.exact", "content");
    let kind = query.get("type").cloned();
    let items = state
        .records
        .iter()
        .filter(|r| r.zone_id == zone.id)
        .filter(|_| kind.as_deref().is_none_or(|t| t == "TXT"))
        .filter(|r| name.as_ref().is_none_or(|n| *n == r.name))
        .filter(|r| content.as_ref().is_none_or(|c| *c == r.content))
        .map(Record::to_json)
        .collect();
    let (result, info) = one_page(items, page, per_page);
    ok(result, Some(info), &token)
}

#[derive(Deserialize)]
struct NewRecord {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    content: String,
    #[serde(default = "auto_ttl")]
    ttl: u32,
}

fn auto_ttl() -> u32 {
    1
}

/// Checks a new record; returns it with its full name.
fn validate(zone: &Zone, body: &[u8]) -> Result<NewRecord, Box<Response>> {
    let mut record: NewRecord = serde_json::from_slice(body).map_err(|_| {
        Box::new(fail(
            StatusCode::BAD_REQUEST,
            9207,
            "Request body is invalid.",
        ))
    })?;
    if record.kind != "TXT" {
        return Err(Box::new(fail(
            StatusCode::BAD_REQUEST,
            1004,
            "DNS Validation Error (this stand-in keeps TXT records only)",
        )));
    }
    if record.content.is_empty() || record.content.len() > MAX_CONTENT {
        return Err(Box::new(fail(
            StatusCode::BAD_REQUEST,
            1004,
            "DNS Validation Error (content must be 1-2048 characters)",
        )));
    }
    if record.ttl != 1 && !(60..=86_400).contains(&record.ttl) {
        return Err(Box::new(fail(
            StatusCode::BAD_REQUEST,
            9021,
            "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.",
        )));
    }
    let name = normal(&record.name);
    record.name = if name == "@" || name == zone.name {
        zone.name.clone()
    } else if name.ends_with(&format!(".{}", zone.name)) {
        name
    } else {
        format!("{name}.{}", zone.name)
    };
    Ok(record)
}

/// Everything a POST is checked for before anything is published.
fn check_create(
    state: &Cloudflare,
    headers: &HeaderMap,
    zone_id: &str,
    body: &[u8],
) -> Result<(Token, Zone, NewRecord), Box<Response>> {
    let (token, zone) = zone_for(state, headers, zone_id, true)?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        let body = json!({"success": false, "messages": [], "result": null, "errors": [{
            "code": 6003, "message": "Invalid request headers",
            "error_chain": [{"code": 6105, "message":
                "Invalid Content-Type header, valid values are application/json,multipart/form-data"}],
        }]});
        return Err(Box::new(with_who(
            envelope(StatusCode::BAD_REQUEST, body),
            &token,
        )));
    }
    let record = validate(&zone, body).map_err(|r| Box::new(with_who(*r, &token)))?;
    let identical =
        |r: &Record| r.zone_id == zone.id && r.name == record.name && r.content == record.content;
    if state.records.iter().any(identical) {
        let answer = fail(
            StatusCode::BAD_REQUEST,
            81058,
            "An identical record already exists.",
        );
        return Err(Box::new(with_who(answer, &token)));
    }
    Ok((token, zone, record))
}

async fn create_record(
    State(app): State<App>,
    headers: HeaderMap,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> Response {
    let checked = check_create(&app.lock(), &headers, &zone_id, &body);
    let (token, zone, new) = match checked {
        Ok(checked) => checked,
        Err(response) => return *response,
    };
    let value = new.content.trim_matches('"').to_owned();
    if let Err(why) = app
        .publisher
        .apply(vec![Change::Add(new.name.clone(), value)])
        .await
    {
        tracing::error!("publishing TXT {}: {why}", new.name);
        return with_who(
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                10002,
                "An unknown error has occurred",
            ),
            &token,
        );
    }
    let record = Record {
        id: hex_id(),
        zone_id: zone.id.clone(),
        zone_name: zone.name.clone(),
        name: new.name,
        content: new.content,
        ttl: new.ttl,
        created_on: OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default(),
    };
    let result = record.to_json();
    app.lock().records.push(record);
    ok(result, None, &token)
}

async fn get_record(
    State(app): State<App>,
    headers: HeaderMap,
    Path((zone_id, id)): Path<(String, String)>,
) -> Response {
    let state = app.lock();
    let (token, zone) = match zone_for(&state, &headers, &zone_id, false) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    match state
        .records
        .iter()
        .find(|r| r.zone_id == zone.id && r.id == id)
    {
        Some(record) => ok(record.to_json(), None, &token),
        None => with_who(
            fail(StatusCode::NOT_FOUND, 81044, "Record does not exist."),
            &token,
        ),
    }
}

async fn delete_record(
    State(app): State<App>,
    headers: HeaderMap,
    Path((zone_id, id)): Path<(String, String)>,
) -> Response {
    let found = {
        let state = app.lock();
        zone_for(&state, &headers, &zone_id, true).map(|(token, zone)| {
            let record = state
                .records
                .iter()
                .find(|r| r.zone_id == zone.id && r.id == id)
                .cloned();
            (token, record)
        })
    };
    let (token, record) = match found {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let Some(record) = record else {
        return with_who(
            fail(StatusCode::NOT_FOUND, 81044, "Record does not exist."),
            &token,
        );
    };
    let value = record.content.trim_matches('"').to_owned();
    if let Err(why) = app
        .publisher
        .apply(vec![Change::Delete(record.name.clone(), value)])
        .await
    {
        tracing::error!("removing TXT {}: {why}", record.name);
        return with_who(
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                10002,
                "An unknown error has occurred",
            ),
            &token,
        );
    }
    app.lock().records.retain(|r| r.id != record.id);
    ok(json!({"id": record.id}), None, &token)
}

/// Lower case, no trailing dot: how Cloudflare shows names.
fn normal(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn hex_id() -> String {
    let b: [u8; 16] = rand::rng().random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}
