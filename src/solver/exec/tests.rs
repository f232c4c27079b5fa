//! The exec provider against real `/bin/sh` hooks.

use std::time::Duration;

use super::*;

fn solver(script: &str, timeout: Duration) -> ExecSolver {
    ExecSolver::new(ExecConfig {
        command: vec!["/bin/sh".into(), "-c".into(), script.into(), "hook".into()],
        timeout,
    })
}

fn record() -> TxtRecord {
    TxtRecord::for_domain("a.example.test", "v4lue")
}

#[tokio::test]
async fn hook_gets_lego_arguments_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = format!(
        "echo \"$1 $2 $3|$CERTKEEPER_ACTION $CERTKEEPER_FQDN $CERTKEEPER_VALUE\" >> {}",
        out.display()
    );
    let s = solver(&script, TEST_TIMEOUT);
    s.call(Action::Present, &record()).await.unwrap();
    s.call(Action::Cleanup, &record()).await.unwrap();
    let seen = std::fs::read_to_string(out).unwrap();
    assert_eq!(
        seen,
        "present _acme-challenge.a.example.test. v4lue|present _acme-challenge.a.example.test. v4lue\n\
         cleanup _acme-challenge.a.example.test. v4lue|cleanup _acme-challenge.a.example.test. v4lue\n"
    );
}

#[tokio::test]
async fn failing_hook_reports_program_status_and_stderr_but_not_arguments() {
    let s = ExecSolver::new(ExecConfig {
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo 'zone not found' >&2; exit 3".into(),
            "--token=SECRET".into(),
        ],
        timeout: TEST_TIMEOUT,
    });
    let e = s.call(Action::Present, &record()).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("DNS hook `/bin/sh` failed to present"),
        "{text}"
    );
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(text.contains("zone not found"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
}

#[tokio::test]
async fn hanging_hook_and_its_children_are_killed_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let s = solver(&script, Duration::from_millis(300));
    let started = std::time::Instant::now();
    let e = s.call(Action::Present, &record()).await.unwrap_err();
    assert!(matches!(e, ExecError::Timeout { .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid: i32 = std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The grandchild `sleep` was in the hook's process group: it is gone (or a zombie being reaped by init).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sleep {pid} survived: {stat}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn stderr_excerpt_is_one_bounded_line() {
    let long = "x".repeat(STDERR_SHOWN * 2) + "\nlast words";
    let shown = excerpt(long.as_bytes());
    assert!(shown.ends_with("last words"));
    assert!(shown.chars().count() <= STDERR_SHOWN + 1);
    assert!(!shown.contains('\n'));
    assert_eq!(excerpt(b"  \n"), "(no stderr)");
}

#[tokio::test]
async fn preflight_finds_missing_program() {
    let s = ExecSolver::new(ExecConfig {
        command: vec!["/nonexistent/hook".into()],
        timeout: TEST_TIMEOUT,
    });
    let e = s.preflight(&[]).await.unwrap_err();
    assert!(e.to_string().contains("/nonexistent/hook"), "{e}");
    let ok = ExecSolver::new(ExecConfig {
        command: vec!["sh".into()],
        timeout: TEST_TIMEOUT,
    });
    ok.preflight(&[]).await.unwrap();
}
