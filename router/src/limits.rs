//! Configured limits and the per-account request rate limiter.
//!
//! The protocol's hard limits live in `grompi_proto::limits`; these are the
//! deployment's own, never looser.

use crate::Millis;
use crate::error::RouterError;
use grompi_proto::AccountId;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;

const MIB: usize = 1024 * 1024;

/// How long a session lasts by default: seven days.
pub const DEFAULT_SESSION_TTL_MS: Millis = 7 * 24 * 60 * 60 * 1000;

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
    /// How long a session lasts, in milliseconds (at least a day: clients
    /// sign in again before using a session older than six hours). Ended
    /// sessions are refused ("session expired; sign in again") and
    /// deleted, so the sessions kept stay bounded by recent sign-ins.
    pub session_ttl_ms: u64,
    /// Most challenges outstanding at once.
    pub max_challenges: usize,
    /// Most deliveries queued for one live subscriber before it is
    /// disconnected (it then fetches what it missed).
    pub subscriber_queue: usize,
    /// Sustained unauthenticated requests (GetChallenge, Register, SignIn)
    /// per second from one client address (an IPv6 /64 counts as one
    /// address). Checked in the gRPC shell before the request reaches the
    /// core; keep it well below `requests_per_second`, the cap all
    /// unauthenticated calls share.
    pub peer_requests_per_second: u32,
    /// Unauthenticated requests one address may make in a burst.
    pub peer_request_burst: u32,
    /// Most client addresses whose per-address budget is tracked at once.
    /// Budgets that have refilled are forgotten; while the table is full of
    /// addresses still being limited, calls from new addresses are refused.
    pub max_peers: usize,
    /// Most TCP connections open at once.
    pub max_connections: usize,
    /// Most TCP connections open at once from one client address.
    pub max_connections_per_address: usize,
    /// Most concurrent HTTP/2 streams (calls) on one connection; a client
    /// over it waits for a stream to finish.
    pub max_streams_per_connection: u32,

    // ---- Caps on what the router keeps in memory (docs/OPERATING.md,
    // "Caps"). Reaching one refuses the call with a typed error naming it.
    /// Most accounts; Register beyond it is refused.
    pub max_accounts: usize,
    /// Most unused keys (one-time prekeys and order keys together) over
    /// all accounts; Register and UploadKeys beyond it are refused.
    pub max_unused_keys: usize,
    /// Most unused keys of each kind one account may hold.
    pub max_unused_keys_per_account: usize,
    /// Most live sessions over all accounts; SignIn and Register beyond it
    /// are refused (ended sessions are forgotten first).
    pub max_sessions: usize,
    /// Most live sessions of one account: a sign-in beyond it ends the
    /// account's session that would end first.
    pub max_sessions_per_account: usize,
    /// Most conversations; CreateConversation beyond it is refused.
    pub max_conversations: usize,
    /// Most conversations one account may have created.
    pub max_conversations_per_account: usize,
    /// Most bytes of one account's envelopes waiting for a quorum.
    pub max_pending_bytes_per_account: usize,
    /// Most bytes the router holds for one conversation's envelopes until
    /// every order server has attested them (whole envelopes until the
    /// quorum, their summaries after).
    pub max_pending_bytes_per_conversation: usize,
    /// Most such bytes over all conversations.
    pub max_pending_bytes: usize,
    /// Most bytes queued for one live subscriber before it is
    /// disconnected (it then fetches what it missed).
    pub subscriber_queue_bytes: usize,
    /// Most bytes queued for all live subscribers together; a delivery
    /// that would go over it disconnects its subscriber.
    pub max_subscriber_bytes: usize,
    /// Most live subscriptions (Subscribe streams) of one account.
    pub max_subscribers_per_account: usize,
    /// Most live subscriptions over all accounts.
    pub max_subscribers: usize,
    /// Most bytes of deliveries in one Fetch response; a page is cut
    /// short (its `next_index` says where to go on), but always holds at
    /// least one index.
    pub max_fetch_bytes: usize,
    /// Most bytes of Fetch responses being built for one account at once.
    pub max_fetch_bytes_per_account: usize,
    /// Most bytes of Fetch responses being built at once.
    pub max_fetch_bytes_in_flight: usize,
    /// Noise stops in a conversation no member has submitted to for this
    /// many milliseconds (and starts again with the next submission), so
    /// idle conversations do not grow storage for ever.
    pub noise_idle_ms: u64,
    /// Free space the data directory's file system must keep: below it
    /// the router refuses new envelopes, conversations, accounts and keys
    /// (reads, sign-in and order servers' answers go on).
    pub disk_reserve_bytes: u64,
    /// Retention of stored envelopes: 0 (the default) keeps every envelope
    /// for ever; N keeps the last N delivered indices of each conversation
    /// and removes, with their attestations, the envelopes below
    /// `delivered - N` once every order server has attested them. Fetch
    /// and FetchHistory then start at the first index still stored
    /// (`docs/OPERATING.md`, "Retention").
    pub keep_envelopes: u64,
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
            session_ttl_ms: DEFAULT_SESSION_TTL_MS,
            max_challenges: 100_000,
            subscriber_queue: 1024,
            peer_requests_per_second: 20,
            peer_request_burst: 100,
            max_peers: 100_000,
            max_connections: 1024,
            max_connections_per_address: 64,
            max_streams_per_connection: 256,
            max_accounts: 1_000_000,
            max_unused_keys: 10_000_000,
            max_unused_keys_per_account: 10_000,
            max_sessions: 2_000_000,
            max_sessions_per_account: 16,
            max_conversations: 1_000_000,
            max_conversations_per_account: 1_000,
            max_pending_bytes_per_account: 16 * MIB,
            max_pending_bytes_per_conversation: 32 * MIB,
            max_pending_bytes: 1024 * MIB,
            subscriber_queue_bytes: 8 * MIB,
            max_subscriber_bytes: 512 * MIB,
            max_subscribers_per_account: 8,
            max_subscribers: 100_000,
            max_fetch_bytes: 8 * MIB,
            max_fetch_bytes_per_account: 16 * MIB,
            max_fetch_bytes_in_flight: 256 * MIB,
            noise_idle_ms: 60 * 60 * 1000,
            disk_reserve_bytes: 1024 * MIB as u64,
            keep_envelopes: 0,
        }
    }
}

/// The key a rate applies to: one account, every unauthenticated caller,
/// or the unauthenticated calls from one client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// An authenticated account.
    Account(AccountId),
    /// All unauthenticated calls together.
    Anonymous,
    /// Unauthenticated calls from one client address, keyed by
    /// [`grompi_ops::conn_limit::address_key`] (IPv6 by /64 prefix).
    Peer(IpAddr),
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
            Err(RouterError::RateLimited { per_second })
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

    /// Keys with a bucket.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Whether `key` has a bucket.
    pub fn tracks(&self, key: &RateKey) -> bool {
        self.buckets.contains_key(key)
    }
}

/// How often the per-address limiter forgets refilled budgets.
const PEER_PRUNE_EVERY_MS: Millis = 10_000;
/// How often at most a full per-address table is pruned on demand.
const PEER_PRUNE_WHEN_FULL_MS: Millis = 250;

/// Token buckets per client address for the unauthenticated calls
/// (GetChallenge, Register, SignIn), so that one address flooding them
/// exhausts its own budget and not everyone's. The gRPC shell checks it
/// before a request reaches the core, with the shell's clock; the core's
/// shared [`RateKey::Anonymous`] bucket stays as the overall cap.
#[derive(Debug, Clone)]
pub struct PeerLimiter {
    rate: RateLimiter,
    per_second: u32,
    burst: u32,
    max_peers: usize,
    last_prune: Millis,
}

impl PeerLimiter {
    /// A limiter with the per-address limits of `limits`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            rate: RateLimiter::new(limits.peer_requests_per_second, limits.peer_request_burst),
            per_second: limits.peer_requests_per_second,
            burst: limits.peer_request_burst,
            max_peers: limits.max_peers.max(1),
            last_prune: 0,
        }
    }

    /// Takes one request's token for the client at `ip` at `now`, or says
    /// that the per-address limit refuses it.
    pub fn check(&mut self, ip: IpAddr, now: Millis) -> Result<(), RouterError> {
        let address = grompi_ops::conn_limit::address_key(ip);
        let key = RateKey::Peer(address);
        if now.saturating_sub(self.last_prune) >= PEER_PRUNE_EVERY_MS {
            self.prune(now);
        }
        if !self.rate.tracks(&key) && self.rate.len() >= self.max_peers {
            if now.saturating_sub(self.last_prune) >= PEER_PRUNE_WHEN_FULL_MS {
                self.prune(now);
            }
            if self.rate.len() >= self.max_peers {
                return Err(RouterError::TooManyPeers {
                    max: self.max_peers,
                });
            }
        }
        self.rate
            .check(key, now)
            .map_err(|_| RouterError::PeerRateLimited {
                per_second: self.per_second,
                burst: self.burst,
                address,
            })
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.rate.len()
    }

    fn prune(&mut self, now: Millis) {
        self.rate.prune(now);
        self.last_prune = now;
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
        assert!(matches!(e, RouterError::RateLimited { per_second: 10 }));
        // 10 per second: one token per 100 ms.
        assert!(r.check(k, 50).is_err());
        r.check(k, 150).unwrap();
        // Another key is independent.
        r.check(RateKey::Account(AccountId::from_bytes([1; 32])), 150)
            .unwrap();
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn peer_limits(per_second: u32, burst: u32, max_peers: usize) -> Limits {
        Limits {
            peer_requests_per_second: per_second,
            peer_request_burst: burst,
            max_peers,
            ..Limits::default()
        }
    }

    #[test]
    fn a_flooding_address_is_refused_while_another_is_served() {
        let mut p = PeerLimiter::new(&peer_limits(10, 3, 100));
        let flooder = ip("192.0.2.1");
        let other = ip("192.0.2.2");
        for _ in 0..3 {
            p.check(flooder, 0).unwrap();
        }
        let refused = (0..50).filter(|_| p.check(flooder, 0).is_err()).count();
        assert_eq!(refused, 50);
        let e = p.check(flooder, 0).unwrap_err();
        assert!(
            matches!(&e, RouterError::PeerRateLimited { address, .. } if *address == flooder),
            "{e}"
        );
        for _ in 0..3 {
            p.check(other, 0).unwrap();
        }
        // The flooder's budget refills at its rate: one token per 100 ms.
        p.check(flooder, 100).unwrap();
        assert!(p.check(flooder, 100).is_err());
    }

    #[test]
    fn an_ipv6_slash_64_is_one_address() {
        let mut p = PeerLimiter::new(&peer_limits(1, 2, 100));
        p.check(ip("2001:db8:0:1::1"), 0).unwrap();
        p.check(ip("2001:db8:0:1::2"), 0).unwrap();
        assert!(p.check(ip("2001:db8:0:1:ffff::3"), 0).is_err());
        p.check(ip("2001:db8:0:2::1"), 0).unwrap();
        // An IPv4-mapped address is its IPv4 address.
        p.check(ip("192.0.2.9"), 0).unwrap();
        p.check(ip("::ffff:192.0.2.9"), 0).unwrap();
        assert!(p.check(ip("192.0.2.9"), 0).is_err());
    }

    #[test]
    fn the_address_table_is_bounded_and_refilled_budgets_are_forgotten() {
        // One token per second, two at once, two addresses tracked at most.
        let mut p = PeerLimiter::new(&peer_limits(1, 2, 2));
        p.check(ip("192.0.2.1"), 0).unwrap();
        p.check(ip("192.0.2.2"), 0).unwrap();
        let e = p.check(ip("192.0.2.3"), 0).unwrap_err();
        assert!(matches!(&e, RouterError::TooManyPeers { max: 2 }), "{e}");
        assert_eq!(p.tracked(), 2);
        // Pruned on demand, but budgets still refilling are kept.
        assert!(p.check(ip("192.0.2.3"), 300).is_err());
        assert_eq!(p.tracked(), 2);
        // Once both have refilled they are forgotten and a new address fits.
        p.check(ip("192.0.2.3"), 1_000).unwrap();
        assert_eq!(p.tracked(), 1);
        // The periodic prune (every 10 s) keeps an address still limited.
        p.check(ip("192.0.2.4"), 10_500).unwrap();
        p.check(ip("192.0.2.4"), 10_500).unwrap();
        p.check(ip("192.0.2.5"), 11_000).unwrap();
        assert_eq!(p.tracked(), 2, "192.0.2.3 forgotten, 192.0.2.4 kept");
        assert!(p.check(ip("192.0.2.4"), 11_000).is_err());
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
