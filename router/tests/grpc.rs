//! The real router binary over TLS, with order servers that are the real
//! order server core over its in-memory store, served over mutual TLS in
//! the test process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/net.rs"]
mod net;
#[path = "support/order_servers.rs"]
mod order_servers;

use grompi_proto::pb;
use grompi_proto::pb::router_client::RouterClient;
use grompi_proto::{ConversationId, EnvelopeHash, EnvelopeKind, Epoch, SlotSet};
use net::{Member, Net, authed, envelope, register, registration, slot};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

async fn create(
    net: &Net,
    members: &[&Member],
    id: ConversationId,
) -> pb::CreateConversationResponse {
    let mut c = net.client().await;
    let specs = members
        .iter()
        .enumerate()
        .map(|(i, m)| pb::MemberSpec {
            account: m.account.clone(),
            role: if i == 0 { 2 } else { 1 },
        })
        .collect();
    c.create_conversation(authed(
        members[0],
        pb::CreateConversationRequest {
            conversation_id: id.to_vec(),
            members: specs,
        },
    ))
    .await
    .unwrap()
    .into_inner()
}

async fn setup(
    net: &Net,
    members: &[&Member],
    id: ConversationId,
) -> pb::CreateConversationResponse {
    let created = create(net, members, id).await;
    let set = SlotSet::try_from(created.slots.clone().unwrap()).unwrap();
    let req = envelope(
        members[0],
        id,
        Epoch(0),
        slot(&created.assignments, members[0]),
        EnvelopeKind::Setup,
        Some(set.hash()),
        1,
        &net.keys,
        b"setup",
        set.len() as u32,
    );
    net.client()
        .await
        .submit(authed(members[0], req))
        .await
        .unwrap();
    created
}

fn message(
    net: &Net,
    m: &Member,
    created: &pb::CreateConversationResponse,
    id: ConversationId,
    seq: u64,
    body: &[u8],
) -> pb::SubmitRequest {
    envelope(
        m,
        id,
        Epoch(0),
        slot(&created.assignments, m),
        EnvelopeKind::Message,
        None,
        seq,
        &net.keys,
        body,
        created.slots.as_ref().unwrap().slots.len() as u32,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_concurrent_senders_subscribe_and_fetch() {
    let net = Net::start(3, 3, "").await;
    let mut c = net.client().await;
    let members = vec![
        register(&mut c, &net.network(), 1).await,
        register(&mut c, &net.network(), 2).await,
        register(&mut c, &net.network(), 3).await,
    ];
    let id = ConversationId::from_bytes([5; 32]);
    let refs: Vec<&Member> = members.iter().collect();
    let mut stream = c
        .subscribe(authed(&members[2], pb::SubscribeRequest {}))
        .await
        .unwrap()
        .into_inner();
    let created = setup(&net, &refs, id).await;
    // Ten messages from each of the three members, concurrently.
    let mut tasks = Vec::new();
    for m in &members {
        for seq in 2..12u64 {
            let req = message(&net, m, &created, id, seq, format!("m{seq}").as_bytes());
            let m = m.clone();
            let mut c = net.client().await;
            tasks.push(tokio::spawn(async move { c.submit(authed(&m, req)).await }));
        }
    }
    for t in tasks {
        // Sequences of one sender may reach the router out of order; the
        // router refuses a lower one after a higher one as a replay.
        match t.await.unwrap() {
            Ok(_) => {}
            Err(s) => assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}"),
        }
    }
    // The live stream gives member 3 each index once, in order, with its
    // own tag from each of the three servers.
    let fetched = c
        .fetch(authed(
            &members[2],
            pb::FetchRequest {
                conversation_id: id.to_vec(),
                from_index: 0,
                limit: 100,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert!(
        fetched.len() >= 4,
        "setup and at least one message per sender"
    );
    let mut live = Vec::new();
    while live.len() < fetched.len() {
        let d = stream.next().await.unwrap().unwrap();
        live.push(d);
    }
    let idx: Vec<u64> = live.iter().map(|d| d.index).collect();
    assert_eq!(idx, (0..fetched.len() as u64).collect::<Vec<_>>());
    let my_slot = slot(&created.assignments, &members[2]).0.0;
    for (l, f) in live.iter().zip(&fetched) {
        assert_eq!(l.header, f.header);
        assert_eq!(l.attestations.len(), 3);
        assert!(l.attestations.iter().all(|a| a.tags.len() == 1));
        if let Some(b) = &l.block {
            assert_eq!(b.recipient_slot, my_slot);
        }
    }
    // Every server holds the same chain.
    let chains: Vec<Vec<EnvelopeHash>> = net
        .orders
        .iter()
        .map(|f| {
            f.server.lock().unwrap().convs[&id]
                .chain
                .iter()
                .map(|(h, _)| *h)
                .collect()
        })
        .collect();
    assert!(chains.iter().all(|c| *c == chains[0]));
    assert_eq!(chains[0].len(), fetched.len());
    // Head proofs from all three servers.
    let proofs = c
        .prove_heads(authed(
            &members[2],
            pb::ProveHeadsRequest {
                conversation_id: id.to_vec(),
                nonce: vec![9; 32],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .proofs;
    let mut servers: Vec<u32> = proofs.iter().map(|p| p.server).collect();
    servers.sort();
    assert_eq!(servers, vec![0, 1, 2]);
    assert!(proofs.iter().all(|p| p.count == fetched.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_order_server_stalls_t_equals_n_and_not_t_two_of_three() {
    for quorum in [3usize, 2] {
        let net = Net::start(3, quorum, "submit_timeout_ms = 1500\n").await;
        let mut c = net.client().await;
        let members = [
            register(&mut c, &net.network(), 1).await,
            register(&mut c, &net.network(), 2).await,
        ];
        let refs: Vec<&Member> = members.iter().collect();
        let id = ConversationId::from_bytes([6; 32]);
        let created = setup(&net, &refs, id).await;
        let mut stream = c
            .subscribe(authed(&members[1], pb::SubscribeRequest {}))
            .await
            .unwrap()
            .into_inner();
        net.orders[2].down.store(true, Ordering::SeqCst);
        let req = message(&net, &members[1], &created, id, 2, b"while down");
        let r = c.submit(authed(&members[1], req.clone())).await;
        let mut tags: BTreeMap<u64, usize> = BTreeMap::new();
        if quorum == 3 {
            let s = r.unwrap_err();
            assert_eq!(s.code(), Code::Unavailable, "{s:?}");
            assert!(
                s.message()
                    .contains("resubmitting the same envelope is safe")
            );
        } else {
            r.unwrap();
            // The Setup's third tag may still arrive as a late tag update
            // (index 0) before index 1.
            let d = loop {
                let d = stream.next().await.unwrap().unwrap();
                if d.index != 0 {
                    break d;
                }
                assert!(d.header.is_none(), "index 0 delivered twice");
            };
            assert_eq!((d.index, d.attestations.len()), (1, 2));
            assert!(d.header.is_some());
            tags.insert(1, 2);
        }
        net.orders[2].down.store(false, Ordering::SeqCst);
        // Resubmitting is idempotent and completes once the server is back.
        c.submit(authed(&members[1], req)).await.unwrap();
        while tags.get(&1).copied().unwrap_or(0) < 3 {
            let d = stream.next().await.unwrap().unwrap();
            *tags.entry(d.index).or_default() += d.attestations.len();
        }
        assert_eq!(
            net.orders[2].server.lock().unwrap().convs[&id].chain.len(),
            2,
            "caught up in order"
        );
        assert!(
            net.orders
                .iter()
                .all(|f| f.server.lock().unwrap().violations.is_empty())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_envelope() {
    let mut net = Net::start(3, 2, "").await;
    let mut c = net.client().await;
    let members = vec![
        register(&mut c, &net.network(), 1).await,
        register(&mut c, &net.network(), 2).await,
        register(&mut c, &net.network(), 3).await,
    ];
    let refs: Vec<&Member> = members.iter().collect();
    let id = ConversationId::from_bytes([7; 32]);
    let created = setup(&net, &refs, id).await;
    // Each member submits its sequence one after another; all three at once.
    let mut tasks = Vec::new();
    for m in &members {
        let reqs: Vec<pb::SubmitRequest> = (2..400u64)
            .map(|seq| message(&net, m, &created, id, seq, format!("{seq}").as_bytes()))
            .collect();
        let m = m.clone();
        let mut c = net.client().await;
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for r in reqs {
                match c.submit(authed(&m, r)).await {
                    Ok(resp) => acked.push(resp.into_inner().envelope_hash),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    net.kill_router();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(
        !acked.is_empty(),
        "some envelopes were acknowledged before the kill"
    );
    net.start_router().await;
    let mut c = net.client().await;
    // Fetch everything once the servers have caught up after the restart.
    let mut all: Vec<pb::Delivery> = Vec::new();
    for _ in 0..400 {
        all.clear();
        loop {
            let next = c
                .fetch(authed(
                    &members[0],
                    pb::FetchRequest {
                        conversation_id: id.to_vec(),
                        from_index: all.len() as u64,
                        limit: 256,
                    },
                ))
                .await
                .unwrap()
                .into_inner()
                .deliveries;
            if next.is_empty() {
                break;
            }
            all.extend(next);
        }
        let chains: Vec<usize> = net
            .orders
            .iter()
            .map(|f| f.server.lock().unwrap().convs[&id].chain.len())
            .collect();
        if chains.iter().all(|n| *n == all.len()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let hashes: Vec<Vec<u8>> = all
        .iter()
        .map(|d| {
            let h = grompi_proto::EnvelopeHeader::try_from(d.header.clone().unwrap()).unwrap();
            let digests: Vec<_> = d
                .block_digests
                .iter()
                .map(|b| grompi_proto::BlockDigest::parse("d", b).unwrap())
                .collect();
            EnvelopeHash::compute(&h.core_hash(), &digests).to_vec()
        })
        .collect();
    for (i, d) in all.iter().enumerate() {
        assert_eq!(d.index, i as u64, "dense indices");
    }
    for h in &acked {
        assert_eq!(
            hashes.iter().filter(|x| *x == h).count(),
            1,
            "an acknowledged envelope is at exactly one index"
        );
    }
    assert!(
        net.orders
            .iter()
            .all(|f| f.server.lock().unwrap().violations.is_empty())
    );
}

fn check<T>(r: Result<tonic::Response<T>, tonic::Status>, code: Code, words: &str) {
    match r {
        Ok(_) => panic!("expected {code:?} saying {words:?}, got success"),
        Err(s) => {
            assert_eq!(s.code(), code, "{s:?}");
            assert!(
                s.message().contains(words),
                "{:?} should say {words:?}",
                s.message()
            );
        }
    }
}

/// Everything the bad-input tests share: the router, three order
/// servers, two members of a conversation and an outsider.
struct BadInput {
    net: Net,
    c: RouterClient<Channel>,
    a: Member,
    b: Member,
    outsider: Member,
    id: ConversationId,
    created: pb::CreateConversationResponse,
}

/// Conversation ids the bad-input tests try to create or use but must
/// never exist.
const ABSENT_CONVERSATIONS: [[u8; 32]; 3] = [[1; 32], [2; 32], [9; 32]];
/// Seeds of identities whose registration the bad-input tests get refused.
const ABSENT_IDENTITIES: [u8; 2] = [41, 42];

/// What a client (and the test, looking into the order servers) can
/// observe of the router's state. The bad-input tests compare it before
/// and after every refused call.
#[derive(Debug, PartialEq)]
struct Observed {
    /// ListConversations of a, b and the outsider.
    lists: Vec<pb::ListConversationsResponse>,
    /// GetKeyCounts of a, b and the outsider (the directory's key state).
    key_counts: Vec<pb::GetKeyCountsResponse>,
    /// Fetch of the whole conversation by a and by b.
    fetched: Vec<pb::FetchResponse>,
    /// Fetch by a of each of [`ABSENT_CONVERSATIONS`] (NOT_FOUND), then
    /// GetPrekeyBundle of each of [`ABSENT_IDENTITIES`] (NOT_FOUND).
    absent: Vec<Result<usize, Code>>,
    /// Per order server: conversations opened, and the conversation's
    /// chain length.
    servers: Vec<(usize, usize)>,
}

impl BadInput {
    async fn observe(&self) -> Observed {
        let mut c = self.c.clone();
        let mut lists = Vec::new();
        let mut key_counts = Vec::new();
        for m in [&self.a, &self.b, &self.outsider] {
            lists.push(
                c.list_conversations(authed(m, pb::ListConversationsRequest {}))
                    .await
                    .unwrap()
                    .into_inner(),
            );
            key_counts.push(
                c.get_key_counts(authed(m, pb::GetKeyCountsRequest {}))
                    .await
                    .unwrap()
                    .into_inner(),
            );
        }
        let mut fetched = Vec::new();
        for m in [&self.a, &self.b] {
            fetched.push(
                c.fetch(authed(
                    m,
                    pb::FetchRequest {
                        conversation_id: self.id.to_vec(),
                        from_index: 0,
                        limit: 256,
                    },
                ))
                .await
                .unwrap()
                .into_inner(),
            );
        }
        let mut absent = Vec::new();
        for id in ABSENT_CONVERSATIONS {
            let r = c
                .fetch(authed(
                    &self.a,
                    pb::FetchRequest {
                        conversation_id: id.to_vec(),
                        from_index: 0,
                        limit: 1,
                    },
                ))
                .await;
            absent.push(
                r.map(|r| r.into_inner().deliveries.len())
                    .map_err(|s| s.code()),
            );
        }
        for seed in ABSENT_IDENTITIES {
            let r = c
                .get_prekey_bundle(authed(
                    &self.a,
                    pb::GetPrekeyBundleRequest {
                        account: identity_account(seed).to_vec(),
                    },
                ))
                .await;
            absent.push(r.map(|_| 1).map_err(|s| s.code()));
        }
        let servers = self
            .net
            .orders
            .iter()
            .map(|f| {
                let s = f.server.lock().unwrap();
                (
                    s.convs.len(),
                    s.convs.get(&self.id).map_or(0, |c| c.chain.len()),
                )
            })
            .collect();
        Observed {
            lists,
            key_counts,
            fetched,
            absent,
            servers,
        }
    }
}

/// The account id of the identity `registration` builds from `seed`.
fn identity_account(seed: u8) -> grompi_proto::AccountId {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
        .verifying_key()
        .to_bytes();
    grompi_proto::AccountId::of_identity(&key, &key)
}

/// Checks that `$call` (an awaited call) is refused with `$code` and a
/// message saying `$words`, and that the refusal changed nothing anyone can
/// observe ([`Observed`]).
macro_rules! refused {
    ($fx:expr, $call:expr, $code:expr, $words:expr $(,)?) => {{
        let before = $fx.observe().await;
        assert_eq!(
            before.absent,
            vec![Err(Code::NotFound); ABSENT_CONVERSATIONS.len() + ABSENT_IDENTITIES.len()],
            "probe conversations and accounts do not exist"
        );
        check($call, $code, $words);
        let after = $fx.observe().await;
        assert_eq!(
            after, before,
            "the refused call (expected to say {:?}) changed the router's state",
            $words
        );
    }};
}

/// (Keep the fixture alive in every test: dropping `net` stops the router.)
async fn bad_input() -> BadInput {
    // The state checks make many calls per refusal: lift the per-account
    // rate limit out of the way.
    let net = Net::start(
        3,
        3,
        "[limits]\nrequests_per_second = 100000\nrequest_burst = 100000\n",
    )
    .await;
    let mut c = net.client().await;
    let a = register(&mut c, &net.network(), 1).await;
    let b = register(&mut c, &net.network(), 2).await;
    let outsider = register(&mut c, &net.network(), 3).await;
    let id = ConversationId::from_bytes([8; 32]);
    let created = setup(&net, &[&a, &b], id).await;

    BadInput {
        net,
        c,
        a,
        b,
        outsider,
        id,
        created,
    }
}

/// How an unauthenticated caller presents itself.
#[derive(Debug, Clone, Copy)]
enum Caller {
    /// No `x-grompi-session` metadata.
    NoToken,
    /// A token that is not hex.
    NotHex,
    /// A hex token of the wrong length.
    WrongLength,
    /// A well-formed token no session has.
    Unknown,
}

impl Caller {
    const ALL: [Caller; 4] = [
        Caller::NoToken,
        Caller::NotHex,
        Caller::WrongLength,
        Caller::Unknown,
    ];

    fn request<T>(self, body: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(body);
        let token = match self {
            Caller::NoToken => return r,
            Caller::NotHex => "not-a-hex-token".to_owned(),
            Caller::WrongLength => hex::encode([7u8; 16]),
            Caller::Unknown => hex::encode([0u8; 32]),
        };
        r.metadata_mut()
            .insert(grompi_proto::SESSION_METADATA, token.parse().unwrap());
        r
    }

    fn says(self) -> &'static str {
        match self {
            Caller::NoToken | Caller::NotHex | Caller::WrongLength => {
                "missing or malformed session token (metadata x-grompi-session, 32 bytes hex)"
            }
            Caller::Unknown => "unknown session token; sign in again",
        }
    }
}

/// Unauthenticated: every authenticated RPC, called without a token, with
/// a token that is not hex, one of the wrong length, and an unknown one,
/// with an otherwise valid request. (GetChallenge, Register and SignIn are
/// the unauthenticated RPCs; their refusals are in
/// `replayed_challenges_and_submissions_are_refused`,
/// `malformed_requests_are_refused_on_every_rpc` and the per-address rate
/// limit test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_calls_are_refused_on_every_rpc() {
    let fx = bad_input().await;
    let mut c = fx.c.clone();
    let (a, b, id) = (&fx.a, &fx.b, fx.id);
    let members = || {
        vec![
            pb::MemberSpec {
                account: a.account.clone(),
                role: 2,
            },
            pb::MemberSpec {
                account: b.account.clone(),
                role: 1,
            },
        ]
    };
    for who in Caller::ALL {
        let says = who.says();
        refused!(
            fx,
            c.upload_keys(who.request(pb::UploadKeysRequest {
                one_time_prekeys: vec![vec![5; 32]],
                ..Default::default()
            }))
            .await,
            Code::Unauthenticated,
            says,
        );
        refused!(
            fx,
            c.get_key_counts(who.request(pb::GetKeyCountsRequest {}))
                .await,
            Code::Unauthenticated,
            says,
        );
        refused!(
            fx,
            c.list_conversations(who.request(pb::ListConversationsRequest {}))
                .await,
            Code::Unauthenticated,
            says,
        );
        refused!(
            fx,
            c.get_prekey_bundle(who.request(pb::GetPrekeyBundleRequest {
                account: a.account.clone(),
            }))
            .await,
            Code::Unauthenticated,
            says,
        );
        refused!(
            fx,
            c.create_conversation(who.request(pb::CreateConversationRequest {
                conversation_id: ABSENT_CONVERSATIONS[0].to_vec(),
                members: members(),
            }))
            .await,
            Code::Unauthenticated,
            says,
        );
        refused!(
            fx,
            c.prepare_update(who.request(pb::PrepareUpdateRequest {
                conversation_id: id.to_vec(),
                members: members(),
            }))
            .await,
            Code::Unauthenticated,
            says,
        );
        refused!(
            fx,
            c.submit(who.request(message(&fx.net, a, &fx.created, id, 50, b"x")))
                .await,
            Code::Unauthenticated,
            says,
        );
        refused!(
            fx,
            c.fetch(who.request(pb::FetchRequest {
                conversation_id: id.to_vec(),
                from_index: 0,
                limit: 1,
            }))
            .await,
            Code::Unauthenticated,
            says,
        );
        refused!(
            fx,
            c.subscribe(who.request(pb::SubscribeRequest {})).await,
            Code::Unauthenticated,
            says,
        );
        refused!(
            fx,
            c.prove_heads(who.request(pb::ProveHeadsRequest {
                conversation_id: id.to_vec(),
                nonce: vec![1; 32],
            }))
            .await,
            Code::Unauthenticated,
            says,
        );
    }
}

/// Unknown enum values: every RPC with an enum field gets each value this
/// version does not know (the unspecified zero, one past the last, a
/// negative one, the largest) and names the field and value. The enum
/// fields are MemberSpec.role (CreateConversation, PrepareUpdate) and
/// EnvelopeHeader.kind (Submit); no other router request has one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_enum_values_are_refused_on_every_rpc_that_has_one() {
    let fx = bad_input().await;
    let mut c = fx.c.clone();
    let (a, b, id) = (&fx.a, &fx.b, fx.id);
    let members = |role: i32| {
        vec![
            pb::MemberSpec {
                account: a.account.clone(),
                role: 2,
            },
            pb::MemberSpec {
                account: b.account.clone(),
                role,
            },
        ]
    };
    for role in [0, 3, -1, i32::MAX] {
        let says = format!("members.role has unknown value {role}");
        refused!(
            fx,
            c.create_conversation(authed(
                a,
                pb::CreateConversationRequest {
                    conversation_id: ABSENT_CONVERSATIONS[0].to_vec(),
                    members: members(role),
                },
            ))
            .await,
            Code::InvalidArgument,
            &says,
        );
        refused!(
            fx,
            c.prepare_update(authed(
                a,
                pb::PrepareUpdateRequest {
                    conversation_id: id.to_vec(),
                    members: members(role),
                },
            ))
            .await,
            Code::InvalidArgument,
            &says,
        );
    }
    for kind in [0, 7, -1, i32::MAX] {
        let mut req = message(&fx.net, a, &fx.created, id, 90, b"kind");
        req.envelope.as_mut().unwrap().header.as_mut().unwrap().kind = kind;
        refused!(
            fx,
            c.submit(authed(a, req)).await,
            Code::InvalidArgument,
            &format!("field header.kind has unknown value {kind}"),
        );
    }
    // The same requests with known values go through.
    c.prepare_update(authed(
        a,
        pb::PrepareUpdateRequest {
            conversation_id: id.to_vec(),
            members: members(1),
        },
    ))
    .await
    .unwrap();
    c.submit(authed(a, message(&fx.net, a, &fx.created, id, 90, b"kind")))
        .await
        .unwrap();
}

/// Replayed: a challenge used twice, an old sequence, a challenge never issued, a signature by another key, an existing identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_challenges_and_submissions_are_refused() {
    let fx = bad_input().await;
    let mut c = fx.c.clone();
    let (a, b, id) = (&fx.a, &fx.b, fx.id);
    let ch = c
        .get_challenge(pb::GetChallengeRequest {})
        .await
        .unwrap()
        .into_inner()
        .challenge;
    let sk = ed25519_dalek::SigningKey::from_bytes(&[40; 32]);
    c.register(registration(&fx.net.network(), &sk, &ch, &[]))
        .await
        .unwrap();
    let sk2 = ed25519_dalek::SigningKey::from_bytes(&[ABSENT_IDENTITIES[0]; 32]);
    refused!(
        fx,
        c.register(registration(&fx.net.network(), &sk2, &ch, &[]))
            .await,
        Code::Unauthenticated,
        "already used",
    );
    let ok = message(&fx.net, b, &fx.created, id, 5, b"ok");
    c.submit(authed(b, ok)).await.unwrap();
    refused!(
        fx,
        c.submit(authed(b, message(&fx.net, b, &fx.created, id, 3, b"old")))
            .await,
        Code::FailedPrecondition,
        "replay",
    );
    // Resubmitting the envelope already committed is not a replay: it is
    // answered with the same hash and changes nothing.
    let before = fx.observe().await;
    c.submit(authed(b, message(&fx.net, b, &fx.created, id, 5, b"ok")))
        .await
        .unwrap();
    assert_eq!(fx.observe().await, before);
    // Sign-in with a challenge that was never issued.
    use ed25519_dalek::Signer;
    let never = grompi_proto::Challenge::from_bytes([3; 32]);
    refused!(
        fx,
        c.sign_in(pb::SignInRequest {
            account: a.account.clone(),
            challenge: never.to_vec(),
            signature: a
                .signing
                .sign(&never.network_signing_message(&fx.net.network()))
                .to_bytes()
                .to_vec(),
        })
        .await,
        Code::Unauthenticated,
        "unknown or already used",
    );
    // A signature by another key.
    let ch = c
        .get_challenge(pb::GetChallengeRequest {})
        .await
        .unwrap()
        .into_inner()
        .challenge;
    let cc = grompi_proto::Challenge::parse("c", &ch).unwrap();
    refused!(
        fx,
        c.sign_in(pb::SignInRequest {
            account: a.account.clone(),
            challenge: ch.clone(),
            signature: b
                .signing
                .sign(&cc.network_signing_message(&fx.net.network()))
                .to_bytes()
                .to_vec(),
        })
        .await,
        Code::Unauthenticated,
        "does not verify",
    );
    // A registration signed by another key than the identity's.
    let ch = c
        .get_challenge(pb::GetChallengeRequest {})
        .await
        .unwrap()
        .into_inner()
        .challenge;
    let mut forged = registration(
        &fx.net.network(),
        &ed25519_dalek::SigningKey::from_bytes(&[ABSENT_IDENTITIES[1]; 32]),
        &ch,
        &[],
    );
    let cc = grompi_proto::Challenge::parse("c", &ch).unwrap();
    forged.signature = b
        .signing
        .sign(&cc.network_signing_message(&fx.net.network()))
        .to_bytes()
        .to_vec();
    refused!(
        fx,
        c.register(forged).await,
        Code::Unauthenticated,
        "does not verify",
    );
    // Registering an existing identity.
    let ch = c
        .get_challenge(pb::GetChallengeRequest {})
        .await
        .unwrap()
        .into_inner()
        .challenge;
    refused!(
        fx,
        c.register(registration(&fx.net.network(), &a.signing, &ch, &[]))
            .await,
        Code::AlreadyExists,
        "use SignIn",
    );
}

/// Malformed: missing fields, wrong lengths, a body that does not match its hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_on_every_rpc() {
    let fx = bad_input().await;
    let mut c = fx.c.clone();
    let (a, id) = (&fx.a, fx.id);
    refused!(
        fx,
        c.register(pb::RegisterRequest::default()).await,
        Code::InvalidArgument,
        "identity is missing",
    );
    refused!(
        fx,
        c.sign_in(pb::SignInRequest {
            account: vec![1; 31],
            challenge: vec![],
            signature: vec![],
        })
        .await,
        Code::InvalidArgument,
        "32 bytes",
    );
    refused!(
        fx,
        c.get_prekey_bundle(authed(
            a,
            pb::GetPrekeyBundleRequest {
                account: vec![1; 3],
            },
        ))
        .await,
        Code::InvalidArgument,
        "32 bytes",
    );
    refused!(
        fx,
        c.upload_keys(authed(
            a,
            pb::UploadKeysRequest {
                one_time_prekeys: vec![vec![1; 5]],
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidArgument,
        "32 bytes",
    );
    refused!(
        fx,
        c.create_conversation(authed(
            a,
            pb::CreateConversationRequest {
                conversation_id: ABSENT_CONVERSATIONS[0].to_vec(),
                members: vec![],
            },
        ))
        .await,
        Code::InvalidArgument,
        "members is empty",
    );
    refused!(
        fx,
        c.prepare_update(authed(
            a,
            pb::PrepareUpdateRequest {
                conversation_id: vec![1; 2],
                members: vec![],
            },
        ))
        .await,
        Code::InvalidArgument,
        "32 bytes",
    );
    refused!(
        fx,
        c.submit(authed(a, pb::SubmitRequest::default())).await,
        Code::InvalidArgument,
        "envelope is missing",
    );
    let mut wrong_tags = message(&fx.net, a, &fx.created, id, 60, b"x");
    wrong_tags.submission_tags.pop();
    refused!(
        fx,
        c.submit(authed(a, wrong_tags)).await,
        Code::InvalidArgument,
        "one per order server",
    );
    let mut bad_body = message(&fx.net, a, &fx.created, id, 61, b"x");
    bad_body.envelope.as_mut().unwrap().body = b"y".to_vec();
    refused!(
        fx,
        c.submit(authed(a, bad_body)).await,
        Code::InvalidArgument,
        "body hash",
    );
    refused!(
        fx,
        c.fetch(authed(
            a,
            pb::FetchRequest {
                conversation_id: vec![],
                from_index: 0,
                limit: 1,
            },
        ))
        .await,
        Code::InvalidArgument,
        "32 bytes",
    );
    refused!(
        fx,
        c.prove_heads(authed(
            a,
            pb::ProveHeadsRequest {
                conversation_id: id.to_vec(),
                nonce: vec![1; 8],
            },
        ))
        .await,
        Code::InvalidArgument,
        "nonce",
    );
}

/// Oversized: an envelope and a key upload over the limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused() {
    let fx = bad_input().await;
    let mut c = fx.c.clone();
    let (a, id) = (&fx.a, fx.id);
    let big = vec![0u8; 300 * 1024];
    refused!(
        fx,
        c.submit(authed(a, message(&fx.net, a, &fx.created, id, 62, &big)))
            .await,
        Code::InvalidArgument,
        "more than the limit",
    );
    refused!(
        fx,
        c.upload_keys(authed(
            a,
            pb::UploadKeysRequest {
                order_keys: (0..1001u32)
                    .map(|i| {
                        let mut k = vec![0u8; 32];
                        k[..4].copy_from_slice(&i.to_be_bytes());
                        k
                    })
                    .collect(),
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidArgument,
        "limit of 1000",
    );
}

/// Not allowed: outsiders, a sender slot held by someone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_outside_a_conversation_or_slot_are_refused() {
    let fx = bad_input().await;
    let mut c = fx.c.clone();
    let (a, b, outsider, id) = (&fx.a, &fx.b, &fx.outsider, fx.id);
    refused!(
        fx,
        c.fetch(authed(
            outsider,
            pb::FetchRequest {
                conversation_id: id.to_vec(),
                from_index: 0,
                limit: 1,
            },
        ))
        .await,
        Code::PermissionDenied,
        "not a member",
    );
    refused!(
        fx,
        c.prove_heads(authed(
            outsider,
            pb::ProveHeadsRequest {
                conversation_id: id.to_vec(),
                nonce: vec![1; 32],
            },
        ))
        .await,
        Code::PermissionDenied,
        "not a member",
    );
    let mut stolen = message(&fx.net, a, &fx.created, id, 70, b"x");
    stolen
        .envelope
        .as_mut()
        .unwrap()
        .header
        .as_mut()
        .unwrap()
        .sender_slot = slot(&fx.created.assignments, b).0.0;
    refused!(
        fx,
        c.submit(authed(a, stolen)).await,
        Code::PermissionDenied,
        "does not hold",
    );
    refused!(
        fx,
        c.create_conversation(authed(
            outsider,
            pb::CreateConversationRequest {
                conversation_id: ABSENT_CONVERSATIONS[1].to_vec(),
                members: vec![pb::MemberSpec {
                    account: a.account.clone(),
                    role: 2,
                }],
            },
        ))
        .await,
        Code::PermissionDenied,
        "must be one of the members",
    );
    // Without an Admin the membership could never change: refused before
    // any order server is asked (they refuse such a slot set too).
    refused!(
        fx,
        c.create_conversation(authed(
            a,
            pb::CreateConversationRequest {
                conversation_id: ABSENT_CONVERSATIONS[1].to_vec(),
                members: vec![pb::MemberSpec {
                    account: a.account.clone(),
                    role: 1,
                }],
            },
        ))
        .await,
        Code::InvalidArgument,
        "no member has the Admin role",
    );
}

/// Forged submission tags: every order server refuses, the sender is told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_submission_tags_are_refused_by_every_order_server() {
    let fx = bad_input().await;
    let mut c = fx.c.clone();
    let (b, id) = (&fx.b, fx.id);
    let mut forged_tag = message(&fx.net, b, &fx.created, id, 80, b"forged");
    for t in &mut forged_tag.submission_tags {
        t[0] ^= 1;
    }
    refused!(
        fx,
        c.submit(authed(b, forged_tag)).await,
        Code::FailedPrecondition,
        "BAD_SUBMISSION_TAG",
    );
    // The index the refused envelope held was freed: the next envelope
    // from b takes it.
    let next = message(&fx.net, b, &fx.created, id, 81, b"after");
    c.submit(authed(b, next)).await.unwrap();
    let after = fx.observe().await;
    assert_eq!(after.fetched[0].next_index, 2, "setup at 0, the next at 1");
}

/// Existing and unknown things: a reused conversation id, unknown accounts and conversations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_and_unknown_things_are_named() {
    let fx = bad_input().await;
    let mut c = fx.c.clone();
    let (a, b, id) = (&fx.a, &fx.b, fx.id);
    refused!(
        fx,
        c.create_conversation(authed(
            a,
            pb::CreateConversationRequest {
                conversation_id: id.to_vec(),
                members: vec![
                    pb::MemberSpec {
                        account: b.account.clone(),
                        role: 1,
                    },
                    pb::MemberSpec {
                        account: a.account.clone(),
                        role: 2,
                    },
                ],
            },
        ))
        .await,
        Code::AlreadyExists,
        "never reused",
    );
    refused!(
        fx,
        c.get_prekey_bundle(authed(
            a,
            pb::GetPrekeyBundleRequest {
                account: vec![9; 32],
            },
        ))
        .await,
        Code::NotFound,
        "account",
    );
    refused!(
        fx,
        c.fetch(authed(
            a,
            pb::FetchRequest {
                conversation_id: ABSENT_CONVERSATIONS[2].to_vec(),
                from_index: 0,
                limit: 1,
            },
        ))
        .await,
        Code::NotFound,
        "conversation",
    );
    refused!(
        fx,
        c.prepare_update(authed(
            a,
            pb::PrepareUpdateRequest {
                conversation_id: ABSENT_CONVERSATIONS[2].to_vec(),
                members: vec![pb::MemberSpec {
                    account: a.account.clone(),
                    role: 2,
                }],
            },
        ))
        .await,
        Code::NotFound,
        "conversation",
    );
}

/// The cap all unauthenticated calls share (requests_per_second and
/// request_burst, in the core) holds across addresses: calls from two
/// addresses, each within its own per-address budget, are refused
/// together once the shared budget is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rates_are_limited() {
    let net = Net::start(
        1,
        1,
        "[limits]\nrequests_per_second = 1\nrequest_burst = 5\n\
         peer_requests_per_second = 1\npeer_request_burst = 4\n",
    )
    .await;
    let mut one = net
        .try_client_from(std::net::Ipv4Addr::new(127, 0, 0, 1))
        .await
        .unwrap();
    let mut two = net
        .try_client_from(std::net::Ipv4Addr::new(127, 0, 0, 2))
        .await
        .unwrap();
    for _ in 0..4 {
        one.get_challenge(pb::GetChallengeRequest {}).await.unwrap();
    }
    let mut last = Ok(());
    for _ in 0..10 {
        if let Err(s) = two.get_challenge(pb::GetChallengeRequest {}).await {
            last = Err(s);
            break;
        }
    }
    let s = last.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(
        s.message().contains("request rate above 1 per second"),
        "{s:?}"
    );
    assert!(!s.message().contains("per-address"), "{s:?}");
}

/// A flood from one account exhausts that account's budget only: another
/// account's calls keep succeeding while the flood is being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_account_does_not_stop_another() {
    let net = Net::start(
        1,
        1,
        "[limits]\nrequests_per_second = 20\nrequest_burst = 20\n",
    )
    .await;
    let mut c = net.client().await;
    let flooder = register(&mut c, &net.network(), 1).await;
    let other = register(&mut c, &net.network(), 2).await;
    let flood = {
        let c = c.clone();
        tokio::spawn(async move {
            let calls = (0..400).map(|_| {
                let mut c = c.clone();
                let r = authed(&flooder, pb::GetKeyCountsRequest {});
                async move { c.get_key_counts(r).await }
            });
            futures::future::join_all(calls).await
        })
    };
    let mut other_ok = 0;
    for _ in 0..10 {
        c.get_key_counts(authed(&other, pb::GetKeyCountsRequest {}))
            .await
            .unwrap();
        other_ok += 1;
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    }
    let results = flood.await.unwrap();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    assert!(
        refused > 300,
        "only {refused} of 400 flood calls were refused"
    );
    assert_eq!(other_ok, 10);
}

/// A flood of unauthenticated calls from one address exhausts that
/// address's budget: its GetChallenge, Register and SignIn are refused
/// with the per-address limit named, while another address (127.0.0.2)
/// still gets a challenge and registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unauthenticated_calls_from_one_address_does_not_stop_another() {
    let net = Net::start(
        1,
        1,
        "[limits]\npeer_requests_per_second = 1\npeer_request_burst = 5\n",
    )
    .await;
    let flooder_addr = std::net::Ipv4Addr::new(127, 0, 0, 1);
    let mut flooder = net.try_client_from(flooder_addr).await.unwrap();
    // The burst of five goes through, then the flood is refused.
    for _ in 0..5 {
        flooder
            .get_challenge(pb::GetChallengeRequest {})
            .await
            .unwrap();
    }
    let flood = {
        let c = flooder.clone();
        futures::future::join_all((0..100).map(|_| {
            let mut c = c.clone();
            async move { c.get_challenge(pb::GetChallengeRequest {}).await }
        }))
        .await
    };
    let mut refused = 0;
    for r in &flood {
        if let Err(s) = r {
            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
            assert!(
                s.message().contains("per-address rate limit")
                    && s.message().contains("from 127.0.0.1"),
                "{s:?}"
            );
            refused += 1;
        }
    }
    // One token a second refills; the flood is far faster than that.
    assert!(
        refused >= 50,
        "only {refused} of 100 flood calls were refused"
    );

    // Register and SignIn from the flooding address are refused the same
    // way before they are parsed (a token may have refilled meanwhile, so
    // keep calling until the refusal).
    let mut register_refusal = None;
    for _ in 0..20 {
        if let Err(s) = flooder.register(pb::RegisterRequest::default()).await
            && s.code() == Code::ResourceExhausted
        {
            register_refusal = Some(s);
            break;
        }
    }
    let s = register_refusal.expect("Register is limited per address");
    assert!(s.message().contains("per-address rate limit"), "{s:?}");
    let mut sign_in_refusal = None;
    for _ in 0..20 {
        if let Err(s) = flooder.sign_in(pb::SignInRequest::default()).await
            && s.code() == Code::ResourceExhausted
        {
            sign_in_refusal = Some(s);
            break;
        }
    }
    let s = sign_in_refusal.expect("SignIn is limited per address");
    assert!(s.message().contains("per-address rate limit"), "{s:?}");

    // Another address is served: a challenge, a registration, a sign-in.
    let mut other = net
        .try_client_from(std::net::Ipv4Addr::new(127, 0, 0, 2))
        .await
        .unwrap();
    let member = register(&mut other, &net.network(), 9).await;
    let ch = other
        .get_challenge(pb::GetChallengeRequest {})
        .await
        .unwrap()
        .into_inner()
        .challenge;
    use ed25519_dalek::Signer;
    let cc = grompi_proto::Challenge::parse("c", &ch).unwrap();
    other
        .sign_in(pb::SignInRequest {
            account: member.account.clone(),
            challenge: ch,
            signature: member
                .signing
                .sign(&cc.network_signing_message(&net.network()))
                .to_bytes()
                .to_vec(),
        })
        .await
        .unwrap();
    // Authenticated calls are not limited per address: the registered
    // member's calls work from the flooding address too.
    flooder
        .get_key_counts(authed(&member, pb::GetKeyCountsRequest {}))
        .await
        .unwrap();
}

/// Connection caps: with max_connections = 3 and
/// max_connections_per_address = 2, a third connection from 127.0.0.1 is
/// closed at once while 127.0.0.2 still connects; a fourth from anywhere
/// is closed; the open connections keep working; closing one lets a new
/// one in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_caps_are_closed_and_a_closed_one_frees_its_slot() {
    let net = Net::start(
        1,
        1,
        "[limits]\nmax_connections = 3\nmax_connections_per_address = 2\n",
    )
    .await;
    let one = std::net::Ipv4Addr::new(127, 0, 0, 1);
    let two = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let three = std::net::Ipv4Addr::new(127, 0, 0, 3);
    let mut c1 = net.try_client_from(one).await.unwrap();
    let mut c2 = net.try_client_from(one).await.unwrap();
    assert!(
        net.try_client_from(one).await.is_err(),
        "a third connection from 127.0.0.1 was accepted"
    );
    let mut c3 = net.try_client_from(two).await.unwrap();
    assert!(
        net.try_client_from(three).await.is_err(),
        "a fourth connection was accepted"
    );
    for c in [&mut c1, &mut c2, &mut c3] {
        c.get_challenge(pb::GetChallengeRequest {}).await.unwrap();
    }
    // Closing a connection frees its slot once the router sees it closed.
    drop(c1);
    let mut admitted = None;
    for _ in 0..200 {
        if let Ok(c) = net.try_client_from(three).await {
            admitted = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut c4 = admitted.expect("a connection was admitted after one closed");
    c4.get_challenge(pb::GetChallengeRequest {}).await.unwrap();
    c2.get_challenge(pb::GetChallengeRequest {}).await.unwrap();
}

/// The older sign-in signature, not bound to the network, is refused by
/// default (registration and sign-in) and accepted only while
/// `accept_unbound_sign_in` is on; a signature bound to another network is
/// refused either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_sign_in_signatures_are_refused_unless_turned_on() {
    use ed25519_dalek::Signer;
    let other = grompi_proto::ids::NetworkBinding::of("other", "");
    for accept_unbound in [false, true] {
        let extra = if accept_unbound {
            "accept_unbound_sign_in = true\n"
        } else {
            ""
        };
        let net = Net::start(1, 1, extra).await;
        let mut c = net.client().await;
        let member = register(&mut c, &net.network(), 1).await;
        let challenge = |c: &mut RouterClient<Channel>| {
            let mut c = c.clone();
            async move {
                let ch = c
                    .get_challenge(pb::GetChallengeRequest {})
                    .await
                    .unwrap()
                    .into_inner()
                    .challenge;
                (grompi_proto::Challenge::parse("c", &ch).unwrap(), ch)
            }
        };

        // Registration.
        let sk = ed25519_dalek::SigningKey::from_bytes(&[41; 32]);
        let (cc, ch) = challenge(&mut c).await;
        let mut r = registration(&net.network(), &sk, &ch, &[]);
        r.signature = sk
            .sign(&cc.network_signing_message(&other))
            .to_bytes()
            .to_vec();
        let s = c.register(r).await.unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
        let (cc, ch) = challenge(&mut c).await;
        let mut r = registration(&net.network(), &sk, &ch, &[]);
        r.signature = sk.sign(&cc.signing_message()).to_bytes().to_vec();
        let got = c.register(r).await;
        assert_eq!(got.is_ok(), accept_unbound, "{got:?}");

        // Sign-in.
        let sign_in = |ch: Vec<u8>, message: Vec<u8>| pb::SignInRequest {
            account: member.account.clone(),
            challenge: ch,
            signature: member.signing.sign(&message).to_bytes().to_vec(),
        };
        let (cc, ch) = challenge(&mut c).await;
        let s = c
            .sign_in(sign_in(ch, cc.network_signing_message(&other)))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
        let (cc, ch) = challenge(&mut c).await;
        let got = c.sign_in(sign_in(ch, cc.signing_message())).await;
        assert_eq!(got.is_ok(), accept_unbound, "{got:?}");
        if let Err(s) = got {
            assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
        }
        let (cc, ch) = challenge(&mut c).await;
        c.sign_in(sign_in(ch, cc.network_signing_message(&net.network())))
            .await
            .unwrap();
    }
}

/// Caps seen by a client: a third live subscription of one account is
/// refused naming the cap, a closed one frees its place at once, and Fetch
/// pages stop at `max_fetch_bytes` and say where to go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_fetch_pages_are_bounded_end_to_end() {
    let net = Net::start(
        3,
        2,
        "[limits]\nmax_subscribers_per_account = 2\nmax_fetch_bytes = 300000\n",
    )
    .await;
    let mut c = net.client().await;
    let members = [
        register(&mut c, &net.network(), 1).await,
        register(&mut c, &net.network(), 2).await,
    ];
    let id = ConversationId::from_bytes([6; 32]);
    let refs: Vec<&Member> = members.iter().collect();
    let created = setup(&net, &refs, id).await;
    let subscribe = |c: &mut RouterClient<Channel>| {
        let mut c = c.clone();
        let m = members[1].clone();
        async move { c.subscribe(authed(&m, pb::SubscribeRequest {})).await }
    };
    let first = subscribe(&mut c).await.unwrap().into_inner();
    let mut live = subscribe(&mut c).await.unwrap().into_inner();
    let e = subscribe(&mut c).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("limits.max_subscribers_per_account"),
        "{e:?}"
    );
    // The client closes one: its place is free without any delivery.
    drop(first);
    let mut again = None;
    for _ in 0..200 {
        match subscribe(&mut c).await {
            Ok(s) => {
                again = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
    assert!(again.is_some(), "the closed stream still counted");
    // Four messages of 120 KiB.
    for seq in 2..6u64 {
        let body = vec![seq as u8; 120 * 1024];
        let req = message(&net, &members[0], &created, id, seq, &body);
        c.submit(authed(&members[0], req)).await.unwrap();
    }
    let page = |from: u64| {
        let mut c = c.clone();
        let m = members[1].clone();
        async move {
            c.fetch(authed(
                &m,
                pb::FetchRequest {
                    conversation_id: id.to_vec(),
                    from_index: from,
                    limit: 100,
                },
            ))
            .await
            .unwrap()
            .into_inner()
        }
    };
    // The Setup and two messages fit in 300,000 bytes, not a third.
    let p = page(0).await;
    let indices: Vec<u64> = p.deliveries.iter().map(|d| d.index).collect();
    assert_eq!(indices, vec![0, 1, 2]);
    assert_eq!(p.next_index, 3);
    let p = page(3).await;
    let indices: Vec<u64> = p.deliveries.iter().map(|d| d.index).collect();
    assert_eq!(indices, vec![3, 4]);
    assert_eq!(p.next_index, 5);
    // The live subscription (opened after the Setup) got the four
    // messages.
    let mut got = Vec::new();
    while got.len() < 4 {
        let d = live.next().await.unwrap().unwrap();
        if d.header.is_some() {
            got.push(d.index);
        }
    }
    assert_eq!(got, vec![1, 2, 3, 4]);
}
