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
