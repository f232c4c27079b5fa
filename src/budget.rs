//! The vendor's request budget per API key: 60 `GET` and 6 writes per sliding hour (configurable).
//!
//! Every request is charged *before* it is sent, and the record is persisted in the state directory, so a
//! restart or a timer-driven `renew` a minute after the last one does not forget what was spent. A 429
//! from the vendor blocks the key until its `Retry-After`, whatever our own count says: the vendor's view
//! wins.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use crate::state::{BudgetLog, KeyUsage, StateStore, StoreError};

/// The longest a 429 blocks a key, whatever the vendor's `Retry-After` or the persisted file says: a pass a day
/// later simply asks again, and a clock that ran ahead (then was corrected) cannot defer renewals for longer.
pub const MAX_BLOCK: Duration = Duration::from_secs(24 * 3600);

/// The two classes of request the vendor counts separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET`.
    Read,
    /// `POST`, `PUT` or `DELETE`.
    Write,
}

/// The budget cannot afford a request before `until`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the EMQX API budget of key `{key}` is spent until {until} ({why})")]
pub struct Exhausted {
    /// The API key.
    pub key: String,
    /// When the next request of that kind is allowed.
    pub until: OffsetDateTime,
    /// Our own count or the vendor's 429.
    pub why: &'static str,
}

impl KeyUsage {
    /// The requests of `kind` still inside the window at `now_ms`, oldest first, and the limit for them.
    fn inside(&self, limits: Limits, kind: Kind, now_ms: i64) -> (Vec<i64>, u32) {
        let window = limits.window.as_millis() as i64;
        let (spent, limit) = match kind {
            Kind::Read => (&self.reads_ms, limits.reads),
            Kind::Write => (&self.writes_ms, limits.writes),
        };
        let mut inside: Vec<i64> = spent
            .iter()
            .copied()
            .filter(|t| now_ms - t < window)
            .collect();
        inside.sort_unstable();
        (inside, limit)
    }

    /// When the window next has room for a request of `kind` (`now_ms` if it has now). With more requests
    /// inside than the limit (a limit lowered since), enough of the oldest must leave to make room.
    fn room_at(&self, limits: Limits, kind: Kind, now_ms: i64) -> i64 {
        let (inside, limit) = self.inside(limits, kind, now_ms);
        if inside.len() < limit as usize {
            now_ms
        } else {
            inside[inside.len() - limit as usize] + limits.window.as_millis() as i64
        }
    }
}

/// Limits of one API key.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `GET`s per window.
    pub reads: u32,
    /// Writes per window.
    pub writes: u32,
    /// Window length.
    pub window: Duration,
}

/// The persisted budgets of every key. One per process; requests of all deployments go through it.
pub struct Budget {
    store: Arc<dyn StateStore>,
    usage: Mutex<BudgetLog>,
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget").finish_non_exhaustive()
    }
}

impl Budget {
    /// Loads the request log from `store` (none yet means nothing was spent).
    ///
    /// # Errors
    /// I/O errors and a corrupt file.
    pub fn load(store: Arc<dyn StateStore>) -> Result<Budget, StoreError> {
        let usage = sanitized(store.budget_log()?, OffsetDateTime::now_utc());
        Ok(Budget {
            store,
            usage: Mutex::new(usage),
        })
    }

    /// Re-reads the request log: another certkeeper (a timer-driven `renew` beside the daemon) may have spent
    /// requests since this one loaded it. Call it under the state lock, at the start of a pass.
    ///
    /// # Errors
    /// I/O errors and a corrupt file; the in-memory budget is then kept.
    pub fn reload(&self) -> Result<(), StoreError> {
        let fresh = self.store.budget_log()?;
        *self.usage.lock().unwrap_or_else(|p| p.into_inner()) =
            sanitized(fresh, OffsetDateTime::now_utc());
        Ok(())
    }

    /// Charges one request of `kind` to `key` at `now`, or says when it would be allowed.
    ///
    /// # Errors
    /// [`ChargeError::Exhausted`] when the window is full or the key is blocked by a 429;
    /// [`ChargeError::Store`] when the charge cannot be persisted (the request must then not be sent).
    pub fn charge(
        &self,
        key: &str,
        limits: Limits,
        kind: Kind,
        now: OffsetDateTime,
    ) -> Result<(), ChargeError> {
        let mut verdict = Ok(());
        // Read, decide and write under the store's update lock: a task or process charging the same key at the
        // same moment sees this charge, and the window is never overspent between them.
        let log = self
            .store
            .update_budget_log(&mut |log| {
                let clamped = sanitize(log, now);
                let usage = log.entry(key.to_owned()).or_default();
                verdict = spend(usage, key, limits, kind, now);
                verdict.is_ok() || clamped > 0
            })
            .map_err(ChargeError::Store)?;
        *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = log;
        verdict.map_err(ChargeError::Exhausted)
    }

    /// Records a 429: no request of this key until `until`.
    ///
    /// # Errors
    /// When the block cannot be persisted.
    pub fn block(&self, key: &str, until: OffsetDateTime) -> Result<(), StoreError> {
        let until = until.min(OffsetDateTime::now_utc() + MAX_BLOCK);
        let log = self.store.update_budget_log(&mut |log| {
            log.entry(key.to_owned()).or_default().blocked_until_ms = Some(ms(until));
            true
        })?;
        *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = log;
        Ok(())
    }

    /// The earliest moment at or after `now` when a request of `kind` is affordable for `key`.
    pub fn available_at(
        &self,
        key: &str,
        limits: Limits,
        kind: Kind,
        now: OffsetDateTime,
    ) -> OffsetDateTime {
        self.available_after(key, limits, kind, now, 0)
    }

    /// [`Budget::available_at`] once `extra` more requests of `kind` were sent at `now` (those a concurrent pass
    /// has promised to other deployments).
    pub fn available_after(
        &self,
        key: &str,
        limits: Limits,
        kind: Kind,
        now: OffsetDateTime,
        extra: u32,
    ) -> OffsetDateTime {
        let all = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let mut usage = all.get(key).cloned().unwrap_or_default();
        drop(all);
        let now_ms = ms(now);
        let spent = match kind {
            Kind::Read => &mut usage.reads_ms,
            Kind::Write => &mut usage.writes_ms,
        };
        spent.extend(std::iter::repeat_n(now_ms, extra as usize));
        ts(usage
            .room_at(limits, kind, now_ms)
            .max(usage.blocked_until_ms.unwrap_or(now_ms))
            .max(now_ms))
    }

    /// Requests of `kind` still affordable for `key` at `now` (0 while blocked).
    pub fn remaining(&self, key: &str, limits: Limits, kind: Kind, now: OffsetDateTime) -> u32 {
        self.affordable_by(key, limits, kind, now, now)
    }

    /// Requests of `kind` affordable for `key` between `now` and `until`: those left now, plus those that leave
    /// the window before `until` (0 while blocked).
    pub fn affordable_by(
        &self,
        key: &str,
        limits: Limits,
        kind: Kind,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> u32 {
        let all = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let Some(usage) = all.get(key) else {
            return match kind {
                Kind::Read => limits.reads,
                Kind::Write => limits.writes,
            };
        };
        let now_ms = ms(now);
        if usage.blocked_until_ms.is_some_and(|u| u > now_ms) {
            return 0;
        }
        let window = limits.window.as_millis() as i64;
        let (inside, limit) = usage.inside(limits, kind, now_ms);
        let still_inside = inside.iter().filter(|&&t| t + window > ms(until)).count();
        limit.saturating_sub(still_inside as u32)
    }
}

/// Why a request could not be charged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChargeError {
    /// Out of budget.
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    /// The charge could not be persisted.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Spends one request of `kind` from `usage`, or says when one is affordable.
fn spend(
    usage: &mut KeyUsage,
    key: &str,
    limits: Limits,
    kind: Kind,
    now: OffsetDateTime,
) -> Result<(), Exhausted> {
    let now_ms = ms(now);
    let window = limits.window.as_millis() as i64;
    usage.reads_ms.retain(|t| now_ms - t < window);
    usage.writes_ms.retain(|t| now_ms - t < window);
    if let Some(until) = usage.blocked_until_ms {
        if until > now_ms {
            return Err(Exhausted {
                key: key.to_owned(),
                until: ts(until),
                why: "the vendor answered 429",
            });
        }
        usage.blocked_until_ms = None;
    }
    let room_at = usage.room_at(limits, kind, now_ms);
    if room_at > now_ms {
        return Err(Exhausted {
            key: key.to_owned(),
            until: ts(room_at),
            why: match kind {
                Kind::Read => "GET limit reached",
                Kind::Write => "write limit reached",
            },
        });
    }
    match kind {
        Kind::Read => usage.reads_ms.push(now_ms),
        Kind::Write => usage.writes_ms.push(now_ms),
    }
    Ok(())
}

/// Requests cannot have been sent in the future, and no block lasts longer than [`MAX_BLOCK`]: entries a clock
/// that ran ahead left behind are brought back to `now`, with one warning. Returns how many were.
fn sanitize(all: &mut BudgetLog, now: OffsetDateTime) -> usize {
    let now_ms = ms(now);
    let max_block_ms = now_ms.saturating_add(MAX_BLOCK.as_millis() as i64);
    let mut clamped = 0usize;
    for usage in all.values_mut() {
        for t in usage.reads_ms.iter_mut().chain(usage.writes_ms.iter_mut()) {
            if *t > now_ms {
                *t = now_ms;
                clamped += 1;
            }
        }
        if let Some(until) = usage.blocked_until_ms.as_mut()
            && *until > max_block_ms
        {
            *until = max_block_ms;
            clamped += 1;
        }
    }
    if clamped > 0 {
        tracing::warn!(
            entries = clamped,
            "the request log has times in the future (a clock that ran ahead?); read them as now, and blocks \
             as at most {} hours",
            MAX_BLOCK.as_secs() / 3600
        );
    }
    clamped
}

fn sanitized(mut all: BudgetLog, now: OffsetDateTime) -> BudgetLog {
    sanitize(&mut all, now);
    all
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn ts(unix_ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Store;

    const LIMITS: Limits = Limits {
        reads: 3,
        writes: 1,
        window: Duration::from_secs(60),
    };

    #[test]
    fn sliding_window_is_enforced_and_persisted() {
        let tmp = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(Store::open(tmp.path()).unwrap());
        let t0 = OffsetDateTime::now_utc();
        let b = Budget::load(store.clone()).unwrap();
        for _ in 0..3 {
            b.charge("k", LIMITS, Kind::Read, t0).unwrap();
        }
        let err = b.charge("k", LIMITS, Kind::Read, t0).unwrap_err();
        let ChargeError::Exhausted(e) = err else {
            panic!()
        };
        assert_eq!(e.until.unix_timestamp(), t0.unix_timestamp() + 60);
        b.charge("k", LIMITS, Kind::Write, t0).unwrap();
        assert_eq!(b.remaining("k", LIMITS, Kind::Write, t0), 0);
        assert_eq!(b.remaining("other", LIMITS, Kind::Write, t0), 1);
        // A new process sees the same spending.
        let again = Budget::load(store.clone()).unwrap();
        assert!(again.charge("k", LIMITS, Kind::Write, t0).is_err());
        assert!(
            again
                .charge("k", LIMITS, Kind::Write, t0 + time::Duration::seconds(61))
                .is_ok()
        );
    }

    #[test]
    fn a_lowered_limit_waits_until_enough_requests_left_the_window() {
        let tmp = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(Store::open(tmp.path()).unwrap());
        let b = Budget::load(store.clone()).unwrap();
        let t0 = OffsetDateTime::now_utc();
        for i in 0..3 {
            b.charge("k", LIMITS, Kind::Read, t0 + time::Duration::seconds(i))
                .unwrap();
        }
        let lowered = Limits { reads: 1, ..LIMITS };
        let now = t0 + time::Duration::seconds(3);
        // With a limit of one, all three must leave before one more fits: the newest was at t0 + 2 s.
        let ChargeError::Exhausted(e) = b.charge("k", lowered, Kind::Read, now).unwrap_err() else {
            panic!()
        };
        assert_eq!(ms(e.until), ms(t0) + 62_000);
        assert_eq!(b.available_at("k", lowered, Kind::Read, now), e.until);
        assert_eq!(b.remaining("k", lowered, Kind::Read, now), 0);
    }

    #[test]
    fn a_429_blocks_until_retry_after() {
        let tmp = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(Store::open(tmp.path()).unwrap());
        let b = Budget::load(store.clone()).unwrap();
        let t0 = OffsetDateTime::now_utc();
        b.block("k", t0 + time::Duration::seconds(30)).unwrap();
        assert!(b.charge("k", LIMITS, Kind::Read, t0).is_err());
        assert_eq!(b.remaining("k", LIMITS, Kind::Read, t0), 0);
        assert!(
            b.charge("k", LIMITS, Kind::Read, t0 + time::Duration::seconds(31))
                .is_ok()
        );
    }

    #[test]
    fn future_times_are_read_as_now_and_blocks_capped() {
        let tmp = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(Store::open(tmp.path()).unwrap());
        let now = OffsetDateTime::now_utc();
        let year = ms(now + time::Duration::days(365));
        let usage = KeyUsage {
            reads_ms: vec![year],
            writes_ms: vec![year],
            blocked_until_ms: Some(year),
        };
        store
            .update_budget_log(&mut |log| {
                log.insert("k".to_owned(), usage.clone());
                true
            })
            .unwrap();
        let b = Budget::load(store.clone()).unwrap();
        let limits = Limits {
            reads: 3,
            writes: 1,
            window: Duration::from_secs(3600),
        };
        let at = b.available_at("k", limits, Kind::Write, now);
        assert!(at <= now + time::Duration::hours(25), "capped: {at}");
        assert_eq!(
            b.remaining("k", limits, Kind::Read, now + time::Duration::days(2)),
            3
        );
        b.block("k", now + time::Duration::days(400)).unwrap();
        assert!(b.available_at("k", limits, Kind::Read, now) <= now + time::Duration::hours(25));
    }

    #[test]
    fn concurrent_charges_from_separate_processes_never_overspend() {
        // Each thread opens the directory as its own process would: its own Store, Budget and lock files.
        let tmp = tempfile::tempdir().unwrap();
        let limits = Limits {
            reads: 40,
            writes: 1,
            window: Duration::from_secs(3600),
        };
        let granted: u32 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let store: Arc<dyn StateStore> = Arc::new(Store::open(tmp.path()).unwrap());
                        let b = Budget::load(store).unwrap();
                        (0..10)
                            .filter(|_| {
                                b.charge("k", limits, Kind::Read, OffsetDateTime::now_utc())
                                    .is_ok()
                            })
                            .count() as u32
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(granted, 40, "80 attempts against a limit of 40");
        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(store.budget_log().unwrap()["k"].reads_ms.len(), 40);
    }
}
