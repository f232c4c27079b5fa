//! After the vendor says `running`: connect to the deployment's TLS endpoint and check that it really
//! serves the pushed certificate (same public key and serial), retrying until it does or `verify_timeout`.
//!
//! The handshake deliberately does not judge trust: the chain was validated before the push, and the
//! question here is identity ("is the new certificate live?"), which must also be answerable for a test or
//! private CA. The server must still prove it holds the key (the handshake signature is verified), so a
//! proxy replaying someone else's certificate does not pass.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// One TLS exchange may take this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between attempts while the endpoint still serves something else.
const RETRY_EVERY: Duration = Duration::from_secs(2);

/// Why the endpoint check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The endpoint served another certificate until the timeout.
    #[error(
        "{endpoint} still serves certificate {served} instead of the pushed {pushed} after {waited:?} — the vendor \
         reported running; check the listener in the console"
    )]
    Mismatch {
        /// host:port.
        endpoint: String,
        /// Serial seen.
        served: String,
        /// Serial pushed.
        pushed: String,
        /// How long we tried.
        waited: Duration,
    },
    /// The endpoint could not be reached or the handshake failed until the timeout.
    #[error(
        "cannot read the certificate served at {endpoint} ({detail}) — check `endpoint` of the deployment"
    )]
    Unreachable {
        /// host:port.
        endpoint: String,
        /// Last failure.
        detail: String,
    },
}

/// The identity of a served leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Serial, lowercase hex.
    pub serial: String,
    /// SubjectPublicKeyInfo DER.
    pub spki: Vec<u8>,
    /// End of validity.
    pub not_after: time::OffsetDateTime,
    /// Start of validity.
    pub not_before: time::OffsetDateTime,
}

/// Connects to `endpoint` (host:port) with SNI `sni` and returns what it serves.
///
/// # Errors
/// A one-line description of the connection or handshake failure.
pub async fn served_leaf(endpoint: &str, sni: &str) -> Result<Served, String> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(IdentityOnly))
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name =
        ServerName::try_from(sni.to_owned()).map_err(|e| format!("invalid SNI {sni:?}: {e}"))?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(endpoint)
            .await
            .map_err(|e| e.to_string())?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, session) = tls.get_ref();
        let leaf = session
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("the server sent no certificate")?;
        let (_, cert) = X509Certificate::from_der(leaf.as_ref())
            .map_err(|e| format!("unparsable leaf: {e}"))?;
        Ok::<Served, String>(Served {
            serial: cert.raw_serial_as_string().replace(':', ""),
            spki: cert.public_key().raw.to_vec(),
            not_after: cert.validity().not_after.to_datetime(),
            not_before: cert.validity().not_before.to_datetime(),
        })
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"))?
}

/// Retries until `endpoint` serves the certificate with `serial` and `spki`, or `timeout` passes.
///
/// # Errors
/// [`VerifyError::Mismatch`] with both serials, or [`VerifyError::Unreachable`].
pub async fn wait_served(
    endpoint: &str,
    sni: &str,
    serial: &str,
    spki: &[u8],
    timeout: Duration,
) -> Result<(), VerifyError> {
    let start = tokio::time::Instant::now();
    let mut last: Result<Served, String>;
    loop {
        last = served_leaf(endpoint, sni).await;
        match &last {
            Ok(served) if served.serial == serial && served.spki == spki => return Ok(()),
            Ok(served) => {
                tracing::debug!(endpoint, served = %served.serial, expected = serial, "not served yet")
            }
            Err(e) => tracing::debug!(endpoint, "handshake failed: {e}"),
        }
        if start.elapsed() + RETRY_EVERY > timeout {
            break;
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
    Err(match last {
        Ok(served) => VerifyError::Mismatch {
            endpoint: endpoint.to_owned(),
            served: served.serial,
            pushed: serial.to_owned(),
            waited: start.elapsed(),
        },
        Err(detail) => VerifyError::Unreachable {
            endpoint: endpoint.to_owned(),
            detail,
        },
    })
}

/// Accepts any chain (identity is compared afterwards) but checks the handshake signature, so the peer
/// must hold the private key of the leaf it shows.
#[derive(Debug)]
struct IdentityOnly;

impl ServerCertVerifier for IdentityOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connection_is_unreachable_not_a_panic() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let e = wait_served(&addr, "a.example.com", "01", b"", Duration::from_millis(10))
            .await
            .unwrap_err();
        assert!(matches!(e, VerifyError::Unreachable { .. }), "{e}");
    }
}
