//! The binary starts and describes itself. Beyond that check, this file's presence is what makes
//! `cargo test --workspace` build `dcs-standin` (Cargo builds a package's binary only for its integration
//! tests), which certkeeper's own tests (tests/it/dcs.rs) then start.

use std::process::Command;

#[test]
fn dcs_standin_describes_itself() {
    let exe = env!("CARGO_BIN_EXE_dcs-standin");
    let out = Command::new(exe)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {exe}: {e}"));
    assert!(out.status.success(), "{exe} --help failed: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--listen"));
}
