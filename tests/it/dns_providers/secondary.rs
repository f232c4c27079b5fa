//! `propagation = "authoritative"` with a primary and a lagging secondary (NOTIFY + zone transfer through a
//! proxy that holds every transfer back), Pebble resolving at the secondary.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::common::bed::quote;
use crate::common::bed::{Knot, KnotSpec, Pebble, free_udp_tcp_port, txt_at, wait_for_soa};
use crate::common::probe::due;
use crate::common::{Bed, assert_deployed, bed, run_with_env};

/// How long the proxy holds each TCP request (SOA checks, zone transfers) back before passing it on.
pub(super) const LAG: Duration = Duration::from_millis(1500);

/// Forwards DNS on `port` (UDP at once, each TCP request after [`LAG`]) to 127.0.0.1:`upstream`. Threads live until the
/// test binary exits; they hold nothing but sockets.
pub(super) fn lagging_proxy(port: u16, upstream: u16) {
    let udp = UdpSocket::bind(("127.0.0.1", port)).expect("proxy UDP port");
    thread::spawn(move || {
        let mut buffer = [0u8; 65535];
        while let Ok((n, from)) = udp.recv_from(&mut buffer) {
            let out = UdpSocket::bind("127.0.0.1:0").expect("proxy socket");
            out.set_read_timeout(Some(Duration::from_secs(3))).ok();
            if out.send_to(&buffer[..n], ("127.0.0.1", upstream)).is_ok() {
                let mut answer = [0u8; 65535];
                if let Ok(m) = out.recv(&mut answer) {
                    let _ = udp.send_to(&answer[..m], from);
                }
            }
        }
    });
    let tcp = TcpListener::bind(("127.0.0.1", port)).expect("proxy TCP port");
    thread::spawn(move || {
        for client in tcp.incoming().flatten() {
            thread::spawn(move || {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up = thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        // Every request (SOA check, IXFR) is held back, on new and reused connections alike.
                        thread::sleep(LAG);
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_read, mut c_write) = (server, client);
                let mut buf = [0u8; 16384];
                while let Ok(n) = s_read.read(&mut buf) {
                    if n == 0 || c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c_write.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
}

/// How long certkeeper's debug log says `server` took to answer the value (`TXT visible ... waited=`).
pub(super) fn waited_at(log: &str, server: &str) -> Vec<Duration> {
    log.lines()
        .filter(|l| l.contains("TXT visible") && l.contains(&format!("server={server} ")))
        .filter_map(|l| {
            l.split("waited=")
                .nth(1)?
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .filter_map(|w| {
            let (number, scale) = if let Some(ms) = w.strip_suffix("ms") {
                (ms, 1e-3)
            } else if let Some(us) = w.strip_suffix("µs") {
                (us, 1e-6)
            } else {
                (w.strip_suffix('s')?, 1.0)
            };
            Some(Duration::from_secs_f64(number.parse::<f64>().ok()? * scale))
        })
        .collect()
}

/// A primary knotd holding `zone`, a secondary that transfers it through a [`lagging_proxy`], and a Pebble
/// resolving at the secondary: the CA sees the zone only once the slow transfer is done. `suffix` keeps each
/// test's directories apart.
fn lagging_pair(suffix: &str, zone: &str) -> (Knot, Knot, Pebble) {
    let (primary_port, secondary_port, proxy_port) = (
        free_udp_tcp_port().unwrap(),
        free_udp_tcp_port().unwrap(),
        free_udp_tcp_port().unwrap(),
    );
    lagging_proxy(proxy_port, primary_port);
    let primary = bed()
        .knot_with(
            &format!("knot-primary{suffix}"),
            &KnotSpec {
                port: primary_port,
                zones: vec![("example.test.".into(), zone.into())],
                notify: Some(secondary_port),
                ..KnotSpec::default()
            },
        )
        .unwrap();
    let secondary = bed()
        .knot_with(
            &format!("knot-secondary{suffix}"),
            &KnotSpec {
                port: secondary_port,
                zones: vec![("example.test.".into(), String::new())],
                primary: Some(proxy_port),
                ..KnotSpec::default()
            },
        )
        .unwrap();
    wait_for_soa(primary_port, "example.test.", &primary.log).unwrap();
    wait_for_soa(secondary_port, "example.test.", &secondary.log).unwrap();
    let pebble = bed()
        .pebble_resolving_at(&format!("pebble-secondary{suffix}"), secondary_port)
        .unwrap();
    (primary, secondary, pebble)
}

#[test]
fn authoritative_propagation_waits_for_a_lagging_secondary_the_ca_asks() {
    let case = Case::new("secondary");
    let domain = "t-secondary.example.test";
    let zone = "$ORIGIN example.test.\n$TTL 60\n\
                @ SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60\n\
                @ NS ns1.example.test.\n@ NS ns2.example.test.\nns1 A 127.0.0.1\nns2 A 127.0.0.1\n";
    let (primary, secondary, pebble) = lagging_pair("", zone);

    case.deployment("t-secondary", "one-way", due());
    let builder = case
        .config()
        .pebble(&pebble)
        .dns("server", &primary.server())
        .deployment("t-secondary", &[domain]);
    let servers = format!(
        "[{}, {}]",
        quote(&primary.server()),
        quote(&secondary.server())
    );
    let text = builder.toml().replace(
        "[dns.bed]\n",
        &format!("[dns.bed]\npropagation = \"authoritative\"\npropagation_servers = {servers}\n"),
    );
    let config = write_config(&builder, &text);

    let run = run_with_env(
        &config,
        &["renew"],
        &[("RUST_LOG", "info,certkeeper::solver=debug")],
    );

    assert_eq!(run.code(), Some(0), "{run}");
    assert_deployed(&case, "t-secondary", &[domain]);
    let at_primary = waited_at(&run.stderr, &primary.server());
    let at_secondary = waited_at(&run.stderr, &secondary.server());
    assert_eq!((at_primary.len(), at_secondary.len()), (1, 1), "{run}");
    // The secondary lagged by at least the proxy's hold-back, the primary answered at once, and certkeeper
    // waited for the secondary before telling the CA.
    assert!(at_secondary[0] >= LAG, "{at_secondary:?}\n{run}");
    assert!(at_primary[0] < LAG / 10, "{at_primary:?}");
    // The TXT is gone from both, the secondary after its next (lagging) transfer.
    let owner = Bed::challenge_owner(domain);
    assert!(txt_at(primary.port, &owner).is_empty());
    let deadline = Instant::now() + Duration::from_secs(15);
    while !txt_at(secondary.port, &owner).is_empty() {
        assert!(Instant::now() < deadline, "TXT left on the secondary");
        thread::sleep(Duration::from_millis(100));
    }
}

/// The control: checking only the primary, the CA asks the lagging secondary too early and validation fails
/// — so the test above passes because certkeeper waited, not because the secondary was quick.
#[test]
fn primary_only_propagation_loses_to_the_lagging_secondary() {
    let case = Case::new("secondary-ctl");
    let domain = "t-secondary-ctl.example.test";
    let zone = "$ORIGIN example.test.\n$TTL 60\n\
                @ SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60\n\
                @ NS ns1.example.test.\nns1 A 127.0.0.1\n";
    let (primary, _secondary, pebble) = lagging_pair("-ctl", zone);

    case.deployment("t-secondary-ctl", "one-way", due());
    let builder = case
        .config()
        .pebble(&pebble)
        .dns("server", &primary.server())
        .dns("propagation", "primary")
        .deployment("t-secondary-ctl", &[domain]);
    let config = builder.write();

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure_lines(&run, "t-secondary-ctl");
    assert!(line.contains("could not validate"), "{line}\n{run}");
}
