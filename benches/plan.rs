//! Planner benchmark: one planning pass over 1,000 deployments (issue 6; target < 50 ms).
//! `cargo bench --bench plan`. The deployments mix every rule: no certificate, `renew_before`, certificates
//! the agent pushed (90, 45 and 6 days), ARI windows, and foreign certificates; all share one API key, so the
//! pass ends with the write-budget schedule (6 writes per hour).

use std::hint::black_box;
use std::time::Duration;

use certkeeper::plan::{self, DEADLINE_MARGIN, Plan, Slot};
use certkeeper::state::CertRecord;
use criterion::{Criterion, criterion_group, criterion_main};
use time::OffsetDateTime;
use time::macros::datetime;

const DEPLOYMENTS: usize = 1_000;

struct Deployment {
    expire: Option<OffsetDateTime>,
    pushed: Option<CertRecord>,
    renew_before: Option<Duration>,
    ari: Option<OffsetDateTime>,
}

fn deployments(now: OffsetDateTime) -> Vec<Deployment> {
    (0..DEPLOYMENTS)
        .map(|i| {
            let issued = now - time::Duration::hours(i as i64 * 7 % 2000);
            let days = [90, 45, 6][i % 3];
            let cert = CertRecord {
                serial: format!("{i:x}"),
                not_before: issued,
                not_after: issued + time::Duration::days(days),
                domains: vec![format!("d{i}.example.com")],
                leaf_pem: None,
            };
            let expire = Some(cert.not_after);
            match i % 10 {
                0 => Deployment {
                    expire: None,
                    pushed: None,
                    renew_before: None,
                    ari: None,
                },
                1 => Deployment {
                    expire,
                    pushed: None,
                    renew_before: Some(Duration::from_secs(20 * 86_400)),
                    ari: None,
                },
                2 => Deployment {
                    expire: Some(cert.not_after + time::Duration::days(100)),
                    pushed: Some(cert),
                    renew_before: None,
                    ari: None,
                },
                3 => Deployment {
                    expire,
                    ari: Some(cert.not_before + time::Duration::days(days / 2)),
                    pushed: Some(cert),
                    renew_before: None,
                },
                _ => Deployment {
                    expire,
                    pushed: Some(cert),
                    renew_before: None,
                    ari: None,
                },
            }
        })
        .collect()
}

/// One planning pass: a plan per deployment, then the schedule of the key they share.
fn pass(all: &[Deployment], now: OffsetDateTime) -> (Vec<Slot>, Vec<usize>) {
    let mut slots: Vec<Slot> = all
        .iter()
        .map(|d| {
            let plan: Plan = plan::plan(d.expire, d.pushed.as_ref(), d.renew_before, d.ari, now);
            Slot {
                plan,
                deadline: d.expire.map(|e| e - DEADLINE_MARGIN),
                at_risk: false,
            }
        })
        .collect();
    let order = plan::schedule(&mut slots, 6, Duration::from_secs(3600), now);
    (slots, order)
}

fn bench(c: &mut Criterion) {
    let now = datetime!(2026-06-01 12:00 UTC);
    let all = deployments(now);
    c.bench_function("plan 1000 deployments", |b| {
        b.iter(|| {
            black_box(&all)
                .iter()
                .map(|d| plan::plan(d.expire, d.pushed.as_ref(), d.renew_before, d.ari, now))
                .filter(|p| p.is_due(now))
                .count()
        })
    });
    c.bench_function("plan + schedule 1000 deployments", |b| {
        b.iter(|| pass(black_box(&all), now))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
