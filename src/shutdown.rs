//! How a pass learns that the process is stopping (SIGTERM/SIGINT), as mini-redis's `Shutdown` does.
//!
//! A pass checks [`Shutdown::is_stopping`] only at safe points — before a deployment, before an ACME order,
//! before a write to the vendor — and may stop *waiting* (for `running`) at any moment, because every step
//! before it is persisted. The one span where a certificate exists but is not yet saved — finalization and
//! download — is covered by the pending order saved just before it: a pass that resumes fetches that
//! certificate instead of ordering another.

use tokio::sync::watch;

/// The receiving side: cheap to clone, one per task that must stop.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The sending side, held by whoever handles the signals.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

/// A new trigger and its receiver.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    /// Tells every [`Shutdown`] to stop taking new work.
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    /// A receiver that never fires (one-shot runs without signal handling, tests).
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        // Keeping the sender alive forever makes `wait` pend forever rather than return at once.
        std::mem::forget(tx);
        Shutdown { rx }
    }

    /// Returns true if and only if stopping was requested.
    pub fn is_stopping(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes when stopping is requested.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger is gone: nobody can ask to stop any more, so pend forever.
        if rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
