//! The endpoint check after `running`, against a real TLS listener whose certificate can be switched.

use super::*;

/// A TLS listener on loopback whose certificate can be switched while it runs.
struct TlsEndpoint {
    addr: SocketAddr,
    state: Arc<Served>,
    runtime: Option<tokio::runtime::Runtime>,
}

#[derive(Debug)]
struct Served {
    key: RwLock<Arc<rustls::sign::CertifiedKey>>,
    handshakes: AtomicUsize,
    sni: Mutex<Vec<String>>,
}

impl rustls::server::ResolvesServerCert for Served {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            self.sni.lock().unwrap().push(name.to_owned());
        }
        self.handshakes.fetch_add(1, Ordering::SeqCst);
        Some(self.key.read().unwrap().clone())
    }
}

/// A certificate chain and key, PEM, as rustls serves them.
fn certified_key(chain_pem: &str, key_pem: &str) -> Arc<rustls::sign::CertifiedKey> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certificates PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).expect("a usable key");
    Arc::new(rustls::sign::CertifiedKey::new(certs, signer))
}

/// A self-signed certificate for `domain`: `(cert_pem, key_pem)`.
fn self_signed(domain: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![domain.to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("self-sign");
    (cert.pem(), key.serialize_pem())
}

impl TlsEndpoint {
    fn start(initial: Arc<rustls::sign::CertifiedKey>) -> Self {
        let state = Arc::new(Served {
            key: RwLock::new(initial),
            handshakes: AtomicUsize::new(0),
            sni: Mutex::new(Vec::new()),
        });
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(state.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                    }
                });
            }
        });
        Self {
            addr,
            state,
            runtime: Some(runtime),
        }
    }

    fn serve(&self, key: Arc<rustls::sign::CertifiedKey>) {
        *self.state.key.write().unwrap() = key;
    }

    fn handshakes(&self) -> usize {
        self.state.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsEndpoint {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Renews `id` with `endpoint` pointing at a listener that serves an old certificate and, `switch_after` once the
/// stand-in reports running, the pushed one (`None`: never). Returns the run, the listener and when it switched.
fn verify_case(
    case: &Case,
    id: &str,
    domain: &str,
    verify_timeout: &str,
    switch_after: Option<StdDuration>,
) -> (Run, TlsEndpoint, String) {
    let (old_cert, old_key) = self_signed(domain);
    let old_serial = serial_of(&old_cert);
    let endpoint = TlsEndpoint::start(certified_key(&old_cert, &old_key));
    case.deployment(id, "one-way", due());
    let config = case
        .config()
        .deployment(id, &[domain])
        .with("endpoint", &endpoint.addr.to_string())
        .with("endpoint_sni", &format!("sni.{domain}"))
        .with("verify_timeout", verify_timeout)
        .write();

    let done = AtomicBool::new(false);
    let run = thread::scope(|s| {
        s.spawn(|| {
            let Some(after) = switch_after else { return };
            while !done.load(Ordering::SeqCst) {
                let view = case.standin.deployment(id);
                if view["status"] == "running" && view["writes"].as_u64() >= Some(1) {
                    thread::sleep(after);
                    endpoint.serve(certified_key(
                        view["cert"].as_str().unwrap(),
                        view["key"].as_str().unwrap(),
                    ));
                    return;
                }
                thread::sleep(StdDuration::from_millis(50));
            }
        });
        let run = case.run(&config, &["renew"]);
        done.store(true, Ordering::SeqCst);
        run
    });
    (run, endpoint, old_serial)
}

#[test]
fn verify_waits_until_the_endpoint_serves_the_pushed_certificate() {
    let case = Case::new("verify");
    let id = "t-verify";
    let domain = "t-verify.example.test";
    let started = Instant::now();
    let (run, endpoint, _) = verify_case(&case, id, domain, "20s", Some(StdDuration::from_secs(3)));

    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr
            .contains("the endpoint serves the new certificate"),
        "{run}"
    );
    assert_eq!(step(&case, id).as_deref(), Some("verified"));
    assert!(endpoint.handshakes() >= 2, "it retried until the switch");
    assert!(started.elapsed() >= StdDuration::from_secs(3));
    let snis = endpoint.state.sni.lock().unwrap().clone();
    assert!(
        !snis.is_empty() && snis.iter().all(|n| *n == format!("sni.{domain}")),
        "endpoint_sni is sent: {snis:?}"
    );
    assert_deployed(&case, id, &[domain]);
    case.assert_invariants();
}

#[test]
fn verify_mismatch_fails_with_both_serials() {
    let case = Case::new("mismatch");
    let id = "t-mismatch";
    let domain = "t-mismatch.example.test";
    let (run, endpoint, old_serial) = verify_case(&case, id, domain, "4s", None);

    assert_eq!(run.code(), Some(1), "{run}");
    let line = failure(&run, id);
    let pushed = deployed_serial(&case, id);
    assert!(
        line.contains(&old_serial) && line.contains(&pushed),
        "both serials ({old_serial} served, {pushed} pushed): {line}"
    );
    assert!(endpoint.handshakes() >= 2, "it retried");
    assert_eq!(step(&case, id).as_deref(), Some("active"), "not verified");
    case.assert_invariants();
}

#[test]
fn a_verified_certificate_still_counts_as_the_active_one() {
    // After `verified`, the next pass knows the certificate it pushed exactly as after `active`: not due, from
    // local state, no request to the vendor.
    let case = Case::new("verified2");
    let id = "t-verified2";
    let domain = "t-verified2.example.test";
    let (run, _endpoint, _) = verify_case(&case, id, domain, "20s", Some(StdDuration::ZERO));
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(step(&case, id).as_deref(), Some("verified"));
    let requests = case.standin.log().len();

    let again = case.run(&case.dir.path().join("config.toml"), &["renew"]);

    assert_eq!(again.code(), Some(0), "{again}");
    assert!(
        again.stdout.contains("[from local state, no API request]"),
        "{again}\n{}",
        case.request_summary()
    );
    assert_eq!(
        case.standin.log().len(),
        requests,
        "{}",
        case.request_summary()
    );
    case.assert_invariants();
}

#[test]
fn the_endpoint_tells_the_lifetime_of_a_certificate_certkeeper_did_not_push() {
    // A 20-day certificate with 8 days left: knowing only `expire`, the 30-day fallback would renew it now; the
    // handshake shows its lifetime, so the lifetime rule (renew with a third left, ~6.7 days) says not yet.
    let case = Case::new("learned");
    let id = "t-learned";
    let domain = "t-learned.example.test";
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("whole second");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()]).expect("params");
    params.not_before = now - Duration::days(12);
    params.not_after = now + Duration::days(8);
    let cert = params.self_signed(&key).expect("self-sign");
    let endpoint = TlsEndpoint::start(certified_key(&cert.pem(), &key.serialize_pem()));
    case.deployment(id, "one-way", Some(now + Duration::days(8)));
    let config = case
        .config()
        .deployment(id, &[domain])
        .with("endpoint", &endpoint.addr.to_string())
        .write();

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(0), "{run}");
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("not due") && line.contains("lifetime rule"),
        "{run}"
    );
    assert_eq!(acme.orders, 0, "{acme:?}");
    assert!(endpoint.handshakes() >= 1, "the endpoint was asked");
    assert!(
        record(&case, id)["served"]["not_before"].is_string(),
        "the lifetime is recorded"
    );
    case.assert_invariants();
}
