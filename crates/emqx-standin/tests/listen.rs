//! The stand-in's process contract, which certkeeper's tests and sandbox rely on: one
//! `emqx-standin listening on http://HOST:PORT` line on stdout, then the vendor API on that port, refusing
//! requests without credentials. Being an integration test, it also makes `cargo test --workspace` build the
//! binary before certkeeper's own integration tests run.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};

#[test]
fn prints_its_address_and_refuses_requests_without_credentials() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_emqx-standin"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start emqx-standin");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the first line");
    let addr = line
        .trim()
        .strip_prefix("emqx-standin listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let mut stream = TcpStream::connect(&addr).expect("connect");
    write!(
        stream,
        "GET /api/v1/deployments/x/tls HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}
