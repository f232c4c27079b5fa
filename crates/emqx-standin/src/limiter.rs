//! Per-key sliding-window rate limits, as the vendor documents them ("60 times in 60 minutes").
//!
//! Each (key, class) pair keeps the instants of its counted requests in a `VecDeque`, oldest
//! first. Instants older than the window fall out when the pair is next touched; nothing runs in
//! the background. Limits and window come from the caller on every call, so changing the
//! settings takes effect at once without losing the history.
//!
//! A request answered 429 is *not* recorded: the stand-in promises with `Retry-After` that the
//! request will be admitted after waiting that long, and recording refused requests would break
//! that promise for every client that retries on time.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Which budget a request draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// GET requests.
    Read,
    /// POST, PUT and DELETE requests, together.
    Write,
}

/// Sliding windows of counted requests, per key and class.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: HashMap<(String, Class), VecDeque<Instant>>,
}

impl RateLimiter {
    /// Counts a request that is answered without a rate-limit check (403, 404).
    pub fn record(&mut self, key: &str, class: Class, window: Duration, now: Instant) {
        self.entries(key, class, window, now).push_back(now);
    }

    /// Admits and counts a request if fewer than `limit` requests were counted in the window.
    ///
    /// # Errors
    ///
    /// When the window is full: the whole seconds (at least 1) until a request will be
    /// admitted again, for the `Retry-After` header. Nothing is recorded then.
    pub fn try_acquire(
        &mut self,
        key: &str,
        class: Class,
        limit: u32,
        window: Duration,
        now: Instant,
    ) -> Result<(), u64> {
        let entries = self.entries(key, class, window, now);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        if entries.len() < limit {
            entries.push_back(now);
            return Ok(());
        }
        // With `len >= limit`, a slot frees up when the entry at `len - limit` leaves the
        // window; with the usual `len == limit` that is the oldest entry. A zero limit never
        // frees a slot: ask for a whole window.
        let wait = match limit {
            0 => window,
            _ => entries
                .get(entries.len() - limit)
                .map_or(window, |&oldest| {
                    window.saturating_sub(now.saturating_duration_since(oldest))
                }),
        };
        Err(ceil_seconds(wait).max(1))
    }

    /// The live entries of one pair, with expired ones dropped.
    fn entries(
        &mut self,
        key: &str,
        class: Class,
        window: Duration,
        now: Instant,
    ) -> &mut VecDeque<Instant> {
        let entries = self.windows.entry((key.to_owned(), class)).or_default();
        while entries
            .front()
            .is_some_and(|&oldest| now.saturating_duration_since(oldest) >= window)
        {
            entries.pop_front();
        }
        entries
    }
}

/// Whole seconds, rounded up.
fn ceil_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn admits_up_to_the_limit_then_tells_when_to_retry() {
        let mut limiter = RateLimiter::default();
        let t0 = Instant::now();
        assert_eq!(
            limiter.try_acquire("k", Class::Write, 2, WINDOW, t0),
            Ok(())
        );
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(
            limiter.try_acquire("k", Class::Write, 2, WINDOW, t1),
            Ok(())
        );
        // The oldest entry (t0) leaves at t0 + 10 s: 7.5 s after t0 + 2.5 s, rounded up to 8.
        let t2 = t0 + Duration::from_millis(2500);
        assert_eq!(
            limiter.try_acquire("k", Class::Write, 2, WINDOW, t2),
            Err(8)
        );
        // Refused requests are not counted, so retrying on time succeeds.
        assert_eq!(
            limiter.try_acquire("k", Class::Write, 2, WINDOW, t0 + WINDOW),
            Ok(())
        );
        assert_eq!(
            limiter.try_acquire("k", Class::Write, 2, WINDOW, t0 + WINDOW),
            Err(2)
        );
    }

    #[test]
    fn classes_and_keys_are_separate() {
        let mut limiter = RateLimiter::default();
        let t0 = Instant::now();
        assert_eq!(
            limiter.try_acquire("k", Class::Write, 1, WINDOW, t0),
            Ok(())
        );
        assert_eq!(limiter.try_acquire("k", Class::Read, 1, WINDOW, t0), Ok(()));
        assert_eq!(
            limiter.try_acquire("other", Class::Write, 1, WINDOW, t0),
            Ok(())
        );
        assert_eq!(
            limiter.try_acquire("k", Class::Write, 1, WINDOW, t0),
            Err(10)
        );
    }

    #[test]
    fn recorded_requests_count_and_retry_after_is_at_least_one() {
        let mut limiter = RateLimiter::default();
        let t0 = Instant::now();
        limiter.record("k", Class::Read, WINDOW, t0);
        limiter.record("k", Class::Read, WINDOW, t0);
        // Two recorded, limit one: the slot frees when the second entry leaves.
        let almost = t0 + WINDOW - Duration::from_millis(1);
        assert_eq!(
            limiter.try_acquire("k", Class::Read, 1, WINDOW, almost),
            Err(1)
        );
        assert_eq!(
            limiter.try_acquire("k", Class::Read, 0, WINDOW, t0),
            Err(10)
        );
    }
}
