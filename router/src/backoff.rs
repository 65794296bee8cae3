//! Retry backoff with times passed in: the wait doubles with each
//! consecutive failure, up to a cap, and a success resets it. Used per order
//! server link and per conversation on each server.

use crate::Millis;

/// Retry state: how many consecutive failures, and when to try again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Consecutive failures.
    pub failures: u32,
    /// Not before this time.
    pub retry_at: Millis,
}

impl Backoff {
    /// Whether a retry is allowed at `now`.
    pub fn ready(&self, now: Millis) -> bool {
        now >= self.retry_at
    }

    /// Records a failure: the wait doubles from `base` up to `max`.
    pub fn fail(&mut self, now: Millis, base: Millis, max: Millis) {
        let shift = self.failures.min(20);
        let wait = base.saturating_mul(1u64 << shift).min(max);
        self.failures = self.failures.saturating_add(1);
        self.retry_at = now.saturating_add(wait);
    }

    /// Records a success.
    pub fn succeed(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        assert!(b.ready(0));
        b.fail(1000, 100, 1000);
        assert_eq!(b.retry_at, 1100);
        assert!(!b.ready(1099));
        b.fail(1100, 100, 1000);
        assert_eq!(b.retry_at, 1300);
        for _ in 0..10 {
            b.fail(2000, 100, 1000);
        }
        assert_eq!(b.retry_at, 3000);
        b.succeed();
        assert!(b.ready(0));
    }
}
