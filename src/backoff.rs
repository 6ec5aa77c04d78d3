//! How long to wait before trying again: the one exponential backoff, with jitter where
//! many waiters could otherwise retry in step. The inbox reconnects with [`Backoff`]; the
//! outbox spaces an email's delivery attempts by [`exponential`], which it records in the
//! database as the entry's next attempt.

use std::time::Duration;

use rand::Rng as _;

/// `base` doubled `attempt` times, at most `cap` (attempt 0 waits `base`).
pub fn exponential(base: Duration, cap: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.min(16)).min(cap)
}

/// Somewhere between half of `ceiling` and all of it: spreads retries without ever
/// retrying instantly.
pub fn jittered(ceiling: Duration) -> Duration {
    let half = ceiling / 2;
    half + Duration::from_millis(rand::rng().random_range(0..=half.as_millis().max(1) as u64))
}

/// Exponential backoff with jitter, for a loop that retries until it succeeds.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// Waits from about `base`, doubling to about `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { attempt: 0, base, cap }
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = exponential(self.base, self.cap, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        jittered(ceiling)
    }

    /// After a success: the next failure waits from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_its_cap() {
        let (base, cap) = (Duration::from_secs(30), Duration::from_secs(1800));
        assert_eq!(exponential(base, cap, 0), base);
        assert_eq!(exponential(base, cap, 1), Duration::from_secs(60));
        assert_eq!(exponential(base, cap, 100), cap);
    }
}
