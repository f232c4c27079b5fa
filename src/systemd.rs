//! systemd's notification protocol (`sd_notify`): `READY=1`, `STATUS=`, `RELOADING=1`, `STOPPING=1`,
//! `WATCHDOG=1`, sent as datagrams to `$NOTIFY_SOCKET` when it is set, and nothing otherwise.
//!
//! Hand-written rather than a crate: it is one datagram send, and the only subtlety is the abstract socket
//! namespace (`@name`). Failures to notify are logged, never fatal: the service still works, systemd just
//! learns less.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where notifications go; inert when the process was not started by systemd with `NotifyAccess`.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, String)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`.
    pub fn from_env() -> Notifier {
        let target = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty())
            .and_then(|path| match UnixDatagram::unbound() {
                Ok(sock) => Some((sock, path)),
                Err(e) => {
                    tracing::warn!("cannot create the sd_notify socket: {e}");
                    None
                }
            });
        Notifier { target }
    }

    /// Sends one notification (several `KEY=VALUE` lines may be joined with `\n`).
    pub fn send(&self, message: &str) {
        let Some((sock, path)) = &self.target else {
            return;
        };
        let result = if let Some(name) = path.strip_prefix('@') {
            abstract_send(sock, name.as_bytes(), message.as_bytes())
        } else {
            sock.send_to(message.as_bytes(), path).map(|_| ())
        };
        if let Err(e) = result {
            tracing::warn!(socket = %path, "sd_notify failed: {e}");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// `STATUS=`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    /// `RELOADING=1` with the monotonic timestamp systemd's notify-reload protocol asks for.
    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Half of `$WATCHDOG_USEC` when the watchdog is enabled for this process.
    pub fn watchdog_interval() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Some(pid) = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            && pid != std::process::id()
        {
            return None;
        }
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

#[cfg(target_os = "linux")]
fn abstract_send(sock: &UnixDatagram, name: &[u8], message: &[u8]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt as _;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(message, &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn abstract_send(_: &UnixDatagram, _: &[u8], _: &[u8]) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets are Linux-only",
    ))
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// A log line format for journald: each line starts with its syslog priority (`<3>` error, `<4>` warning, `<6>`
/// info, `<7>` debug and trace), which journald reads from a stream (`SyslogLevelPrefix=`, on by default), so
/// `journalctl -p err` finds failures. No timestamp (the journal stamps lines) and no colours.
pub struct JournalFormat(
    tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, ()>,
);

impl Default for JournalFormat {
    fn default() -> Self {
        JournalFormat(
            tracing_subscriber::fmt::format()
                .without_time()
                .with_target(false)
                .with_ansi(false),
        )
    }
}

/// The syslog priority journald files a line of `level` under.
pub fn priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some((UnixDatagram::unbound().unwrap(), path.display().to_string())),
        };
        n.ready("ok");
        let mut buf = [0u8; 128];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok");
    }

    #[test]
    fn inert_without_socket() {
        Notifier { target: None }.stopping();
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        use tracing::Level;
        let got: Vec<u8> = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .into_iter()
        .map(super::priority)
        .collect();
        assert_eq!(got, [3, 4, 6, 7, 7]);
    }
}
