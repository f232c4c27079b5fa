//! An ARI-capable (RFC 9773) test double in front of Pebble, which has no ARI.
//!
//! [`AriProxy`] is an HTTPS reverse proxy: every request goes to the Pebble it fronts with its `Host` header
//! unchanged. Pebble builds the URLs of its answers (`Location`, `Link`, the directory, order and authorization
//! URLs) from the request's `Host`, and checks a JWS's `url` against `https://{Host}{path}`, so with `Host` kept
//! the client sees only the proxy's URLs and every signed request stays valid: the proxy is transparent.
//!
//! On top of that it
//! - adds `renewalInfo` to the directory (`GET /dir`);
//! - answers `GET /renewal-info/{certID}` itself with the window the test set ([`AriProxy::set_window`]) and a
//!   `Retry-After` (instant-acme requires one);
//! - reads the `replaces` field of every new order (`POST /order-plz`, JWS payload), records it, and echoes it
//!   in the order Pebble created (RFC 9773 §5: the server must reflect it; instant-acme checks that), since
//!   Pebble ignores the field;
//! - can reject the next orders carrying `replaces` with `409 alreadyReplaced`, as a CA does for a certificate
//!   that was already replaced ([`AriProxy::reject_replaces`]).
//!
//! Its HTTPS certificate comes from its own throwaway CA; [`AriProxy::trust_roots`] holds that CA and Pebble's,
//! for certkeeper's `[acme] trust_roots`.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::bed::{Pebble, write_private};

/// The default `Retry-After` of renewal-info answers, in seconds: six hours, as Let's Encrypt says.
pub const DEFAULT_RETRY_AFTER: u64 = 6 * 3600;
/// The path under which the proxy serves renewal information.
pub const RENEWAL_INFO_PATH: &str = "/renewal-info";

/// One request the proxy handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `GET`, `POST`, `HEAD`.
    pub method: String,
    /// Path (and query).
    pub path: String,
    /// The status the client got.
    pub status: u16,
}

/// One new-order request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSeen {
    /// The `replaces` field of the JWS payload, if any.
    pub replaces: Option<String>,
    /// The status the client got (409 when the proxy rejected `replaces`).
    pub status: u16,
}

#[derive(Debug)]
struct State {
    window: Option<(OffsetDateTime, OffsetDateTime)>,
    retry_after: u64,
    reject_replaces: u32,
    fail_downloads: u32,
    requests: Vec<Seen>,
    orders: Vec<OrderSeen>,
    renewal_info: Vec<String>,
}

/// A running ARI proxy; stopped on drop.
pub struct AriProxy {
    /// The directory URL certkeeper uses: `https://127.0.0.1:PORT/dir`.
    pub directory_url: String,
    /// PEM file with the proxy's CA and Pebble's HTTPS CA: certkeeper's `trust_roots`.
    pub trust_roots: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl AriProxy {
    /// Starts a proxy in front of `pebble`; its files (the trust roots) go to `dir`.
    ///
    /// # Panics
    /// When it cannot be started: the test cannot run.
    pub fn start(pebble: &Pebble, dir: &Path) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (ca_pem, chain, key) = proxy_certificate();
        let pebble_ca = fs::read(&pebble.ca_pem).expect("read Pebble's HTTPS CA");
        let trust_roots = dir.join("ari-proxy-trust.pem");
        let mut roots = pebble_ca.clone();
        roots.extend_from_slice(b"\n");
        roots.extend_from_slice(ca_pem.as_bytes());
        write_private(&trust_roots, &roots).expect("write the proxy's trust roots");

        let upstream = pebble
            .directory_url
            .strip_suffix("/dir")
            .expect("Pebble's directory ends in /dir")
            .to_owned();
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(&pebble_ca).expect("Pebble's CA is PEM"),
            )
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build the proxy's HTTPS client");
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("the proxy's certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(Mutex::new(State {
            window: None,
            retry_after: DEFAULT_RETRY_AFTER,
            reject_replaces: 0,
            fail_downloads: 0,
            requests: Vec::new(),
            orders: Vec::new(),
            renewal_info: Vec::new(),
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::new(Shared {
            client,
            upstream,
            authority: addr.to_string(),
            state: state.clone(),
        });
        let thread = serve(listener, acceptor, shared, stopped);
        Self {
            directory_url: format!("https://{addr}/dir"),
            trust_roots,
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Answers renewal-info requests with this suggested window from now on.
    pub fn set_window(&self, start: OffsetDateTime, end: OffsetDateTime) {
        self.lock().window = Some((start, end));
    }

    /// The `Retry-After` (seconds) of renewal-info answers from now on.
    pub fn set_retry_after(&self, seconds: u64) {
        self.lock().retry_after = seconds;
    }

    /// Rejects the next `n` new orders that carry `replaces` with `409 alreadyReplaced`.
    pub fn reject_replaces(&self, n: u32) {
        self.lock().reject_replaces = n;
    }

    /// Answers the next `n` certificate downloads (`POST /certZ/…`) with `503 serverInternal`, as a CA does in
    /// a short outage after it issued the certificate.
    pub fn fail_downloads(&self, n: u32) {
        self.lock().fail_downloads = n;
    }

    /// Every new order so far, in order.
    pub fn orders(&self) -> Vec<OrderSeen> {
        self.lock().orders.clone()
    }

    /// The certificate ids of every renewal-info request so far, in order.
    pub fn renewal_info_requests(&self) -> Vec<String> {
        self.lock().renewal_info.clone()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for AriProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Shared {
    client: reqwest::Client,
    /// `https://127.0.0.1:PEBBLE_PORT`.
    upstream: String,
    /// `127.0.0.1:PROXY_PORT`.
    authority: String,
    state: Arc<Mutex<State>>,
}

type Answer = Response<Full<Bytes>>;

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn handle(&self, req: Request<Incoming>) -> Answer {
        let method = req.method().to_string();
        let path = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
        let answer = self.route(req).await;
        self.lock().requests.push(Seen {
            method,
            path,
            status: answer.status().as_u16(),
        });
        answer
    }

    /// Whether to fail this certificate download (one of the failures `fail_downloads` asked for).
    fn take_download_failure(&self) -> bool {
        let mut state = self.lock();
        let fail = state.fail_downloads > 0;
        state.fail_downloads = state.fail_downloads.saturating_sub(1);
        fail
    }

    /// Whether to refuse this order's `replaces` as already replaced (one of `reject_replaces`); a refusal is
    /// recorded as a 409.
    fn take_replaces_rejection(&self, replaces: &Option<String>) -> bool {
        let mut state = self.lock();
        let reject = state.reject_replaces > 0;
        if reject {
            state.reject_replaces -= 1;
            state.orders.push(OrderSeen {
                replaces: replaces.clone(),
                status: 409,
            });
        }
        reject
    }

    async fn route(&self, req: Request<Incoming>) -> Answer {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("unreadable body: {e}")),
        };
        let path = parts.uri.path().to_owned();
        if parts.method == hyper::Method::GET
            && let Some(id) = path
                .strip_prefix(RENEWAL_INFO_PATH)
                .and_then(|p| p.strip_prefix('/'))
        {
            return self.renewal_info(id);
        }
        if parts.method == hyper::Method::POST
            && path.starts_with("/certZ/")
            && self.take_download_failure()
        {
            return self
                .refuse(
                    &parts.headers,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "urn:ietf:params:acme:error:serverInternal",
                    "the CA is down for a moment (test double)",
                )
                .await;
        }
        let replaces = if parts.method == hyper::Method::POST && path == "/order-plz" {
            let replaces =
                jws_payload(&body).and_then(|p| p["replaces"].as_str().map(str::to_owned));
            if replaces.is_some() && self.take_replaces_rejection(&replaces) {
                return self.already_replaced(&parts.headers).await;
            }
            Some(replaces)
        } else {
            None
        };

        let answer = match self.forward(&parts, body).await {
            Ok(a) => a,
            Err(e) => return plain(StatusCode::BAD_GATEWAY, &format!("Pebble: {e}")),
        };
        let (mut head, bytes) = answer;
        let mut bytes = bytes;
        if parts.method == hyper::Method::GET
            && path == "/dir"
            && head.status == StatusCode::OK
            && let Ok(mut dir) = serde_json::from_slice::<Value>(&bytes)
        {
            dir["renewalInfo"] = json!(format!("https://{}{RENEWAL_INFO_PATH}", self.authority));
            bytes = Bytes::from(dir.to_string());
        }
        if let Some(replaces) = replaces {
            if let (Some(id), true) = (&replaces, head.status == StatusCode::CREATED)
                && let Ok(mut order) = serde_json::from_slice::<Value>(&bytes)
            {
                order["replaces"] = json!(id);
                bytes = Bytes::from(order.to_string());
            }
            self.lock().orders.push(OrderSeen {
                replaces,
                status: head.status.as_u16(),
            });
        }
        head.headers.remove(hyper::header::CONTENT_LENGTH);
        Response::from_parts(head, Full::new(bytes))
    }

    /// Sends the request to Pebble with every header, `Host` included.
    async fn forward(
        &self,
        parts: &hyper::http::request::Parts,
        body: Bytes,
    ) -> Result<(hyper::http::response::Parts, Bytes), reqwest::Error> {
        let target = format!(
            "{}{}",
            self.upstream,
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let mut headers = parts.headers.clone();
        for hop in [
            hyper::header::CONNECTION,
            hyper::header::TRANSFER_ENCODING,
            hyper::header::CONTENT_LENGTH,
        ] {
            headers.remove(hop);
        }
        let response = self
            .client
            .request(parts.method.clone(), target)
            .headers(headers)
            .body(body)
            .send()
            .await?;
        let mut builder = Response::builder().status(response.status());
        for (name, value) in response.headers() {
            if name != hyper::header::CONNECTION
                && name != hyper::header::TRANSFER_ENCODING
                && name != hyper::header::CONTENT_LENGTH
            {
                builder = builder.header(name, value);
            }
        }
        let bytes = response.bytes().await?;
        // Unwrap: status and headers come from a valid response.
        let (head, ()) = builder.body(()).unwrap().into_parts();
        Ok((head, bytes))
    }

    fn renewal_info(&self, id: &str) -> Answer {
        let (window, retry_after) = {
            let mut state = self.lock();
            state.renewal_info.push(id.to_owned());
            (state.window, state.retry_after)
        };
        let Some((start, end)) = window else {
            return problem(
                StatusCode::NOT_FOUND,
                "urn:ietf:params:acme:error:malformed",
                "the test set no renewal window",
                None,
            );
        };
        // Unwraps: the dates the tests use format as RFC 3339.
        let body = json!({"suggestedWindow": {
            "start": start.format(&Rfc3339).unwrap(),
            "end": end.format(&Rfc3339).unwrap(),
        }});
        Response::builder()
            .status(StatusCode::OK)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::RETRY_AFTER, retry_after.to_string())
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    }

    /// `409 alreadyReplaced`, with a fresh nonce from Pebble as every ACME error answer carries one.
    async fn already_replaced(&self, request_headers: &hyper::HeaderMap) -> Answer {
        self.refuse(
            request_headers,
            StatusCode::CONFLICT,
            "urn:ietf:params:acme:error:alreadyReplaced",
            "the certificate named in `replaces` was already replaced (ARI test double)",
        )
        .await
    }

    /// An ACME problem answered by the proxy itself, with a fresh nonce from Pebble so the client goes on.
    async fn refuse(
        &self,
        request_headers: &hyper::HeaderMap,
        status: StatusCode,
        kind: &str,
        detail: &str,
    ) -> Answer {
        let mut nonce_request = self.client.head(format!("{}/nonce-plz", self.upstream));
        if let Some(host) = request_headers.get(hyper::header::HOST) {
            nonce_request = nonce_request.header(hyper::header::HOST, host);
        }
        let nonce = match nonce_request.send().await {
            Ok(r) => r
                .headers()
                .get("replay-nonce")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            Err(_) => None,
        };
        problem(status, kind, detail, nonce.as_deref())
    }
}

/// The JSON payload of a flattened JWS.
fn jws_payload(body: &[u8]) -> Option<Value> {
    let jws: Value = serde_json::from_slice(body).ok()?;
    let payload = jws["payload"].as_str()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn problem(status: StatusCode, kind: &str, detail: &str, nonce: Option<&str>) -> Answer {
    let mut builder = Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/problem+json")
        .header(hyper::header::CACHE_CONTROL, "no-store");
    if let Some(nonce) = nonce {
        builder = builder.header("Replay-Nonce", nonce);
    }
    let body = json!({"type": kind, "detail": detail, "status": status.as_u16()});
    // Unwrap: static headers.
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn plain(status: StatusCode, text: &str) -> Answer {
    // Unwrap: static headers.
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(text.to_owned())))
        .unwrap()
}

/// A throwaway CA and a leaf for `127.0.0.1`/`localhost`: `(ca_pem, [leaf, ca] DER, leaf key)`.
fn proxy_certificate() -> (
    String,
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
) {
    let tls = super::ThrowawayTls::new("certkeeper ARI test double CA (throwaway)");
    (tls.ca_pem, vec![tls.leaf_der, tls.ca_der], tls.key_der)
}

/// The ARI certificate identifier (RFC 9773 §4.1) of the leaf of `chain_pem`: base64url of its Authority Key
/// Identifier's keyIdentifier, ".", base64url of its serial's DER bytes.
///
/// # Panics
/// When the PEM holds no certificate with an AKI.
pub fn ari_cert_id(chain_pem: &str) -> String {
    use x509_parser::extensions::ParsedExtension;
    let pem = x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes())
        .next()
        .expect("a PEM block")
        .expect("valid PEM");
    let leaf = pem.parse_x509().expect("the leaf parses");
    let aki = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("the leaf has an Authority Key Identifier");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}", b64.encode(aki), b64.encode(leaf.raw_serial()))
}

/// Serves the proxy on its own thread and runtime until `stopped` fires.
fn serve(
    listener: std::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("ari-proxy".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .expect("register the proxy's listener");
                loop {
                    let (tcp, _) = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok(a) => a,
                            Err(_) => continue,
                        },
                        _ = &mut stopped => break,
                    };
                    let acceptor = acceptor.clone();
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |req| {
                            let shared = shared.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(shared.handle(req).await)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        })
        .expect("start the proxy thread")
}
