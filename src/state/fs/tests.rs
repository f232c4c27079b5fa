//! Unit tests of the state directory: modes, atomic writes, the lock, refused file types.

use super::*;
use crate::certs::Bundle;
use crate::state::{Record, StateStore as _, Step};
use secrecy::ExposeSecret as _;

#[test]
fn dirs_and_files_are_private_and_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let store = Store::open(&dir).unwrap();
    let rec = Record {
        step: Some(Step::Issued),
        ..Record::default()
    };
    store.save_record("d1", &rec).unwrap();
    assert_eq!(store.record("d1").unwrap(), rec);
    assert_eq!(store.record("nope").unwrap(), Record::default());
    let bundle = Bundle {
        key_pkcs8_pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            .to_owned()
            .into(),
        chain_pem: "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n".into(),
    };
    store.save_bundle("d1", &bundle).unwrap();
    let back = store.bundle("d1").unwrap().unwrap();
    assert_eq!(back.chain_pem, bundle.chain_pem);
    assert_eq!(
        back.key_pkcs8_pem.expose_secret(),
        bundle.key_pkcs8_pem.expose_secret()
    );
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("deployments")), 0o700);
    assert_eq!(mode(&dir.join("deployments/d1.json")), 0o600);
    assert_eq!(mode(&dir.join("deployments/d1.pem")), 0o600);
    store.remove_bundle("d1").unwrap();
    assert!(store.bundle("d1").unwrap().is_none());
}

#[test]
fn corrupt_record_is_reported_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    fs::write(tmp.path().join("deployments/x.json"), "{not json").unwrap();
    let e = store.record("x").unwrap_err();
    assert!(e.to_string().contains("corrupt"), "{e}");
    assert_eq!(
        fs::read_to_string(tmp.path().join("deployments/x.json")).unwrap(),
        "{not json"
    );
}

#[test]
fn world_writable_state_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
    assert!(matches!(
        Store::open(tmp.path()),
        Err(StoreError::Insecure { .. })
    ));
}

#[test]
fn second_lock_names_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let _held = store.try_lock().unwrap();
    match store.try_lock() {
        Err(StoreError::Locked { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn a_date_rfc_3339_cannot_hold_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let rec = Record {
        expire: Some(time::macros::datetime!(-0001-06-01 00:00 UTC)),
        ..Record::default()
    };
    let err = store.save_record("x", &rec).unwrap_err();
    assert!(matches!(err, StoreError::Encode { .. }), "{err}");
    assert!(!tmp.path().join("deployments/x.json").exists());
}

#[test]
fn state_reads_refuse_fifos_symlinks_and_huge_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let dir = tmp.path().join("deployments");
    std::os::unix::fs::symlink("/dev/zero", dir.join("a.json")).unwrap();
    let err = store.record("a").unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    let path = std::ffi::CString::new(dir.join("b.json").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let err = store.record("b").unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
    fs::write(dir.join("c.json"), vec![b' '; MAX_STATE_FILE as usize + 1]).unwrap();
    let err = store.record("c").unwrap_err().to_string();
    assert!(err.contains("more than"), "{err}");
}

#[test]
fn the_lock_removes_stale_temp_files_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    fs::write(tmp.path().join(".tmpAAAAAA"), b"x").unwrap();
    fs::write(tmp.path().join("deployments/.tmpBBBBBB"), b"x").unwrap();
    fs::write(tmp.path().join("deployments/keep.json"), b"{}").unwrap();
    let _lock = store.try_lock().unwrap();
    assert!(!tmp.path().join(".tmpAAAAAA").exists());
    assert!(!tmp.path().join("deployments/.tmpBBBBBB").exists());
    assert!(tmp.path().join("deployments/keep.json").exists());
}

#[test]
fn accounts_of_several_cas_and_the_budget_log_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let creds = |id: &str| -> crate::state::AccountCredentials {
        serde_json::from_value(serde_json::json!({
            "id": id, "key_pkcs8": "AAAA", "directory": "https://ca.example/dir",
        }))
        .unwrap()
    };
    assert!(store.account("https://a.example/dir").unwrap().is_none());
    store
        .save_account("https://a.example/dir", &creds("https://a.example/acct/1"))
        .unwrap();
    store
        .save_account("https://b.example/dir", &creds("https://b.example/acct/2"))
        .unwrap();
    let id_of = |dir: &str| {
        serde_json::to_value(store.account(dir).unwrap().unwrap()).unwrap()["id"].clone()
    };
    assert_eq!(id_of("https://a.example/dir"), "https://a.example/acct/1");
    assert_eq!(id_of("https://b.example/dir"), "https://b.example/acct/2");
    let mode = fs::metadata(tmp.path().join("account.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let log = crate::state::BudgetLog::from([(
        "key".to_owned(),
        crate::state::KeyUsage {
            reads_ms: vec![1, 2],
            writes_ms: vec![3],
            blocked_until_ms: None,
        },
    )]);
    let want = log.clone();
    let now = store
        .update_budget_log(&mut |l| {
            *l = want.clone();
            true
        })
        .unwrap();
    assert_eq!(now, log);
    assert_eq!(store.budget_log().unwrap(), log);
}

#[test]
fn an_unreadable_account_is_named_without_quoting_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let secret = "SECRET-KEY-MATERIAL";
    let text =
        serde_json::json!({"accounts": {"https://a.example/dir": {"id": 7, "key_pkcs8": secret}}});
    store.write_json("account.json", &text).unwrap();
    let Err(err) = store.account("https://a.example/dir") else {
        panic!("a corrupt account was read")
    };
    let err = err.to_string();
    assert!(
        err.contains("account.json") && err.contains("https://a.example/dir"),
        "{err}"
    );
    assert!(!err.contains(secret), "{err}");
}

#[test]
fn a_busy_deployment_names_its_holder_and_others_stay_free() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let shared = store.try_lock_shared().unwrap();
    let _also_shared = Store::open(tmp.path()).unwrap().try_lock_shared().unwrap();
    let held = store.try_lock_deployment("a").unwrap();
    match store.try_lock_deployment("a") {
        Err(StoreError::Busy { id, pid }) => {
            assert_eq!(id, "a");
            assert_eq!(pid, std::process::id().to_string());
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    let _b = store.try_lock_deployment("b").unwrap();
    drop(held);
    let _a = store.try_lock_deployment("a").unwrap();
    // Passes share the state lock; an exclusive holder waits for them all.
    assert!(matches!(store.try_lock(), Err(StoreError::Locked { .. })));
    drop(shared);
}
