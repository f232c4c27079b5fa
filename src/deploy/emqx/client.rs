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
use time::OffsetDateTime;

use super::pace::Pace;
use super::wire::vendor_message;
pub use super::wire::{EXPIRE_YEARS, Status, TlsState, Upload, parse_expire, parse_state};
use crate::budget::{Budget, ChargeError, Kind, Limits};
use crate::config::EmqxConfig;

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
/// Largest response body read; the documented bodies are a few dozen bytes.
const MAX_BODY: usize = 64 * 1024;

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
    /// How the deployments of this key waiting for `running` share its GETs.
    pace: Pace,
    /// One request of this key at a time, in the order they were asked for (the lock is fair): the vendor
    /// sees them in the order they were charged, so scarce GETs and writes reach it most urgent first. The
    /// budget allows 60 an hour, so nothing is lost by not sending two at once.
    one_at_a_time: tokio::sync::Mutex<()>,
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
            pace: Pace::default(),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// Starts a pass: a 429 without a usable `Retry-After` may be waited out once more.
    pub fn begin_pass(&self) {
        self.waited_unannounced.store(false, Ordering::Relaxed);
    }

    /// The vendor's limits as certkeeper counts them: the window a little longer than the vendor's. A request
    /// is charged just before it is sent and the vendor counts it when it arrives, so by our clock it leaves
    /// the vendor's window a moment after it left ours; without the slack, a request sent exactly when ours
    /// frees would be the vendor's one too many (a 429). The slack is 2 % of the window, at most 2 s.
    fn limits(&self) -> Limits {
        let window = self.config.rate_window;
        Limits {
            reads: self.config.get_limit,
            writes: self.config.write_limit,
            window: window + (window / 50).min(Duration::from_secs(2)),
        }
    }

    /// The pacing of this key's waits for `running`.
    pub fn pace(&self) -> &Pace {
        &self.pace
    }

    /// The pause before the next poll of a wait with `left` until its deadline: `poll_interval`, or longer
    /// when the key's GETs must be shared (see [`Pace`]).
    fn poll_pause(&self, polls: u32, left: Duration) -> Duration {
        let now = OffsetDateTime::now_utc();
        let affordable =
            self.budget
                .affordable_by(&self.config.key, self.limits(), Kind::Read, now, now + left);
        let refill = self.config.rate_window / self.config.get_limit.max(1);
        self.pace
            .interval(affordable, polls, left, self.config.poll_interval, refill)
            .min(left)
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

    /// When the next write is affordable once `claimed` writes were made.
    pub fn next_write_at(&self, claimed: u32) -> OffsetDateTime {
        self.budget.available_after(
            &self.config.key,
            self.limits(),
            Kind::Write,
            OffsetDateTime::now_utc(),
            claimed,
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

    /// Polls `GET` every `poll_interval` (or less often, when the deployments of this key waiting at the same
    /// time must share its GETs: see [`Pace`]) until `status` is `running`, for at most `wait_timeout`.
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
        let _waiting = self.pace.waiting();
        let mut polls = 0;
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
            tokio::time::sleep(self.poll_pause(polls, deadline - now)).await;
            polls += 1;
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
        let _turn = self.one_at_a_time.lock().await;
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
mod tests;
