//! `cloudflare-standin`: a strict stand-in of Cloudflare's API v4 (DNS records) that publishes into a real DNS
//! server. See the `dns_standins::cloudflare` module for what it answers.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

/// A strict stand-in of Cloudflare's API v4 for DNS records, publishing via RFC 2136.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: dns_standins::CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let served = args.common.publisher().and_then(|publisher| {
        let router = dns_standins::cloudflare::router(Arc::new(publisher));
        dns_standins::serve("cloudflare-standin", args.common.listen, router)
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cloudflare-standin: {error:#}");
            ExitCode::FAILURE
        }
    }
}
