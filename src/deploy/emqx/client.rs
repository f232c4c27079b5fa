//! The EMQX Cloud / EMQX Platform TLS API: `GET|POST|PUT {url}/deployments/{id}/tls`.
//!
//! Everything the seed docs leave loose is tolerated and reported rather than guessed at: both `tlsType`
//! and the older `tls_type`, `status` with stray whitespace (`' pending'`), `expire` as a zone-less
//! `YYYY-MM-DD HH:MM:SS` (in the configured offset) or RFC 3339, and unknown fields. A 200 without an
//! `expire` means the deployment has no certificate yet.
//!
//! Every request is charged to the key's [`Budget`] before it is sent. Transient failures (connection
//! errors, timeouts, 5xx, 429 with a short `Retry-After`) are retried a bounded number of times; 401, 403,
//! 404 and 422 never are, because they cannot heal and each write costs one of six an hour. DELETE is not
//! implemented at all: it disconnects every TLS client of the deployment.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use secrecy::ExposeSecret as _;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::budget::{Budget, ChargeError, Kind, Limits};
use crate::config::{EmqxConfig, TlsType};

/// How many times one logical request is tried when failures are transient.
pub const MAX_ATTEMPTS: u32 = 3;
/// First pause between attempts; doubled each time (plus jitter).
pub const RETRY_BASE: Duration = Duration::from_millis(500);
/// A `Retry-After` longer than this is not waited out inside a pass: the request is deferred instead.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// The longest `Retry-After` taken at its word.
pub const MAX_BLOCK: Duration = crate::budget::MAX_BLOCK;
/// How long a 429 without a usable `Retry-After` blocks the key. It is waited out at most once per pass
/// and client: the vendor did not say when it will accept requests again, so asking again and again would
/// only spend the hourly budget.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The earliest and latest year an `expire` may name. Beyond these the date arithmetic of the planner and the
/// state files cannot represent it, and no real certificate lives there.
pub const EXPIRE_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Largest response body read; the documented bodies are a few dozen bytes.
const MAX_BODY: usize = 64 * 1024;

/// The deployment's certificate state as `GET` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsState {
    /// `tlsType` as reported (`None` when absent).
    pub tls_type: Option<String>,
    /// Expiry of the certificate in use; `None` when there is none.
    pub expire: Option<OffsetDateTime>,
    /// `status`, trimmed.
    pub status: Status,
}

/// `status` of the deployment's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Serving the certificate.
    Running,
    /// Being applied.
    Pending,
    /// No status field (no certificate).
    Absent,
    /// A value the docs do not list, kept verbatim.
    Other(String),
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Running => f.write_str("running"),
            Status::Pending => f.write_str("pending"),
            Status::Absent => f.write_str("(none)"),
            Status::Other(s) => write!(f, "{s:?}"),
        }
    }
}

/// What failed talking to the EMQX API. Messages say what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmqxError {
    /// 401.
    #[error("EMQX API rejected the credentials (401) — check [emqx.{account}] key/secret")]
    Unauthorized {
        /// Config section name.
        account: String,
    },
    /// 403.
    #[error(
        "EMQX API key of [emqx.{account}] has no access to this deployment (403) — give the key access to its project"
    )]
    Forbidden {
        /// Config section name.
        account: String,
    },
    /// 404.
    #[error(
        "EMQX API does not know this deployment (404) — check the deployment id (the ID, not the name) and [emqx.{account}] url"
    )]
    NotFound {
        /// Config section name.
        account: String,
    },
    /// 422.
    #[error(
        "EMQX API refused the certificate (422: {message}) — not retried; fix the cause and run again"
    )]
    Rejected {
        /// The vendor's message.
        message: String,
    },
    /// Out of budget, or 429 with a long `Retry-After`.
    #[error("{0}; deferred to a later pass")]
    Budget(#[from] crate::budget::Exhausted),
    /// The budget file could not be written.
    #[error("cannot record the request in the state directory: {0}")]
    Store(#[from] crate::state::StoreError),
    /// 5xx or a transport failure that outlived the retries.
    #[error("EMQX API unavailable after {attempts} attempts: {detail}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// Last failure.
        detail: String,
    },
    /// A 3xx. Redirects are never followed: the request carries the API secret, and a write the new private
    /// key; a redirect to another host would hand them over, and a 303 would turn a PUT into a GET.
    #[error(
        "EMQX API answered {method} with a redirect (HTTP {status} to {location}) — certkeeper never follows redirects; set [emqx.{account}] url to the final address"
    )]
    Redirected {
        /// Config section name.
        account: String,
        /// The request's method.
        method: &'static str,
        /// The 3xx status.
        status: u16,
        /// Scheme, host and port of the `Location` (no path or query: they may carry tokens).
        location: String,
    },
    /// An answer that does not follow the docs.
    #[error("EMQX API sent an unexpected answer ({detail}) — report it if it persists")]
    BadResponse {
        /// What was wrong.
        detail: String,
    },
    /// The vendor reports a status other than running/pending after a push.
    #[error(
        "EMQX reports status {status:?} for the pushed certificate (not running) — it was not applied; the next pass pushes it again; check the deployment in the console"
    )]
    NotApplied {
        /// The status verbatim.
        status: String,
    },
    /// `running` did not come in time.
    #[error(
        "certificate still {status} at the vendor after {waited:?} — check the deployment in the console; the next pass resumes waiting"
    )]
    WaitTimeout {
        /// Last status seen.
        status: Status,
        /// How long we waited.
        waited: Duration,
    },
}

impl EmqxError {
    /// Returns true if and only if the failure may heal on a later pass without operator action.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            EmqxError::Budget(_) | EmqxError::Unavailable { .. } | EmqxError::WaitTimeout { .. }
        )
    }
}

/// Body of `POST`/`PUT`.
#[derive(Serialize)]
pub struct Upload<'a> {
    /// `one-way` or `two-way`.
    #[serde(rename = "tlsType")]
    pub tls_type: TlsType,
    /// Leaf then chain, PEM.
    pub cert: &'a str,
    /// Private key PEM.
    pub key: &'a str,
    /// Client CA PEM, two-way only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cacert: Option<&'a str>,
}

impl fmt::Debug for Upload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload")
            .field("tls_type", &self.tls_type)
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The HTTP client for vendor APIs: it never follows redirects (see [`EmqxError::Redirected`]).
///
/// # Errors
/// When the TLS backend cannot be set up.
pub fn vendor_http() -> Result<reqwest::Client, reqwest::Error> {
    // reqwest panics without a process-wide rustls provider; the CLI installs one, a library user may not.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("certkeeper/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A client of one `[emqx.*]` account.
pub struct EmqxClient {
    http: reqwest::Client,
    config: EmqxConfig,
    budget: Arc<Budget>,
    /// A 429 without a usable `Retry-After` was already waited out in this pass.
    waited_unannounced: AtomicBool,
    /// [`DEFAULT_RETRY_AFTER`]; shorter in unit tests.
    default_retry_after: Duration,
}

impl fmt::Debug for EmqxClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmqxClient")
            .field("url", &self.config.url)
            .field("key", &self.config.key)
            .finish_non_exhaustive()
    }
}

enum Method {
    Get,
    Post,
    Put,
}

impl EmqxClient {
    /// A client for `config`, charging `budget`.
    pub fn new(http: reqwest::Client, config: EmqxConfig, budget: Arc<Budget>) -> Self {
        EmqxClient {
            http,
            config,
            budget,
            waited_unannounced: AtomicBool::new(false),
            default_retry_after: DEFAULT_RETRY_AFTER,
        }
    }

    /// Starts a pass: a 429 without a usable `Retry-After` may be waited out once more.
    pub fn begin_pass(&self) {
        self.waited_unannounced.store(false, Ordering::Relaxed);
    }

    fn limits(&self) -> Limits {
        Limits {
            reads: self.config.get_limit,
            writes: self.config.write_limit,
            window: self.config.rate_window,
        }
    }

    /// Writes still affordable in the current window.
    pub fn writes_left(&self) -> u32 {
        self.budget.remaining(
            &self.config.key,
            self.limits(),
            Kind::Write,
            OffsetDateTime::now_utc(),
        )
    }

    /// When the next write is affordable.
    pub fn next_write_at(&self) -> OffsetDateTime {
        self.budget.available_at(
            &self.config.key,
            self.limits(),
            Kind::Write,
            OffsetDateTime::now_utc(),
        )
    }

    /// Reads still affordable in the current window.
    pub fn reads_left(&self) -> u32 {
        self.budget.remaining(
            &self.config.key,
            self.limits(),
            Kind::Read,
            OffsetDateTime::now_utc(),
        )
    }

    /// `GET` the deployment's certificate state.
    ///
    /// # Errors
    /// See [`EmqxError`].
    pub async fn inspect(&self, id: &str) -> Result<TlsState, EmqxError> {
        let body = self.call(Method::Get, id, None).await?;
        self.parse_state(&body)
    }

    /// Pushes a certificate: `POST` when `create` (no certificate yet), else `PUT`.
    ///
    /// # Errors
    /// See [`EmqxError`].
    pub async fn deploy(
        &self,
        id: &str,
        create: bool,
        upload: &Upload<'_>,
    ) -> Result<TlsState, EmqxError> {
        // Serializing a struct of strings cannot fail.
        let json = serde_json::to_vec(upload).expect("upload serializes");
        let method = if create { Method::Post } else { Method::Put };
        let body = self.call(method, id, Some(json)).await?;
        self.parse_state(&body)
    }

    /// Polls `GET` every `poll_interval` until `status` is `running`, for at most `wait_timeout`.
    ///
    /// # Errors
    /// [`EmqxError::WaitTimeout`] with the last status, or any error of [`EmqxClient::inspect`].
    ///
    /// With `expect` (the pushed certificate's notAfter), `running` counts only once `expire` shows that
    /// certificate: a GET answered before the vendor switched to `pending` still shows the previous one.
    pub async fn wait_active(
        &self,
        id: &str,
        expect: Option<OffsetDateTime>,
    ) -> Result<TlsState, EmqxError> {
        let start = tokio::time::Instant::now();
        let deadline = start + self.config.wait_timeout;
        loop {
            let state = match self.inspect(id).await {
                // Out of GETs: sleep until the window has room again if that is before the deadline.
                Err(EmqxError::Budget(e)) => {
                    let wait = (e.until - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
                    let wait = Duration::try_from(wait).unwrap_or_default();
                    if tokio::time::Instant::now() + wait > deadline {
                        return Err(EmqxError::Budget(e));
                    }
                    tokio::time::sleep(wait).await;
                    continue;
                }
                other => other?,
            };
            let shows_previous = match (expect, state.expire) {
                (Some(want), Some(got)) => (got - want).abs() > crate::plan::SAME_CERT_TOLERANCE,
                _ => false,
            };
            match &state.status {
                Status::Running if shows_previous => {
                    tracing::debug!(
                        deployment = id,
                        "running, but still the previous certificate; waiting"
                    );
                }
                Status::Running => return Ok(state),
                // The docs know only running and pending: anything else (e.g. "failed") is not going to become
                // running by waiting, and says the vendor did not apply the certificate.
                Status::Other(s) => return Err(EmqxError::NotApplied { status: s.clone() }),
                _ => {
                    tracing::debug!(deployment = id, status = %state.status, "waiting for running")
                }
            }
            let now = tokio::time::Instant::now();
            if now + self.config.poll_interval > deadline {
                return Err(EmqxError::WaitTimeout {
                    status: state.status,
                    waited: now - start,
                });
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    /// One logical request with bounded retries of transient failures; returns the 2xx body.
    async fn call(
        &self,
        method: Method,
        id: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, EmqxError> {
        let url = format!("{}/deployments/{id}/tls", self.config.url);
        let (kind, name) = match method {
            Method::Get => (Kind::Read, "GET"),
            Method::Post => (Kind::Write, "POST"),
            Method::Put => (Kind::Write, "PUT"),
        };
        let mut last = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            self.budget
                .charge(
                    &self.config.key,
                    self.limits(),
                    kind,
                    OffsetDateTime::now_utc(),
                )
                .map_err(|e| match e {
                    ChargeError::Exhausted(x) => EmqxError::Budget(x),
                    ChargeError::Store(s) => EmqxError::Store(s),
                })?;
            let mut req = match method {
                Method::Get => self.http.get(&url),
                Method::Post => self.http.post(&url),
                Method::Put => self.http.put(&url),
            }
            .basic_auth(&self.config.key, Some(self.config.secret.expose_secret()))
            .timeout(self.config.request_timeout)
            .header(reqwest::header::ACCEPT, "application/json");
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            tracing::debug!(method = name, %url, attempt, "EMQX API request");
            let retry_in = match req.send().await {
                Err(e) => {
                    // reqwest errors carry the URL but never the auth header.
                    last = format!("{name} {url}: {}", error_chain(&e));
                    // A write that may have reached the vendor is not sent again blindly: the next pass asks the
                    // vendor first (see pipeline/steps.rs). Only a connection that never opened is safe to retry.
                    if kind == Kind::Write && !e.is_connect() {
                        return Err(EmqxError::Unavailable {
                            attempts: attempt,
                            detail: format!(
                                "{last}; it may have been applied, the next pass checks before pushing again"
                            ),
                        });
                    }
                    None
                }
                Ok(resp) => match self.answer(name, &url, attempt, resp).await? {
                    Answer::Body(body) => return Ok(body),
                    Answer::Retry { wait, why } => {
                        last = why;
                        wait
                    }
                },
            };
            if attempt < MAX_ATTEMPTS {
                let backoff =
                    retry_in.unwrap_or_else(|| jittered(RETRY_BASE * 2u32.pow(attempt - 1)));
                tracing::warn!(method = name, %url, attempt, "EMQX API request failed ({last}); retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
            }
        }
        Err(EmqxError::Unavailable {
            attempts: MAX_ATTEMPTS,
            detail: last,
        })
    }

    /// What one HTTP answer means: the body, a reason to try again (and when), or the error it is.
    async fn answer(
        &self,
        name: &'static str,
        url: &str,
        attempt: u32,
        resp: reqwest::Response,
    ) -> Result<Answer, EmqxError> {
        let status = resp.status();
        let retry_after = retry_after(&resp);
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = read_limited(resp).await;
        tracing::debug!(method = name, %url, status = status.as_u16(), "EMQX API answer");
        match status.as_u16() {
            200..=299 => text
                .map(Answer::Body)
                .map_err(|detail| EmqxError::BadResponse { detail }),
            401 => Err(EmqxError::Unauthorized {
                account: self.config.name.clone(),
            }),
            403 => Err(EmqxError::Forbidden {
                account: self.config.name.clone(),
            }),
            404 => Err(EmqxError::NotFound {
                account: self.config.name.clone(),
            }),
            422 => Err(EmqxError::Rejected {
                message: vendor_message(&text.unwrap_or_default()),
            }),
            429 => self.throttled(name, url, attempt, retry_after),
            300..=399 => Err(EmqxError::Redirected {
                account: self.config.name.clone(),
                method: name,
                status: status.as_u16(),
                location: location_origin(url, location.as_deref()),
            }),
            s if s >= 500 => Ok(Answer::Retry {
                wait: None,
                why: format!(
                    "{name} {url}: HTTP {s} ({})",
                    vendor_message(&text.unwrap_or_default())
                ),
            }),
            s => Err(EmqxError::BadResponse {
                detail: format!(
                    "{name} answered HTTP {s}: {}",
                    vendor_message(&text.unwrap_or_default())
                ),
            }),
        }
    }

    /// A 429: the key's budget is blocked until the vendor's `Retry-After`; a short announced wait (or the
    /// pass's one unannounced one) is waited out, anything else defers.
    fn throttled(
        &self,
        name: &'static str,
        url: &str,
        attempt: u32,
        retry_after: Option<Duration>,
    ) -> Result<Answer, EmqxError> {
        let announced = retry_after.is_some();
        // Whatever the vendor says, a block longer than a day is read as a day: the date
        // arithmetic must not overflow, and a pass a day later simply asks again.
        let wait = retry_after
            .unwrap_or(self.default_retry_after)
            .min(MAX_BLOCK);
        let until = OffsetDateTime::now_utc() + wait;
        self.budget.block(&self.config.key, until)?;
        let why = format!(
            "{name} {url}: 429 Too Many Requests (Retry-After {})",
            if announced {
                format!("{}s", wait.as_secs())
            } else {
                "absent or unreadable".into()
            }
        );
        let may_wait = wait <= MAX_RETRY_AFTER
            && attempt < MAX_ATTEMPTS
            && (announced || !self.waited_unannounced.swap(true, Ordering::Relaxed));
        // A long wait, none left to try, or a second unannounced one: defer rather than fail;
        // the budget is blocked.
        if !may_wait {
            return Err(EmqxError::Budget(crate::budget::Exhausted {
                key: self.config.key.clone(),
                until,
                why: if announced {
                    "the vendor answered 429"
                } else {
                    "the vendor answered 429 without a usable Retry-After"
                },
            }));
        }
        Ok(Answer::Retry {
            wait: Some(wait),
            why,
        })
    }

    fn parse_state(&self, body: &[u8]) -> Result<TlsState, EmqxError> {
        parse_state(body, self.config.expire_offset)
            .map_err(|detail| EmqxError::BadResponse { detail })
    }
}

/// What [`EmqxClient::answer`] made of one HTTP answer.
enum Answer {
    /// Success: the body.
    Body(Vec<u8>),
    /// Worth another attempt: after `wait` (the vendor's), else the backoff; `why` for the log and the error.
    Retry { wait: Option<Duration>, why: String },
}

/// Parses a `GET`/write answer. Public for the fuzz and unit tests.
///
/// # Errors
/// A description of what does not follow the docs.
pub fn parse_state(body: &[u8], offset: time::UtcOffset) -> Result<TlsState, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let obj = value.as_object().ok_or("body is not a JSON object")?;
    let field = |name: &str| -> Result<Option<&str>, String> {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.trim())),
            Some(other) => Err(format!("`{name}` is not a string: {other}")),
        }
    };
    let undocumented: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !matches!(*k, "tlsType" | "tls_type" | "expire" | "status"))
        .take(10)
        .collect();
    if !undocumented.is_empty() {
        tracing::info!(fields = ?undocumented, "EMQX API answered undocumented fields; ignored");
    }
    let tls_type = field("tlsType")?
        .or(field("tls_type")?)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let expire = match field("expire")?.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(parse_expire(s, offset).ok_or_else(|| {
            format!(
                "`expire` {s:?} is not a date between the years {} and {}",
                EXPIRE_YEARS.start(),
                EXPIRE_YEARS.end()
            )
        })?),
    };
    let status = match field("status")?.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => Status::Absent,
        Some("running") => Status::Running,
        Some("pending") => Status::Pending,
        Some(other) => Status::Other(other.to_owned()),
    };
    Ok(TlsState {
        tls_type,
        expire,
        status,
    })
}

/// `YYYY-MM-DD HH:MM:SS` in `offset`, or RFC 3339; in UTC, and only within [`EXPIRE_YEARS`].
pub fn parse_expire(text: &str, offset: time::UtcOffset) -> Option<OffsetDateTime> {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let parsed = OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        time::PrimitiveDateTime::parse(text, &fmt)
            .ok()
            .map(|t| t.assume_offset(offset))
    })?;
    parsed
        .checked_to_offset(time::UtcOffset::UTC)
        .filter(|t| EXPIRE_YEARS.contains(&t.year()))
}

/// `scheme://host:port` of a `Location`, resolved against the request URL; never its path or query.
fn location_origin(request: &str, location: Option<&str>) -> String {
    let Some(location) = location else {
        return "no Location".to_owned();
    };
    reqwest::Url::parse(request)
        .and_then(|base| base.join(location))
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "an unreadable Location".to_owned())
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let value = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate_parse(value)?;
    Some(Duration::try_from(at - OffsetDateTime::now_utc()).unwrap_or_default())
}

/// RFC 9110 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate_parse(value: &str) -> Option<OffsetDateTime> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(value.trim(), &fmt)
        .ok()
        .map(|t| t.assume_utc())
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > MAX_BODY {
                    return Err(format!("response body larger than {MAX_BODY} bytes"));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(format!("reading the body failed: {}", error_chain(&e))),
        }
    }
}

/// The vendor's error message from a body, cut to one short line.
fn vendor_message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        "no message".into()
    } else if line.chars().count() > 200 {
        format!("{}…", line.chars().take(200).collect::<String>())
    } else {
        line
    }
}

/// `err: cause: cause` on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.75..1.25))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, offset};

    #[test]
    fn documented_answer_parses() {
        let s = parse_state(
            br#"{"expire":"2034-05-22 02:43:21","status":"running","tlsType":"one-way"}"#,
            offset!(UTC),
        )
        .unwrap();
        assert_eq!(s.expire, Some(datetime!(2034-05-22 02:43:21 UTC)));
        assert_eq!(s.status, Status::Running);
        assert_eq!(s.tls_type.as_deref(), Some("one-way"));
    }

    #[test]
    fn old_dialect_and_zone_offset() {
        let s = parse_state(
            br#"{"expire":"2034-05-22 10:43:21","status":" pending","tls_type":"two-way","extra":1}"#,
            offset!(+8),
        )
        .unwrap();
        assert_eq!(s.expire, Some(datetime!(2034-05-22 02:43:21 UTC)));
        assert_eq!(s.status, Status::Pending);
        assert_eq!(s.tls_type.as_deref(), Some("two-way"));
    }

    #[test]
    fn no_certificate_and_rfc3339_and_unknown_status() {
        assert_eq!(parse_state(b"{}", offset!(UTC)).unwrap().expire, None);
        let s = parse_state(
            br#"{"expire":"2034-05-22T02:43:21Z","status":"failed"}"#,
            offset!(UTC),
        )
        .unwrap();
        assert_eq!(s.expire, Some(datetime!(2034-05-22 02:43:21 UTC)));
        assert_eq!(s.status, Status::Other("failed".into()));
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        for body in [
            &b"not json"[..],
            b"[]",
            br#"{"expire": 5}"#,
            br#"{"expire":"tomorrow"}"#,
            b"\xff\xfe",
        ] {
            assert!(parse_state(body, offset!(UTC)).is_err(), "{body:?}");
        }
    }

    #[test]
    fn upload_debug_hides_the_key() {
        let u = Upload {
            tls_type: TlsType::OneWay,
            cert: "C",
            key: "-----BEGIN EC PRIVATE KEY-----secret",
            cacert: None,
        };
        assert!(!format!("{u:?}").contains("secret"));
        let json = serde_json::to_string(&u).unwrap();
        assert!(
            json.contains(r#""tlsType":"one-way""#) && !json.contains("cacert"),
            "{json}"
        );
    }

    #[test]
    fn http_dates_parse() {
        assert_eq!(
            httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(datetime!(1994-11-06 08:49:37 UTC))
        );
    }

    #[test]
    fn expiries_outside_years_1_to_9999_are_refused() {
        for text in [
            "0000-01-01 00:00:00",
            "0000-12-31T23:59:59Z",
            "0001-01-01T00:30:00+01:00",
            "9999-12-31T23:30:00-01:00",
            "-0001-05-01 00:00:00",
        ] {
            assert_eq!(parse_expire(text, offset!(UTC)), None, "{text}");
        }
        assert_eq!(
            parse_expire("0001-01-01 00:00:00", offset!(UTC)),
            Some(datetime!(0001-01-01 00:00:00 UTC))
        );
        let err = parse_state(br#"{"expire":"0000-01-02 00:00:00"}"#, offset!(UTC)).unwrap_err();
        assert!(err.contains("between the years 1 and 9999"), "{err}");
        // A zone-less expiry read in a large offset lands in UTC, still representable.
        assert_eq!(
            parse_expire("0001-01-02 23:00:00", offset!(+23:59)),
            Some(datetime!(0001-01-01 23:01:00 UTC))
        );
    }

    #[test]
    fn a_redirect_names_only_the_origin_of_its_location() {
        let base = "https://api.example.test/api/v1/deployments/d/tls";
        assert_eq!(
            location_origin(base, Some("https://evil.example:8443/x?token=abc")),
            "https://evil.example:8443"
        );
        assert_eq!(
            location_origin(base, Some("/elsewhere")),
            "https://api.example.test"
        );
        assert_eq!(location_origin(base, None), "no Location");
    }

    /// A one-thread HTTP server answering every request with `answer`; returns its URL and a request counter.
    fn canned_server(answer: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead as _, BufReader, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/api/v1", listener.local_addr().unwrap());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = (&stream).write_all(answer.as_bytes());
            }
        });
        (url, count)
    }

    fn client_for(url: String, store: &crate::state::Store) -> EmqxClient {
        let config = EmqxConfig {
            name: "main".into(),
            url,
            key: "k".into(),
            secret: "s".to_owned().into(),
            expire_offset: time::UtcOffset::UTC,
            poll_interval: Duration::from_millis(10),
            request_timeout: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(1),
            get_limit: 60,
            write_limit: 6,
            inspect_interval: Duration::from_secs(3600),
            import_minimum: Duration::ZERO,
            issuer_key_match: crate::config::IssuerKeyMatch::Warn,
            rate_window: Duration::from_secs(3600),
        };
        let budget = Arc::new(Budget::load(store).unwrap());
        let mut client = EmqxClient::new(vendor_http().unwrap(), config, budget);
        client.default_retry_after = Duration::from_millis(20);
        client
    }

    #[tokio::test]
    async fn a_429_without_retry_after_is_waited_out_once_per_pass() {
        let (url, count) = canned_server(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::state::Store::open(tmp.path()).unwrap();
        let client = client_for(url, &store);
        let sent = || count.load(Ordering::SeqCst);

        let err = client.inspect("d").await.unwrap_err();
        assert!(matches!(err, EmqxError::Budget(_)), "{err}");
        assert!(
            err.to_string().contains("without a usable Retry-After"),
            "{err}"
        );
        assert_eq!(sent(), 2, "one wait, then deferred");
        tokio::time::sleep(Duration::from_millis(30)).await;
        client.inspect("d").await.unwrap_err();
        assert_eq!(sent(), 3, "the pass already waited once: no second wait");
        tokio::time::sleep(Duration::from_millis(30)).await;
        client.begin_pass();
        client.inspect("d").await.unwrap_err();
        assert_eq!(sent(), 5, "a new pass may wait once again");
    }

    #[tokio::test]
    async fn a_redirect_is_an_error_and_is_not_followed() {
        let (url, count) = canned_server(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:9/x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::state::Store::open(tmp.path()).unwrap();
        let client = client_for(url, &store);
        let err = client.inspect("d").await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("HTTP 307 to http://127.0.0.1:9")
                && text.contains("never follows redirects")
                && text.contains("[emqx.main] url"),
            "{text}"
        );
        assert!(!err.is_transient());
        assert_eq!(count.load(Ordering::SeqCst), 1, "not retried");
    }
}
