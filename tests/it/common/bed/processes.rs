//! Processes.

use super::*;

pub(crate) type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` as an owned child: its own process group, killed when this process dies.
///
/// PDEATHSIG fires when the *thread* that forked the child exits, not the process, so all children are forked
/// by one thread that lives as long as the process (test threads come and go).
///
/// # Errors
/// When the command cannot be spawned.
pub fn spawn_owned(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("bed-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            // Unwrap: failing to start a thread at test start is unrecoverable.
            .expect("start the bed's spawner thread");
        tx
    });
    let parent = std::process::id();
    // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid) and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.process_group(0);
    let (tx, rx) = mpsc::channel();
    spawner
        .send((cmd, tx))
        .map_err(|_| io::Error::other("the bed's spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the bed's spawner thread is gone"))?
}

/// Kills the child's whole process group and reaps the child.
pub fn kill_group(child: &mut Child) {
    // Only while the child is unreaped is its pid (= its group id, process_group(0)) surely still ours.
    if let (Ok(None), Ok(pid)) = (child.try_wait(), i32::try_from(child.id())) {
        // SAFETY: plain syscall on our own child's process group.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `cmd` with stdout/stderr captured, killing it after `timeout`.
///
/// # Panics
/// When it cannot be spawned or times out.
pub fn run_captured(mut cmd: Command, timeout: Duration) -> Run {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = spawn_owned(cmd).unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    // Unwraps: both were set to piped above.
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                kill_group(&mut child);
                let stderr = stderr.join().unwrap_or_default();
                panic!("{program} ran longer than {timeout:?} and was killed; stderr:\n{stderr}");
            }
            Err(e) => panic!("waiting for {program}: {e}"),
        }
    };
    // The process exited; its pipes close unless a grandchild holds them, which certkeeper does not spawn.
    Run {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

pub(crate) fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Reads the first line of `stdout` within `timeout`, then keeps draining it so the child never blocks on a
/// full pipe.
pub(crate) fn first_line(stdout: ChildStdout, timeout: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = io::copy(&mut reader, &mut io::sink());
    });
    rx.recv_timeout(timeout).ok().filter(|l| !l.is_empty())
}

/// Removes what would make a child's behaviour depend on the developer's machine (or on the systemd unit the
/// tests happen to run under).
pub fn scrub_env(cmd: &mut Command) {
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "CERTKEEPER_CONFIG",
        "CREDENTIALS_DIRECTORY",
        "RUST_LOG",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "JOURNAL_STREAM",
    ] {
        cmd.env_remove(var);
    }
}

pub(crate) fn redirect(cmd: &mut Command, log: &Path) -> io::Result<()> {
    let file = fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    Ok(())
}

/// `name` from PATH, else from /usr/sbin or /sbin: Debian puts knotd there, outside a normal user's PATH.
pub(crate) fn sbin(name: &str) -> PathBuf {
    let in_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    if !in_path {
        for dir in ["/usr/sbin", "/sbin", "/usr/local/sbin"] {
            let candidate = Path::new(dir).join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from(name)
}

/// True if and only if one of `children` has exited.
pub(crate) fn exited(children: &Mutex<Vec<Child>>) -> bool {
    lock(children)
        .iter_mut()
        .any(|c| !matches!(c.try_wait(), Ok(None)))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves the list of children intact.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The last lines of a log file, for error messages.
pub(crate) fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(15);
    format!("({}):\n{}", path.display(), lines[start..].join("\n"))
}
