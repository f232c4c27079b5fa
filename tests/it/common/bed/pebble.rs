//! Pebble.

use super::*;

/// Starts Pebble `name` (its files in `dir/name/`, its log `dir/name.log`) resolving at knotd on `knot_port` and
/// rejecting `nonce_reject` percent of good nonces.
pub(crate) fn start_pebble(
    dir: &Path,
    name: &str,
    knot_port: u16,
    nonce_reject: u8,
    children: &Mutex<Vec<Child>>,
) -> Result<Pebble, BedError> {
    start_pebble_with(
        dir,
        name,
        knot_port,
        nonce_reject,
        &serde_json::json!({}),
        children,
    )
}

/// [`start_pebble`] with `settings` (an object) merged into the `pebble` section of its config.
pub(crate) fn start_pebble_with(
    dir: &Path,
    name: &str,
    knot_port: u16,
    nonce_reject: u8,
    settings: &Value,
    children: &Mutex<Vec<Child>>,
) -> Result<Pebble, BedError> {
    let pdir = dir.join(name);
    fs::create_dir_all(&pdir)?;
    let (ca_pem, cert_pem, key_pem) = https_certificate()?;
    let ca_path = pdir.join("ca.pem");
    fs::write(&ca_path, ca_pem.as_bytes())?;
    fs::write(pdir.join("cert.pem"), cert_pem)?;
    write_private(&pdir.join("key.pem"), key_pem.as_bytes())?;

    let [listen, management, http, tls] = free_tcp_ports::<4>()?;
    let mut config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": pdir.join("cert.pem"),
            "privateKey": pdir.join("key.pem"),
            // Unused (DNS-01 only), but must not collide with anything.
            "httpPort": http,
            "tlsPort": tls,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }
    });
    if let (Some(pebble), Some(extra)) = (config["pebble"].as_object_mut(), settings.as_object()) {
        for (key, value) in extra {
            pebble.insert(key.clone(), value.clone());
        }
    }
    let config_path = pdir.join("pebble-config.json");
    fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;

    let log = dir.join(format!("{name}.log"));
    let mut cmd = Command::new("pebble");
    // `-strict=false`, not `-strict false`: the latter enables strict mode and drops the flags after it.
    cmd.arg("-config")
        .arg(&config_path)
        .arg("-dnsserver")
        .arg(format!("127.0.0.1:{knot_port}"))
        .arg("-strict=false")
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", nonce_reject.to_string())
        .env("PEBBLE_AUTHZREUSE", "0")
        .current_dir(&pdir);
    scrub_env(&mut cmd);
    redirect(&mut cmd, &log)?;
    let child = spawn_owned(cmd)
        .map_err(|e| format!("cannot start pebble (apt-get install pebble): {e}"))?;
    lock(children).push(child);

    let directory_url = format!("https://127.0.0.1:{listen}/dir");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match https_get(&directory_url, ca_pem.as_bytes()) {
            Ok((200, body)) if body.contains("newOrder") => break,
            _ if exited(children) || Instant::now() > deadline => {
                return Err(
                    format!("pebble did not answer {directory_url}: {}", tail(&log)).into(),
                );
            }
            _ => thread::sleep(Duration::from_millis(50)),
        }
    }
    Ok(Pebble {
        directory_url,
        management_url: format!("https://127.0.0.1:{management}"),
        ca_pem: ca_path,
        log,
    })
}

/// A throwaway CA and a leaf for `localhost`/`127.0.0.1` signed by it: `(ca_pem, leaf_pem, leaf_key_pem)`.
pub(crate) fn https_certificate() -> Result<(String, String, String), BedError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "certkeeper test bed CA (throwaway)");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
    Ok((ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem()))
}

/// `GET url` trusting only `ca_pem`: `(status, body)`.
pub fn https_get(url: &str, ca_pem: &[u8]) -> Result<(u16, String), BedError> {
    // reqwest is built without a default crypto provider; a second install attempt fails harmlessly.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem)?)
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let response = client.get(url).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    })
}
