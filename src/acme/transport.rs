//! instant-acme's HTTP through reqwest, with certkeeper's trust roots, timeouts and bounded bodies.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};

use super::{ACME_REQUEST_TIMEOUT, MAX_ACME_BODY};
use crate::certs;

/// instant-acme's HTTP through reqwest: system roots plus extra roots, and timeouts. It keeps the
/// `Retry-After` of the last `429` (instant-acme's error drops it) so a rate-limit message can say how long.
pub(super) struct AcmeHttp(pub(super) reqwest::Client, pub(super) RetryAfter);

/// The `Retry-After` (in seconds) of the CA's last `429 Too Many Requests`, shared with the [`super::AcmeClient`].
pub(super) type RetryAfter = std::sync::Arc<std::sync::Mutex<Option<Duration>>>;

impl AcmeHttp {
    pub(super) fn new(trust_roots: Option<&std::path::Path>) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(ACME_REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("certkeeper/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = trust_roots {
            let pem = crate::config::read_bounded(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            for der in certs::parse_pem_certs(&pem).map_err(|e| e.to_string())? {
                let cert = reqwest::Certificate::from_der(&der).map_err(|e| e.to_string())?;
                builder = builder.add_root_certificate(cert);
            }
        }
        builder
            .build()
            .map(|client| AcmeHttp(client, RetryAfter::default()))
            .map_err(|e| e.to_string())
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        let retry_after = self.1.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = match http_body_util::BodyExt::collect(body).await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let req = reqwest::Request::try_from(http::Request::from_parts(parts, bytes))
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let mut resp = client
                .execute(req)
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            // Read the body here, bounded, so a misbehaving server cannot make the agent buffer without limit.
            let status = resp.status();
            let headers = std::mem::take(resp.headers_mut());
            // Only the latest answer counts: a 429 that a later request got past says nothing any more.
            let seconds = (status == http::StatusCode::TOO_MANY_REQUESTS)
                .then(|| headers.get(http::header::RETRY_AFTER))
                .flatten()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            *retry_after
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                seconds.map(Duration::from_secs);
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?
            {
                if body.len() + chunk.len() > MAX_ACME_BODY {
                    return Err(instant_acme::Error::Other(
                        format!("ACME response body larger than {MAX_ACME_BODY} bytes").into(),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            let mut out = http::Response::new(http_body_util::Full::new(Bytes::from(body)));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok(BytesResponse::from(out))
        })
    }
}
