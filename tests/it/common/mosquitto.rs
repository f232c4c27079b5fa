//! A real mosquitto broker with a TLS listener reading a files target's PEM files, for the files target tests
//! (issue 10). mosquitto 2.0 reloads its certificates on SIGHUP, so `reload = ["kill", "-HUP", PID]` is what an
//! operator would configure.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::bed::{free_tcp_ports, kill_group, spawn_owned};

/// The mosquitto binary (Debian's `mosquitto` package).
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A running broker; killed on drop.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    /// `127.0.0.1:PORT` of the TLS listener.
    pub addr: String,
    /// Its log.
    pub log: PathBuf,
}

impl Mosquitto {
    /// Starts mosquitto in `dir` with a TLS listener serving `cert` + `key`, and waits until it completes a TLS
    /// handshake.
    ///
    /// # Panics
    /// When mosquitto is missing (`apt-get install mosquitto mosquitto-clients`) or does not come up.
    pub fn start(dir: &Path, cert: &Path, key: &Path) -> Mosquitto {
        let [port] = free_tcp_ports::<1>().expect("a free port");
        let log = dir.join("mosquitto.log");
        let mut conf = String::new();
        // As root, mosquitto would drop to the `mosquitto` user, which cannot read a 0600 key of the test's.
        // SAFETY: plain syscall.
        if unsafe { libc::geteuid() } == 0 {
            conf.push_str("user root\n");
        }
        let _ = write!(
            conf,
            "persistence false\nallow_anonymous true\nlog_dest file {}\nlog_type all\n\
             listener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
            log.display(),
            cert.display(),
            key.display()
        );
        let conf_path = dir.join("mosquitto.conf");
        fs::write(&conf_path, conf).expect("write mosquitto.conf");
        let mut cmd = Command::new(MOSQUITTO);
        cmd.arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("mosquitto.stderr")).expect("create stderr file"));
        let child = spawn_owned(cmd).unwrap_or_else(|e| {
            panic!("cannot start {MOSQUITTO} ({e}); apt-get install mosquitto mosquitto-clients")
        });
        let mut broker = Mosquitto {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
        };
        let start = Instant::now();
        while served_serial(&broker.addr, "localhost").is_none() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("mosquitto exited ({status}) at start\n{}", broker.logs(dir));
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "mosquitto did not serve TLS within 20 s\n{}",
                broker.logs(dir)
            );
            thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    /// The broker's pid, for `kill -HUP`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The broker's log and stderr, for failure messages.
    pub fn logs(&self, dir: &Path) -> String {
        format!(
            "--- mosquitto.log ---\n{}\n--- mosquitto.stderr ---\n{}",
            fs::read_to_string(&self.log).unwrap_or_default(),
            fs::read_to_string(dir.join("mosquitto.stderr")).unwrap_or_default()
        )
    }

    /// Publishes one message over TLS with `mosquitto_pub`, trusting only `cafile`; returns its exit code and
    /// output. The listener is reached by IP, so the host name check is off (`--insecure`): the chain is still
    /// verified against `cafile`.
    pub fn publish(&self, cafile: &Path) -> (Option<i32>, String) {
        let (host, port) = self.addr.rsplit_once(':').expect("host:port");
        let out = Command::new("mosquitto_pub")
            .args(["-h", host, "-p", port, "--cafile"])
            .arg(cafile)
            .args([
                "--insecure",
                "-t",
                "certkeeper/test",
                "-m",
                "hello",
                "-q",
                "1",
            ])
            .output()
            .expect("run mosquitto_pub (apt-get install mosquitto-clients)");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// The serial of the leaf `addr` serves for `sni`, `None` when no handshake completes.
pub fn served_serial(addr: &str, sni: &str) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime
        .block_on(certkeeper::verify::served_leaf(addr, sni))
        .ok()
        .map(|s| s.serial)
}
