//! A journal of the TXT records published for one deployment, so that a process killed between publishing
//! and removing them leaves the next pass a list to clean up.
//!
//! The journal keeps each record where it is really published ([`Dns01Solver::resolve`]: at the end of a
//! CNAME chain), so the next pass removes exactly what was added, even if the CNAME changed meanwhile.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::{Dns01Solver, ResolveFuture, SolverError, SolverFuture, TxtRecord};
use crate::state::StateStore;
use crate::state::StoreError;

/// Wraps a solver: every record is journaled before it is published and forgotten after it is removed.
pub struct JournaledSolver<'a> {
    inner: &'a dyn Dns01Solver,
    state: &'a dyn StateStore,
    id: &'a str,
    /// Where each record presented through this journal went, so cleanup removes exactly that.
    targets: Mutex<HashMap<TxtRecord, TxtRecord>>,
}

impl<'a> JournaledSolver<'a> {
    /// Journals the records `inner` publishes for deployment `id` in `state`.
    pub fn new(inner: &'a dyn Dns01Solver, state: &'a dyn StateStore, id: &'a str) -> Self {
        JournaledSolver {
            inner,
            state,
            id,
            targets: Mutex::new(HashMap::new()),
        }
    }

    /// Where `record` goes: as resolved when it was presented here, else as the inner solver says now.
    async fn target(&self, record: &TxtRecord) -> Result<TxtRecord, SolverError> {
        let known = self
            .targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(record)
            .cloned();
        match known {
            Some(target) => Ok(target),
            None => self.inner.resolve(record).await,
        }
    }

    fn edit(&self, record: &TxtRecord, add: bool) -> Result<(), SolverError> {
        let entry = (record.fqdn.clone(), record.value.clone());
        let mut entries = match self.state.journal(self.id) {
            Ok(entries) => entries,
            // A journal that cannot be read is kept as it is for the operator: overwriting it would forget the
            // records it lists. The pass fails on it before publishing (see `clean_leftovers`).
            Err(e) => {
                tracing::warn!("cannot journal the TXT record {}: {e}", record.fqdn);
                return Ok(());
            }
        };
        entries.retain(|e| *e != entry);
        if add {
            entries.push(entry);
        }
        // Journaling is best effort: it must not stop a renewal; the record is still removed in this pass.
        if let Err(e) = self.state.save_journal(self.id, &entries) {
            tracing::warn!("cannot journal the TXT record {}: {e}", record.fqdn);
        }
        Ok(())
    }

    /// Removes records a killed process left behind.
    ///
    /// # Errors
    /// The journal cannot be read: it is left in place, and the records it lists may still be in the zone.
    pub async fn clean_leftovers(&self) -> Result<(), StoreError> {
        for (fqdn, value) in self.state.journal(self.id)? {
            let record = TxtRecord { fqdn, value };
            tracing::info!(owner = %record.fqdn, "removing a TXT record an interrupted pass left");
            if self.inner.cleanup(&record).await.is_ok() {
                let _ = self.edit(&record, false);
            }
        }
        Ok(())
    }
}

impl Dns01Solver for JournaledSolver<'_> {
    fn present<'a>(&'a self, record: &'a TxtRecord) -> SolverFuture<'a> {
        Box::pin(async move {
            let target = self.inner.resolve(record).await?;
            self.targets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(record.clone(), target.clone());
            self.edit(&target, true)?;
            self.inner.present(&target).await
        })
    }

    fn cleanup<'a>(&'a self, record: &'a TxtRecord) -> SolverFuture<'a> {
        Box::pin(async move {
            let target = self.target(record).await?;
            self.inner.cleanup(&target).await?;
            self.edit(&target, false)
        })
    }

    fn resolve<'a>(&'a self, record: &'a TxtRecord) -> ResolveFuture<'a> {
        Box::pin(self.target(record))
    }

    fn preflight<'a>(&'a self, owners: &'a [String]) -> SolverFuture<'a> {
        self.inner.preflight(owners)
    }
}
