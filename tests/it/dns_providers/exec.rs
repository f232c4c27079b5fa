//! `provider = "exec"`: lego's exec convention, against the bed's knotd through `knsupdate`.

use super::*;
use crate::common::bed::quote;
use crate::common::probe::due;
use crate::common::{Bed, assert_deployed, assert_no_txt, bed};

/// A hook that adds (`present`) or removes (`cleanup`) the TXT with `knsupdate`, signed with the bed's key.
/// With `whole_set`, cleanup deletes every TXT at the owner, as acme.sh's dnsapi scripts do.
fn knsupdate_hook(case: &Case, whole_set: bool) -> std::path::PathBuf {
    knsupdate_hook_to(case, whole_set, &bed().knot, common::bed::ZONE)
}

/// [`knsupdate_hook`] writing into `zone` at `knot` (another knotd than the bed's, e.g. a delegate zone).
pub(super) fn knsupdate_hook_to(
    case: &Case,
    whole_set: bool,
    knot: &common::bed::Knot,
    zone: &str,
) -> std::path::PathBuf {
    let path = case.dir.path().join("dns-hook");
    let delete = if whole_set {
        "del $2 TXT"
    } else {
        "del $2 TXT \"$3\""
    };
    write_script(
        &path,
        &format!(
            "#!/bin/sh\nset -e\n\
             echo \"$*|$CERTKEEPER_ACTION $CERTKEEPER_FQDN $CERTKEEPER_VALUE\" >> {log}\n\
             case \"$1\" in present) op=\"add $2 60 TXT \\\"$3\\\"\";; cleanup) op=\"{delete}\";; *) exit 2;; esac\n\
             knsupdate -y hmac-sha256:{key}:{secret} <<EOF\nserver 127.0.0.1 {port}\nzone {zone}\nupdate $op\nsend\nEOF\n",
            log = case.dir.path().join("hook.log").display(),
            key = common::bed::TSIG_KEY.trim_end_matches('.'),
            secret = knot.tsig_secret,
            port = knot.port,
        ),
    );
    path
}

/// The exec section for `hook`, checking propagation at the bed's knotd.
fn exec_section(hook: &Path, timeout: &str) -> String {
    let server = quote(&bed().knot.server());
    format!(
        "provider = \"exec\"\ncommand = [{}]\ntimeout = \"{timeout}\"\npropagation_servers = [{server}]\n\
         lookup_servers = [{server}]\n",
        quote(&hook.display().to_string())
    )
}

#[test]
fn exec_hook_publishes_wildcard_and_apex_and_cleanup_after_both_validations() {
    let case = Case::new("exec");
    let domains = ["t-exec.example.test", "*.t-exec.example.test"];
    case.deployment("t-exec", "one-way", due());
    // The hook deletes the whole TXT set at cleanup: had one authorization been cleaned up before the
    // other was validated, the second validation would fail.
    let hook = knsupdate_hook(&case, true);
    let builder = case.config().deployment("t-exec", &domains);
    let config = write_config(
        &builder,
        &with_dns_section(&builder, &exec_section(&hook, "20s")),
    );

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    assert_deployed(&case, "t-exec", &domains);
    assert_no_txt(&domains);
    let calls = std::fs::read_to_string(case.dir.path().join("hook.log")).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 4, "two presents, two cleanups: {calls}");
    let owner = Bed::challenge_owner("t-exec.example.test");
    for (line, action) in lines
        .iter()
        .zip(["present", "present", "cleanup", "cleanup"])
    {
        let (args, env) = line.split_once('|').unwrap();
        assert!(args.starts_with(&format!("{action} {owner} ")), "{calls}");
        assert!(env.starts_with(&format!("{action} {owner} ")), "{calls}");
        assert_eq!(args.split(' ').count(), 3, "{calls}");
    }
    case.assert_invariants();
}

#[test]
fn failing_exec_hook_is_named_with_its_stderr_and_costs_one_order() {
    let case = Case::new("exec-fail");
    let domain = "t-exec-fail.example.test";
    case.deployment("t-exec-fail", "one-way", due());
    let hook = case.dir.path().join("failing-hook");
    write_script(
        &hook,
        "#!/bin/sh\nif [ \"$1\" = present ]; then echo 'zone example.test not found in account' >&2; exit 1; fi\n",
    );
    let builder = case.config().deployment("t-exec-fail", &[domain]);
    let config = write_config(
        &builder,
        &with_dns_section(&builder, &exec_section(&hook, "20s")),
    );

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure_lines(&run, "t-exec-fail");
    assert!(
        line.contains(&format!("DNS hook `{}` failed to present", hook.display()))
            && line.contains("exit status: 1")
            && line.contains("zone example.test not found in account"),
        "{line}\n{run}"
    );
    assert_eq!(
        acme.orders, 1,
        "a failing hook is not retried with new orders: {acme:?}"
    );
    assert_eq!(acme.issued, 0, "{acme:?}");
    assert_no_txt(&[domain]);
}

#[test]
fn hanging_exec_hook_times_out() {
    let case = Case::new("exec-hang");
    let domain = "t-exec-hang.example.test";
    case.deployment("t-exec-hang", "one-way", due());
    let hook = case.dir.path().join("hanging-hook");
    write_script(
        &hook,
        "#!/bin/sh\nif [ \"$1\" = present ]; then sleep 60; fi\n",
    );
    let builder = case.config().deployment("t-exec-hang", &[domain]);
    let config = write_config(
        &builder,
        &with_dns_section(&builder, &exec_section(&hook, "1s")),
    );

    let started = std::time::Instant::now();
    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure_lines(&run, "t-exec-hang");
    assert!(
        line.contains("did not finish the present") && line.contains("within 1s"),
        "{line}\n{run}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the hook was not waited out"
    );
}
