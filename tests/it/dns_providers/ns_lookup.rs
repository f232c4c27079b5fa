//! `propagation = "authoritative"` without `propagation_servers`: the servers to wait for come from the
//! zone's NS records. Two NS hosts on two loopback addresses (127.0.0.1 and 127.0.0.2, all of 127/8 being
//! loopback on Linux) share the rfc2136 `server`'s port: a primary and a secondary that lags behind it.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::secondary::{LAG, lagging_proxy, waited_at};
use super::*;
use crate::common::bed::{KnotSpec, free_udp_tcp_port, txt_at, wait_for_soa};
use crate::common::probe::due;
use crate::common::{Bed, assert_deployed, bed, run_with_env};

/// The `record_type` data at `owner` on the knotd at 127.0.0.2:`port`, or `None` while it does not serve the zone.
fn answer_at_second_address(port: u16, record_type: &str, owner: &str) -> Option<Vec<String>> {
    let out = Command::new("kdig")
        .args(["@127.0.0.2", "-p", &port.to_string()])
        .args(["+norecurse", "+time=1", "+retry=0", record_type, owner])
        .output()
        .expect("kdig runs");
    let text = String::from_utf8_lossy(&out.stdout);
    // NXDOMAIN is an answer too: a challenge owner with its TXT removed no longer exists.
    if !text.contains("status: NOERROR") && !text.contains("status: NXDOMAIN") {
        return None;
    }
    Some(
        text.lines()
            .filter(|l| !l.starts_with(';') && l.contains(&format!("\t{record_type}\t")))
            .map(|l| {
                l.rsplit('\t')
                    .next()
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_owned()
            })
            .collect(),
    )
}

/// Polls until `check` holds, failing with `what` after 15 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn authoritative_propagation_asks_every_ns_host_found_by_lookup() {
    let case = Case::new("ns-lookup");
    let domain = "t-ns-lookup.example.test";
    let (port, proxy_port) = (free_udp_tcp_port().unwrap(), free_udp_tcp_port().unwrap());
    lagging_proxy(proxy_port, port);
    let zone = "$ORIGIN example.test.\n$TTL 60\n\
                @ SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60\n\
                @ NS ns1.example.test.\n@ NS ns2.example.test.\nns1 A 127.0.0.1\nns2 A 127.0.0.2\n";
    let primary = bed()
        .knot_with(
            "knot-ns-primary",
            &KnotSpec {
                port,
                zones: vec![("example.test.".into(), zone.into())],
                notify: Some(port),
                notify_address: Some("127.0.0.2".into()),
                ..KnotSpec::default()
            },
        )
        .unwrap();
    let _secondary = bed()
        .knot_with(
            "knot-ns-secondary",
            &KnotSpec {
                port,
                zones: vec![("example.test.".into(), String::new())],
                primary: Some(proxy_port),
                address: Some("127.0.0.2".into()),
                ..KnotSpec::default()
            },
        )
        .unwrap();
    wait_for_soa(port, "example.test.", &primary.log).unwrap();
    eventually("the secondary on 127.0.0.2 loaded example.test.", || {
        answer_at_second_address(port, "SOA", "example.test.").is_some_and(|a| !a.is_empty())
    });
    let pebble = bed().pebble_resolving_at("pebble-ns-lookup", port).unwrap();

    case.deployment("t-ns-lookup", "one-way", due());
    let builder = case
        .config()
        .pebble(&pebble)
        .dns("server", &primary.server())
        .dns("propagation", "authoritative")
        .deployment("t-ns-lookup", &[domain]);
    let config = builder.write();
    assert!(
        !std::fs::read_to_string(&config)
            .unwrap()
            .contains("propagation_servers"),
        "the servers come from the NS lookup"
    );

    let run = run_with_env(
        &config,
        &["renew"],
        &[("RUST_LOG", "info,certkeeper::solver=debug")],
    );

    assert_eq!(run.code(), Some(0), "{run}");
    assert_deployed(&case, "t-ns-lookup", &[domain]);
    let at_ns1 = waited_at(&run.stderr, &format!("ns1.example.test:{port}"));
    let at_ns2 = waited_at(&run.stderr, &format!("ns2.example.test:{port}"));
    assert_eq!(
        (at_ns1.len(), at_ns2.len()),
        (1, 1),
        "both NS hosts asked\n{run}"
    );
    // ns2 is the lagging secondary: certkeeper waited for it, so it asked 127.0.0.2 and not ns1 twice.
    assert!(at_ns2[0] >= LAG, "{at_ns2:?}\n{run}");
    assert!(at_ns1[0] < LAG / 10, "{at_ns1:?}");
    let owner = Bed::challenge_owner(domain);
    assert!(txt_at(port, &owner).is_empty(), "TXT gone at the primary");
    eventually("TXT left on the secondary", || {
        answer_at_second_address(port, "TXT", &owner).is_some_and(|a| a.is_empty())
    });
}
