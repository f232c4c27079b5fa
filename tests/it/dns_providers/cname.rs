//! `_acme-challenge` delegated by CNAME into another zone: `example.test.` holds only the CNAMEs, the TXT
//! records go to an updatable `delegate.test.`; Pebble resolves through a real recursive resolver (unbound)
//! that follows the CNAME, as a public CA's would.

use super::*;
use crate::common::bed::{Knot, KnotSpec, Pebble, free_udp_tcp_port, quote, txt_at, wait_for_soa};
use crate::common::probe::due;
use crate::common::{assert_deployed, bed};

/// The SOA serial of `zone` at the knotd on `port`: every accepted update raises it.
fn serial(port: u16, zone: &str) -> u64 {
    let out = std::process::Command::new("kdig")
        .args(["@127.0.0.1", "-p", &port.to_string()])
        .args(["+short", "+norecurse", "+time=2", "+retry=0", "SOA", zone])
        .output()
        .expect("kdig runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .expect("an SOA answer")
}

/// knotd on a free port serving `example.test.` (whose `_acme-challenge.t-NAME` is a CNAME to
/// `t-NAME.delegate.test.`) and an updatable `delegate.test.`, and a Pebble resolving through a real unbound:
/// an authoritative knotd does not chase a CNAME into another zone, a resolver does.
fn delegation_bed(name: &str) -> (u16, Knot, Pebble) {
    let port = free_udp_tcp_port().unwrap();
    let origin = format!(
        "$ORIGIN example.test.\n$TTL 60\n\
         @ SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60\n\
         @ NS ns1.example.test.\nns1 A 127.0.0.1\n\
         _acme-challenge.t-{name} CNAME t-{name}.delegate.test.\n"
    );
    let delegate = "$ORIGIN delegate.test.\n$TTL 60\n\
                    @ SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60\n\
                    @ NS ns1.example.test.\n";
    let knot = bed()
        .knot_with(
            &format!("knot-{name}"),
            &KnotSpec {
                port,
                zones: vec![
                    ("example.test.".into(), origin),
                    ("delegate.test.".into(), delegate.into()),
                ],
                ..KnotSpec::default()
            },
        )
        .unwrap();
    wait_for_soa(port, "delegate.test.", &knot.log).unwrap();
    let resolver = bed()
        .unbound_for(
            &format!("unbound-{name}"),
            port,
            &["example.test.", "delegate.test."],
        )
        .unwrap();
    let pebble = bed()
        .pebble_resolving_at(&format!("pebble-{name}"), resolver)
        .unwrap();
    (port, knot, pebble)
}

#[test]
fn cname_delegated_challenge_is_published_at_the_target_and_nothing_in_the_origin_zone() {
    let case = Case::new("cname");
    let domains = ["t-cname.example.test", "*.t-cname.example.test"];
    let (port, knot, pebble) = delegation_bed("cname");

    case.deployment("t-cname", "one-way", due());
    let builder = case
        .config()
        .pebble(&pebble)
        .dns("server", &knot.server())
        .deployment("t-cname", &domains);
    let config = write_config(&builder, &builder.toml());

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    assert_deployed(&case, "t-cname", &domains);
    assert_eq!(
        serial(port, "example.test."),
        1,
        "nothing was written to example.test."
    );
    // Two values added and two removed at the target (knot raises the serial once per update).
    assert!(
        serial(port, "delegate.test.") >= 3,
        "the records went to delegate.test."
    );
    assert!(
        txt_at(port, "t-cname.delegate.test.").is_empty(),
        "TXT gone at the target"
    );
}

#[test]
fn exec_hook_publishes_at_the_cname_target_and_pebble_validates_through_the_cname() {
    let case = Case::new("exec-cname");
    let domains = ["t-exec-cname.example.test", "*.t-exec-cname.example.test"];
    let (port, knot, pebble) = delegation_bed("exec-cname");

    case.deployment("t-exec-cname", "one-way", due());
    // The hook can only write into delegate.test.: had it been handed the origin name, knsupdate would
    // have been refused (name outside the zone) and the hook would have failed.
    let hook = super::exec::knsupdate_hook_to(&case, false, &knot, "delegate.test.");
    let server = quote(&knot.server());
    let builder = case
        .config()
        .pebble(&pebble)
        .deployment("t-exec-cname", &domains);
    let section = format!(
        "provider = \"exec\"\ncommand = [{}]\ntimeout = \"20s\"\npropagation_servers = [{server}]\n\
         lookup_servers = [{server}]\n",
        quote(&hook.display().to_string())
    );
    let config = write_config(&builder, &with_dns_section(&builder, &section));

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}");
    assert_deployed(&case, "t-exec-cname", &domains);
    let calls = std::fs::read_to_string(case.dir.path().join("hook.log")).unwrap();
    assert_eq!(
        calls.lines().count(),
        4,
        "two presents, two cleanups: {calls}"
    );
    assert!(
        calls
            .lines()
            .all(|l| l.contains(" t-exec-cname.delegate.test. ") && !l.contains("example.test")),
        "the hook was handed the CNAME target only: {calls}"
    );
    assert_eq!(
        serial(port, "example.test."),
        1,
        "nothing was written to example.test."
    );
    assert!(
        serial(port, "delegate.test.") >= 3,
        "the records went to delegate.test."
    );
    assert!(
        txt_at(port, "t-exec-cname.delegate.test.").is_empty(),
        "TXT gone at the target"
    );
}
