//! Write turns: in a concurrent pass the deployments of one request budget still write in deadline order.
//!
//! Issuance, DNS-01 and the wait for `running` overlap freely; only the write itself waits until every
//! deployment scheduled before it on the same budget has written or has given up its turn. So when the
//! vendor's write budget runs out mid-pass (a 429, a write that failed), it is the least urgent certificates
//! that wait for the next window, as in a sequential pass.
//!
//! Write claims keep a concurrent pass from ordering certificates it cannot push: a deployment orders one only
//! if its budget has a write left beyond those claimed by the deployments of this pass still to write (a
//! bundle waiting to be pushed claims one as its task starts). In a sequential pass there are no other claims,
//! which is the old "no write left" check.
//!
//! No deadlock: a pass starts its tasks in schedule order, so every deployment a task waits for was started
//! before it and releases its turn when it writes, when it ends, or when it must wait for a lock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// The turns and claims of one pass.
#[derive(Default)]
pub(super) struct Turns {
    inner: Mutex<Inner>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct Inner {
    /// For each budget group, the deployments yet to write, in schedule order.
    queues: BTreeMap<String, Vec<String>>,
    /// For each budget group, the deployments holding a claim on one of its writes.
    claims: BTreeMap<String, BTreeSet<String>>,
}

impl Turns {
    /// Starts a pass with `queues` (group → deployment ids in schedule order).
    pub(super) fn begin(&self, queues: BTreeMap<String, Vec<String>>) {
        *self.lock() = Inner {
            queues,
            claims: BTreeMap::new(),
        };
        self.changed.notify_waiters();
    }

    /// Claims one of `group`'s writes for `id` whatever is left (a bundle already issued must be pushed).
    pub(super) fn claim(&self, group: &str, id: &str) {
        self.lock()
            .claims
            .entry(group.to_owned())
            .or_default()
            .insert(id.to_owned());
    }

    /// Claims one of `group`'s writes for `id` if `writes_left` is more than the writes others claimed;
    /// otherwise says how many they claimed.
    pub(super) fn try_claim(&self, group: &str, id: &str, writes_left: u32) -> Result<(), u32> {
        let mut inner = self.lock();
        let claims = inner.claims.entry(group.to_owned()).or_default();
        if claims.contains(id) {
            return Ok(());
        }
        let others = u32::try_from(claims.len()).unwrap_or(u32::MAX);
        if writes_left > others {
            claims.insert(id.to_owned());
            Ok(())
        } else {
            Err(others)
        }
    }

    /// Waits until `id` is the first of `group` still to write (at once for a deployment with no turn).
    pub(super) async fn wait(&self, group: &str, id: &str) {
        loop {
            // Registered before the check, so a release between the check and the wait is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_first(group, id) {
                return;
            }
            tracing::debug!(
                group,
                "waiting for more urgent deployments of the budget to write first"
            );
            changed.await;
        }
    }

    /// Gives up `id`'s turn: it wrote, it ended, or it must wait for something else first.
    pub(super) fn release(&self, id: &str) {
        let mut inner = self.lock();
        for claims in inner.claims.values_mut() {
            claims.remove(id);
        }
        let mut any = false;
        for queue in inner.queues.values_mut() {
            let before = queue.len();
            queue.retain(|q| q != id);
            any |= queue.len() != before;
        }
        drop(inner);
        if any {
            self.changed.notify_waiters();
        }
    }

    fn is_first(&self, group: &str, id: &str) -> bool {
        let inner = self.lock();
        match inner.queues.get(group) {
            Some(queue) if queue.iter().any(|q| q == id) => queue.first().is_some_and(|f| f == id),
            _ => true,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain maps: a panic elsewhere cannot leave them half-updated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn writes_follow_the_queue_and_releases_let_the_next_go() {
        let turns = Arc::new(Turns::default());
        turns.begin(BTreeMap::from([(
            "k".to_owned(),
            vec!["a".to_owned(), "b".to_owned(), "c".to_owned()],
        )]));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for id in ["c", "b", "a"] {
            let (turns, order) = (turns.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                turns.wait("k", id).await;
                order.lock().unwrap().push(id);
                turns.release(id);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["a", "b", "c"]);
        // Not in any queue, or another group: no wait.
        turns.wait("k", "z").await;
        turns.wait("other", "a").await;
    }

    #[test]
    fn claims_leave_no_write_promised_twice() {
        let turns = Turns::default();
        turns.claim("k", "resumed");
        assert_eq!(turns.try_claim("k", "a", 2), Ok(()));
        assert_eq!(turns.try_claim("k", "a", 2), Ok(()), "a claim is held once");
        assert_eq!(
            turns.try_claim("k", "b", 2),
            Err(2),
            "both writes are claimed"
        );
        assert_eq!(turns.try_claim("other", "b", 1), Ok(()));
        turns.release("a");
        assert_eq!(turns.try_claim("k", "b", 2), Ok(()));
    }
}
