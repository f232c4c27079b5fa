//! A webhook: one POST per message, the body signed with HMAC-SHA256 when a secret is configured.

use std::time::Duration;

use secrecy::ExposeSecret as _;

use super::SendError;
use super::config::Format;

/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Certkeeper-Signature";

/// The body in `format`.
fn body(format: Format, message: &serde_json::Value) -> Vec<u8> {
    let value = match format {
        Format::Json => message.clone(),
        Format::Slack => {
            let text = format!(
                "certkeeper [{}] {}",
                message["event"].as_str().unwrap_or_default(),
                message["message"].as_str().unwrap_or_default()
            );
            serde_json::json!({ "text": text })
        }
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Delivers `message`; any answer but 2xx is a failure, named without the URL (its path may be a token).
pub async fn send(
    http: &reqwest::Client,
    name: &str,
    (url, format, secret): (&str, Format, Option<&secrecy::SecretString>),
    message: &serde_json::Value,
) -> Result<(), SendError> {
    let body = body(format, message);
    let mut request = http
        .post(url)
        .timeout(TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = secret {
        request = request.header(
            SIGNATURE_HEADER,
            signature(secret.expose_secret().as_bytes(), &body),
        );
    }
    let failed = |permanent, message| Err(SendError { permanent, message });
    match request.body(body).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        // A 4xx other than 408 and 429 refuses this message; trying it again cannot help.
        Ok(response) => {
            let status = response.status();
            let permanent = status.is_client_error()
                && status != reqwest::StatusCode::REQUEST_TIMEOUT
                && status != reqwest::StatusCode::TOO_MANY_REQUESTS;
            failed(permanent, format!("{name} answered {status}"))
        }
        // Without the URL: reqwest's message would carry it.
        Err(e) if e.is_timeout() => {
            failed(false, format!("{name} did not answer within {TIMEOUT:?}"))
        }
        Err(e) if e.is_connect() => failed(false, format!("{name} refused or unreachable")),
        Err(_) => failed(false, format!("{name} failed")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_is_the_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            super::signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
