//! Crash after each persisted step: SIGKILL of a real child stopped at a failpoint (feature `failpoints`).

use super::*;
use common::probe::{bundle_path, record_serial};
use std::process::{Child, Stdio};

/// Spawns `certkeeper --config CONFIG renew` stopping (sleeping) at failpoint `point`; output to files.
fn spawn_stopping_at(case: &Case, config: &Path, point: &str) -> Child {
    let bed = bed();
    let mut cmd = Command::new(&bed.binaries.certkeeper);
    cmd.arg("--config").arg(config).arg("renew");
    testbed::scrub_env(&mut cmd);
    cmd.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("FAILPOINTS", format!("{point}=sleep(60000)"))
        .stdin(Stdio::null())
        .stdout(fs::File::create(case.dir.path().join("crash.stdout")).expect("create"))
        .stderr(fs::File::create(case.dir.path().join("crash.stderr")).expect("create"));
    testbed::spawn_owned(cmd).expect("spawn certkeeper")
}

fn crash_output(case: &Case) -> String {
    let read = |n: &str| fs::read_to_string(case.dir.path().join(n)).unwrap_or_default();
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        read("crash.stdout"),
        read("crash.stderr")
    )
}

/// True once the process stands at `point`, judged from outside.
fn reached(case: &Case, id: &str, point: &str) -> bool {
    match point {
        "order-saved" | "certificate-downloaded" => case
            .state_dir()
            .join(format!("deployments/{id}.order.json"))
            .is_file(),
        "issued-saved" => bundle_path(case, id).is_file(),
        "issued-recorded" => step(case, id).as_deref() == Some("issued"),
        "push-accepted" => writes(case).iter().any(|(_, status)| *status == 200),
        "pushed-recorded" => step(case, id).as_deref() == Some("pushed"),
        "active-recorded" => step(case, id).as_deref() == Some("active"),
        other => panic!("unknown failpoint {other}"),
    }
}

/// Runs `renew` stopping at `point`, SIGKILLs it there, runs `renew` again and checks the deployment runs the
/// certificate issued by the first run, with exactly one issuance in all. Returns the writes the vendor saw.
fn crash_and_resume(short: &str, point: &str, has_cert: bool) -> Vec<(String, u64)> {
    let case = Case::new(&format!("crash-{short}"));
    let id = format!("t-crash-{short}");
    let domain = format!("{id}.example.test");
    case.deployment(&id, "one-way", if has_cert { due() } else { None });
    let config = case.config().deployment(&id, &[&domain]).write();

    let exclusive = bed().exclusive();
    let mut child = spawn_stopping_at(&case, &config, point);
    let start = Instant::now();
    while !reached(&case, &id, point) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{point}: certkeeper exited ({status}) before the point\n{}",
                crash_output(&case)
            );
        }
        if start.elapsed() > StdDuration::from_secs(60) {
            testbed::kill_group(&mut child);
            panic!("{point}: not reached in 60 s\n{}", crash_output(&case));
        }
        thread::sleep(StdDuration::from_millis(20));
    }
    // The point is reached (or its vendor answer is on the way): give the process time to move on if it
    // were not held there, then check it did not.
    thread::sleep(StdDuration::from_millis(400));
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "{point}: certkeeper exited instead of stopping at the point\n{}",
        crash_output(&case)
    );
    let held_step = step(&case, &id);
    let want_step = match point {
        "order-saved" | "certificate-downloaded" | "issued-saved" => None,
        "issued-recorded" | "push-accepted" => Some("issued"),
        "pushed-recorded" => Some("pushed"),
        "active-recorded" => Some("active"),
        _ => unreachable!(),
    };
    assert_eq!(
        held_step.as_deref(),
        want_step,
        "{point}: the process did not stop at the point (is target/debug/certkeeper built with \
         --features failpoints? a concurrent build without it replaces the binary)\n{}",
        crash_output(&case)
    );
    // The bundle is removed before `active` is recorded; the record names the certificate then. Before the
    // bundle exists (finalizing), the certificate is known only to the CA: any serial will do, once.
    let serial = if bundle_path(&case, &id).exists() {
        Some(bundle_serial(&case, &id))
    } else if record(&case, &id)["cert"]["serial"].is_string() {
        Some(record_serial(&case, &id))
    } else {
        None
    };
    testbed::kill_group(&mut child);

    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(0), "{point}: second run\n{run}");
    assert!(run.failures_of(&id).is_empty(), "{run}");
    assert_deployed(&case, &id, &[&domain]);
    if let Some(serial) = serial {
        assert_eq!(
            deployed_serial(&case, &id),
            serial,
            "{point}: the deployment must run the certificate issued before the crash"
        );
    }
    assert_eq!(
        acme.issued, 1,
        "{point}: exactly one certificate in all: {acme:?}"
    );
    assert_eq!(
        acme.orders, 1,
        "{point}: exactly one order in all: {acme:?}"
    );
    assert_eq!(step(&case, &id).as_deref(), Some("active"), "{point}");
    assert!(
        !bundle_path(&case, &id).exists(),
        "{point}: the bundle is removed once running"
    );
    assert_no_txt(&[&domain]);
    case.assert_invariants();
    writes(&case)
}

#[test]
fn crash_after_the_order_is_saved_before_finalization() {
    let w = crash_and_resume("finalize", "order-saved", true);
    assert_eq!(w, [("PUT".into(), 200)], "one write in all");
}

#[test]
fn crash_after_the_certificate_is_downloaded_before_it_is_saved() {
    let w = crash_and_resume("download", "certificate-downloaded", true);
    assert_eq!(w, [("PUT".into(), 200)], "one write in all");
}

#[test]
fn crash_after_the_bundle_is_saved() {
    let w = crash_and_resume("saved", "issued-saved", true);
    assert_eq!(w, [("PUT".into(), 200)], "one write in all");
}

#[test]
fn crash_after_issued_is_recorded() {
    let w = crash_and_resume("issued", "issued-recorded", true);
    assert_eq!(w, [("PUT".into(), 200)], "one write in all");
}

#[test]
fn crash_after_the_vendor_accepted_the_push() {
    // The accepted write was not recorded yet: the next pass asks the vendor first, sees the certificate
    // there, and waits for it instead of writing again.
    let w = crash_and_resume("accepted", "push-accepted", true);
    assert_eq!(
        w,
        [("PUT".into(), 200)],
        "the accepted write is not repeated"
    );
}

#[test]
fn crash_after_pushed_is_recorded() {
    let w = crash_and_resume("pushed", "pushed-recorded", true);
    assert_eq!(
        w,
        [("PUT".into(), 200)],
        "the accepted write is waited on, not repeated"
    );
}

#[test]
fn crash_after_active_is_recorded() {
    let w = crash_and_resume("active", "active-recorded", true);
    assert_eq!(
        w,
        [("PUT".into(), 200)],
        "a certificate recorded active must not be pushed again"
    );
}

#[test]
fn crash_after_the_vendor_accepted_a_first_post() {
    // A deployment without a certificate gets a POST. After the crash the vendor holds the certificate, so a
    // second POST is refused (422): the resumed push must be a PUT (or none).
    let w = crash_and_resume("post", "push-accepted", false);
    assert_eq!(w.first(), Some(&("POST".to_owned(), 200)), "{w:?}");
    assert!(w.iter().skip(1).all(|(_, s)| *s == 200), "{w:?}");
}
