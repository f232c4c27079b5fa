//! The shared layer against real knotd, without a CA: CNAME loops, a server that never gets the value, and
//! the journal keeping the CNAME target so a killed pass's record is removed where it really is.

use std::time::Duration;

use certkeeper::solver::config::{DnsShared, Propagation};
use certkeeper::solver::journal::JournaledSolver;
use certkeeper::solver::{
    Dns01Solver, LayeredSolver, Rfc2136Settings, Rfc2136Solver, SolverError, TsigAlgorithm,
    TxtRecord,
};
use certkeeper::state::StateStore;
use certkeeper::state::memory::Memory;
use secrecy::SecretSlice;

use crate::common::bed;
use crate::common::bed::{Knot, KnotSpec, free_udp_tcp_port, txt_at, wait_for_soa};

/// A knotd of its own with `example.test.` (CNAMEs as given) and an updatable `delegate.test.`.
fn knot_with_cnames(name: &str, cnames: &str) -> Knot {
    let port = free_udp_tcp_port().unwrap();
    let soa = "@ SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60\n@ NS ns1.example.test.\n";
    let knot = bed()
        .knot_with(
            name,
            &KnotSpec {
                port,
                zones: vec![
                    (
                        "example.test.".into(),
                        format!("$ORIGIN example.test.\n$TTL 60\n{soa}ns1 A 127.0.0.1\n{cnames}"),
                    ),
                    (
                        "delegate.test.".into(),
                        format!("$ORIGIN delegate.test.\n$TTL 60\n{soa}"),
                    ),
                ],
                ..KnotSpec::default()
            },
        )
        .unwrap();
    wait_for_soa(port, "delegate.test.", &knot.log).unwrap();
    knot
}

fn layered(knot: &Knot, shared: DnsShared) -> LayeredSolver {
    use base64::Engine as _;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(knot.tsig_secret.trim())
        .unwrap();
    let mut settings = Rfc2136Settings::new(
        knot.server(),
        "acme-update.",
        TsigAlgorithm::HmacSha256,
        SecretSlice::from(secret),
    );
    settings.check_propagation = false;
    LayeredSolver::new(
        Box::new(Rfc2136Solver::new(settings)),
        shared,
        Some(knot.server()),
        Duration::from_secs(2),
    )
}

/// Runs `f` on a runtime of its own: the bed must be up first (it starts its servers blocking).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn record(fqdn: &str) -> TxtRecord {
    TxtRecord {
        fqdn: fqdn.into(),
        value: format!("v{}", rand::random::<u32>()),
    }
}

#[test]
fn a_cname_loop_is_an_error_naming_the_chain() {
    let knot = knot_with_cnames(
        "knot-loop",
        "_acme-challenge.loop CNAME _acme-challenge.loop2.example.test.\n\
         _acme-challenge.loop2 CNAME _acme-challenge.loop.example.test.\n",
    );
    let solver = layered(&knot, DnsShared::default());
    let e = block_on(solver.present(&record("_acme-challenge.loop.example.test."))).unwrap_err();
    assert!(
        matches!(e, SolverError::CnameChain { looped: true, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("loops"), "{e}");
    assert!(
        e.to_string()
            .contains("_acme-challenge.loop2.example.test."),
        "{e}"
    );
}

#[test]
fn a_server_that_never_gets_the_value_is_named_after_the_timeout() {
    let knot = knot_with_cnames("knot-stale", "");
    // Another knotd serving example.test. that never hears of the update: a secondary that is stuck.
    let stale = bed().extra_knot("knot-stuck").unwrap();
    let shared = DnsShared {
        propagation: Propagation::Authoritative,
        propagation_servers: vec![knot.server(), stale.server()],
        propagation_timeout: Duration::from_millis(600),
        ..DnsShared::default()
    };
    let solver = layered(&knot, shared);
    let rec = record("_acme-challenge.stuck.example.test.");
    let e = block_on(solver.present(&rec)).unwrap_err();
    match &e {
        SolverError::PropagationTimeout { server, .. } => {
            assert_eq!(server, &stale.server(), "{e}");
        }
        other => panic!("{other}"),
    }
    block_on(solver.cleanup(&rec)).unwrap();
}

#[test]
fn the_journal_keeps_the_cname_target_and_the_next_pass_removes_it_there() {
    let knot = knot_with_cnames("knot-journal", "_acme-challenge.j CNAME j.delegate.test.\n");
    let state = Memory::default();
    let solver = layered(&knot, DnsShared::default());
    let rec = record("_acme-challenge.j.example.test.");
    {
        let journaled = JournaledSolver::new(&solver, &state, "t-journal");
        block_on(journaled.present(&rec)).unwrap();
        // The process is killed here: no cleanup.
    }
    assert_eq!(
        txt_at(knot.port, "j.delegate.test."),
        std::slice::from_ref(&rec.value)
    );
    assert_eq!(
        state.journal("t-journal").unwrap(),
        [("j.delegate.test.".to_owned(), rec.value.clone())],
        "journaled at the target"
    );
    let next_pass = layered(&knot, DnsShared::default());
    block_on(JournaledSolver::new(&next_pass, &state, "t-journal").clean_leftovers()).unwrap();
    assert!(txt_at(knot.port, "j.delegate.test.").is_empty());
    assert!(state.journal("t-journal").unwrap().is_empty());
}
