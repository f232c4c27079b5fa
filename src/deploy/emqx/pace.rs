//! Pacing of the polls that wait for `running`, so that the deployments of one API key waiting at the same
//! time share its GET budget instead of spending it in the first seconds and then timing out.
//!
//! Each waiter may use an equal share of the GETs the key can afford before its deadline (those left now, plus
//! those leaving the window meanwhile), after one GET is kept for every deployment of the key the pass has not
//! started yet (each needs at least its inspection). When its share covers polling every `poll_interval` until
//! the deadline, it polls every `poll_interval`. Otherwise its pauses double from `poll_interval` (most
//! certificates run within a few polls: measured, a uniform spread made a 10-second `pending` cost minutes),
//! up to its share spread evenly over the time left. The share is recomputed before every poll from the
//! budget as it is, so polls taken early shrink the later ones; the budget itself is the hard limit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// What the pass and the waiters of one API key tell each other.
#[derive(Debug, Default)]
pub struct Pace {
    /// Deployments of the key this pass will still start.
    unstarted: AtomicU32,
    /// Deployments of the key waiting for `running` now.
    waiting: AtomicU32,
}

/// Counts one waiter while it lives.
pub struct Waiting<'a>(&'a Pace);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pace {
    /// A pass is about to start `tasks` deployments of the key.
    pub fn plan(&self, tasks: u32) {
        self.unstarted.store(tasks, Ordering::Relaxed);
    }

    /// A task of the key started.
    pub fn started(&self) {
        let _ = self
            .unstarted
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Registers a waiter until the guard drops.
    pub fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self)
    }

    /// How long a waiter sleeps after its `polls`-th poll, given the GETs the key can afford before the
    /// deadline (`affordable`), the time left until it (`left`), the configured `poll_interval`, and the time
    /// one GET needs to leave a full window (`refill`) for when no share is left.
    pub fn interval(
        &self,
        affordable: u32,
        polls: u32,
        left: Duration,
        poll_interval: Duration,
        refill: Duration,
    ) -> Duration {
        let kept = self.unstarted.load(Ordering::Relaxed);
        let waiters = self.waiting.load(Ordering::Relaxed).max(1);
        let share = affordable.saturating_sub(kept) / waiters;
        interval(share, polls, left, poll_interval, refill)
    }
}

/// The pause after the `polls`-th poll of a wait (see the module's doc).
fn interval(
    share: u32,
    polls: u32,
    left: Duration,
    poll_interval: Duration,
    refill: Duration,
) -> Duration {
    if share == 0 {
        return poll_interval.max(refill);
    }
    let wanted = left.as_secs_f64() / poll_interval.as_secs_f64().max(f64::EPSILON);
    if f64::from(share) >= wanted {
        return poll_interval;
    }
    // The share spread over the time left: the last poll lands before the deadline.
    let even = (left / (share + 1)).max(poll_interval);
    let doubled = poll_interval.saturating_mul(1 << polls.min(20));
    doubled.min(even)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn plenty_polls_at_the_interval_and_scarcity_spreads_the_share() {
        // 57 GETs for 3 waiters over 10 s at 100 ms: 19 each cannot cover 100 polls, so pauses double from
        // 100 ms up to the even spread of ~0.5 s.
        let pace = Pace::default();
        let guards: Vec<_> = (0..3).map(|_| pace.waiting()).collect();
        let pauses: Vec<Duration> = (0..5)
            .map(|polls| pace.interval(57, polls, 10 * S, S / 10, 60 * S))
            .collect();
        assert_eq!(pauses, [S / 10, S / 5, 2 * S / 5, 10 * S / 20, 10 * S / 20]);
        drop(guards);
        // Alone with enough GETs: the configured interval.
        assert_eq!(pace.interval(57, 3, 2 * S, S / 10, 60 * S), S / 10);
    }

    #[test]
    fn unstarted_deployments_keep_a_get_each() {
        let pace = Pace::default();
        pace.plan(5);
        let _w = pace.waiting();
        // 5 affordable, all kept for the deployments still to start: wait for one GET to leave the window.
        assert_eq!(pace.interval(5, 0, 10 * S, S, 60 * S), 60 * S);
        for _ in 0..5 {
            pace.started();
        }
        pace.started();
        assert_eq!(pace.interval(5, 9, 10 * S, S, 60 * S), 10 * S / 6);
    }
}
