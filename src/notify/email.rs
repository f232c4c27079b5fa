//! E-mail notifications over SMTP (lettre): STARTTLS required unless `tls = "none"`, implicit TLS for
//! `smtps://host:465`, optional AUTH with the password from a file or the environment.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use secrecy::{ExposeSecret as _, SecretString};

use super::SendError;
use super::config::{Channel, Kind, RawNotify, Sink};
use crate::config::{ConfigError, Loader, read_bounded_text};

/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// STARTTLS, required: a server that does not offer it gets nothing.
    StartTls,
    /// TLS from the first byte (`smtps://`, usually port 465).
    Implicit,
    /// Plain text (`tls = "none"`): only for a relay on the same host.
    None,
}

/// A resolved e-mail channel.
#[derive(Clone)]
pub struct EmailConfig {
    host: String,
    port: u16,
    protection: Protection,
    from: Mailbox,
    to: Vec<Mailbox>,
    credentials: Option<(String, SecretString)>,
    /// Extra trusted roots, PEM (a private CA).
    ca_pem: Option<String>,
}

/// Resolves `[[notify]] kind = "email"`.
pub(crate) fn resolve(
    cx: &mut Loader<'_>,
    on: Vec<Kind>,
    span: std::ops::Range<usize>,
    raw: RawNotify,
) -> Result<Channel, ConfigError> {
    let (host, port, protection) = server(cx, &raw, &span)?;
    let mailbox = |value: &str, at: std::ops::Range<usize>| {
        value
            .parse::<Mailbox>()
            .map_err(|_| cx.err_at(at, format!("[[notify]] `{value}` is not an e-mail address")))
    };
    let from = match &raw.from {
        Some(f) => mailbox(f.get_ref(), f.span())?,
        None => return Err(cx.err_at(span, "[[notify]] kind = \"email\" needs `from`")),
    };
    let to = match &raw.to {
        Some(list) if !list.get_ref().is_empty() => list
            .get_ref()
            .iter()
            .map(|t| mailbox(t, list.span()))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(cx.err_at(span, "[[notify]] kind = \"email\" needs `to = [\"…\"]`")),
    };
    cx.inline_secrets |= raw.password.is_some();
    let credentials = match &raw.username {
        None => None,
        Some(user) => {
            let password = cx.secret(
                "password",
                "notify",
                span.clone(),
                &raw.password,
                &raw.password_file,
                &raw.password_env,
            )?;
            Some((user.clone(), SecretString::from(password)))
        }
    };
    let ca_pem = match &raw.ca_file {
        None => None,
        Some(p) => Some(
            read_bounded_text(std::path::Path::new(p.get_ref())).map_err(|e| {
                cx.err_at(
                    p.span(),
                    format!("cannot read [[notify]] ca_file {}: {e}", p.get_ref()),
                )
            })?,
        ),
    };
    let name = format!(
        "e-mail to {}",
        to.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let recipients: Vec<String> = to.iter().map(ToString::to_string).collect();
    Ok(Channel {
        key: format!("email {host}:{port} {}", recipients.join(",")),
        name,
        on,
        sink: Sink::Email(EmailConfig {
            host,
            port,
            protection,
            from,
            to,
            credentials,
            ca_pem,
        }),
    })
}

/// `smtp` and `tls`: where to connect and how it is protected.
fn server(
    cx: &Loader<'_>,
    raw: &RawNotify,
    span: &std::ops::Range<usize>,
) -> Result<(String, u16, Protection), ConfigError> {
    let span = span.clone();
    let Some(smtp) = &raw.smtp else {
        return Err(cx.err_at(span, "[[notify]] kind = \"email\" needs `smtp` (host:port)"));
    };
    let (implicit, address) = match smtp.get_ref().strip_prefix("smtps://") {
        Some(rest) => (true, rest),
        None => (false, smtp.get_ref().as_str()),
    };
    let bad_smtp = || {
        cx.err_at(
            smtp.span(),
            format!(
                "[[notify]] smtp `{}` is not host:port (or smtps://host:port)",
                smtp.get_ref()
            ),
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad_smtp)?;
    let port: u16 = port.parse().map_err(|_| bad_smtp())?;
    let protection = match (implicit, raw.tls.as_ref().map(|t| t.get_ref().as_str())) {
        (true, None | Some("implicit")) => Protection::Implicit,
        (false, None | Some("starttls")) => Protection::StartTls,
        (false, Some("implicit")) => Protection::Implicit,
        (false, Some("none")) => Protection::None,
        (_, Some(other)) => {
            let at = raw.tls.as_ref().map_or(span.clone(), |t| t.span());
            return Err(cx.err_at(
                at,
                format!("[[notify]] tls `{other}` is not \"starttls\", \"implicit\" or \"none\" (or contradicts smtps://)"),
            ));
        }
    };
    Ok((host.to_owned(), port, protection))
}

/// Sends `message` as a plain-text e-mail.
pub async fn send(
    name: &str,
    cfg: &EmailConfig,
    message: &serde_json::Value,
) -> Result<(), SendError> {
    let transport = transport(cfg).map_err(|e| SendError {
        permanent: false,
        message: format!("{name}: {e}"),
    })?;
    let event = message["event"].as_str().unwrap_or_default();
    let deployment = message["deployment"].as_str().unwrap_or("certkeeper");
    let mut builder = Message::builder()
        .from(cfg.from.clone())
        .subject(format!("certkeeper [{event}] {deployment}"))
        .header(ContentType::TEXT_PLAIN);
    for to in &cfg.to {
        builder = builder.to(to.clone());
    }
    let text = format!(
        "{}\n\nevent: {event}\ndeployment: {deployment}\ndomains: {}\nexpires: {}\nat: {}\n\nRun `certkeeper status` on the host for details.\n",
        message["message"].as_str().unwrap_or_default(),
        message["domains"],
        message["expires"],
        message["at"].as_str().unwrap_or_default(),
    );
    let email = builder.body(text).map_err(|e| SendError {
        permanent: true,
        message: format!("{name}: {e}"),
    })?;
    // lettre's errors name the server's answer, never the password.
    transport
        .send(email)
        .await
        .map(|_| ())
        .map_err(|e| SendError {
            permanent: e.is_permanent(),
            message: format!("{name}: {e}"),
        })
}

fn transport(cfg: &EmailConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let tls = match cfg.protection {
        Protection::None => Tls::None,
        protection => {
            let mut params = TlsParameters::builder(cfg.host.clone());
            if let Some(pem) = &cfg.ca_pem {
                let cert = Certificate::from_pem(pem.as_bytes())
                    .map_err(|e| format!("ca_file is not a PEM certificate: {e}"))?;
                params = params.add_root_certificate(cert);
            }
            let params = params.build_rustls().map_err(|e| e.to_string())?;
            if protection == Protection::Implicit {
                Tls::Wrapper(params)
            } else {
                Tls::Required(params)
            }
        }
    };
    // `builder_dangerous` only means "no TLS preset": the TLS mode is set just below.
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.as_str())
        .port(cfg.port)
        .tls(tls)
        .timeout(Some(TIMEOUT));
    if let Some((user, password)) = &cfg.credentials {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    Ok(builder.build())
}
