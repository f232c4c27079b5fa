//! Knotd.

use super::*;

pub(crate) fn start_knot(dir: &Path, children: &Mutex<Vec<Child>>) -> Result<Knot, BedError> {
    // The ACL allows TXT updates anywhere in the zone: knot 3.2 cannot match "any `_acme-challenge` label"
    // (update-owner names are fixed owners or their subtrees).
    let kdir = dir.join("knot");
    fs::create_dir_all(&kdir)?;
    let port = free_udp_tcp_port()?;
    let tsig_secret = random_base64(32)?;
    let intruder_secret = random_base64(32)?;
    let tsig_secret_file = dir.join("tsig.secret");
    write_private(&tsig_secret_file, tsig_secret.as_bytes())?;
    fs::write(
        kdir.join("example.test.zone"),
        "$ORIGIN example.test.\n\
         $TTL 60\n\
         @   SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60\n\
         @   NS  ns1.example.test.\n\
         ns1 A   127.0.0.1\n\
         @   A   127.0.0.1\n",
    )?;
    let k = kdir.display();
    // Small databases and workers: the bed serves a few dozen updates. Asynchronous journal: no fsync per
    // update, which is most of an update's time. zonefile-sync -1 keeps updates out of the zone file.
    let conf = format!(
        "server:\n    rundir: {k}\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    tcp-workers: 1\n    \
         background-workers: 1\n\
         log:\n  - target: stderr\n    any: info\n\
         database:\n    storage: {k}\n    journal-db-mode: asynchronous\n    journal-db-max-size: 64M\n    \
         kasp-db-max-size: 16M\n    timer-db-max-size: 16M\n    catalog-db-max-size: 16M\n\
         key:\n  - id: {TSIG_KEY}\n    algorithm: hmac-sha256\n    secret: {tsig_secret}\n  \
         - id: {INTRUDER_KEY}\n    algorithm: hmac-sha256\n    secret: {intruder_secret}\n\
         acl:\n  - id: acme-update\n    key: {TSIG_KEY}\n    action: update\n    update-type: TXT\n\
         template:\n  - id: default\n    storage: {k}\n    zonefile-sync: -1\n\
         zone:\n  - domain: {ZONE}\n    file: {k}/example.test.zone\n    acl: acme-update\n"
    );
    let conf_path = kdir.join("knot.conf");
    fs::write(&conf_path, conf)?;
    let log = dir.join("knotd.log");
    let mut cmd = Command::new(sbin("knotd"));
    cmd.arg("-c").arg(&conf_path);
    redirect(&mut cmd, &log)?;
    let child =
        spawn_owned(cmd).map_err(|e| format!("cannot start knotd (apt-get install knot): {e}"))?;
    lock(children).push(child);

    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let out = Command::new("kdig")
            .args(["@127.0.0.1", "-p", &port.to_string()])
            .args(["+short", "+norecurse", "+time=1", "+retry=0", "SOA", ZONE])
            .output()
            .map_err(|e| format!("cannot run kdig (apt-get install knot-dnsutils): {e}"))?;
        if out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("ns1.example.test.")
        {
            break;
        }
        if exited(children) || Instant::now() > deadline {
            return Err(format!(
                "knotd did not answer SOA {ZONE} on port {port}: {}",
                tail(&log)
            )
            .into());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(Knot {
        port,
        tsig_secret,
        tsig_secret_file,
        intruder_secret,
        log,
    })
}

/// What a knotd of [`Bed::knot_with`] serves: zones from text or, as a secondary, by transfer from a primary.
#[derive(Debug, Clone, Default)]
pub struct KnotSpec {
    /// The port to listen on (UDP and TCP); chosen by the test so that primary and secondary know each other.
    pub port: u16,
    /// `(zone, zone file text)`; an empty text makes the zone a secondary of [`KnotSpec::primary`].
    pub zones: Vec<(String, String)>,
    /// `127.0.0.1@PORT` to transfer secondary zones from (and accept NOTIFY from 127.0.0.1).
    pub primary: Option<u16>,
    /// Port of a secondary to NOTIFY after each change and allow transfers to.
    pub notify: Option<u16>,
    /// The loopback address to listen on (all of 127/8 is loopback on Linux); `None` is 127.0.0.1.
    pub address: Option<String>,
    /// The address of the [`KnotSpec::notify`] secondary; `None` is 127.0.0.1.
    pub notify_address: Option<String>,
}

/// Starts a knotd as `spec` says, with the bed's TSIG key allowed to update TXT records in its own zones.
pub(crate) fn start_knot_spec(
    dir: &Path,
    spec: &KnotSpec,
    children: &Mutex<Vec<Child>>,
) -> Result<Knot, BedError> {
    fs::create_dir_all(dir)?;
    let k = dir.display();
    let tsig_secret = fs::read_to_string(dir.parent().unwrap_or(dir).join("tsig.secret"))
        .or_else(|_| random_base64(32))?;
    let tsig_secret_file = dir.join("tsig.secret");
    write_private(&tsig_secret_file, tsig_secret.as_bytes())?;
    let mut remotes = String::new();
    if let Some(port) = spec.primary {
        remotes.push_str(&format!("  - id: primary\n    address: 127.0.0.1@{port}\n"));
    }
    if let Some(port) = spec.notify {
        remotes.push_str(&format!(
            "  - id: secondary\n    address: {}@{port}\n",
            spec.notify_address.as_deref().unwrap_or("127.0.0.1")
        ));
    }
    let mut zones = String::new();
    for (zone, text) in &spec.zones {
        let file = format!("{k}/{zone}zone");
        if text.is_empty() {
            zones.push_str(&format!(
                "  - domain: {zone}\n    file: {file}\n    master: primary\n    acl: [from-primary]\n"
            ));
        } else {
            fs::write(&file, text)?;
            let notify = if spec.notify.is_some() {
                "    notify: secondary\n    acl: [acme-update, to-secondary]\n"
            } else {
                "    acl: [acme-update]\n"
            };
            zones.push_str(&format!("  - domain: {zone}\n    file: {file}\n{notify}"));
        }
    }
    let conf = format!(
        "server:\n    rundir: {k}\n    listen: {address}@{port}\n    udp-workers: 1\n    tcp-workers: 1\n    \
         background-workers: 1\n\
         log:\n  - target: stderr\n    any: info\n\
         database:\n    storage: {k}\n    journal-db-mode: asynchronous\n    journal-db-max-size: 64M\n    \
         kasp-db-max-size: 16M\n    timer-db-max-size: 16M\n    catalog-db-max-size: 16M\n\
         key:\n  - id: {TSIG_KEY}\n    algorithm: hmac-sha256\n    secret: {tsig_secret}\n\
         {remote}\
         acl:\n  - id: acme-update\n    key: {TSIG_KEY}\n    action: update\n    update-type: TXT\n  \
         - id: to-secondary\n    address: 127.0.0.0/8\n    action: transfer\n  \
         - id: from-primary\n    address: 127.0.0.0/8\n    action: notify\n\
         template:\n  - id: default\n    storage: {k}\n    zonefile-sync: -1\n\
         zone:\n{zones}",
        port = spec.port,
        address = spec.address.as_deref().unwrap_or("127.0.0.1"),
        remote = if remotes.is_empty() {
            String::new()
        } else {
            format!("remote:\n{remotes}")
        },
    );
    let conf_path = dir.join("knot.conf");
    fs::write(&conf_path, conf)?;
    let log = dir.join("knotd.log");
    let mut cmd = Command::new(sbin("knotd"));
    cmd.arg("-c").arg(&conf_path);
    redirect(&mut cmd, &log)?;
    let child =
        spawn_owned(cmd).map_err(|e| format!("cannot start knotd (apt-get install knot): {e}"))?;
    lock(children).push(child);
    Ok(Knot {
        port: spec.port,
        tsig_secret,
        tsig_secret_file,
        intruder_secret: String::new(),
        log,
    })
}

/// Waits until the knotd on `port` answers the SOA of `zone` (for a secondary: until its first transfer).
pub fn wait_for_soa(port: u16, zone: &str, log: &Path) -> Result<(), BedError> {
    wait_for_answer(port, zone, log, "+norecurse")
}

fn wait_for_answer(port: u16, zone: &str, log: &Path, recursion: &str) -> Result<(), BedError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let out = Command::new("kdig")
            .args(["@127.0.0.1", "-p", &port.to_string()])
            .args(["+short", recursion, "+time=1", "+retry=0", "SOA", zone])
            .output()
            .map_err(|e| format!("cannot run kdig (apt-get install knot-dnsutils): {e}"))?;
        if out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "knotd on port {port} did not answer SOA {zone}: {}",
                tail(log)
            )
            .into());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The TXT values at `owner` as the knotd on `port` answers them (non-recursive, straight from its zone).
pub fn txt_at(port: u16, owner: &str) -> Vec<String> {
    let out = Command::new("kdig")
        .args(["@127.0.0.1", "-p", &port.to_string()])
        .args(["+short", "+norecurse", "+time=2", "+retry=0", "TXT", owner])
        .output()
        .expect("kdig runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_matches('"').to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

impl Bed {
    /// Starts a knotd as `spec` says (files under `dir/name/`, the bed's TSIG secret); runs until the bed
    /// shuts down. The caller waits for it ([`wait_for_soa`]).
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn knot_with(&self, name: &str, spec: &KnotSpec) -> Result<Knot, BedError> {
        start_knot_spec(&self.dir.join(name), spec, &self.children)
    }

    /// Starts one more Pebble named `name` that resolves challenges at the DNS server on `dns_port`.
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn pebble_resolving_at(&self, name: &str, dns_port: u16) -> Result<Pebble, BedError> {
        start_pebble(&self.dir, name, dns_port, 0, &self.children)
    }
}

impl Bed {
    /// Starts an unbound resolving `zones` at the knotd on `knot_port` (stub zones, no cache, no DNSSEC) and
    /// returns its port: a recursive resolver for a Pebble that must follow CNAMEs across zones, which an
    /// authoritative knotd does not chase. Runs until the bed shuts down.
    ///
    /// # Errors
    /// When it cannot be started or does not answer.
    pub fn unbound_for(&self, name: &str, knot_port: u16, zones: &[&str]) -> Result<u16, BedError> {
        let dir = self.dir.join(name);
        fs::create_dir_all(&dir)?;
        let port = free_udp_tcp_port()?;
        let mut conf = format!(
            "server:\n    interface: 127.0.0.1\n    port: {port}\n    do-daemonize: no\n    username: \"\"\n    \
             chroot: \"\"\n    directory: \"{d}\"\n    pidfile: \"\"\n    use-syslog: no\n    logfile: \"\"\n    \
             do-ip6: no\n    do-not-query-localhost: no\n    access-control: 127.0.0.0/8 allow\n    \
             module-config: \"iterator\"\n    cache-max-ttl: 0\n    cache-max-negative-ttl: 0\n    \
             local-zone: \"test.\" nodefault\n    domain-insecure: \"test.\"\n    num-threads: 1\n\
             remote-control:\n    control-enable: no\n",
            d = dir.display()
        );
        for zone in zones {
            conf.push_str(&format!(
                "stub-zone:\n    name: \"{zone}\"\n    stub-addr: 127.0.0.1@{knot_port}\n"
            ));
        }
        let conf_path = dir.join("unbound.conf");
        fs::write(&conf_path, conf)?;
        let log = dir.join("unbound.log");
        let mut cmd = Command::new(sbin("unbound"));
        cmd.arg("-d").arg("-c").arg(&conf_path);
        redirect(&mut cmd, &log)?;
        let child = spawn_owned(cmd)
            .map_err(|e| format!("cannot start unbound (apt-get install unbound): {e}"))?;
        lock(&self.children).push(child);
        let zone = zones.first().copied().unwrap_or(ZONE);
        wait_for_answer(port, zone, &log, "+recurse")?;
        Ok(port)
    }
}
