//! `acmedns-standin`: a strict stand-in of the acme-dns server API that publishes into a real DNS server.
//! See the `dns_standins::acmedns` module for what it answers.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

/// A strict stand-in of the acme-dns API (POST /register, POST /update), publishing via RFC 2136.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: dns_standins::CommonArgs,
    /// acme-dns's `general.domain`: every registered `fulldomain` is `UUID.DOMAIN`, inside the DNS server's zone.
    #[arg(long, value_name = "DOMAIN")]
    domain: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let served = args.common.publisher().and_then(|publisher| {
        let router = dns_standins::acmedns::router(&args.domain, Arc::new(publisher));
        dns_standins::serve("acmedns-standin", args.common.listen, router)
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("acmedns-standin: {error:#}");
            ExitCode::FAILURE
        }
    }
}
