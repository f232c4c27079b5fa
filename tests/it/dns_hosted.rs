//! The hosted DNS providers end to end (issue 14): `acme-dns` and `cloudflare` against their strict stand-ins
//! (crates/dns-standins), which publish into the bed's knotd, so Pebble's DNS-01 validation is real.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::common::bed::{ConfigBuilder, write_private};
use crate::common::dns_standins::{DnsStandin, add_cname};
use crate::common::probe::due;
use crate::common::{Case, Run, assert_deployed, assert_no_txt, bed};

/// A well-formed Cloudflare API token (40 characters).
const TOKEN: &str = "cf-test-token-0123456789abcdefghijklmnop";

/// Writes `builder`'s config with `[dns.bed]` replaced by `provider_keys` plus the bed's knotd as the lookup
/// and propagation server (the zone's NS host is not on port 53 here).
fn write_with_dns(builder: &ConfigBuilder, provider_keys: &str) -> std::path::PathBuf {
    let path = builder.write();
    let text = fs::read_to_string(&path).unwrap();
    let start = text.find("[dns.bed]\n").expect("the bed writes [dns.bed]");
    let end = text[start + 1..]
        .find("\n[")
        .map_or(text.len(), |i| start + 1 + i + 1);
    let knot = bed().knot.server();
    let section = format!(
        "[dns.bed]\n{provider_keys}lookup_servers = [\"{knot}\"]\npropagation_servers = [\"{knot}\"]\n\n"
    );
    let text = format!("{}{section}{}", &text[..start], &text[end..]);
    write_private(&path, text.as_bytes()).unwrap();
    path
}

fn cloudflare(case: &Case) -> DnsStandin {
    let standin = DnsStandin::start(
        "cloudflare-standin",
        &bed().knot,
        &[],
        &case.dir.path().join("cf.log"),
    );
    standin.admin("PUT", "/_admin/zones/example.test", None, 200);
    standin.admin(
        "PUT",
        &format!("/_admin/tokens/{TOKEN}"),
        Some(&json!({"zones": ["example.test"], "edit": true})),
        200,
    );
    // Pages of one record: whatever certkeeper lists, it must walk the pages.
    standin.admin(
        "PUT",
        "/_admin/settings",
        Some(&json!({"max_per_page": 1})),
        204,
    );
    standin
}

fn cloudflare_keys(case: &Case, standin: &DnsStandin, token: &str) -> String {
    let file = case.dir.path().join("cloudflare.token");
    write_private(&file, token.as_bytes()).unwrap();
    format!(
        "provider = \"cloudflare\"\napi_token_file = \"{}\"\napi_url = \"http://{}/client/v4\"\n",
        file.display(),
        standin.addr
    )
}

fn count(requests: &[Value], method: &str, path_part: &str) -> usize {
    requests
        .iter()
        .filter(|r| {
            r["method"] == method && r["path"].as_str().is_some_and(|p| p.contains(path_part))
        })
        .count()
}

/// `certkeeper dns register` of `domain` at the bed's acme-dns section.
fn dns_register(case: &Case, config: &Path, domain: &str) -> Run {
    case.run(
        config,
        &["dns", "register", "--dns", "bed", "--domain", domain],
    )
}

#[test]
fn cloudflare_issues_apex_and_wildcard_and_deletes_its_records() {
    let case = Case::new("cf");
    let domains = ["t-cf.example.test", "*.t-cf.example.test"];
    case.deployment("t-cf", "one-way", due());
    let standin = cloudflare(&case);
    let config = write_with_dns(
        &case.config().deployment("t-cf", &domains),
        &cloudflare_keys(&case, &standin, TOKEN),
    );

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}\n{:#?}", standin.requests());
    assert_deployed(&case, "t-cf", &domains);
    assert_no_txt(&domains);
    assert_eq!(
        standin.admin("GET", "/_admin/records", None, 200),
        json!([]),
        "records left at Cloudflare"
    );
    let requests = standin.requests();
    assert_eq!(count(&requests, "POST", "/dns_records"), 2, "{requests:#?}");
    assert_eq!(
        count(&requests, "DELETE", "/dns_records/"),
        2,
        "{requests:#?}"
    );
    assert!(requests.iter().all(|r| r["status"] == 200), "{requests:#?}");
    assert!(
        !run.stderr.contains(TOKEN) && !run.stdout.contains(TOKEN),
        "the token is in the output"
    );
    case.assert_invariants();
}

#[test]
fn cloudflare_wrong_token_is_one_clear_line_and_no_order() {
    let case = Case::new("cf-bad");
    let domains = ["t-cf-bad.example.test"];
    case.deployment("t-cf-bad", "one-way", due());
    let standin = cloudflare(&case);
    let wrong = "wrong-token-0123456789abcdefghijklmnopqr";
    let config = write_with_dns(
        &case.config().deployment("t-cf-bad", &domains),
        &cloudflare_keys(&case, &standin, wrong),
    );

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(1), "{run}");
    let failures = run.failures_of("t-cf-bad");
    assert_eq!(failures.len(), 1, "{run}");
    assert!(
        failures[0].contains("Cloudflare refused")
            && failures[0].contains("9109")
            && failures[0].contains("API token"),
        "{}",
        failures[0]
    );
    assert!(
        !run.stderr.contains(wrong),
        "the token is in the output:\n{run}"
    );
    assert_eq!(
        acme.orders, 0,
        "an order was placed with a token that does not work"
    );
    case.assert_invariants();
}

fn acme_dns(case: &Case) -> DnsStandin {
    DnsStandin::start(
        "acmedns-standin",
        &bed().knot,
        &["--domain", "auth.example.test"],
        &case.dir.path().join("acmedns.log"),
    )
}

fn acme_dns_keys(standin: &DnsStandin, file: &Path) -> String {
    format!(
        "provider = \"acme-dns\"\nserver = \"http://{}\"\ncredentials_file = \"{}\"\n",
        standin.addr,
        file.display()
    )
}

#[test]
fn acme_dns_register_then_issue_apex_and_wildcard_through_the_cname() {
    let case = Case::new("adns");
    let domains = ["t-adns.example.test", "*.t-adns.example.test"];
    case.deployment("t-adns", "one-way", due());
    let standin = acme_dns(&case);
    let file = case.dir.path().join("acme-dns.json");
    let config = write_with_dns(
        &case.config().deployment("t-adns", &domains),
        &acme_dns_keys(&standin, &file),
    );

    let register = dns_register(&case, &config, "t-adns.example.test");
    assert_eq!(register.code(), Some(0), "{register}");
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let accounts: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    let account = &accounts["t-adns.example.test"];
    let fulldomain = account["fulldomain"].as_str().unwrap().to_owned();
    let cname = format!("_acme-challenge.t-adns.example.test. CNAME {fulldomain}.");
    assert!(register.stdout.contains(&cname), "{register}");
    let password = account["password"].as_str().unwrap();
    assert!(!register.stdout.contains(password) && !register.stderr.contains(password));
    let again = dns_register(&case, &config, "t-adns.example.test");
    assert_eq!(again.code(), Some(1), "{again}");
    assert!(
        again.stderr.contains("already has an acme-dns account"),
        "{again}"
    );

    add_cname(
        bed(),
        "_acme-challenge.t-adns.example.test.",
        &format!("{fulldomain}."),
    );
    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(0), "{run}\n{:#?}", standin.requests());
    assert_deployed(&case, "t-adns", &domains);
    let requests = standin.requests();
    assert_eq!(count(&requests, "POST", "/update"), 2, "{requests:#?}");
    // acme-dns has no delete: its subdomain keeps the two values (apex and wildcard), and knotd serves
    // exactly what the stand-in holds there.
    let mut held: Vec<String> = serde_json::from_value(
        standin.admin("GET", "/_admin/records", None, 200)[&fulldomain].clone(),
    )
    .unwrap();
    let mut served = bed().txt_records(&format!("{fulldomain}."));
    held.sort();
    served.sort();
    assert_eq!(held.len(), 2);
    assert_eq!(held, served);
    assert!(
        !run.stderr.contains(password),
        "the password is in the output"
    );
    case.assert_invariants();
}

#[test]
fn acme_dns_wrong_password_is_one_clear_line() {
    let case = Case::new("adns-bad");
    let domains = ["t-adns-bad.example.test"];
    case.deployment("t-adns-bad", "one-way", due());
    let standin = acme_dns(&case);
    let file = case.dir.path().join("acme-dns.json");
    let config = write_with_dns(
        &case.config().deployment("t-adns-bad", &domains),
        &acme_dns_keys(&standin, &file),
    );
    let register = dns_register(&case, &config, "t-adns-bad.example.test");
    assert_eq!(register.code(), Some(0), "{register}");
    let mut accounts: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    let wrong = "W".repeat(40);
    accounts["t-adns-bad.example.test"]["password"] = json!(wrong);
    write_private(&file, accounts.to_string().as_bytes()).unwrap();
    let fulldomain = accounts["t-adns-bad.example.test"]["fulldomain"]
        .as_str()
        .unwrap()
        .to_owned();
    add_cname(
        bed(),
        "_acme-challenge.t-adns-bad.example.test.",
        &format!("{fulldomain}."),
    );

    let run = case.run(&config, &["renew"]);

    assert_eq!(run.code(), Some(1), "{run}");
    let failures = run.failures_of("t-adns-bad");
    assert_eq!(failures.len(), 1, "{run}");
    assert!(
        failures[0].contains("401")
            && failures[0].contains("forbidden")
            && failures[0].contains("acme-dns.json"),
        "{}",
        failures[0]
    );
    assert!(
        !run.stderr.contains(&wrong),
        "the password is in the output:\n{run}"
    );
    case.assert_invariants();
}

#[test]
fn cloudflare_cleanup_after_a_kill_removes_exactly_its_value() {
    use certkeeper::solver::cloudflare::CloudflareConfig;
    use certkeeper::solver::{CloudflareSolver, Dns01Solver, TxtRecord};
    let case = Case::new("cf-kill");
    let standin = cloudflare(&case);
    // The bed starts its own runtime: this test's comes after it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = CloudflareConfig {
            api_url: format!("http://{}/client/v4", standin.addr),
            api_token: TOKEN.to_owned().into(),
            zone_id: None,
        };
        let mine = TxtRecord::for_domain("t-cf-kill.example.test", "m".repeat(43));
        let other = TxtRecord::for_domain("t-cf-kill.example.test", "o".repeat(43));
        let before_kill = CloudflareSolver::new(config.clone());
        before_kill.present(&mine).await.unwrap();
        before_kill.present(&other).await.unwrap();
        // Presenting again (a journal replay) is not an error.
        before_kill.present(&mine).await.unwrap();
        drop(before_kill);

        // A new process knows no record id: it finds the record by name and content, over pages of one.
        let after_kill = CloudflareSolver::new(config);
        after_kill.cleanup(&mine).await.unwrap();
        after_kill.cleanup(&mine).await.unwrap();

        let left = standin.admin("GET", "/_admin/records", None, 200);
        let contents: Vec<&str> = left
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["content"].as_str().unwrap())
            .collect();
        assert_eq!(contents, [other.value.as_str()]);
        assert_eq!(bed().txt_records(&mine.fqdn), vec![other.value.clone()]);
        after_kill.cleanup(&other).await.unwrap();
        assert!(bed().txt_records(&mine.fqdn).is_empty());
    });
}

#[test]
fn acme_dns_without_the_cname_fails_before_any_order() {
    let case = Case::new("adns-nocname");
    let domains = ["t-adns-nocname.example.test"];
    case.deployment("t-adns-nocname", "one-way", due());
    let standin = acme_dns(&case);
    let file = case.dir.path().join("acme-dns.json");
    let builder = case.config().deployment("t-adns-nocname", &domains);
    let config = write_with_dns(&builder, &acme_dns_keys(&standin, &file));
    let domain = "t-adns-nocname.example.test";
    let register = dns_register(&case, &config, domain);
    assert_eq!(register.code(), Some(0), "{register}");

    let exclusive = bed().exclusive();
    let run = case.run(&config, &["renew"]);
    let acme = exclusive.delta();
    drop(exclusive);

    assert_eq!(run.code(), Some(1), "{run}");
    let failures = run.failures_of("t-adns-nocname");
    assert_eq!(failures.len(), 1, "{run}");
    assert!(
        failures[0].contains("is not a CNAME to the acme-dns account"),
        "{}",
        failures[0]
    );
    assert_eq!(
        acme.orders, 0,
        "an order was placed for a domain that is not delegated"
    );
    assert_eq!(count(&standin.requests(), "POST", "/update"), 0);
}

/// The CNAME layer in front of Cloudflare: `_acme-challenge` points at another name of the zone, and the
/// records go there (a CNAME owner holds no other data, so validation passes only through the target).
#[test]
fn cloudflare_publishes_at_the_cname_target() {
    let case = Case::new("cf-cname");
    let domains = ["t-cf-cname.example.test", "*.t-cf-cname.example.test"];
    let target = "t-cf-cname-target.example.test.";
    add_cname(bed(), "_acme-challenge.t-cf-cname.example.test.", target);
    case.deployment("t-cf-cname", "one-way", due());
    let standin = cloudflare(&case);
    let config = write_with_dns(
        &case.config().deployment("t-cf-cname", &domains),
        &cloudflare_keys(&case, &standin, TOKEN),
    );

    let run = crate::common::run_with_env(
        &config,
        &["renew"],
        &[("RUST_LOG", "info,certkeeper::solver=debug")],
    );

    assert_eq!(run.code(), Some(0), "{run}\n{:#?}", standin.requests());
    assert_deployed(&case, "t-cf-cname", &domains);
    let visible: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("TXT visible"))
        .collect();
    assert!(
        visible.len() == 2
            && visible
                .iter()
                .all(|l| l.contains(&format!("owner={target}"))),
        "both values awaited at the target: {visible:#?}\n{run}"
    );
    let requests = standin.requests();
    assert_eq!(count(&requests, "POST", "/dns_records"), 2, "{requests:#?}");
    assert_eq!(
        count(&requests, "DELETE", "/dns_records/"),
        2,
        "{requests:#?}"
    );
    assert_eq!(
        standin.admin("GET", "/_admin/records", None, 200),
        json!([]),
        "records left at Cloudflare"
    );
    assert!(bed().txt_records(target).is_empty(), "TXT left at {target}");
}
