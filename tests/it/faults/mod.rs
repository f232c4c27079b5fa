//! Issue 5: never lose a certificate, never waste one. Crash after each persisted step (SIGKILL of a real child
//! stopped at a failpoint, feature `failpoints`), the fault matrix against the real Pebble and knotd and the
//! stand-in, the endpoint check after `running` against a real TLS listener, and secrets in logs and files.
//!
//! Every test has its own names (`t-<test>.example.test`), stand-in and state directory. Tests that count Pebble's
//! orders or issuances hold the bed exclusively ([`common::Bed::exclusive`]) over all of their runs.

use crate::common;

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread;
use std::time::{Duration as StdDuration, Instant};

use base64::Engine as _;
use common::bed::{self as testbed, Run};
use common::probe::{
    bundle_serial, deployed_serial, due, failure, record, serial_of, step, writes,
};
use common::{
    Case, KEY, SECRET, assert_deployed, assert_no_txt, bed, run_with_env, write_client_ca,
};
use serde_json::{Value, json};
use time::Duration;

// ---- helpers ----------------------------------------------------------------------------------------------------

/// A loopback TCP port that was free a moment ago: connections to it are refused.
fn closed_tcp_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A loopback port free for both UDP and TCP a moment ago (a DNS server that is down).
fn closed_dns_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for UDP and TCP");
}

/// TXT strings at `owner` on the knotd listening on `port`.
fn txt_at(port: u16, owner: &str) -> Vec<String> {
    let out = Command::new("kdig")
        .args(["@127.0.0.1", "-p", &port.to_string()])
        .args(["+short", "+norecurse", "+time=2", "+retry=2", "TXT", owner])
        .output()
        .expect("run kdig");
    assert!(out.status.success(), "kdig failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_matches('"').to_owned())
        .collect()
}

/// A loopback HTTP server that answers every request with `response` (a raw HTTP response), or, with `None`,
/// accepts connections and never answers. Counts connections.
struct RawServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl RawServer {
    fn start(response: Option<&'static str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        // Detached: it lives until the test process exits.
        thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                match response {
                    Some(answer) => {
                        let _ = stream.set_read_timeout(Some(StdDuration::from_secs(2)));
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n")
                            && stream.read(&mut byte).unwrap_or(0) == 1
                        {
                            head.push(byte[0]);
                        }
                        let _ = stream.write_all(answer.as_bytes());
                    }
                    None => held.push(stream),
                }
            }
        });
        Self { addr, connections }
    }

    fn url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }
}

mod ca;
#[cfg(feature = "failpoints")]
mod crash;
mod dns;
mod emqx_api;
mod endpoint;
mod secrets;
