//! What each [`StateStore`] item is on disk: with the lock files (`lock.rs`), the only code that names a state
//! file.
//!
//! ```text
//! account.json                   ACME accounts, one per CA directory (secret)
//! budget.json                    vendor requests per API key (changed under update.lock)
//! notify.json                    notified states and undelivered notifications
//! issuers.json                   certificate lifetimes learned per issuer (changed under update.lock)
//! deployments/<id>.json          the record
//! deployments/<id>.pem           the bundle in flight: key then chain (secret)
//! deployments/<id>.order.json    the order being finalized, with its key (secret)
//! deployments/<id>.txt.json      TXT records published and not yet removed
//! ```

use std::collections::BTreeMap;

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, read_state_file};
use crate::certs::Bundle;
use crate::state::{
    AccountCredentials, BudgetLog, DeploymentLock, IssuerLog, JournalEntry, LearnedLifetime,
    NotifyLog, PendingOrder, Record, StateStore,
};

const ACCOUNTS_FILE: &str = "account.json";
const BUDGET_FILE: &str = "budget.json";
const NOTIFY_FILE: &str = "notify.json";
const ISSUERS_FILE: &str = "issuers.json";

fn record_file(id: &str) -> String {
    format!("deployments/{id}.json")
}

fn bundle_file(id: &str) -> String {
    format!("deployments/{id}.pem")
}

fn order_file(id: &str) -> String {
    format!("deployments/{id}.order.json")
}

fn journal_file(id: &str) -> String {
    format!("deployments/{id}.txt.json")
}

/// `account.json`. Entries stay opaque JSON so that one unreadable account (a CA's, from another version)
/// does not stop the others from being read or kept.
#[derive(Default, Serialize, Deserialize)]
struct Accounts {
    #[serde(default)]
    accounts: BTreeMap<String, serde_json::Value>,
}

impl StateStore for Store {
    fn record(&self, id: &str) -> Result<Record, StoreError> {
        Ok(self.read_json(&record_file(id))?.unwrap_or_default())
    }

    fn save_record(&self, id: &str, record: &Record) -> Result<(), StoreError> {
        self.write_json(&record_file(id), record)
    }

    fn bundle(&self, id: &str) -> Result<Option<Bundle>, StoreError> {
        let path = self.dir.join(bundle_file(id));
        let Some(bytes) = read_state_file(&path)? else {
            return Ok(None);
        };
        let corrupt = |detail: &str| StoreError::Corrupt {
            path: path.clone(),
            detail: detail.into(),
        };
        let text = String::from_utf8(bytes).map_err(|_| corrupt("not UTF-8 text"))?;
        const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
        const END: &str = "-----END PRIVATE KEY-----\n";
        let start = text.find(BEGIN).ok_or_else(|| corrupt("no private key"))?;
        let end = text[start..]
            .find(END)
            .ok_or_else(|| corrupt("truncated private key"))?
            + start
            + END.len();
        let chain_pem = format!("{}{}", &text[..start], &text[end..]);
        if !chain_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(corrupt("no certificate"));
        }
        Ok(Some(Bundle {
            key_pkcs8_pem: SecretString::from(text[start..end].to_owned()),
            chain_pem,
        }))
    }

    fn save_bundle(&self, id: &str, bundle: &Bundle) -> Result<(), StoreError> {
        let text = format!(
            "{}{}",
            bundle.key_pkcs8_pem.expose_secret(),
            bundle.chain_pem
        );
        self.write_atomic(&bundle_file(id), text.as_bytes())
    }

    fn remove_bundle(&self, id: &str) -> Result<(), StoreError> {
        self.remove(&bundle_file(id))
    }

    fn pending_order(&self, id: &str) -> Result<Option<PendingOrder>, StoreError> {
        let name = order_file(id);
        let Some(value) = self.read_json::<serde_json::Value>(&name)? else {
            return Ok(None);
        };
        let field = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        match (field("url"), field("key_pkcs8_pem")) {
            (Some(url), Some(key)) => Ok(Some(PendingOrder {
                url,
                key_pkcs8_pem: key.into(),
            })),
            _ => Err(StoreError::Corrupt {
                path: self.dir.join(name),
                detail: "url or key missing".into(),
            }),
        }
    }

    fn save_pending_order(&self, id: &str, order: &PendingOrder) -> Result<(), StoreError> {
        let json = serde_json::json!({
            "url": order.url,
            "key_pkcs8_pem": order.key_pkcs8_pem.expose_secret(),
        });
        self.write_json(&order_file(id), &json)
    }

    fn remove_pending_order(&self, id: &str) -> Result<(), StoreError> {
        self.remove(&order_file(id))
    }

    fn journal(&self, id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        Ok(self.read_json(&journal_file(id))?.unwrap_or_default())
    }

    fn save_journal(&self, id: &str, entries: &[JournalEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            self.remove(&journal_file(id))
        } else {
            self.write_json(&journal_file(id), &entries)
        }
    }

    fn account(&self, directory: &str) -> Result<Option<AccountCredentials>, StoreError> {
        let accounts: Accounts = self.read_json(ACCOUNTS_FILE)?.unwrap_or_default();
        let Some(value) = accounts.accounts.get(directory) else {
            return Ok(None);
        };
        // serde's own message can quote a field's value, and these fields are the account's private key.
        serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|_| StoreError::Corrupt {
                path: self.dir.join(ACCOUNTS_FILE),
                detail: format!("the account for {directory} is not one the ACME client can read"),
            })
    }

    fn save_account(
        &self,
        directory: &str,
        account: &AccountCredentials,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_value(account).map_err(|e| StoreError::Encode {
            path: self.dir.join(ACCOUNTS_FILE),
            detail: e.to_string(),
        })?;
        // Another process may have registered at another CA meanwhile: keep its account too.
        self.updating(|| {
            let mut accounts: Accounts = self.read_json(ACCOUNTS_FILE)?.unwrap_or_default();
            accounts.accounts.insert(directory.to_owned(), value);
            self.write_json(ACCOUNTS_FILE, &accounts)
        })
    }

    fn budget_log(&self) -> Result<BudgetLog, StoreError> {
        Ok(self.read_json(BUDGET_FILE)?.unwrap_or_default())
    }

    fn update_budget_log(
        &self,
        update: &mut dyn FnMut(&mut BudgetLog) -> bool,
    ) -> Result<BudgetLog, StoreError> {
        self.updating(|| {
            let mut log: BudgetLog = self.read_json(BUDGET_FILE)?.unwrap_or_default();
            if update(&mut log) {
                self.write_json(BUDGET_FILE, &log)?;
            }
            Ok(log)
        })
    }

    fn try_lock_deployment(&self, id: &str) -> Result<DeploymentLock, StoreError> {
        Store::try_lock_deployment(self, id).map(DeploymentLock::new)
    }

    fn notify_log(&self) -> Result<NotifyLog, StoreError> {
        Ok(self.read_json(NOTIFY_FILE)?.unwrap_or_default())
    }

    fn issuer_log(&self) -> Result<IssuerLog, StoreError> {
        Ok(self.read_json(ISSUERS_FILE)?.unwrap_or_default())
    }

    fn save_issuer_lifetime(&self, key: &str, learned: &LearnedLifetime) -> Result<(), StoreError> {
        self.updating(|| {
            let mut log: IssuerLog = self.read_json(ISSUERS_FILE)?.unwrap_or_default();
            log.insert(key.to_owned(), learned.clone());
            self.write_json(ISSUERS_FILE, &log)
        })
    }

    fn update_notify_log(
        &self,
        update: &mut dyn FnMut(&mut NotifyLog) -> bool,
    ) -> Result<NotifyLog, StoreError> {
        self.updating(|| {
            let mut log: NotifyLog = self.read_json(NOTIFY_FILE)?.unwrap_or_default();
            if update(&mut log) {
                self.write_json(NOTIFY_FILE, &log)?;
            }
            Ok(log)
        })
    }
}
