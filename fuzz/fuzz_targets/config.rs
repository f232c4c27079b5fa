//! `Config::parse` on arbitrary text: it must return Ok or a ConfigError, never panic, for any input.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The config is read with `read_to_string`, so non-UTF-8 never reaches `parse`.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A path that does not exist: `parse` checks its mode only for the inline-secret warning.
    let _ = certkeeper::config::Config::parse(Path::new("/nonexistent/fuzz.toml"), text);
});
