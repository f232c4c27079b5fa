//! `[[notify]]`: where failure notifications go. Dispatched on `kind` by hand, like targets and DNS providers,
//! so every error keeps its line and column.

use serde::Deserialize;
use toml::Spanned;

use crate::config::{ConfigError, Loader};

/// Which changes of state a channel hears about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A deployment started failing (repeated every `[alerts] repeat` while it keeps failing).
    Failure,
    /// The vendor's budget cannot renew it before its deadline.
    AtRisk,
    /// It succeeds again after a failure or a risk.
    Recovered,
    /// A new certificate runs (only when asked for).
    Renewed,
    /// `certkeeper notify test`.
    Test,
}

impl Kind {
    /// The name in config and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Failure => "failure",
            Kind::AtRisk => "at_risk",
            Kind::Recovered => "recovered",
            Kind::Renewed => "renewed",
            Kind::Test => "test",
        }
    }
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// certkeeper's documented JSON.
    Json,
    /// `{"text": …}`: Slack and Mattermost incoming webhooks.
    Slack,
}

/// One resolved `[[notify]]` channel.
#[derive(Clone)]
pub struct Channel {
    /// Its key in the queue: kind and destination (host and path of a webhook's URL are hashed, never kept).
    pub key: String,
    /// `webhook to <host>`, `e-mail to <addresses>`: a name for the logs that holds no secret.
    pub name: String,
    /// The events it hears about.
    pub on: Vec<Kind>,
    /// Where messages go.
    pub sink: Sink,
}

/// A channel's transport.
#[derive(Clone)]
pub enum Sink {
    /// An HTTP POST.
    Webhook {
        /// The URL.
        url: String,
        /// The body's format.
        format: Format,
        /// The HMAC-SHA256 key of `X-Certkeeper-Signature`, if any.
        secret: Option<secrecy::SecretString>,
    },
    /// SMTP.
    Email(crate::notify::email::EmailConfig),
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets (HMAC key, SMTP password) and the webhook URL (its path may be a token) stay out.
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("on", &self.on)
            .finish_non_exhaustive()
    }
}

/// `[[notify]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    kind: Spanned<String>,
    on: Option<Spanned<Vec<String>>>,
    // webhook
    url: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    secret: Option<String>,
    secret_file: Option<Spanned<String>>,
    secret_env: Option<Spanned<String>>,
    // email
    pub(crate) smtp: Option<Spanned<String>>,
    pub(crate) tls: Option<Spanned<String>>,
    pub(crate) from: Option<Spanned<String>>,
    pub(crate) to: Option<Spanned<Vec<String>>>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) password_file: Option<Spanned<String>>,
    pub(crate) password_env: Option<Spanned<String>>,
    pub(crate) ca_file: Option<Spanned<String>>,
}

/// The events a channel hears about unless it says otherwise.
pub const DEFAULT_ON: [Kind; 3] = [Kind::Failure, Kind::AtRisk, Kind::Recovered];

/// `on = [...]`, or [`DEFAULT_ON`].
fn events(cx: &Loader<'_>, on: Option<&Spanned<Vec<String>>>) -> Result<Vec<Kind>, ConfigError> {
    let Some(list) = on else {
        return Ok(DEFAULT_ON.to_vec());
    };
    list.get_ref()
        .iter()
        .map(|name| match name.as_str() {
            "failure" => Ok(Kind::Failure),
            "at_risk" => Ok(Kind::AtRisk),
            "recovered" => Ok(Kind::Recovered),
            "renewed" => Ok(Kind::Renewed),
            other => Err(cx.err_at(
                list.span(),
                format!(
                    "[[notify]] on: `{other}` is not one of \"failure\", \"at_risk\", \"recovered\", \"renewed\""
                ),
            )),
        })
        .collect()
}

/// Resolves one `[[notify]]`.
///
/// # Errors
/// An unknown kind, a missing or non-https URL, an unknown format or event, an unreadable secret.
pub(crate) fn resolve(
    cx: &mut Loader<'_>,
    raw: Spanned<RawNotify>,
) -> Result<Channel, ConfigError> {
    let span = raw.span();
    let raw = raw.into_inner();
    let on = events(cx, raw.on.as_ref())?;
    match raw.kind.get_ref().as_str() {
        "webhook" => webhook(cx, on, span, raw),
        "email" => crate::notify::email::resolve(cx, on, span, raw),
        other => Err(cx.err_at(
            raw.kind.span(),
            format!("[[notify]] kind `{other}` is neither \"webhook\" nor \"email\""),
        )),
    }
}

fn webhook(
    cx: &mut Loader<'_>,
    on: Vec<Kind>,
    span: std::ops::Range<usize>,
    raw: RawNotify,
) -> Result<Channel, ConfigError> {
    let url = match &raw.url {
        Some(u) if u.get_ref().starts_with("https://") || u.get_ref().starts_with("http://") => {
            u.get_ref().clone()
        }
        // Not quoted: a webhook URL often carries its token in the path.
        Some(u) => {
            return Err(cx.err_at(u.span(), "[[notify]] url is not an http(s):// URL"));
        }
        None => return Err(cx.err_at(span, "[[notify]] kind = \"webhook\" needs `url`")),
    };
    let format = match raw.format.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("json") => Format::Json,
        Some("slack") => Format::Slack,
        Some(other) => {
            let at = raw
                .format
                .as_ref()
                .map(|f| f.span())
                .unwrap_or(span.clone());
            return Err(cx.err_at(
                at,
                format!("[[notify]] format `{other}` is neither \"json\" nor \"slack\""),
            ));
        }
    };
    let given = raw.secret.is_some() || raw.secret_file.is_some() || raw.secret_env.is_some();
    cx.inline_secrets |= raw.secret.is_some();
    let secret = if given {
        Some(
            cx.secret(
                "secret",
                "notify",
                span.clone(),
                &raw.secret,
                &raw.secret_file,
                &raw.secret_env,
            )?
            .into(),
        )
    } else {
        None
    };
    // The host alone names it: the path of a webhook URL is often its secret (Slack's are), and user:password@
    // may precede the host.
    let Some(host) = reqwest::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
    else {
        return Err(cx.err_at(span, "[[notify]] url has no host"));
    };
    Ok(Channel {
        key: format!("webhook {}", digest(&url)),
        name: format!("webhook to {host}"),
        on,
        sink: Sink::Webhook {
            url,
            format,
            secret,
        },
    })
}

/// A short SHA-256 hex digest: identifies a destination without keeping it (a webhook URL may hold a token).
pub(crate) fn digest(text: &str) -> String {
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    hash.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
