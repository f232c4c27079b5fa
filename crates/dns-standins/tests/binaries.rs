//! The two binaries start and describe themselves. Beyond that check, this file's presence is what makes
//! `cargo test --workspace` build `acmedns-standin` and `cloudflare-standin` (Cargo builds a package's binaries
//! only for its integration tests), which certkeeper's own tests (tests/it/dns_hosted.rs) then start.

use std::process::Command;

fn help_of(exe: &str) -> String {
    let out = Command::new(exe)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {exe}: {e}"));
    assert!(out.status.success(), "{exe} --help failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn acmedns_standin_names_its_dns_arguments() {
    let help = help_of(env!("CARGO_BIN_EXE_acmedns-standin"));
    assert!(help.contains("--domain"), "{help}");
    assert!(help.contains("--dns-server"), "{help}");
}

#[test]
fn cloudflare_standin_names_its_dns_arguments() {
    let help = help_of(env!("CARGO_BIN_EXE_cloudflare-standin"));
    assert!(help.contains("--dns-server"), "{help}");
}
