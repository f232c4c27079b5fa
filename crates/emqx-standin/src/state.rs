//! The stand-in's whole state and the vendor API's behaviour on it.
//!
//! [`Standin`] owns the API keys, the deployments, the settings, the rate-limit windows and the
//! request log. Its methods are synchronous and take the current time as a parameter, so the
//! HTTP layer calls them under one `std::sync::Mutex` (no lock is ever held across an
//! `.await`) and the unit tests drive them with instants of their choosing.
//!
//! Nothing runs in the background: the pending → final status change is computed when a
//! deployment is read, from the instant of its last accepted write.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::limiter::{Class, RateLimiter};
use crate::pki::Policy;
use crate::settings::Settings;
use crate::upload;

/// A vendor-style error: answered as `{"code": status, "message": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a human.
    pub message: String,
    /// The `Retry-After` header, verbatim (429 only; usually seconds).
    pub retry_after: Option<String>,
}

impl ApiError {
    /// An error without `Retry-After`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The JSON body of the answer.
    pub fn body(&self) -> Value {
        json!({ "code": self.status.as_u16(), "message": self.message })
    }
}

/// Whether a write creates or replaces the certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// `POST`: the deployment must not have a certificate yet.
    Create,
    /// `PUT`: the deployment must already have one.
    Update,
}

/// One API key. `Debug` is written by hand so that the secret never reaches a log.
pub struct ApiKey {
    secret: String,
    /// `None`: every deployment, including ones created later.
    deployments: Option<HashSet<String>>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("deployments", &self.deployments)
            .finish_non_exhaustive()
    }
}

/// Body of `PUT /_admin/keys/{key}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminKey {
    secret: String,
    #[serde(default)]
    deployments: Option<Vec<String>>,
}

/// Body of `PUT /_admin/deployments/{id}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminDeployment {
    #[serde(rename = "tlsType", default)]
    tls_type: Option<String>,
    #[serde(default)]
    expire: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// One deployment. `Debug` is written by hand so that the key never reaches a log.
pub struct Deployment {
    tls_type: String,
    /// `None`: no certificate (GET answers `{}`).
    expire: Option<OffsetDateTime>,
    /// The status set through the admin API, shown until the first accepted write.
    status: String,
    cert: Option<String>,
    key: Option<String>,
    cacert: Option<String>,
    writes: u64,
    last_write: Option<Instant>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("tls_type", &self.tls_type)
            .field("expire", &self.expire)
            .field("status", &self.status)
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

/// The state of the status machine, before the dialect is applied.
#[derive(Debug, PartialEq, Eq)]
enum Status<'a> {
    Pending,
    Other(&'a str),
}

/// One vendor API request, as `GET /_admin/log` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct LogEntry {
    /// The HTTP method.
    pub method: String,
    /// The request path, as sent.
    pub path: String,
    /// The authenticated key, `None` when authentication failed or was not reached.
    pub key: Option<String>,
    /// The answered status.
    pub status: u16,
    /// When the request arrived (RFC 3339, UTC).
    pub at: String,
}

/// Everything the stand-in knows.
#[derive(Debug, Default)]
pub struct Standin {
    /// The current settings.
    pub settings: Settings,
    keys: HashMap<String, ApiKey>,
    deployments: HashMap<String, Deployment>,
    limiter: RateLimiter,
    log: Vec<LogEntry>,
}

impl Standin {
    /// Checks HTTP basic auth and returns the key name.
    ///
    /// # Errors
    ///
    /// 401 when the header is missing, malformed, or names an unknown key or a wrong secret.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<String, ApiError> {
        let unauthorized = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, message);
        let header = authorization.ok_or_else(|| {
            unauthorized("missing Authorization header; use HTTP basic auth with key:secret")
        })?;
        let (scheme, encoded) = header
            .trim()
            .split_once(' ')
            .ok_or_else(|| unauthorized("malformed Authorization header; expected Basic auth"))?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(unauthorized(
                "unsupported authorization scheme; use HTTP basic auth with key:secret",
            ));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| unauthorized("malformed basic auth credentials (not base64 UTF-8)"))?;
        let (name, secret) = decoded
            .split_once(':')
            .ok_or_else(|| unauthorized("malformed basic auth credentials; expected key:secret"))?;
        match self.keys.get(name) {
            Some(key) if key.secret == secret => Ok(name.to_owned()),
            _ => Err(unauthorized(
                "API key authentication failed: unknown key or wrong secret",
            )),
        }
    }

    /// Applies the checks that come after authentication: deployment exists (404), key may
    /// use it (403), rate limit (429). Every request reaching this point is counted, except
    /// those refused with 429.
    ///
    /// # Errors
    ///
    /// The answer to send instead of running the method.
    pub fn admit(
        &mut self,
        key: &str,
        class: Class,
        deployment: &str,
        now: Instant,
    ) -> Result<(), ApiError> {
        let window = Duration::from_secs(self.settings.window);
        if !self.deployments.contains_key(deployment) {
            self.limiter.record(key, class, window, now);
            return Err(not_found(deployment));
        }
        let allowed = self.keys.get(key).is_some_and(|k| {
            k.deployments
                .as_ref()
                .is_none_or(|d| d.contains(deployment))
        });
        if !allowed {
            self.limiter.record(key, class, window, now);
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("API key {key:?} has no access to deployment {deployment:?}"),
            ));
        }
        if self.settings.throttle_next > 0 {
            self.settings.throttle_next -= 1;
            return Err(ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: "too many requests (injected by the stand-in's throttle_next setting)"
                    .to_owned(),
                retry_after: self.settings.throttle_retry_after.clone(),
            });
        }
        let (limit, what) = match class {
            Class::Read => (self.settings.get_limit, "GET requests"),
            Class::Write => (self.settings.write_limit, "POST/PUT/DELETE requests"),
        };
        self.limiter
            .try_acquire(key, class, limit, window, now)
            .map_err(|retry_after| ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: format!(
                    "rate limit exceeded: {limit} {what} per {} s for API key {key:?}; retry after {retry_after} s",
                    self.settings.window
                ),
                retry_after: Some(retry_after.to_string()),
            })
    }

    /// `GET /deployments/{id}/tls`.
    ///
    /// # Errors
    ///
    /// 500 when a failure was injected with `fail_gets`; 404 if the deployment vanished.
    pub fn get_tls(&mut self, id: &str, now: Instant) -> Result<Value, ApiError> {
        if self.settings.fail_gets > 0 {
            self.settings.fail_gets -= 1;
            return Err(injected_failure("fail_gets"));
        }
        let deployment = self.deployments.get(id).ok_or_else(|| not_found(id))?;
        let Some(expire) = deployment.expire else {
            return Ok(json!({}));
        };
        let status = match status_of(deployment, &self.settings, now) {
            Status::Pending => self.settings.pending_status(),
            Status::Other(status) => status,
        };
        let mut body = serde_json::Map::new();
        let expire = match self.settings.expire_override.get(id) {
            Some(verbatim) => verbatim.clone(),
            None => format_expire(expire, &self.settings),
        };
        body.insert("expire".to_owned(), expire.into());
        body.insert("status".to_owned(), status.into());
        body.insert(
            self.settings.tls_type_key().to_owned(),
            deployment.tls_type.clone().into(),
        );
        Ok(Value::Object(body))
    }

    /// `POST` (create) or `PUT` (update) `/deployments/{id}/tls`, with the body already read.
    ///
    /// # Errors
    ///
    /// 500 when a failure was injected with `fail_writes`; 404 if the deployment vanished;
    /// 422 when the body or its certificates are refused, or the deployment already has
    /// (POST) or lacks (PUT) a certificate.
    pub fn write_tls(
        &mut self,
        op: WriteOp,
        id: &str,
        content_type: Option<&str>,
        body: &[u8],
        now: Instant,
        now_utc: OffsetDateTime,
    ) -> Result<Value, ApiError> {
        if self.settings.fail_writes > 0 {
            self.settings.fail_writes -= 1;
            return Err(injected_failure("fail_writes"));
        }
        let deployment = self.deployments.get(id).ok_or_else(|| not_found(id))?;
        let unprocessable =
            |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message);
        match (op, deployment.expire.is_some()) {
            (WriteOp::Create, true) => {
                return Err(unprocessable(format!(
                    "deployment {id:?} already has a TLS certificate; update it with PUT"
                )));
            }
            (WriteOp::Update, false) => {
                return Err(unprocessable(format!(
                    "deployment {id:?} has no TLS certificate to update; create one with POST"
                )));
            }
            _ => {}
        }
        if !upload::is_json_content_type(content_type) {
            return Err(unprocessable(
                "the body must be JSON with Content-Type: application/json".to_owned(),
            ));
        }
        if body.len() > upload::MAX_BODY_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is larger than 1 MiB",
            ));
        }
        let policy = Policy {
            now: now_utc,
            min_days_left: self.settings.min_days_left,
        };
        let upload = upload::parse_upload(body, policy).map_err(unprocessable)?;
        if self.settings.ignore_writes > 0 {
            self.settings.ignore_writes -= 1;
            return self.get_tls(id, now);
        }

        let tls_type = upload.tls_type.as_str();
        let expire = format_expire(upload.expire, &self.settings);
        let mut answer = serde_json::Map::new();
        answer.insert("expire".to_owned(), expire.into());
        answer.insert("status".to_owned(), self.settings.pending_status().into());
        answer.insert(self.settings.tls_type_key().to_owned(), tls_type.into());

        // The deployment was found above and nothing removed it since: the lock is held.
        let deployment = self.deployments.get_mut(id).ok_or_else(|| not_found(id))?;
        deployment.tls_type = tls_type.to_owned();
        deployment.expire = Some(upload.expire);
        deployment.cert = Some(upload.cert);
        deployment.key = Some(upload.key);
        deployment.cacert = upload.cacert;
        deployment.writes += 1;
        deployment.last_write = Some(now);
        Ok(Value::Object(answer))
    }

    /// `DELETE /deployments/{id}/tls`: removes the certificate, if any.
    ///
    /// # Errors
    ///
    /// 404 if the deployment vanished.
    pub fn delete_tls(&mut self, id: &str) -> Result<(), ApiError> {
        let deployment = self.deployments.get_mut(id).ok_or_else(|| not_found(id))?;
        deployment.expire = None;
        deployment.cert = None;
        deployment.key = None;
        deployment.cacert = None;
        deployment.last_write = None;
        Ok(())
    }

    /// `PUT /_admin/keys/{key}`: creates or replaces a key.
    pub fn put_key(&mut self, name: &str, key: AdminKey) {
        self.keys.insert(
            name.to_owned(),
            ApiKey {
                secret: key.secret,
                deployments: key.deployments.map(|d| d.into_iter().collect()),
            },
        );
    }

    /// `PUT /_admin/deployments/{id}`: creates or replaces a deployment.
    ///
    /// # Errors
    ///
    /// A message when `expire` is not RFC 3339.
    pub fn put_deployment(&mut self, id: &str, admin: AdminDeployment) -> Result<(), String> {
        let expire = admin
            .expire
            .map(|e| {
                OffsetDateTime::parse(&e, &Rfc3339)
                    .map_err(|err| format!("expire {e:?} is not an RFC 3339 date-time: {err}"))
            })
            .transpose()?;
        self.deployments.insert(
            id.to_owned(),
            Deployment {
                tls_type: admin.tls_type.unwrap_or_else(|| "one-way".to_owned()),
                expire,
                status: admin.status.unwrap_or_else(|| "running".to_owned()),
                cert: None,
                key: None,
                cacert: None,
                writes: 0,
                last_write: None,
            },
        );
        Ok(())
    }

    /// `GET /_admin/deployments/{id}`: everything stored, with the status as GET computes it
    /// (but always spelled `pending`, whatever the dialect).
    pub fn deployment_view(&self, id: &str, now: Instant) -> Option<Value> {
        let d = self.deployments.get(id)?;
        let status = match status_of(d, &self.settings, now) {
            Status::Pending => "pending",
            Status::Other(status) => status,
        };
        let expire = d.expire.and_then(|e| e.format(&Rfc3339).ok());
        Some(json!({
            "tlsType": d.tls_type,
            "expire": expire,
            "status": status,
            "cert": d.cert,
            "key": d.key,
            "cacert": d.cacert,
            "writes": d.writes,
        }))
    }

    /// Appends a vendor API request to the log.
    pub fn record(&mut self, entry: LogEntry) {
        self.log.push(entry);
    }

    /// Every vendor API request so far, in order.
    pub fn log(&self) -> &[LogEntry] {
        &self.log
    }
}

/// The status GET reports, before the dialect is applied.
fn status_of<'a>(d: &'a Deployment, settings: &'a Settings, now: Instant) -> Status<'a> {
    match d.last_write {
        Some(written) => {
            let pending = Duration::from_millis(settings.pending);
            if settings.stuck_pending || now.saturating_duration_since(written) < pending {
                Status::Pending
            } else {
                Status::Other(&settings.final_status)
            }
        }
        // Set through the admin API: "pending" follows the dialect like a computed one.
        None if d.status == "pending" => Status::Pending,
        None => Status::Other(&d.status),
    }
}

/// Writes `expire` as the vendor does: `YYYY-MM-DD HH:MM:SS` in the configured zone, no suffix.
pub fn format_expire(expire: OffsetDateTime, settings: &Settings) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    // A date near year 9999 may not be representable in the zone: fall back to UTC then.
    let local = expire.checked_to_offset(settings.zone).unwrap_or(expire);
    local
        .format(format)
        .unwrap_or_else(|_| "0000-00-00 00:00:00".to_owned())
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("deployment {id:?} not found; use the deployment ID, not its name"),
    )
}

fn injected_failure(setting: &str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal server error (injected by the stand-in's {setting} setting)"),
    )
}
