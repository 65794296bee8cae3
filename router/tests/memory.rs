//! What the router's core keeps in memory per account, key, session and
//! conversation, measured as the growth of the process's resident memory
//! (allocator overhead included) while the core creates many of each,
//! divided by how many (a conversation's figure is net of the order keys
//! its creation takes from its members' supplies, which frees a little).
//! These are the figures docs/OPERATING.md ("Caps")
//! gives; the test fails if the core grows past them. Linux only (it reads
//! /proc/self/statm); the only test in its binary, so nothing else
//! allocates meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ed25519_dalek::{Signer, SigningKey};
use grompi_proto::ids::{NetworkBinding, prekey_signing_message};
use grompi_proto::{AccountId, Challenge, ConversationId, SlotRole, pb};
use grompi_router::Ticket;
use grompi_router::core::{Call, Command, CoreConfig, Effect, Output, Response, RouterCore};
use grompi_router::limits::Limits;
use grompi_router::request::{parse_register, parse_sign_in};
use grompi_router::store::Snapshot;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The process's resident memory, in bytes (Linux: /proc/self/statm).
fn live() -> isize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: isize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn network() -> NetworkBinding {
    NetworkBinding::of("memory", "")
}

struct Core {
    core: RouterCore,
    rng: StdRng,
    now: u64,
    ticket: u64,
}

impl Core {
    /// A relay-only core (no order servers): conversations are created at
    /// once.
    fn new() -> Self {
        let config = CoreConfig {
            servers: Vec::new(),
            quorum: 0,
            limits: Limits {
                requests_per_second: 1_000_000_000,
                request_burst: 1_000_000_000,
                ..Limits::default()
            },
            padding_tiers: vec![4, 8, 16],
            noise_interval_ms: None,
            max_batch: 16,
            backoff_base_ms: 10,
            backoff_max_ms: 100,
        };
        Self {
            core: RouterCore::restore(config, Snapshot::default()).unwrap(),
            rng: StdRng::seed_from_u64(7),
            now: 1,
            ticket: 0,
        }
    }

    /// Handles one command; its records and effects are dropped, as the
    /// shell drops them once committed and performed.
    fn call(&mut self, cmd: Command) -> Result<Response, String> {
        self.ticket += 1;
        let mut out = Output::default();
        self.core
            .handle(Ticket(self.ticket), cmd, self.now, &mut self.rng, &mut out);
        out.effects
            .into_iter()
            .find_map(|e| match e {
                Effect::Reply(_, r) => Some(r.map_err(|e| e.to_string())),
                _ => None,
            })
            .unwrap_or_else(|| Err("no reply".into()))
    }

    fn challenge(&mut self) -> Challenge {
        match self.call(Command::GetChallenge) {
            Ok(Response::Challenge(c)) => Challenge::parse("c", &c.challenge).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    /// Registers account `n` with `one_time` one-time prekeys and `order`
    /// order keys; returns it with its signing key and session token.
    fn register(
        &mut self,
        n: u32,
        one_time: usize,
        order: usize,
    ) -> (AccountId, SigningKey, Vec<u8>) {
        let mut sk = [0u8; 32];
        sk[..4].copy_from_slice(&n.to_be_bytes());
        sk[4] = 1;
        let signing = SigningKey::from_bytes(&sk);
        let key = |kind: u8, i: usize| -> Vec<u8> {
            let mut h = blake3::Hasher::new();
            h.update(&[kind]);
            h.update(&n.to_be_bytes());
            h.update(&(i as u64).to_be_bytes());
            h.finalize().as_bytes().to_vec()
        };
        let challenge = self.challenge();
        let prekey = [5u8; 32];
        let req = pb::RegisterRequest {
            identity: Some(pb::IdentityKeys {
                signing_key: signing.verifying_key().to_bytes().to_vec(),
                session_key: sk.to_vec(),
            }),
            challenge: challenge.to_vec(),
            signature: signing
                .sign(&challenge.network_signing_message(&network()))
                .to_bytes()
                .to_vec(),
            fallback_prekey: Some(pb::SignedPrekey {
                key: prekey.to_vec(),
                signature: signing
                    .sign(&prekey_signing_message(&prekey))
                    .to_bytes()
                    .to_vec(),
            }),
            one_time_prekeys: (0..one_time).map(|i| key(1, i)).collect(),
            order_keys: (0..order).map(|i| key(2, i)).collect(),
        };
        let new = parse_register(&req, &network()).unwrap();
        match self.call(Command::Register(new)) {
            Ok(Response::Registered(r)) => (
                AccountId::parse("a", &r.account).unwrap(),
                signing,
                r.session_token,
            ),
            other => panic!("{other:?}"),
        }
    }

    fn sign_in(&mut self, account: &AccountId, signing: &SigningKey) {
        let challenge = self.challenge();
        let req = pb::SignInRequest {
            account: account.to_vec(),
            challenge: challenge.to_vec(),
            signature: signing
                .sign(&challenge.network_signing_message(&network()))
                .to_bytes()
                .to_vec(),
        };
        let s = parse_sign_in(&req, &network()).unwrap();
        assert!(matches!(
            self.call(Command::SignIn(s)),
            Ok(Response::SignedIn(_))
        ));
    }
}

/// Live bytes per item after `f` made `n` of them.
fn per_item(n: usize, f: impl FnOnce()) -> usize {
    let before = live();
    f();
    let after = live();
    usize::try_from((after - before).max(0)).unwrap() / n
}

#[cfg(target_os = "linux")]
#[test]
fn memory_per_account_key_session_and_conversation() {
    // Each kind in a fresh core, from empty, so that the growth of its
    // tables is averaged over their doublings (right after a table
    // doubles, the next items cost nothing; right before, up to twice the
    // figure).
    let mut c = Core::new();
    let n = 20_000;
    let account = per_item(n, || {
        for k in 0..n as u32 {
            c.register(k, 0, 0);
        }
    });
    let mut c = Core::new();
    let one_time = per_item(50 * 1_000, || {
        for k in 0..50u32 {
            c.register(100_000 + k, 1_000, 0);
        }
    });
    let mut c = Core::new();
    let order = per_item(50 * 1_000, || {
        for k in 0..50u32 {
            c.register(200_000 + k, 0, 1_000);
        }
    });
    // Sessions: accounts signed in again (each holds its registration's
    // session already).
    let mut c = Core::new();
    let members: Vec<(AccountId, SigningKey, Vec<u8>)> = (0..2_000u32)
        .map(|k| c.register(300_000 + k, 0, 12))
        .collect();
    let session = per_item(members.len() * 4, || {
        for (a, s, _) in &members {
            for _ in 0..4 {
                c.sign_in(a, s);
            }
        }
    });
    // Conversations of two members (padded to 4 slots), none sent to.
    let conversations = 5_000;
    let conversation = per_item(conversations, || {
        for k in 0..conversations {
            let (a, _, token) = &members[k % members.len()];
            let (b, _, _) = &members[(k + 1) % members.len()];
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(k as u64).to_be_bytes());
            let r = c.call(Command::Authed {
                token: token.clone(),
                call: Call::CreateConversation(
                    ConversationId::from_bytes(id),
                    vec![(*a, SlotRole::Admin), (*b, SlotRole::Member)],
                ),
            });
            assert!(matches!(r, Ok(Response::Created(_))), "{r:?}");
        }
    });
    // Conversations of ten members (padded to 16 slots), in a core of
    // their own.
    let mut c = Core::new();
    let members: Vec<(AccountId, SigningKey, Vec<u8>)> = (0..2_000u32)
        .map(|k| c.register(400_000 + k, 0, 3))
        .collect();
    let large = 500;
    let conversation16 = per_item(large, || {
        for k in 0..large {
            let spec = (0..10)
                .map(|j| {
                    let (a, _, _) = &members[(k * 10 + j) % members.len()];
                    (
                        *a,
                        if j == 0 {
                            SlotRole::Admin
                        } else {
                            SlotRole::Member
                        },
                    )
                })
                .collect();
            let token = members[(k * 10) % members.len()].2.clone();
            let mut id = [1u8; 32];
            id[..8].copy_from_slice(&(k as u64).to_be_bytes());
            let r = c.call(Command::Authed {
                token,
                call: Call::CreateConversation(ConversationId::from_bytes(id), spec),
            });
            assert!(matches!(r, Ok(Response::Created(_))), "{r:?}");
        }
    });
    println!(
        "bytes per account {account}, one-time prekey {one_time}, order key {order}, \
         session {session}, conversation of 2 (4 slots) {conversation}, \
         of 10 (16 slots) {conversation16}"
    );
    // The figures docs/OPERATING.md gives.
    assert!(account <= 1_536, "account: {account}");
    assert!(one_time <= 128, "one-time prekey: {one_time}");
    assert!(order <= 256, "order key: {order}");
    assert!(session <= 256, "session: {session}");
    assert!(conversation <= 3_072, "conversation: {conversation}");
    assert!(
        conversation16 <= 8_192,
        "conversation of 16 slots: {conversation16}"
    );
}
