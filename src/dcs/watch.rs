//! One instance's sync: status, the download decision, the archive, the trust file, reload and the endpoint
//! check, and the record of what was done.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::client::{DcsClient, SslStatus};
use super::config::{DcsAccount, DcsInstance};
use super::record::{self, InstanceRecord};
use super::trust::{self, CaCert};
use super::{DcsError, Synced};

/// How long the endpoint may take to come back (a reload may restart the service) after a change.
const VERIFY_WINDOW: Duration = Duration::from_secs(20);
/// Pause between endpoint attempts.
const VERIFY_EVERY: Duration = Duration::from_millis(250);
/// One TLS handshake may take this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Syncs one instance and records the outcome in the state directory.
///
/// # Errors
/// A [`DcsError`], one line; `ca_file` is untouched or rolled back.
pub async fn sync_instance(
    client: &DcsClient,
    account: &DcsAccount,
    instance: &DcsInstance,
    state_dir: &Path,
) -> Result<Synced, DcsError> {
    let now = OffsetDateTime::now_utc();
    let mut rec = record::load(state_dir, &instance.id);
    let result = sync(client, account, instance, &mut rec, now).await;
    rec.checked_at = Some(now);
    rec.failure = result.as_ref().err().map(ToString::to_string);
    if let Err(e) = record::save(state_dir, &instance.id, &rec) {
        tracing::warn!(
            instance = %instance.id,
            "cannot save the DCS instance record in {} ({e}); the next pass may download again",
            state_dir.display()
        );
    }
    result
}

async fn sync(
    client: &DcsClient,
    account: &DcsAccount,
    instance: &DcsInstance,
    rec: &mut InstanceRecord,
    now: OffsetDateTime,
) -> Result<Synced, DcsError> {
    let status = match client.status(&instance.id).await? {
        Some(s) if s.enabled => s,
        _ => {
            rec.ssl_enabled = Some(false);
            return Ok(Synced::SslOff);
        }
    };
    rec.ssl_enabled = Some(true);
    rec.ssl_expired_at.clone_from(&status.ssl_expired_at);
    let trust_err = |source| DcsError::Trust {
        instance: instance.id.clone(),
        source,
    };
    let in_place = trust::in_place(&instance.ca_file, now).map_err(trust_err)?;
    let interval =
        time::Duration::try_from(account.inspect_interval).unwrap_or(time::Duration::DAY);
    let due = in_place.is_none()
        || rec.downloaded_for != status.ssl_expired_at
        || rec.downloaded_at.is_none_or(|t| now - t >= interval);
    let done = if due {
        let done = install(client, instance, in_place.as_deref(), now).await?;
        rec.downloaded_for.clone_from(&status.ssl_expired_at);
        rec.downloaded_at = Some(now);
        done
    } else {
        Synced::NotDue
    };
    if let Some(cas) = trust::in_place(&instance.ca_file, now).ok().flatten() {
        rec.fingerprints = cas.into_iter().map(|c| c.fingerprint).collect();
    }
    health(instance, &status, now)?;
    Ok(done)
}

/// `ssl_validated = false` and an expiry within `expiry_warning` are failures, after the file is synced.
fn health(instance: &DcsInstance, status: &SslStatus, now: OffsetDateTime) -> Result<(), DcsError> {
    if status.ssl_validated == Some(false) {
        return Err(DcsError::NotValidated {
            instance: instance.id.clone(),
        });
    }
    let warning = time::Duration::try_from(instance.expiry_warning).unwrap_or(time::Duration::ZERO);
    if let Some(at) = &status.ssl_expired_at
        && let Ok(expires) =
            OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        && expires - now < warning
    {
        return Err(DcsError::ExpiresSoon {
            instance: instance.id.clone(),
            at: at.clone(),
        });
    }
    Ok(())
}

/// Downloads, checks and (when different) installs the CA.
async fn install(
    client: &DcsClient,
    instance: &DcsInstance,
    in_place: Option<&[CaCert]>,
    now: OffsetDateTime,
) -> Result<Synced, DcsError> {
    let id = instance.id.clone();
    let link = client.download(&instance.id).await?;
    let zip = client.fetch(&link).await?;
    let pem = super::archive::ca_from_zip(&zip).map_err(|source| DcsError::Archive {
        instance: id.clone(),
        source,
    })?;
    let trust_err = |source| DcsError::Trust {
        instance: id.clone(),
        source,
    };
    let new = trust::parse_ca_bundle(&pem, "the downloaded ca.crt", now).map_err(trust_err)?;
    let desired = trust::merged(&new, in_place, instance.ca_overlap, now);
    if in_place.is_some_and(|cur| trust::same(cur, &desired)) {
        return Ok(Synced::Current);
    }
    let text = trust::to_pem(&desired);
    let before = trust::replace(&instance.ca_file, text.as_bytes()).map_err(trust_err)?;
    let failed = match reload(instance).await {
        Err(e) => Some(format!("reload {e}")),
        Ok(()) => match &instance.endpoint {
            Some(endpoint) => verify(endpoint, &instance.ca_file)
                .await
                .err()
                .map(|e| format!("{endpoint} does not verify against the new ca_file ({e})")),
            None => None,
        },
    };
    let Some(what) = failed else {
        return Ok(Synced::Updated { cas: desired.len() });
    };
    let mut rolled_back = match trust::restore(&instance.ca_file, before.as_deref()) {
        Ok(()) => "ca_file was rolled back".to_owned(),
        Err(e) => format!("rolling ca_file back failed too ({e})"),
    };
    match reload(instance).await {
        Ok(()) if !instance.reload.is_empty() => rolled_back.push_str(" and reloaded"),
        Ok(()) => {}
        Err(e) => rolled_back.push_str(&format!(", but the second reload {e}")),
    }
    Err(DcsError::Applied {
        instance: id,
        what,
        rolled_back,
    })
}

/// Runs `reload` (nothing when none is configured), bounded by `reload_timeout`: as the files target does.
async fn reload(instance: &DcsInstance) -> Result<(), String> {
    crate::deploy::files::run_reload(&instance.reload, instance.reload_timeout).await
}

/// Retries a TLS handshake with `endpoint`, trusting only `ca_file`, until it verifies or [`VERIFY_WINDOW`].
///
/// # Errors
/// The last handshake failure.
pub async fn verify(endpoint: &str, ca_file: &Path) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + VERIFY_WINDOW;
    loop {
        match handshake(endpoint, ca_file).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(VERIFY_EVERY).await,
        }
    }
}

async fn handshake(endpoint: &str, ca_file: &Path) -> Result<(), String> {
    let pem = crate::config::read_bounded(ca_file).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for der in crate::certs::parse_pem_certs(&pem).map_err(|e| e.to_string())? {
        roots.add(der.into()).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let host = endpoint
        .rsplit_once(':')
        .map_or(endpoint, |(h, _)| h)
        .trim_matches(['[', ']']);
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("invalid host {host:?}: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(endpoint)
            .await
            .map_err(|e| e.to_string())?;
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"))?
}
