//! The Cloudflare stand-in's admin API (no auth): zones, tokens, settings, and what it holds and was asked.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{App, Record, Token, Zone, hex_id, normal, well_formed_token};

pub(super) async fn admin_zone(State(app): State<App>, Path(name): Path<String>) -> Response {
    let name = normal(&name);
    let mut state = app.lock();
    let id = match state.zones.iter().find(|z| z.name == name) {
        Some(zone) => zone.id.clone(),
        None => {
            let id = hex_id();
            state.zones.push(Zone {
                id: id.clone(),
                name,
            });
            id
        }
    };
    axum::Json(json!({"id": id})).into_response()
}

#[derive(Deserialize)]
struct AdminToken {
    zones: Option<Vec<String>>,
    edit: bool,
}

pub(super) async fn admin_token(
    State(app): State<App>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(spec) = serde_json::from_slice::<AdminToken>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "body: {\"zones\": [NAME, ...] | null, \"edit\": bool}",
        )
            .into_response();
    };
    if !well_formed_token(&token) {
        return (
            StatusCode::BAD_REQUEST,
            "a token is 40 characters of [A-Za-z0-9_-]",
        )
            .into_response();
    }
    let id = hex_id();
    let zones = spec.zones.map(|z| z.iter().map(|n| normal(n)).collect());
    app.lock().tokens.insert(
        token,
        Token {
            id: id.clone(),
            zones,
            edit: spec.edit,
        },
    );
    axum::Json(json!({"id": id})).into_response()
}

pub(super) async fn admin_settings(State(app): State<App>, body: Bytes) -> Response {
    let Ok(settings) = serde_json::from_slice::<BTreeMap<String, Option<usize>>>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "body: {\"max_per_page\": N | null}",
        )
            .into_response();
    };
    if settings.keys().any(|k| k != "max_per_page") {
        return (StatusCode::BAD_REQUEST, "known settings: max_per_page").into_response();
    }
    app.lock().max_per_page = settings.get("max_per_page").copied().flatten();
    StatusCode::NO_CONTENT.into_response()
}

pub(super) async fn admin_records(State(app): State<App>) -> Response {
    let records: Vec<Value> = app.lock().records.iter().map(Record::to_json).collect();
    axum::Json(records).into_response()
}

pub(super) async fn admin_log(State(app): State<App>) -> Response {
    axum::Json(app.log.lock().unwrap_or_else(|e| e.into_inner()).clone()).into_response()
}
