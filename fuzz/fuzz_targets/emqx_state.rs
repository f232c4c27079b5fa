//! `parse_state` on an arbitrary EMQX API body, with each offset the config can give for `expire`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use time::UtcOffset;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the configured `expire_timezone` (UTC, the extremes ±23:59, and +08:00).
    let (offset, body) = match data.split_first() {
        Some((b, rest)) => {
            let offset = match b % 4 {
                0 => UtcOffset::UTC,
                1 => UtcOffset::from_hms(23, 59, 0).unwrap(),
                2 => UtcOffset::from_hms(-23, -59, 0).unwrap(),
                _ => UtcOffset::from_hms(8, 0, 0).unwrap(),
            };
            (offset, rest)
        }
        None => (UtcOffset::UTC, data),
    };
    if let Ok(state) = certkeeper::deploy::emqx::client::parse_state(body, offset) {
        // What the renewal pass does next with the date (pipeline/, plan.rs): it must not overflow either.
        if let Some(expire) = state.expire {
            let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
            let _ = certkeeper::plan::plan(Some(expire), None, None, None, now);
            let _ = expire - certkeeper::plan::DEADLINE_MARGIN;
            let _ = (expire - now).abs() > time::Duration::days(1);
            let _ = expire.to_string();
        }
    }
});
