//! What the pipeline keeps between passes, behind one small typed trait: a deployment's record, the bundle in
//! flight, the order being finalized, the journal of published TXT records, the ACME account of each CA, and
//! the request log of each vendor API key.
//!
//! [`StateStore`] is the seam for other backends (an HA store shared by several agents); the state directory
//! ([`Store`], `fs.rs`) is the first implementation, and the only code that names a state file.
//! [`ReadOnly`] is the dry run's view: every read goes through, every write about a deployment is dropped.

use std::sync::Arc;

use crate::certs::Bundle;
mod fs;
pub mod memory;
mod records;

pub use fs::{MAX_STATE_FILE, Store, StoreError, StoreLock, wait_for};
pub use instant_acme::AccountCredentials;
pub use records::{
    AriRecord, BudgetLog, CertRecord, IssuerLog, KeyUsage, LearnedLifetime, Notified, NotifyLog,
    Outcome, PendingOrder, PlanRecord, QueuedMessage, Record, Step, issuer_key,
};

/// A TXT record published for DNS-01 and not yet removed: `(owner name, value)`.
pub type JournalEntry = (String, String);

/// A held deployment lock ([`StateStore::try_lock_deployment`]), whatever the backend; released on drop.
pub struct DeploymentLock(#[allow(dead_code)] Box<dyn Send + Sync>);

impl DeploymentLock {
    /// Wraps a backend's guard.
    pub fn new(guard: impl Send + Sync + 'static) -> DeploymentLock {
        DeploymentLock(Box::new(guard))
    }
}

impl std::fmt::Debug for DeploymentLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeploymentLock")
    }
}

/// The per-deployment state the pipeline persists. Every write is atomic: after a crash a reader sees the
/// old or the new value, never a mix.
pub trait StateStore: Send + Sync {
    /// The deployment's record; a default one when there is none yet.
    ///
    /// # Errors
    /// The record cannot be read or is corrupt (it is left in place).
    fn record(&self, id: &str) -> Result<Record, StoreError>;
    /// Replaces the deployment's record.
    ///
    /// # Errors
    /// The write failed; the previous record is intact.
    fn save_record(&self, id: &str, record: &Record) -> Result<(), StoreError>;
    /// The issued bundle not yet active at the target, if any.
    ///
    /// # Errors
    /// It cannot be read or is corrupt.
    fn bundle(&self, id: &str) -> Result<Option<Bundle>, StoreError>;
    /// Saves the issued bundle (it holds a private key: kept private).
    ///
    /// # Errors
    /// The write failed.
    fn save_bundle(&self, id: &str, bundle: &Bundle) -> Result<(), StoreError>;
    /// Removes the bundle once its certificate is active.
    ///
    /// # Errors
    /// The removal failed.
    fn remove_bundle(&self, id: &str) -> Result<(), StoreError>;
    /// The order an earlier pass asked the CA to finalize, if any.
    ///
    /// # Errors
    /// It cannot be read or is corrupt.
    fn pending_order(&self, id: &str) -> Result<Option<PendingOrder>, StoreError>;
    /// Saves the order about to be finalized, with its certificate's key.
    ///
    /// # Errors
    /// The write failed.
    fn save_pending_order(&self, id: &str, order: &PendingOrder) -> Result<(), StoreError>;
    /// Forgets the pending order.
    ///
    /// # Errors
    /// The removal failed.
    fn remove_pending_order(&self, id: &str) -> Result<(), StoreError>;
    /// The TXT records published for the deployment and not yet removed.
    ///
    /// # Errors
    /// The journal cannot be read or is corrupt (it is left in place).
    fn journal(&self, id: &str) -> Result<Vec<JournalEntry>, StoreError>;
    /// Replaces the journal; an empty one removes it.
    ///
    /// # Errors
    /// The write failed.
    fn save_journal(&self, id: &str, entries: &[JournalEntry]) -> Result<(), StoreError>;
    /// The ACME account registered at the CA `directory`, if any (it holds the account's private key).
    ///
    /// # Errors
    /// It cannot be read or is corrupt (it is left in place).
    fn account(&self, directory: &str) -> Result<Option<AccountCredentials>, StoreError>;
    /// Keeps the account just registered at `directory`, beside those of other CAs: switching CAs never
    /// discards an account key.
    ///
    /// # Errors
    /// The write failed.
    fn save_account(&self, directory: &str, account: &AccountCredentials)
    -> Result<(), StoreError>;
    /// The vendor requests each API key made (empty when none were recorded yet).
    ///
    /// # Errors
    /// It cannot be read or is corrupt.
    fn budget_log(&self) -> Result<BudgetLog, StoreError>;
    /// Changes the request log atomically against every other process sharing this store: `update` sees the
    /// latest log and returns whether it changed it (and it must be written). Returns the log as it is now.
    /// A backend may call `update` more than once (an optimistic one, on a conflict). Every request is
    /// charged here before it is sent.
    ///
    /// # Errors
    /// The log cannot be read or written: the request must then not be sent.
    fn update_budget_log(
        &self,
        update: &mut dyn FnMut(&mut BudgetLog) -> bool,
    ) -> Result<BudgetLog, StoreError>;
    /// What the failure notifications remember (empty when nothing yet).
    ///
    /// # Errors
    /// It cannot be read or is corrupt.
    fn notify_log(&self) -> Result<NotifyLog, StoreError>;
    /// Changes it atomically against every other process sharing this store (like the request log):
    /// `update` sees the latest log and returns whether it changed it.
    ///
    /// # Errors
    /// It cannot be read or written.
    fn update_notify_log(
        &self,
        update: &mut dyn FnMut(&mut NotifyLog) -> bool,
    ) -> Result<NotifyLog, StoreError>;
    /// The certificate lifetimes learned per issuer (empty when none yet).
    ///
    /// # Errors
    /// It cannot be read or is corrupt.
    fn issuer_log(&self) -> Result<IssuerLog, StoreError>;
    /// Records the lifetime of the certificate `key` (see [`issuer_key`]) just issued, beside what other
    /// processes learned of other issuers.
    ///
    /// # Errors
    /// It cannot be read or written.
    fn save_issuer_lifetime(&self, key: &str, learned: &LearnedLifetime) -> Result<(), StoreError>;
    /// Takes the lock of deployment `id` without waiting: one process works on a deployment at a time, while
    /// other deployments proceed in other processes. Released when the guard drops.
    ///
    /// # Errors
    /// [`StoreError::Busy`] naming the holder when another process works on `id`.
    fn try_lock_deployment(&self, id: &str) -> Result<DeploymentLock, StoreError>;

    /// Returns false for a store that drops its writes ([`ReadOnly`]): nothing it is given was persisted.
    fn persists(&self) -> bool {
        true
    }
}

/// A boxed or shared backend is a backend: the pipeline holds its state as `Box<dyn StateStore>`, and a test
/// keeps an `Arc` to look inside.
macro_rules! delegate {
    ($($wrapper:ident),*) => {$(
        impl<T: StateStore + ?Sized> StateStore for $wrapper<T> {
            fn record(&self, id: &str) -> Result<Record, StoreError> {
                (**self).record(id)
            }
            fn save_record(&self, id: &str, record: &Record) -> Result<(), StoreError> {
                (**self).save_record(id, record)
            }
            fn bundle(&self, id: &str) -> Result<Option<Bundle>, StoreError> {
                (**self).bundle(id)
            }
            fn save_bundle(&self, id: &str, bundle: &Bundle) -> Result<(), StoreError> {
                (**self).save_bundle(id, bundle)
            }
            fn remove_bundle(&self, id: &str) -> Result<(), StoreError> {
                (**self).remove_bundle(id)
            }
            fn pending_order(&self, id: &str) -> Result<Option<PendingOrder>, StoreError> {
                (**self).pending_order(id)
            }
            fn save_pending_order(&self, id: &str, order: &PendingOrder) -> Result<(), StoreError> {
                (**self).save_pending_order(id, order)
            }
            fn remove_pending_order(&self, id: &str) -> Result<(), StoreError> {
                (**self).remove_pending_order(id)
            }
            fn journal(&self, id: &str) -> Result<Vec<JournalEntry>, StoreError> {
                (**self).journal(id)
            }
            fn save_journal(&self, id: &str, entries: &[JournalEntry]) -> Result<(), StoreError> {
                (**self).save_journal(id, entries)
            }
            fn account(&self, directory: &str) -> Result<Option<AccountCredentials>, StoreError> {
                (**self).account(directory)
            }
            fn save_account(&self, directory: &str, account: &AccountCredentials) -> Result<(), StoreError> {
                (**self).save_account(directory, account)
            }
            fn budget_log(&self) -> Result<BudgetLog, StoreError> {
                (**self).budget_log()
            }
            fn update_budget_log(
                &self,
                update: &mut dyn FnMut(&mut BudgetLog) -> bool,
            ) -> Result<BudgetLog, StoreError> {
                (**self).update_budget_log(update)
            }
            fn try_lock_deployment(&self, id: &str) -> Result<DeploymentLock, StoreError> {
                (**self).try_lock_deployment(id)
            }
            fn notify_log(&self) -> Result<NotifyLog, StoreError> {
                (**self).notify_log()
            }
            fn issuer_log(&self) -> Result<IssuerLog, StoreError> {
                (**self).issuer_log()
            }
            fn save_issuer_lifetime(&self, key: &str, learned: &LearnedLifetime) -> Result<(), StoreError> {
                (**self).save_issuer_lifetime(key, learned)
            }
            fn update_notify_log(
                &self,
                update: &mut dyn FnMut(&mut NotifyLog) -> bool,
            ) -> Result<NotifyLog, StoreError> {
                (**self).update_notify_log(update)
            }
            fn persists(&self) -> bool {
                (**self).persists()
            }
        }
    )*};
}
delegate!(Box, Arc);

/// A dry run's view of a store: reads go through, writes about deployments are dropped (and succeed).
///
/// Two writes go through, because they record what already happened outside: the requests the vendor counted
/// (dropping them would let the next pass overspend the key and earn a 429) and an account the CA registered
/// (dropping it would register a new one at every dry run, into the CA's account rate limit).
pub struct ReadOnly<S>(pub S);

impl<S: StateStore> StateStore for ReadOnly<S> {
    fn record(&self, id: &str) -> Result<Record, StoreError> {
        self.0.record(id)
    }

    fn save_record(&self, _id: &str, _record: &Record) -> Result<(), StoreError> {
        Ok(())
    }

    fn bundle(&self, id: &str) -> Result<Option<Bundle>, StoreError> {
        self.0.bundle(id)
    }

    fn save_bundle(&self, _id: &str, _bundle: &Bundle) -> Result<(), StoreError> {
        Ok(())
    }

    fn remove_bundle(&self, _id: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn pending_order(&self, id: &str) -> Result<Option<PendingOrder>, StoreError> {
        self.0.pending_order(id)
    }

    fn save_pending_order(&self, _id: &str, _order: &PendingOrder) -> Result<(), StoreError> {
        Ok(())
    }

    fn remove_pending_order(&self, _id: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn journal(&self, id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        self.0.journal(id)
    }

    fn save_journal(&self, _id: &str, _entries: &[JournalEntry]) -> Result<(), StoreError> {
        Ok(())
    }

    fn account(&self, directory: &str) -> Result<Option<AccountCredentials>, StoreError> {
        self.0.account(directory)
    }

    fn save_account(
        &self,
        directory: &str,
        account: &AccountCredentials,
    ) -> Result<(), StoreError> {
        self.0.save_account(directory, account)
    }

    fn budget_log(&self) -> Result<BudgetLog, StoreError> {
        self.0.budget_log()
    }

    fn update_budget_log(
        &self,
        update: &mut dyn FnMut(&mut BudgetLog) -> bool,
    ) -> Result<BudgetLog, StoreError> {
        self.0.update_budget_log(update)
    }

    /// A dry run takes the lock too: it must not read a deployment's state halfway through another
    /// process's steps.
    fn try_lock_deployment(&self, id: &str) -> Result<DeploymentLock, StoreError> {
        self.0.try_lock_deployment(id)
    }

    fn notify_log(&self) -> Result<NotifyLog, StoreError> {
        self.0.notify_log()
    }

    fn issuer_log(&self) -> Result<IssuerLog, StoreError> {
        self.0.issuer_log()
    }

    /// A lifetime learned from a trial certificate is the staging CA's: it says nothing of the real one.
    fn save_issuer_lifetime(
        &self,
        _key: &str,
        _learned: &LearnedLifetime,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    fn update_notify_log(
        &self,
        update: &mut dyn FnMut(&mut NotifyLog) -> bool,
    ) -> Result<NotifyLog, StoreError> {
        // A dry run sends nothing; the change is shown to the caller and dropped.
        let mut log = self.0.notify_log()?;
        update(&mut log);
        Ok(log)
    }

    fn persists(&self) -> bool {
        false
    }
}
