//! Configured limits and the per-account request rate limiter.
//!
//! The protocol's hard limits live in `grompi_proto::limits`; these are the
//! deployment's own, never looser.

use crate::Millis;
use crate::error::RouterError;
use grompi_proto::AccountId;
use serde::Deserialize;
use std::collections::HashMap;

/// Limits on what one request or one account may use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest encoded envelope accepted by Submit, in bytes.
    pub max_envelope_bytes: usize,
    /// Most members in one conversation epoch.
    pub max_group_size: usize,
    /// Most envelopes one account may have waiting for attestation.
    pub max_pending_per_account: usize,
    /// Sustained requests per second per account (and for unauthenticated
    /// calls, all together).
    pub requests_per_second: u32,
    /// Requests an account may make in a burst above the sustained rate.
    pub request_burst: u32,
    /// Most deliveries returned by one Fetch.
    pub max_fetch: u32,
    /// How long a sign-in challenge stays valid, in milliseconds.
    pub challenge_ttl_ms: u64,
    /// Most challenges outstanding at once.
    pub max_challenges: usize,
    /// Most deliveries queued for one live subscriber before it is
    /// disconnected (it then fetches what it missed).
    pub subscriber_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_envelope_bytes: 256 * 1024,
            max_group_size: 256,
            max_pending_per_account: 256,
            requests_per_second: 200,
            request_burst: 400,
            max_fetch: 256,
            challenge_ttl_ms: 60_000,
            max_challenges: 100_000,
            subscriber_queue: 1024,
        }
    }
}

/// The key a rate applies to: one account, or every unauthenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// An authenticated account.
    Account(AccountId),
    /// All unauthenticated calls together.
    Anonymous,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens, in thousandths of a request.
    milli_tokens: u64,
    last: Millis,
}

/// A token bucket per [`RateKey`]. Time is passed in.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_second: u64,
    burst_milli: u64,
    buckets: HashMap<RateKey, Bucket>,
}

impl RateLimiter {
    /// A limiter allowing `per_second` sustained and `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: u64::from(per_second),
            burst_milli: u64::from(burst.max(1)) * 1000,
            buckets: HashMap::new(),
        }
    }

    /// Takes one request's token for `key` at `now`, or says when to retry.
    pub fn check(&mut self, key: RateKey, now: Millis) -> Result<(), RouterError> {
        let per_second = self.per_second;
        let burst = self.burst_milli;
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            milli_tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_sub(bucket.last);
        // per_second requests per 1000 ms = per_second milli-tokens per ms.
        bucket.milli_tokens = bucket
            .milli_tokens
            .saturating_add(elapsed.saturating_mul(per_second))
            .min(burst);
        bucket.last = now.max(bucket.last);
        if bucket.milli_tokens >= 1000 {
            bucket.milli_tokens -= 1000;
            Ok(())
        } else {
            Err(RouterError::ResourceExhausted(format!(
                "request rate above {per_second} per second; slow down and retry"
            )))
        }
    }

    /// Forgets buckets that have been full for a while, so memory stays
    /// bounded by the number of recently active accounts.
    pub fn prune(&mut self, now: Millis) {
        let burst = self.burst_milli;
        let per_second = self.per_second.max(1);
        self.buckets.retain(|_, b| {
            let refill = now.saturating_sub(b.last).saturating_mul(per_second);
            b.milli_tokens.saturating_add(refill) < burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_then_refills() {
        let mut r = RateLimiter::new(10, 3);
        let k = RateKey::Anonymous;
        for _ in 0..3 {
            r.check(k, 0).unwrap();
        }
        let e = r.check(k, 0).unwrap_err();
        assert!(matches!(e, RouterError::ResourceExhausted(_)));
        // 10 per second: one token per 100 ms.
        assert!(r.check(k, 50).is_err());
        r.check(k, 150).unwrap();
        // Another key is independent.
        r.check(RateKey::Account(AccountId::from_bytes([1; 32])), 150)
            .unwrap();
    }

    #[test]
    fn prune_drops_only_full_buckets() {
        let mut r = RateLimiter::new(10, 3);
        r.check(RateKey::Anonymous, 0).unwrap();
        r.prune(0);
        assert_eq!(r.buckets.len(), 1);
        r.prune(10_000);
        assert!(r.buckets.is_empty());
    }
}
