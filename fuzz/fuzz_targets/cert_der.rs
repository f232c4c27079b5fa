//! `leaf_info` and `spki` on arbitrary DER (the PEM target spends most of its time in base64; this one
//! goes straight at the X.509 decoding and the date/serial/SAN extraction).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = certkeeper::certs::leaf_info(data) {
        // The planner's arithmetic on the dates (plan.rs, pipeline/).
        let _ = info.not_after - info.not_before;
        let _ = info.not_after - certkeeper::plan::DEADLINE_MARGIN;
    }
    let _ = certkeeper::certs::spki(data);
});
