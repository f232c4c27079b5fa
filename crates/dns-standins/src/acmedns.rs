//! The acme-dns server API (joohoi/acme-dns, `pkg/api`): `POST /register` and `POST /update`.
//!
//! Faithful to acme-dns:
//! - `POST /register` takes an empty body or `{"allowfrom": ["CIDR", ...]}` and answers `201` with
//!   `{"username", "password", "fulldomain", "subdomain", "allowfrom"}`; the username and subdomain are UUIDs,
//!   the password 40 characters of `[A-Za-z0-9_-]`, `fulldomain` is `SUBDOMAIN.DOMAIN`. A body that is not
//!   JSON answers `400 {"error": "malformed_json_payload"}`, a CIDR that does not parse
//!   `400 {"error": "invalid_allowfrom_cidr"}`.
//! - `POST /update` authenticates with `X-Api-User` (a UUID) and `X-Api-Key` (40 characters); a wrong user,
//!   key, a body whose `subdomain` is not the account's, or a body that is not JSON all answer
//!   `401 {"error": "forbidden"}`, as acme-dns's auth middleware does. `txt` must be exactly 43 characters of
//!   the base64url alphabet, else `400 {"error": "bad_txt"}`. Success answers `200 {"txt": VALUE}`.
//! - Every subdomain holds **two** TXT values, and an update overwrites the older one. That is acme-dns's own
//!   behaviour (two rows per subdomain, `UPDATE ... ORDER BY LastUpdate LIMIT 1`), and why one account serves a
//!   certificate for `example.com` and `*.example.com`: both challenge values live at one `fulldomain` at once.
//! - There is no delete: values stay until two newer updates have overwritten them.
//!
//! The stand-in's own choices: `allowfrom` is checked and stored but not enforced (the tests all come from
//! loopback); bodies over 64 KiB answer 413; updates are applied one at a time (acme-dns serialises them in its
//! database), each published to DNS before `200` is answered.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng as _;
use serde::Deserialize;
use serde_json::json;

use crate::publish::{Change, Publisher};
use crate::serve::{RequestLog, Who, log_requests};

/// The largest request body read.
const MAX_BODY: usize = 64 * 1024;
/// The length acme-dns requires of a TXT value (a base64url SHA-256 digest).
pub const TXT_LEN: usize = 43;
/// The length of an acme-dns password.
pub const PASSWORD_LEN: usize = 40;

/// One registered account.
#[derive(Debug, Clone)]
struct Account {
    password: String,
    subdomain: String,
    allowfrom: Vec<String>,
    /// The two TXT slots: `(value, when written)`; an empty value is a slot never written.
    txt: [(String, u64); 2],
}

/// The stand-in's state: the accounts, by username.
#[derive(Debug, Default)]
struct AcmeDns {
    domain: String,
    accounts: BTreeMap<String, Account>,
    clock: u64,
}

/// What the handlers share.
#[derive(Clone)]
struct App {
    state: Arc<Mutex<AcmeDns>>,
    /// Held across the DNS update, so two updates of one subdomain cannot both pick the same slot.
    updates: Arc<tokio::sync::Mutex<()>>,
    publisher: Arc<dyn Publisher>,
    log: RequestLog,
}

impl App {
    fn lock(&self) -> MutexGuard<'_, AcmeDns> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The router: the acme-dns API, `GET /health`, and the admin API (`GET /_admin/log`, `GET /_admin/records`).
/// `domain` is acme-dns's `general.domain` (e.g. `auth.example.test`): every `fulldomain` is below it.
pub fn router(domain: &str, publisher: Arc<dyn Publisher>) -> Router {
    let log = RequestLog::default();
    let app = App {
        state: Arc::new(Mutex::new(AcmeDns {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            ..AcmeDns::default()
        })),
        updates: Arc::default(),
        publisher,
        log: log.clone(),
    };
    Router::new()
        .route("/register", post(register))
        .route("/update", post(update))
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/_admin/log", get(admin_log))
        .route("/_admin/records", get(admin_records))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(log, log_requests))
        .with_state(app)
}

fn error(status: StatusCode, code: &str) -> Response {
    (status, axum::Json(json!({ "error": code }))).into_response()
}

#[derive(Deserialize, Default)]
struct RegisterBody {
    #[serde(default)]
    allowfrom: Vec<String>,
}

async fn register(State(app): State<App>, body: Bytes) -> Response {
    let body: RegisterBody = if body.is_empty() {
        RegisterBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(_) => return error(StatusCode::BAD_REQUEST, "malformed_json_payload"),
        }
    };
    if !body.allowfrom.iter().all(|cidr| valid_cidr(cidr)) {
        return error(StatusCode::BAD_REQUEST, "invalid_allowfrom_cidr");
    }
    let username = uuid();
    let account = Account {
        password: password(),
        subdomain: uuid(),
        allowfrom: body.allowfrom,
        txt: Default::default(),
    };
    let mut state = app.lock();
    let answer = json!({
        "username": username,
        "password": account.password,
        "fulldomain": format!("{}.{}", account.subdomain, state.domain),
        "subdomain": account.subdomain,
        "allowfrom": account.allowfrom,
    });
    state.accounts.insert(username.clone(), account);
    let mut response = (StatusCode::CREATED, axum::Json(answer)).into_response();
    response.extensions_mut().insert(Who(username));
    response
}

#[derive(Deserialize)]
struct UpdateBody {
    #[serde(default)]
    subdomain: String,
    #[serde(default)]
    txt: String,
}

async fn update(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let user = header("X-Api-User").to_owned();
    let key = header("X-Api-Key");
    let body: Option<UpdateBody> = serde_json::from_slice(&body).ok();
    let authorized = {
        let state = app.lock();
        valid_uuid(&user)
            && key.chars().count() == PASSWORD_LEN
            && state.accounts.get(&user).is_some_and(|account| {
                account.password == key
                    && body
                        .as_ref()
                        .is_some_and(|b| b.subdomain == account.subdomain)
            })
    };
    // Unwrap-free: `authorized` implies a body.
    let (true, Some(body)) = (authorized, body) else {
        return error(StatusCode::UNAUTHORIZED, "forbidden");
    };
    let who = Who(user.clone());
    if !valid_txt(&body.txt) {
        return with_who(error(StatusCode::BAD_REQUEST, "bad_txt"), who);
    }
    let _one_at_a_time = app.updates.lock().await;
    let (fulldomain, slot, changes) = {
        let state = app.lock();
        let Some(account) = state.accounts.get(&user) else {
            return with_who(error(StatusCode::UNAUTHORIZED, "forbidden"), who);
        };
        let slot = usize::from(account.txt[1].1 < account.txt[0].1);
        let fulldomain = format!("{}.{}", account.subdomain, state.domain);
        let (old, other) = (&account.txt[slot].0, &account.txt[1 - slot].0);
        let mut changes = Vec::new();
        // The other slot may hold the same value: then DNS must keep it.
        if !old.is_empty() && old != other && *old != body.txt {
            changes.push(Change::Delete(fulldomain.clone(), old.clone()));
        }
        changes.push(Change::Add(fulldomain.clone(), body.txt.clone()));
        (fulldomain, slot, changes)
    };
    if let Err(why) = app.publisher.apply(changes).await {
        tracing::error!("publishing TXT {fulldomain}: {why}");
        return with_who(error(StatusCode::INTERNAL_SERVER_ERROR, "db_error"), who);
    }
    let mut state = app.lock();
    state.clock += 1;
    let now = state.clock;
    if let Some(account) = state.accounts.get_mut(&user) {
        account.txt[slot] = (body.txt.clone(), now);
    }
    with_who(
        (StatusCode::OK, axum::Json(json!({ "txt": body.txt }))).into_response(),
        who,
    )
}

fn with_who(mut response: Response, who: Who) -> Response {
    response.extensions_mut().insert(who);
    response
}

async fn admin_log(State(app): State<App>) -> Response {
    axum::Json(app.log.lock().unwrap_or_else(|e| e.into_inner()).clone()).into_response()
}

/// `{"<fulldomain>": ["value", ...]}`: the values each subdomain holds now (never-written slots left out).
async fn admin_records(State(app): State<App>) -> Response {
    let state = app.lock();
    let records: BTreeMap<String, Vec<String>> = state
        .accounts
        .values()
        .map(|a| {
            let values = a
                .txt
                .iter()
                .filter(|(v, _)| !v.is_empty())
                .map(|(v, _)| v.clone())
                .collect();
            (format!("{}.{}", a.subdomain, state.domain), values)
        })
        .collect();
    axum::Json(serde_json::to_value(records).unwrap_or_default()).into_response()
}

/// True if and only if `s` is `[A-Za-z0-9_-]{43}`, acme-dns's `validTXT`.
fn valid_txt(s: &str) -> bool {
    s.len() == TXT_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `ADDRESS/PREFIX`, as Go's `net.ParseCIDR` wants it.
fn valid_cidr(s: &str) -> bool {
    let Some((ip, prefix)) = s.split_once('/') else {
        return false;
    };
    let max = match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => 32,
        Ok(IpAddr::V6(_)) => 128,
        Err(_) => return false,
    };
    prefix.parse::<u8>().is_ok_and(|p| p <= max)
}

fn uuid() -> String {
    let b: [u8; 16] = rand::rng().random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

fn password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..PASSWORD_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}
