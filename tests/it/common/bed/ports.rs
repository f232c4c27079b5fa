//! Ports and randomness.

use super::*;

/// `N` distinct loopback TCP ports that were free a moment ago (all held until all are chosen).
pub fn free_tcp_ports<const N: usize>() -> io::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// A loopback port free for both UDP and TCP (DNS uses both).
pub(crate) fn free_udp_tcp_port() -> io::Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other(
        "no loopback port free for both UDP and TCP",
    ))
}

pub(crate) fn random_base64(len: usize) -> io::Result<String> {
    let mut bytes = vec![0; len];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}
