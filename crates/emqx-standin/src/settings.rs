//! The stand-in's knobs, changed at run time through `PUT /_admin/settings`.
//!
//! The defaults are those of the real service as the seed docs describe it (60 GET and 6 writes
//! per key per 60 minutes, UTC timestamps, the current `tlsType` dialect, certificates with fewer
//! than 60 days left refused), plus a short pending phase so tests do not wait long.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};
use time::UtcOffset;
use time::macros::format_description;

/// Every setting of the stand-in, as `PUT /_admin/settings` answers it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Settings {
    /// How long, in milliseconds, a deployment stays `pending` after an accepted write.
    pub pending: u64,
    /// Speak the older dialect of the docs: `tls_type` instead of `tlsType`, `" pending"`.
    pub old_dialect: bool,
    /// The offset in which `expire` is written (the vendor writes no zone suffix).
    #[serde(serialize_with = "serialize_zone")]
    pub zone: UtcOffset,
    /// GET requests allowed per key per window.
    pub get_limit: u32,
    /// POST, PUT and DELETE requests (together) allowed per key per window.
    pub write_limit: u32,
    /// Length of the sliding rate-limit window, in seconds.
    pub window: u64,
    /// After a write, stay pending forever.
    pub stuck_pending: bool,
    /// The status a deployment reaches once the pending phase is over.
    pub final_status: String,
    /// The next this many POST/PUT requests answer 500 and store nothing.
    pub fail_writes: u32,
    /// The next this many GET requests answer 500.
    pub fail_gets: u32,
    /// A leaf with fewer days than this left is refused with 422.
    pub min_days_left: u32,
    /// The next this many POST/PUT requests that pass every check answer 200 with the current state but
    /// store nothing: a write accepted but not applied.
    pub ignore_writes: u32,
    /// The next this many POST/PUT requests are read and never answered (for up to [`HANG_FOR`]); they store
    /// nothing and are logged with status 0 when they arrive.
    pub hang_writes: u32,
    /// Answer every vendor request with this redirect instead (`null`: none).
    pub redirect: Option<Redirect>,
    /// Per deployment id, an `expire` reported verbatim in GET answers while it has a certificate.
    pub expire_override: BTreeMap<String, String>,
    /// The next this many vendor requests answer 429 (after authentication, before the rate limiter).
    pub throttle_next: u32,
    /// The `Retry-After` header of those 429s, verbatim (`null`: none).
    pub throttle_retry_after: Option<String>,
}

/// How long a request held by `hang_writes` stays open before it is answered 504.
pub const HANG_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// A redirect the stand-in answers instead of the vendor API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// A 3xx status.
    pub status: u16,
    /// The `Location` prefix; the request's path is appended.
    pub location: String,
    /// Only requests with this method are redirected (`null`: all).
    #[serde(default)]
    pub method: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pending: 500,
            old_dialect: false,
            zone: UtcOffset::UTC,
            get_limit: 60,
            write_limit: 6,
            window: 3600,
            stuck_pending: false,
            final_status: "running".to_owned(),
            fail_writes: 0,
            fail_gets: 0,
            min_days_left: 60,
            ignore_writes: 0,
            hang_writes: 0,
            redirect: None,
            expire_override: BTreeMap::new(),
            throttle_next: 0,
            throttle_retry_after: None,
        }
    }
}

/// A partial update of [`Settings`]; absent or `null` fields keep their value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    pending: Option<u64>,
    old_dialect: Option<bool>,
    zone: Option<String>,
    get_limit: Option<u32>,
    write_limit: Option<u32>,
    window: Option<u64>,
    stuck_pending: Option<bool>,
    final_status: Option<String>,
    fail_writes: Option<u32>,
    fail_gets: Option<u32>,
    min_days_left: Option<u32>,
    ignore_writes: Option<u32>,
    hang_writes: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    redirect: Option<Option<Redirect>>,
    expire_override: Option<BTreeMap<String, String>>,
    throttle_next: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    throttle_retry_after: Option<Option<String>>,
}

/// For the knobs whose `null` means "none": an absent field keeps its value, a present one (even `null`) sets it.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl Settings {
    /// Applies `patch`, all or nothing.
    ///
    /// # Errors
    ///
    /// A message when a value is out of range (a zone that is not `±HH:MM`, a zero window).
    pub fn apply(&mut self, patch: SettingsPatch) -> Result<(), String> {
        let zone = patch.zone.as_deref().map(parse_zone).transpose()?;
        if patch.window == Some(0) {
            return Err("window must be at least 1 second".to_owned());
        }
        if let Some(Some(r)) = &patch.redirect
            && !(300..=399).contains(&r.status)
        {
            return Err(format!("redirect status {} is not a 3xx", r.status));
        }
        let mut next = self.clone();
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = patch.$field { next.$field = v; } )* };
        }
        take!(
            pending,
            old_dialect,
            get_limit,
            write_limit,
            window,
            stuck_pending,
            final_status,
            fail_writes,
            fail_gets,
            min_days_left,
            ignore_writes,
            hang_writes,
            redirect,
            expire_override,
            throttle_next,
            throttle_retry_after
        );
        if let Some(zone) = zone {
            next.zone = zone;
        }
        *self = next;
        Ok(())
    }

    /// The JSON key the vendor uses for the TLS type in this dialect.
    pub fn tls_type_key(&self) -> &'static str {
        if self.old_dialect {
            "tls_type"
        } else {
            "tlsType"
        }
    }

    /// The string the vendor uses for "pending" in this dialect.
    pub fn pending_status(&self) -> &'static str {
        if self.old_dialect {
            " pending"
        } else {
            "pending"
        }
    }
}

/// Parses a zone written `+HH:MM` or `-HH:MM` (or `Z`).
///
/// # Errors
///
/// A message naming the expected form.
pub fn parse_zone(zone: &str) -> Result<UtcOffset, String> {
    if zone == "Z" {
        return Ok(UtcOffset::UTC);
    }
    UtcOffset::parse(
        zone,
        format_description!("[offset_hour sign:mandatory]:[offset_minute]"),
    )
    .map_err(|e| format!("zone {zone:?} is not of the form +HH:MM or -HH:MM: {e}"))
}

/// Writes a zone as `+HH:MM` / `-HH:MM`.
pub fn format_zone(zone: UtcOffset) -> String {
    let (hours, minutes, _) = zone.as_hms();
    let sign = if zone.is_negative() { '-' } else { '+' };
    format!(
        "{sign}{:02}:{:02}",
        hours.unsigned_abs(),
        minutes.unsigned_abs()
    )
}

fn serialize_zone<S: Serializer>(zone: &UtcOffset, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_zone(*zone))
}
