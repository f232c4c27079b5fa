//! The pipeline against an in-memory target and state: the order of steps, what is persisted, which events
//! are emitted, and that a dry run writes nothing. No CA is needed: every case starts from a saved bundle or
//! ends before ordering.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use secrecy::ExposeSecret as _;
use time::OffsetDateTime;

use super::{Done, Event, Pipeline, RenewError};
use crate::budget::Exhausted;
use crate::certs::{self, Bundle, LeafInfo};
use crate::config::Config;
use crate::config::KeyType;
use crate::deploy::{Deployed, RequestBudget, Status, Target, TargetError, TargetFuture};
use crate::shutdown::Shutdown;
use crate::state::StateStore;
use crate::state::memory::Memory;
use crate::state::{CertRecord, Record, Step};

const ID: &str = "d1";
const NAME: &str = "d1.example.test";

/// What the fake target answers, and what it was asked.
#[derive(Default)]
struct Script {
    deployed: Option<Deployed>,
    inspect_budget: bool,
    wait_still_previous: bool,
    inspects: u32,
    deploys: u32,
    waits: u32,
}

struct Fake(Arc<Mutex<Script>>);

impl Fake {
    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.0.lock().unwrap()
    }
}

impl Target for Fake {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn budget(&self) -> Option<&dyn RequestBudget> {
        None
    }

    fn inspect(&self) -> TargetFuture<'_, Deployed> {
        let mut s = self.script();
        s.inspects += 1;
        let answer = if s.inspect_budget {
            Err(TargetError::Budget(Exhausted {
                key: "k".into(),
                until: OffsetDateTime::now_utc() + time::Duration::minutes(30),
                why: "test budget",
            }))
        } else {
            Ok(s.deployed.clone().unwrap_or(Deployed {
                expire: None,
                status: Status::Absent,
                serial: None,
            }))
        };
        Box::pin(async move { answer })
    }

    fn accept(&self, _: &Bundle, _: &LeafInfo, _: OffsetDateTime) -> Result<(), TargetError> {
        Ok(())
    }

    fn deploy<'a>(&'a self, _bundle: &'a Bundle, _create: bool) -> TargetFuture<'a, ()> {
        self.script().deploys += 1;
        Box::pin(async { Ok(()) })
    }

    fn wait_active<'a>(&'a self, cert: &'a CertRecord) -> TargetFuture<'a, Deployed> {
        let mut s = self.script();
        s.waits += 1;
        let answer = if s.wait_still_previous {
            Err(TargetError::StillPrevious {
                waited: Duration::from_secs(1),
            })
        } else {
            let now = Deployed {
                expire: Some(cert.not_after),
                status: Status::Running,
                serial: Some(cert.serial.clone()),
            };
            s.deployed = Some(now.clone());
            Ok(now)
        };
        Box::pin(async move { answer })
    }

    fn describe_deploy(&self, _create: bool) -> String {
        "write the files".into()
    }
}

fn config(dir: &Path) -> Config {
    let text = format!(
        r#"state_dir = "{}"
[acme]
directory = "https://ca.invalid/dir"
[dns.primary]
provider = "rfc2136"
server = "127.0.0.1:53"
tsig_key = "k"
tsig_secret = "c2VjcmV0"
[emqx.prod]
url = "https://api.invalid/api/v1"
key = "app"
secret = "s3cret"
[[deployment]]
id = "{ID}"
domains = ["{NAME}"]
"#,
        dir.display()
    );
    Config::parse(&dir.join("c.toml"), &text).unwrap()
}

/// A bundle for [`NAME`] valid for `days`, signed by a throwaway CA.
fn bundle(days: i64) -> Bundle {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key_pem = certs::generate_key(KeyType::EcdsaP256).unwrap();
    let key = KeyPair::from_pem(key_pem.expose_secret()).unwrap();
    let mut leaf = CertificateParams::new(vec![NAME.to_owned()]).unwrap();
    leaf.not_before = OffsetDateTime::now_utc() - time::Duration::hours(1);
    leaf.not_after = OffsetDateTime::now_utc() + time::Duration::days(days);
    let leaf = leaf.signed_by(&key, &ca).unwrap();
    Bundle {
        key_pkcs8_pem: key_pem,
        chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
    }
}

/// A pipeline over one fake deployment, its in-memory state, and the events it emits.
struct World {
    pipeline: Pipeline,
    script: Arc<Mutex<Script>>,
    state: Arc<Memory>,
    events: Arc<Mutex<Vec<Event>>>,
    _dir: tempfile::TempDir,
}

fn world(script: Script, dry_run: bool) -> World {
    let dir = tempfile::tempdir().unwrap();
    let script = Arc::new(Mutex::new(script));
    let state = Arc::new(Memory::default());
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let mut pipeline = Pipeline::new(config(dir.path()), state.clone())
        .unwrap()
        .with_target(ID, Box::new(Fake(script.clone())))
        .with_dry_run(dry_run);
    pipeline.subscribe(move |e| seen.lock().unwrap().push(e.clone()));
    World {
        pipeline,
        script,
        state,
        events,
        _dir: dir,
    }
}

impl World {
    /// Saves `bundle` as issued by an earlier pass that was interrupted before the push.
    fn issued(&self, bundle: &Bundle) {
        self.state.save_bundle(ID, bundle).unwrap();
        let record = Record {
            step: Some(Step::Issued),
            ..Record::default()
        };
        self.state.save_record(ID, &record).unwrap();
    }

    fn pass(&self, force: bool) -> Result<Done, RenewError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stop = Shutdown::never();
        let mut reports = runtime.block_on(self.pipeline.pass(&[], force, &stop));
        assert_eq!(reports.len(), 1);
        reports.remove(0).result
    }

    fn steps(&self) -> Vec<Step> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Step { step, .. } => Some(*step),
                _ => None,
            })
            .collect()
    }
}

fn running_old_cert() -> Deployed {
    Deployed {
        expire: Some(OffsetDateTime::now_utc() + time::Duration::days(5)),
        status: Status::Running,
        serial: Some("0ld".into()),
    }
}

#[test]
fn a_saved_bundle_is_pushed_once_and_every_step_is_persisted_and_emitted() {
    let w = world(
        Script {
            deployed: Some(running_old_cert()),
            ..Script::default()
        },
        false,
    );
    let bundle = bundle(90);
    w.issued(&bundle);

    let done = w.pass(false).unwrap();

    assert!(matches!(done, Done::Renewed { .. }), "{done}");
    let s = w.script.lock().unwrap();
    assert_eq!((s.inspects, s.deploys, s.waits), (1, 1, 1));
    assert_eq!(w.steps(), [Step::Issued, Step::Pushed, Step::Active]);
    assert!(
        w.state.bundle(ID).unwrap().is_none(),
        "the bundle goes once active"
    );
    let record = w.state.record(ID).unwrap();
    assert_eq!(record.step, Some(Step::Active));
    assert!(record.last.as_ref().is_some_and(|o| o.ok));
    let outcome = w.events.lock().unwrap().last().cloned().unwrap();
    assert!(
        matches!(&outcome, Event::Outcome { ok: true, message, .. } if message.starts_with("renewed")),
        "{outcome:?}"
    );
}

#[test]
fn a_target_showing_the_saved_serial_is_waited_for_not_pushed_again() {
    let bundle = bundle(90);
    let serial = certs::validate(&bundle, &[NAME.to_owned()], OffsetDateTime::now_utc())
        .unwrap()
        .serial;
    let w = world(
        Script {
            deployed: Some(Deployed {
                serial: Some(serial),
                ..running_old_cert()
            }),
            ..Script::default()
        },
        false,
    );
    w.issued(&bundle);

    assert!(matches!(w.pass(false), Ok(Done::Renewed { .. })));
    assert_eq!(w.script.lock().unwrap().deploys, 0);
    assert_eq!(w.steps(), [Step::Pushed, Step::Active]);
}

#[test]
fn a_push_the_target_never_applies_steps_back_and_stops_after_three() {
    let w = world(
        Script {
            deployed: Some(running_old_cert()),
            wait_still_previous: true,
            ..Script::default()
        },
        false,
    );
    w.issued(&bundle(90));

    for pushes in 1..=3 {
        let err = w.pass(false).unwrap_err();
        assert!(
            matches!(err, RenewError::NotApplied { pushes: p, .. } if p == pushes),
            "{err}"
        );
        assert_eq!(w.state.record(ID).unwrap().step, Some(Step::Issued));
    }
    let err = w.pass(false).unwrap_err().to_string();
    assert!(err.contains("stops pushing"), "{err}");
    assert_eq!(w.script.lock().unwrap().deploys, 3, "bounded");

    // `--now` starts over.
    w.script.lock().unwrap().wait_still_previous = false;
    assert!(matches!(w.pass(true), Ok(Done::Renewed { .. })));
    assert_eq!(w.script.lock().unwrap().deploys, 4);
}

#[test]
fn a_dry_run_stops_at_the_deploy_and_records_nothing() {
    let w = world(
        Script {
            deployed: Some(running_old_cert()),
            ..Script::default()
        },
        true,
    );
    let bundle = bundle(90);
    w.issued(&bundle);
    let before = w.state.record(ID).unwrap();

    let done = w.pass(false).unwrap();

    assert_eq!(done, Done::DryRun("would write the files".into()));
    assert_eq!(w.script.lock().unwrap().deploys, 0);
    assert_eq!(w.state.record(ID).unwrap(), before);
    assert!(w.state.bundle(ID).unwrap().is_some());
    assert!(w.steps().is_empty(), "nothing persisted, nothing emitted");
}

#[test]
fn a_budget_that_cannot_afford_the_inspection_defers() {
    let w = world(
        Script {
            inspect_budget: true,
            ..Script::default()
        },
        false,
    );
    let done = w.pass(false).unwrap();
    assert!(matches!(done, Done::Deferred { .. }), "{done}");
    assert_eq!(w.script.lock().unwrap().deploys, 0);
}

#[test]
fn a_certificate_far_from_expiry_is_not_due_and_nothing_is_written() {
    let w = world(
        Script {
            deployed: Some(Deployed {
                expire: Some(OffsetDateTime::now_utc() + time::Duration::days(80)),
                status: Status::Running,
                serial: None,
            }),
            ..Script::default()
        },
        false,
    );
    let done = w.pass(false).unwrap();
    assert!(
        matches!(
            done,
            Done::NotDue {
                inspected: true,
                ..
            }
        ),
        "{done}"
    );
    assert_eq!(w.script.lock().unwrap().deploys, 0);
    assert!(w.steps().is_empty());
}

#[test]
fn a_deployment_another_process_holds_is_reported_busy_and_left_untouched() {
    let w = world(
        Script {
            deployed: Some(running_old_cert()),
            ..Script::default()
        },
        false,
    );
    let bundle = bundle(90);
    w.issued(&bundle);
    let before = w.state.record(ID).unwrap();
    let held = w.state.try_lock_deployment(ID).unwrap();

    let err = w.pass(false).unwrap_err();

    assert!(
        matches!(
            err,
            RenewError::Store(crate::state::StoreError::Busy { .. })
        ),
        "{err}"
    );
    let s = w.script.lock().unwrap();
    assert_eq!(
        (s.inspects, s.deploys),
        (0, 0),
        "nothing asked of the target"
    );
    assert_eq!(
        w.state.record(ID).unwrap(),
        before,
        "no outcome written over the holder's"
    );
    assert!(w.steps().is_empty());
    drop(s);
    drop(held);
    assert!(matches!(w.pass(false).unwrap(), Done::Renewed { .. }));
}
