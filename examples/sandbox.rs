//! The README sandbox: one full renewal against local stand-ins of the whole world, explained as it happens.
//!
//! Starts knotd (DNS, zone `example.test.` with TSIG-signed updates), Pebble (ACME) and `emqx-standin` (the
//! vendor API) on free loopback ports, configures a due deployment `sandbox01` for `mqtt.example.test`, writes a
//! config to `./sandbox/config.toml`, runs `certkeeper renew` and `certkeeper status`, shows what the stand-in
//! serves afterwards, and stops everything. Logs, config and state stay in `./sandbox/` (gitignored).
//!
//! Run it with `scripts/sandbox.sh`, which installs the servers and builds the binaries first. The binaries are
//! looked up next to this example's executable (`target/<profile>/`); `CERTKEEPER_BIN` and `EMQX_STANDIN_BIN`
//! override that.

#[path = "../tests/it/common/bed/mod.rs"]
mod bed;

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use bed::{Bed, BedDir, BedError, Binaries, Run};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

const DEPLOYMENT: &str = "sandbox01";
const DOMAIN: &str = "mqtt.example.test";
const KEY: &str = "sandbox-key";
const SECRET: &str = "sandbox-secret";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nsandbox: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), BedError> {
    let root = std::env::current_dir()?.join("sandbox");
    if root.exists() {
        // A previous run's files; its servers died with it.
        fs::remove_dir_all(&root)?;
    }
    fs::create_dir_all(&root)?;

    step("Starting knotd (DNS) and Pebble (ACME) on free loopback ports");
    let binaries = Binaries::beside_current_exe()?;
    let bed = Bed::start(binaries, BedDir::Keep(root.join("bed")))?;
    println!(
        "  knotd   127.0.0.1:{}  serves example.test.; accepts TXT updates signed with TSIG key {}",
        bed.knot.port,
        bed::TSIG_KEY
    );
    println!(
        "  Pebble  {}  validates DNS-01 by asking that knotd",
        bed.pebble.directory_url
    );

    step("Starting the EMQX API stand-in with a deployment whose certificate expires in 10 days");
    let standin = bed.standin(&root.join("standin.log"));
    standin.put_key(KEY, SECRET, Some(&[DEPLOYMENT]));
    let expire = (OffsetDateTime::now_utc() + Duration::days(10)).format(&Rfc3339)?;
    standin.put_deployment(
        DEPLOYMENT,
        &json!({"tlsType": "one-way", "expire": expire, "status": "running"}),
    );
    println!("  {}", standin.api_url());
    show_vendor_view(&standin)?;
    let ours = standin.log().len();

    step("Writing ./sandbox/config.toml");
    let config = bed
        .config(&root, &standin, KEY, SECRET)
        .emqx("wait_timeout", "1m")
        .deployment(DEPLOYMENT, &[DOMAIN])
        .write();
    for line in fs::read_to_string(&config)?.lines() {
        println!("  | {line}");
    }

    step("certkeeper renew   (inspect, order, DNS-01 via knotd, push, wait until running)");
    let renew = bed.run_certkeeper(&config, &["renew"]);
    show(&renew);
    if renew.code() != Some(0) {
        return Err(format!("certkeeper renew failed ({}); see above", renew.status).into());
    }

    step("certkeeper status   (from the local state in ./sandbox/state)");
    let status = bed.run_certkeeper(&config, &["status"]);
    show(&status);

    step("What the stand-in now serves for sandbox01");
    let methods: Vec<String> = standin.log()[ours..]
        .iter()
        .map(|e| format!("{} {}", e["method"].as_str().unwrap_or("?"), e["status"]))
        .collect();
    println!("  certkeeper's vendor API requests: {}", methods.join(", "));
    show_vendor_view(&standin)?;
    show_certificate(&standin.deployment(DEPLOYMENT))?;

    step("Stopping knotd, Pebble and the stand-in");
    drop(standin);
    bed.shutdown();
    println!(
        "  done; config, state and logs are in {}",
        display_relative(&root)
    );
    Ok(())
}

fn step(what: &str) {
    println!("\n==> {what}");
}

/// Prints a certkeeper run's output, indented.
fn show(run: &Run) {
    println!("  {}", run.status);
    for line in run.stdout.lines() {
        println!("  stdout | {line}");
    }
    for line in run.stderr.lines() {
        println!("  stderr | {line}");
    }
}

/// Prints what the vendor API answers, as certkeeper sees it.
fn show_vendor_view(standin: &bed::Standin) -> Result<(), BedError> {
    let path = format!("/deployments/{DEPLOYMENT}/tls");
    let (status, body) = standin.vendor("GET", &path, KEY, SECRET)?;
    println!("  GET {path} -> {status} {body}");
    Ok(())
}

/// Prints the pushed certificate's subject, names, issuer and validity.
fn show_certificate(view: &serde_json::Value) -> Result<(), BedError> {
    use x509_parser::pem::Pem;

    println!(
        "  status {}, tlsType {}, expire {}, writes {}",
        view["status"], view["tlsType"], view["expire"], view["writes"]
    );
    let cert = view["cert"]
        .as_str()
        .ok_or("the stand-in holds no certificate")?;
    let blocks: Vec<Pem> = Pem::iter_from_buffer(cert.as_bytes()).collect::<Result<_, _>>()?;
    let leaf_pem = blocks.first().ok_or("the certificate has no PEM block")?;
    let leaf = leaf_pem.parse_x509()?;
    // The names as certkeeper itself reads them.
    let names = certkeeper::certs::leaf_info(&leaf_pem.contents)
        .map_err(|e| e.to_string())?
        .dns_names;
    let subject = leaf.subject().to_string();
    println!(
        "  subject  {}",
        if subject.is_empty() {
            "(empty)"
        } else {
            &subject
        }
    );
    println!("  SANs     {}", names.join(", "));
    println!("  issuer   {}", leaf.issuer());
    println!(
        "  valid    {} .. {}",
        leaf.validity().not_before,
        leaf.validity().not_after
    );
    println!(
        "  chain    {} certificates; key: {}",
        blocks.len(),
        view["key"]
            .as_str()
            .and_then(|k| k.lines().next())
            .unwrap_or("(none)")
    );
    Ok(())
}

fn display_relative(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| {
            path.strip_prefix(cwd)
                .ok()
                .map(|p| format!("./{}/", p.display()))
        })
        .unwrap_or_else(|| path.display().to_string())
}
