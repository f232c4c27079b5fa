//! The DCS API calls certkeeper makes (status and download, both signed) and the object-storage fetch (never
//! signed by us: the link carries its own signature), with bounded retries of 5xx answers and timeouts.
//!
//! certkeeper never calls `PUT …/ssl`: switching SSL restarts the instance and can lose data.

use std::time::Duration;

use serde::Deserialize;

use super::DcsError;
use super::config::DcsAccount;

/// Attempts of one call when the answer is 5xx, a timeout or a broken connection.
const ATTEMPTS: u32 = 3;
/// Pause before the second attempt; doubled before each further one.
const BACKOFF: Duration = Duration::from_millis(500);
/// The largest API answer read (they are a few hundred bytes).
const MAX_BODY: u64 = 64 * 1024;

/// `GET /v2/{project_id}/instances/{instance_id}/ssl`.
#[derive(Debug, Clone, Deserialize)]
pub struct SslStatus {
    /// Whether SSL is enabled.
    pub enabled: bool,
    /// When the instance's server certificate expires (RFC 3339).
    #[serde(default)]
    pub ssl_expired_at: Option<String>,
    /// Whether the certificate is valid.
    #[serde(default)]
    pub ssl_validated: Option<bool>,
}

/// The answer of `POST …/ssl-certs/download`.
#[derive(Clone, Deserialize)]
pub struct DownloadLink {
    /// The OBS bucket.
    #[serde(default)]
    pub bucket_name: String,
    /// The archive's name.
    #[serde(default)]
    pub file_name: String,
    /// The pre-signed URL (its query is a credential: never logged).
    pub link: String,
}

impl std::fmt::Debug for DownloadLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadLink")
            .field("bucket_name", &self.bucket_name)
            .field("file_name", &self.file_name)
            .field("link", &"[pre-signed]")
            .finish()
    }
}

/// The error body of DCS and IAM: `{error_code, error_msg}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error_code: String,
    #[serde(default)]
    error_msg: String,
}

/// A client of one `[dcs.*]` account.
pub struct DcsClient {
    http: reqwest::Client,
    account: DcsAccount,
}

impl DcsClient {
    /// A client for `account` on `http` (which must not follow redirects).
    pub fn new(http: reqwest::Client, account: DcsAccount) -> DcsClient {
        DcsClient { http, account }
    }

    fn url(&self, instance: &str, tail: &str) -> Result<reqwest::Url, DcsError> {
        let text = format!(
            "{}/v2/{}/instances/{instance}/{tail}",
            self.account.endpoint, self.account.project_id
        );
        reqwest::Url::parse(&text).map_err(|e| DcsError::Transport {
            what: "build the request URL".into(),
            detail: e.to_string(),
        })
    }

    /// The instance's SSL status; `None` when DCS answers 204 (no SSL information).
    ///
    /// # Errors
    /// A [`DcsError`] for a refused or failed call.
    pub async fn status(&self, instance: &str) -> Result<Option<SslStatus>, DcsError> {
        let url = self.url(instance, "ssl")?;
        let (status, body) = self.signed("GET", &url, instance).await?;
        if status == 204 || body.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| DcsError::BadAnswer {
                instance: instance.to_owned(),
                detail: e.to_string(),
            })
    }

    /// Asks for a download link of the instance's certificate archive.
    ///
    /// # Errors
    /// A [`DcsError`] for a refused or failed call.
    pub async fn download(&self, instance: &str) -> Result<DownloadLink, DcsError> {
        let url = self.url(instance, "ssl-certs/download")?;
        let (_, body) = self.signed("POST", &url, instance).await?;
        serde_json::from_slice(&body).map_err(|e| DcsError::BadAnswer {
            instance: instance.to_owned(),
            detail: e.to_string(),
        })
    }

    /// Fetches the archive from the pre-signed `link`, without any credential of ours.
    ///
    /// # Errors
    /// A [`DcsError::Fetch`] naming the bucket and file, never the link's query.
    pub async fn fetch(&self, link: &DownloadLink) -> Result<Vec<u8>, DcsError> {
        let fail = |detail: String| DcsError::Fetch {
            object: format!("{}/{}", link.bucket_name, link.file_name),
            detail,
        };
        let url =
            reqwest::Url::parse(&link.link).map_err(|_| fail("the link is not a URL".into()))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(fail(format!("the link has scheme {}", url.scheme())));
        }
        let mut delay = BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .http
                .get(url.clone())
                .timeout(self.account.request_timeout)
                .send()
                .await;
            let retry = match sent {
                Ok(response) if response.status().is_success() => {
                    return read_bounded(response, super::archive::MAX_ARCHIVE)
                        .await
                        .map_err(fail);
                }
                Ok(response) if response.status().is_server_error() => {
                    format!("object storage answered {}", response.status())
                }
                Ok(response) => {
                    return Err(fail(format!(
                        "object storage answered {}",
                        response.status()
                    )));
                }
                Err(e) => format!("{}", e.without_url()),
            };
            if attempt == ATTEMPTS {
                return Err(fail(retry));
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Err(fail("no attempt was made".into()))
    }

    /// Sends a signed request, retrying 5xx and transport failures; returns a 2xx answer.
    async fn signed(
        &self,
        method: &str,
        url: &reqwest::Url,
        instance: &str,
    ) -> Result<(u16, Vec<u8>), DcsError> {
        let mut delay = BACKOFF;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            let signature = super::sign::sign(
                &self.account.access_key,
                &self.account.secret_key,
                method,
                url,
                Some("application/json"),
                b"",
                time::OffsetDateTime::now_utc(),
            );
            let request = self
                .http
                .request(method.parse().unwrap_or(reqwest::Method::GET), url.clone())
                .header("Content-Type", "application/json")
                .header("X-Sdk-Date", &signature.date)
                .header("Authorization", &signature.authorization)
                .timeout(self.account.request_timeout);
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = e.without_url().to_string();
                    continue;
                }
            };
            let status = response.status().as_u16();
            let body = match read_bounded(response, MAX_BODY).await {
                Ok(b) => b,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            if (200..300).contains(&status) {
                return Ok((status, body));
            }
            if status >= 500 {
                last = format!(
                    "DCS answered {status} {}",
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(200)
                        .collect::<String>()
                );
                continue;
            }
            return Err(self.refusal(status, &body, instance));
        }
        Err(DcsError::Transport {
            what: format!("{method} {} after {ATTEMPTS} attempts", url.path()),
            detail: last,
        })
    }

    fn refusal(&self, status: u16, body: &[u8], instance: &str) -> DcsError {
        let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let instance = instance.to_owned();
        match status {
            401 | 403 => DcsError::Credentials {
                account: self.account.name.clone(),
                code: parsed.error_code,
                message: parsed.error_msg,
            },
            400 if parsed.error_code == "DCS.4201" => DcsError::SslUnsupported { instance },
            404 => DcsError::UnknownInstance {
                instance,
                account: self.account.name.clone(),
            },
            _ => DcsError::Api {
                instance,
                status,
                code: parsed.error_code,
                message: parsed.error_msg,
            },
        }
    }
}

/// Reads at most `limit` bytes of a body; more is an error.
async fn read_bounded(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        out.extend_from_slice(&chunk);
        if out.len() as u64 > limit {
            return Err(format!("the answer is larger than {} KiB", limit / 1024));
        }
    }
    Ok(out)
}
