//! The Cloudflare provider: TXT records through Cloudflare's API v4 with an API token.
//!
//! Decisions made here:
//! - **The zone** is `zone_id` when set, else found with `GET /zones?name=` from the owner's own name upwards
//!   (the first zone the token can see wins, so a delegated sub-zone beats its parent), remembered per owner.
//! - **Cleanup deletes exactly the record this process created**, by the id Cloudflare gave it. A process that
//!   was killed in between has lost that id: then the records at the owner with exactly this value are found
//!   (`GET .../dns_records?type=TXT&name=`, every page) and deleted, and nothing else at the owner.
//! - **A second POST of a value already there** (Cloudflare's 81058 "identical record") is success: after a
//!   crash the journal may present a value again.
//! - **Errors show Cloudflare's own `code: message`** (bounded) and what to check; the token is sent as a
//!   sensitive header and never appears in a message or log line.
//! - **Propagation is not ours**: the layer above asks the zone's authoritative servers (Cloudflare's).

pub mod config;
mod error;

pub use config::{CloudflareConfig, DEFAULT_API_URL};
pub use error::CloudflareError;

use std::collections::HashMap;
use std::sync::Mutex;

use reqwest::Method;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tracing::debug;

use super::{Dns01Solver, SolverFuture, TxtRecord};
use crate::solver::hosted_http;

/// The TTL of challenge records: the lowest Cloudflare allows without Enterprise.
const TTL: u32 = 60;
/// `per_page` when listing records at an owner.
const PER_PAGE: u32 = 100;
/// Most pages walked when looking for a record (an owner with 10,000 TXT records is not a challenge owner).
const MAX_PAGES: u64 = 100;
/// Cloudflare's code for "An identical record already exists."
const IDENTICAL_RECORD: u64 = 81058;
/// Cloudflare's code for "Record does not exist."
const NO_RECORD: u64 = 81044;

/// A [`Dns01Solver`] that publishes through Cloudflare's API.
#[derive(Debug)]
pub struct CloudflareSolver {
    config: CloudflareConfig,
    http: Result<reqwest::Client, String>,
    /// `(owner, value)` → `(zone id, record id)` of the records this process created.
    created: Mutex<HashMap<(String, String), (String, String)>>,
    /// Owner → zone id, as found.
    zones: Mutex<HashMap<String, String>>,
}

/// One answer of the API: its status and envelope.
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn success(&self) -> bool {
        (200..300).contains(&self.status) && self.body["success"] == json!(true)
    }

    fn has_code(&self, code: u64) -> bool {
        self.body["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["code"] == json!(code)))
    }

    /// Cloudflare's errors as `code: message; ...` (with the `error_chain`), bounded.
    fn message(&self) -> String {
        let mut parts = Vec::new();
        for error in self.body["errors"].as_array().into_iter().flatten() {
            let one =
                |e: &Value| format!("{}: {}", e["code"], e["message"].as_str().unwrap_or("?"));
            parts.push(one(error));
            parts.extend(
                error["error_chain"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(one),
            );
        }
        if parts.is_empty() {
            parts.push(format!("no errors in the answer: {}", self.body));
        }
        hosted_http::bounded(&parts.join("; "))
    }
}

impl CloudflareSolver {
    /// A solver for one `[dns.NAME]`. Nothing is sent until used.
    pub fn new(config: CloudflareConfig) -> Self {
        Self {
            config,
            http: hosted_http::client(),
            created: Mutex::default(),
            zones: Mutex::default(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Answer, CloudflareError> {
        let unreachable = |reason: String| CloudflareError::Unreachable {
            api: self.config.api_url.clone(),
            reason,
        };
        let http = self.http.as_ref().map_err(|e| unreachable(e.clone()))?;
        let mut auth = reqwest::header::HeaderValue::from_str(&format!(
            "Bearer {}",
            self.config.api_token.expose_secret()
        ))
        .map_err(|_| {
            unreachable("the API token is not a valid header value; check the token file".into())
        })?;
        auth.set_sensitive(true);
        let mut request = http
            .request(method, format!("{}{path}", self.config.api_url))
            .header(reqwest::header::AUTHORIZATION, auth)
            .query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (status, bytes) = hosted_http::send(request).await.map_err(unreachable)?;
        let body = serde_json::from_slice(&bytes).map_err(|_| {
            unreachable(format!(
                "answer {status} is not Cloudflare's JSON envelope: {}",
                hosted_http::bounded(&String::from_utf8_lossy(&bytes))
            ))
        })?;
        Ok(Answer {
            status: status.as_u16(),
            body,
        })
    }

    fn refused(what: String, answer: &Answer) -> CloudflareError {
        let hint = match answer.status {
            400 if answer.has_code(6003) || answer.has_code(9106) => {
                "check that api_token is an API token (not the Global API Key) and has no stray characters"
            }
            401 | 403 => {
                "check the API token: valid, not expired, with Zone:DNS:Edit on this zone (and Zone:Read to find it)"
            }
            404 => "the zone or record is gone; check `zone_id`",
            429 => "Cloudflare's rate limit; the next pass retries",
            _ => "check the record and Cloudflare's status page",
        };
        CloudflareError::Refused {
            what,
            status: answer.status,
            message: answer.message(),
            hint: hint.to_owned(),
        }
    }

    /// The zone holding `owner`: `zone_id`, a remembered one, or the first `GET /zones?name=` hit upwards.
    async fn zone(&self, owner: &str) -> Result<String, CloudflareError> {
        if let Some(id) = &self.config.zone_id {
            return Ok(id.clone());
        }
        if let Some(id) = lock(&self.zones).get(owner) {
            return Ok(id.clone());
        }
        let mut candidate = owner;
        while let Some((_, parent)) = candidate.split_once('.') {
            let answer = self
                .call(
                    Method::GET,
                    "/zones",
                    &[("name", candidate), ("per_page", "5")],
                    None,
                )
                .await?;
            if !answer.success() {
                return Err(Self::refused(
                    format!("GET /zones?name={candidate}"),
                    &answer,
                ));
            }
            if let Some(id) = answer.body["result"][0]["id"].as_str() {
                debug!(owner, zone = candidate, "Cloudflare zone found");
                lock(&self.zones).insert(owner.to_owned(), id.to_owned());
                return Ok(id.to_owned());
            }
            candidate = parent;
        }
        Err(CloudflareError::NoZone {
            owner: owner.to_owned(),
        })
    }

    /// The ids of the TXT records at `owner` with exactly `value`, every page walked.
    async fn find(
        &self,
        zone: &str,
        owner: &str,
        value: &str,
    ) -> Result<Vec<String>, CloudflareError> {
        let path = format!("/zones/{zone}/dns_records");
        let mut ids = Vec::new();
        for page in 1..=MAX_PAGES {
            let (page_s, per_page) = (page.to_string(), PER_PAGE.to_string());
            let query = [
                ("type", "TXT"),
                ("name", owner),
                ("page", &page_s),
                ("per_page", &per_page),
            ];
            let answer = self.call(Method::GET, &path, &query, None).await?;
            if !answer.success() {
                return Err(Self::refused(
                    format!("GET {path}?type=TXT&name={owner}"),
                    &answer,
                ));
            }
            let records = answer.body["result"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            ids.extend(
                records
                    .iter()
                    .filter(|r| {
                        r["content"]
                            .as_str()
                            .is_some_and(|c| c.trim_matches('"') == value)
                    })
                    .filter_map(|r| r["id"].as_str().map(str::to_owned)),
            );
            let pages = answer.body["result_info"]["total_pages"]
                .as_u64()
                .unwrap_or(1);
            if records.is_empty() || page >= pages {
                break;
            }
        }
        Ok(ids)
    }

    async fn create(&self, record: &TxtRecord) -> Result<(), CloudflareError> {
        let owner = record.fqdn.trim_end_matches('.').to_ascii_lowercase();
        let zone = self.zone(&owner).await?;
        let path = format!("/zones/{zone}/dns_records");
        let body = json!({"type": "TXT", "name": owner, "content": record.value, "ttl": TTL});
        let answer = self.call(Method::POST, &path, &[], Some(body)).await?;
        let id = if answer.success() {
            answer.body["result"]["id"].as_str().map(str::to_owned)
        } else if answer.has_code(IDENTICAL_RECORD) {
            // Presented before (a crash, a retry): the record is there; learn its id for cleanup.
            self.find(&zone, &owner, &record.value)
                .await?
                .into_iter()
                .next()
        } else {
            return Err(Self::refused(format!("POST {path} for {owner}"), &answer));
        };
        debug!(
            owner,
            id = id.as_deref().unwrap_or("?"),
            "Cloudflare TXT record created"
        );
        if let Some(id) = id {
            lock(&self.created).insert((owner, record.value.clone()), (zone, id));
        }
        Ok(())
    }

    async fn delete(&self, record: &TxtRecord) -> Result<(), CloudflareError> {
        let owner = record.fqdn.trim_end_matches('.').to_ascii_lowercase();
        let known = lock(&self.created).remove(&(owner.clone(), record.value.clone()));
        let (zone, ids) = match known {
            Some((zone, id)) => (zone, vec![id]),
            None => {
                let zone = self.zone(&owner).await?;
                let ids = self.find(&zone, &owner, &record.value).await?;
                (zone, ids)
            }
        };
        for id in ids {
            let path = format!("/zones/{zone}/dns_records/{id}");
            let answer = self.call(Method::DELETE, &path, &[], None).await?;
            if !answer.success() && !answer.has_code(NO_RECORD) && answer.status != 404 {
                return Err(Self::refused(format!("DELETE {path} ({owner})"), &answer));
            }
            debug!(owner, id, "Cloudflare TXT record deleted");
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Dns01Solver for CloudflareSolver {
    fn present<'a>(&'a self, record: &'a TxtRecord) -> SolverFuture<'a> {
        Box::pin(async move { self.create(record).await.map_err(Into::into) })
    }

    fn cleanup<'a>(&'a self, record: &'a TxtRecord) -> SolverFuture<'a> {
        Box::pin(async move { self.delete(record).await.map_err(Into::into) })
    }

    /// One `GET /zones`: a wrong or expired token fails here, before an order is placed. A token without
    /// Zone:Read (with `zone_id` set) sees an empty list, which is fine.
    fn preflight<'a>(&'a self, _owners: &'a [String]) -> SolverFuture<'a> {
        Box::pin(async move {
            let answer = self
                .call(Method::GET, "/zones", &[("per_page", "5")], None)
                .await?;
            if answer.success() {
                Ok(())
            } else {
                Err(Self::refused("GET /zones (the token check)".to_owned(), &answer).into())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_codes_and_the_error_chain() {
        let answer = Answer {
            status: 400,
            body: json!({"success": false, "errors": [{"code": 6003, "message": "Invalid request headers",
                "error_chain": [{"code": 6111, "message": "Invalid format for Authorization header"}]}]}),
        };
        assert_eq!(
            answer.message(),
            "6003: Invalid request headers; 6111: Invalid format for Authorization header"
        );
        let err = CloudflareSolver::refused("GET /zones".into(), &answer).to_string();
        assert!(err.contains("not the Global API Key"), "{err}");
    }
}
