//! An in-memory [`StateStore`], for the pipeline's unit tests and as the smallest example of a backend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{JournalEntry, StateStore};
use crate::certs::Bundle;
use crate::state::{
    AccountCredentials, BudgetLog, DeploymentLock, IssuerLog, LearnedLifetime, NotifyLog,
    PendingOrder, Record, StoreError,
};

#[derive(Default)]
struct Inner {
    records: BTreeMap<String, Record>,
    bundles: BTreeMap<String, Bundle>,
    orders: BTreeMap<String, PendingOrder>,
    journals: BTreeMap<String, Vec<JournalEntry>>,
    /// As serialized: the CA client's credentials cannot be cloned.
    accounts: BTreeMap<String, serde_json::Value>,
    budget: BudgetLog,
    locked: std::collections::BTreeSet<String>,
    notify: NotifyLog,
    issuers: IssuerLog,
}

/// Everything in a map behind a mutex; nothing survives the process.
#[derive(Default)]
pub struct Memory(Arc<Mutex<Inner>>);

/// Releases a deployment lock of [`Memory`].
struct Unlock(Arc<Mutex<Inner>>, String);

impl Drop for Unlock {
    fn drop(&mut self) {
        lock(&self.0).locked.remove(&self.1);
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // Plain maps: a panic elsewhere cannot leave them half-updated.
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl Memory {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.0)
    }
}

impl StateStore for Memory {
    fn record(&self, id: &str) -> Result<Record, StoreError> {
        Ok(self.inner().records.get(id).cloned().unwrap_or_default())
    }

    fn save_record(&self, id: &str, record: &Record) -> Result<(), StoreError> {
        self.inner().records.insert(id.to_owned(), record.clone());
        Ok(())
    }

    fn bundle(&self, id: &str) -> Result<Option<Bundle>, StoreError> {
        Ok(self.inner().bundles.get(id).cloned())
    }

    fn save_bundle(&self, id: &str, bundle: &Bundle) -> Result<(), StoreError> {
        self.inner().bundles.insert(id.to_owned(), bundle.clone());
        Ok(())
    }

    fn remove_bundle(&self, id: &str) -> Result<(), StoreError> {
        self.inner().bundles.remove(id);
        Ok(())
    }

    fn pending_order(&self, id: &str) -> Result<Option<PendingOrder>, StoreError> {
        Ok(self.inner().orders.get(id).map(|o| PendingOrder {
            url: o.url.clone(),
            key_pkcs8_pem: o.key_pkcs8_pem.clone(),
        }))
    }

    fn save_pending_order(&self, id: &str, order: &PendingOrder) -> Result<(), StoreError> {
        let copy = PendingOrder {
            url: order.url.clone(),
            key_pkcs8_pem: order.key_pkcs8_pem.clone(),
        };
        self.inner().orders.insert(id.to_owned(), copy);
        Ok(())
    }

    fn remove_pending_order(&self, id: &str) -> Result<(), StoreError> {
        self.inner().orders.remove(id);
        Ok(())
    }

    fn journal(&self, id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        Ok(self.inner().journals.get(id).cloned().unwrap_or_default())
    }

    fn save_journal(&self, id: &str, entries: &[JournalEntry]) -> Result<(), StoreError> {
        let mut inner = self.inner();
        if entries.is_empty() {
            inner.journals.remove(id);
        } else {
            inner.journals.insert(id.to_owned(), entries.to_vec());
        }
        Ok(())
    }

    fn account(&self, directory: &str) -> Result<Option<AccountCredentials>, StoreError> {
        let Some(value) = self.inner().accounts.get(directory).cloned() else {
            return Ok(None);
        };
        serde_json::from_value(value)
            .map(Some)
            .map_err(|_| StoreError::Corrupt {
                path: format!("memory:account/{directory}").into(),
                detail: "not an account the ACME client can read".into(),
            })
    }

    fn save_account(
        &self,
        directory: &str,
        account: &AccountCredentials,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_value(account).map_err(|e| StoreError::Encode {
            path: format!("memory:account/{directory}").into(),
            detail: e.to_string(),
        })?;
        self.inner().accounts.insert(directory.to_owned(), value);
        Ok(())
    }

    fn budget_log(&self) -> Result<BudgetLog, StoreError> {
        Ok(self.inner().budget.clone())
    }

    fn update_budget_log(
        &self,
        update: &mut dyn FnMut(&mut BudgetLog) -> bool,
    ) -> Result<BudgetLog, StoreError> {
        let mut inner = self.inner();
        update(&mut inner.budget);
        Ok(inner.budget.clone())
    }

    fn notify_log(&self) -> Result<NotifyLog, StoreError> {
        Ok(self.inner().notify.clone())
    }

    fn issuer_log(&self) -> Result<IssuerLog, StoreError> {
        Ok(self.inner().issuers.clone())
    }

    fn save_issuer_lifetime(&self, key: &str, learned: &LearnedLifetime) -> Result<(), StoreError> {
        self.inner().issuers.insert(key.to_owned(), learned.clone());
        Ok(())
    }

    fn update_notify_log(
        &self,
        update: &mut dyn FnMut(&mut NotifyLog) -> bool,
    ) -> Result<NotifyLog, StoreError> {
        let mut inner = self.inner();
        update(&mut inner.notify);
        Ok(inner.notify.clone())
    }

    fn try_lock_deployment(&self, id: &str) -> Result<DeploymentLock, StoreError> {
        if !self.inner().locked.insert(id.to_owned()) {
            return Err(StoreError::Busy {
                id: id.to_owned(),
                pid: std::process::id().to_string(),
            });
        }
        Ok(DeploymentLock::new(Unlock(self.0.clone(), id.to_owned())))
    }
}
