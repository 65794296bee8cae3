//! The real router binary over TLS, with fake order servers (real MACs,
//! the real server's semantics) served over mutual TLS in the test process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/fake_order.rs"]
mod fake_order;
#[path = "support/net.rs"]
mod net;

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
        register(&mut c, 1).await,
        register(&mut c, 2).await,
        register(&mut c, 3).await,
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
        .fakes
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
        let members = [register(&mut c, 1).await, register(&mut c, 2).await];
        let refs: Vec<&Member> = members.iter().collect();
        let id = ConversationId::from_bytes([6; 32]);
        let created = setup(&net, &refs, id).await;
        let mut stream = c
            .subscribe(authed(&members[1], pb::SubscribeRequest {}))
            .await
            .unwrap()
            .into_inner();
        net.fakes[2].down.store(true, Ordering::SeqCst);
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
            let d = stream.next().await.unwrap().unwrap();
            assert_eq!((d.index, d.attestations.len()), (1, 2));
            assert!(d.header.is_some());
            tags.insert(1, 2);
        }
        net.fakes[2].down.store(false, Ordering::SeqCst);
        // Resubmitting is idempotent and completes once the server is back.
        c.submit(authed(&members[1], req)).await.unwrap();
        while tags.get(&1).copied().unwrap_or(0) < 3 {
            let d = stream.next().await.unwrap().unwrap();
            *tags.entry(d.index).or_default() += d.attestations.len();
        }
        assert_eq!(
            net.fakes[2].server.lock().unwrap().convs[&id].chain.len(),
            2,
            "caught up in order"
        );
        assert!(
            net.fakes
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
        register(&mut c, 1).await,
        register(&mut c, 2).await,
        register(&mut c, 3).await,
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
            .fakes
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
        net.fakes
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

/// Everything the bad-input tests share: the router, three fake order
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

/// (Destructure `net` in every test: dropping it stops the router.)
async fn bad_input() -> BadInput {
    let net = Net::start(3, 3, "").await;
    let mut c = net.client().await;
    let a = register(&mut c, 1).await;
    let b = register(&mut c, 2).await;
    let outsider = register(&mut c, 3).await;
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

/// Unauthenticated: no token or a wrong token, on every authenticated RPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_calls_are_refused_on_every_rpc() {
    let BadInput {
        net,
        mut c,
        a,
        id,
        created,
        ..
    } = bad_input().await;
    let none = |body| tonic::Request::new(body);
    check(
        c.get_key_counts(none(pb::GetKeyCountsRequest {})).await,
        Code::Unauthenticated,
        "session token",
    );
    let mut forged = a.clone();
    forged.token = hex::encode([0u8; 32]);
    check(
        c.get_key_counts(authed(&forged, pb::GetKeyCountsRequest {}))
            .await,
        Code::Unauthenticated,
        "sign in again",
    );
    check(
        c.upload_keys(authed(&forged, pb::UploadKeysRequest::default()))
            .await,
        Code::Unauthenticated,
        "sign in again",
    );
    check(
        c.get_prekey_bundle(authed(
            &forged,
            pb::GetPrekeyBundleRequest {
                account: a.account.clone(),
            },
        ))
        .await,
        Code::Unauthenticated,
        "sign in again",
    );
    check(
        c.submit(authed(&forged, message(&net, &a, &created, id, 50, b"x")))
            .await,
        Code::Unauthenticated,
        "sign in again",
    );
    check(
        c.fetch(authed(
            &forged,
            pb::FetchRequest {
                conversation_id: id.to_vec(),
                from_index: 0,
                limit: 1,
            },
        ))
        .await,
        Code::Unauthenticated,
        "sign in again",
    );
    check(
        c.subscribe(authed(&forged, pb::SubscribeRequest {})).await,
        Code::Unauthenticated,
        "sign in again",
    );
    check(
        c.list_conversations(authed(&forged, pb::ListConversationsRequest {}))
            .await,
        Code::Unauthenticated,
        "sign in again",
    );
    check(
        c.prove_heads(authed(
            &forged,
            pb::ProveHeadsRequest {
                conversation_id: id.to_vec(),
                nonce: vec![1; 32],
            },
        ))
        .await,
        Code::Unauthenticated,
        "sign in again",
    );
    check(
        c.create_conversation(authed(
            &forged,
            pb::CreateConversationRequest {
                conversation_id: vec![1; 32],
                members: vec![pb::MemberSpec {
                    account: a.account.clone(),
                    role: 1,
                }],
            },
        ))
        .await,
        Code::Unauthenticated,
        "sign in again",
    );
}

/// Replayed: a challenge used twice, an old sequence, a challenge never issued, a signature by another key, an existing identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_challenges_and_submissions_are_refused() {
    let BadInput {
        net,
        mut c,
        a,
        b,
        id,
        created,
        ..
    } = bad_input().await;
    let ch = c
        .get_challenge(pb::GetChallengeRequest {})
        .await
        .unwrap()
        .into_inner()
        .challenge;
    let sk = ed25519_dalek::SigningKey::from_bytes(&[40; 32]);
    c.register(registration(&sk, &ch, &[])).await.unwrap();
    let sk2 = ed25519_dalek::SigningKey::from_bytes(&[41; 32]);
    check(
        c.register(registration(&sk2, &ch, &[])).await,
        Code::Unauthenticated,
        "already used",
    );
    let ok = message(&net, &b, &created, id, 5, b"ok");
    c.submit(authed(&b, ok)).await.unwrap();
    check(
        c.submit(authed(&b, message(&net, &b, &created, id, 3, b"old")))
            .await,
        Code::FailedPrecondition,
        "replay",
    );
    // Sign-in with a challenge that was never issued.
    use ed25519_dalek::Signer;
    let never = grompi_proto::Challenge::from_bytes([3; 32]);
    check(
        c.sign_in(pb::SignInRequest {
            account: a.account.clone(),
            challenge: never.to_vec(),
            signature: a.signing.sign(&never.signing_message()).to_bytes().to_vec(),
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
    check(
        c.sign_in(pb::SignInRequest {
            account: a.account.clone(),
            challenge: ch.clone(),
            signature: b.signing.sign(&cc.signing_message()).to_bytes().to_vec(),
        })
        .await,
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
    check(
        c.register(registration(&a.signing, &ch, &[])).await,
        Code::AlreadyExists,
        "use SignIn",
    );
}

/// Malformed: missing fields, wrong lengths, a body that does not match its hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_on_every_rpc() {
    let BadInput {
        net,
        mut c,
        a,
        id,
        created,
        ..
    } = bad_input().await;
    check(
        c.register(pb::RegisterRequest::default()).await,
        Code::InvalidArgument,
        "identity is missing",
    );
    check(
        c.sign_in(pb::SignInRequest {
            account: vec![1; 31],
            challenge: vec![],
            signature: vec![],
        })
        .await,
        Code::InvalidArgument,
        "32 bytes",
    );
    check(
        c.get_prekey_bundle(authed(
            &a,
            pb::GetPrekeyBundleRequest {
                account: vec![1; 3],
            },
        ))
        .await,
        Code::InvalidArgument,
        "32 bytes",
    );
    check(
        c.upload_keys(authed(
            &a,
            pb::UploadKeysRequest {
                one_time_prekeys: vec![vec![1; 5]],
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidArgument,
        "32 bytes",
    );
    check(
        c.create_conversation(authed(
            &a,
            pb::CreateConversationRequest {
                conversation_id: vec![1; 32],
                members: vec![],
            },
        ))
        .await,
        Code::InvalidArgument,
        "members is empty",
    );
    check(
        c.prepare_update(authed(
            &a,
            pb::PrepareUpdateRequest {
                conversation_id: vec![1; 2],
                members: vec![],
            },
        ))
        .await,
        Code::InvalidArgument,
        "32 bytes",
    );
    check(
        c.submit(authed(&a, pb::SubmitRequest::default())).await,
        Code::InvalidArgument,
        "envelope is missing",
    );
    let mut wrong_tags = message(&net, &a, &created, id, 60, b"x");
    wrong_tags.submission_tags.pop();
    check(
        c.submit(authed(&a, wrong_tags)).await,
        Code::InvalidArgument,
        "one per order server",
    );
    let mut bad_body = message(&net, &a, &created, id, 61, b"x");
    bad_body.envelope.as_mut().unwrap().body = b"y".to_vec();
    check(
        c.submit(authed(&a, bad_body)).await,
        Code::InvalidArgument,
        "body hash",
    );
    check(
        c.fetch(authed(
            &a,
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
    check(
        c.prove_heads(authed(
            &a,
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
    let BadInput {
        net,
        mut c,
        a,
        id,
        created,
        ..
    } = bad_input().await;
    let big = vec![0u8; 300 * 1024];
    check(
        c.submit(authed(&a, message(&net, &a, &created, id, 62, &big)))
            .await,
        Code::InvalidArgument,
        "more than the limit",
    );
    check(
        c.upload_keys(authed(
            &a,
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
    let BadInput {
        net,
        mut c,
        a,
        b,
        outsider,
        id,
        created,
        ..
    } = bad_input().await;
    check(
        c.fetch(authed(
            &outsider,
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
    check(
        c.prove_heads(authed(
            &outsider,
            pb::ProveHeadsRequest {
                conversation_id: id.to_vec(),
                nonce: vec![1; 32],
            },
        ))
        .await,
        Code::PermissionDenied,
        "not a member",
    );
    let mut stolen = message(&net, &a, &created, id, 70, b"x");
    stolen
        .envelope
        .as_mut()
        .unwrap()
        .header
        .as_mut()
        .unwrap()
        .sender_slot = slot(&created.assignments, &b).0.0;
    check(
        c.submit(authed(&a, stolen)).await,
        Code::PermissionDenied,
        "does not hold",
    );
    check(
        c.create_conversation(authed(
            &outsider,
            pb::CreateConversationRequest {
                conversation_id: vec![2; 32],
                members: vec![pb::MemberSpec {
                    account: a.account.clone(),
                    role: 1,
                }],
            },
        ))
        .await,
        Code::PermissionDenied,
        "must be one of the members",
    );
}

/// Forged submission tags: every order server refuses, the sender is told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_submission_tags_are_refused_by_every_order_server() {
    let BadInput {
        net,
        mut c,
        b,
        id,
        created,
        ..
    } = bad_input().await;
    let mut forged_tag = message(&net, &b, &created, id, 80, b"forged");
    for t in &mut forged_tag.submission_tags {
        t[0] ^= 1;
    }
    check(
        c.submit(authed(&b, forged_tag)).await,
        Code::FailedPrecondition,
        "BAD_SUBMISSION_TAG",
    );
}

/// Existing and unknown things: a reused conversation id, unknown accounts and conversations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_and_unknown_things_are_named() {
    let BadInput {
        net: _net,
        mut c,
        a,
        b,
        id,
        ..
    } = bad_input().await;
    check(
        c.create_conversation(authed(
            &a,
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
    check(
        c.get_prekey_bundle(authed(
            &a,
            pb::GetPrekeyBundleRequest {
                account: vec![9; 32],
            },
        ))
        .await,
        Code::NotFound,
        "account",
    );
    check(
        c.fetch(authed(
            &a,
            pb::FetchRequest {
                conversation_id: vec![9; 32],
                from_index: 0,
                limit: 1,
            },
        ))
        .await,
        Code::NotFound,
        "conversation",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rates_are_limited() {
    let net = Net::start(
        1,
        1,
        "[limits]\nrequests_per_second = 1\nrequest_burst = 5\n",
    )
    .await;
    let mut c = net.client().await;
    let mut last = Ok(());
    for _ in 0..10 {
        if let Err(s) = c.get_challenge(pb::GetChallengeRequest {}).await {
            last = Err(s);
            break;
        }
    }
    let s = last.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(s.message().contains("slow down"), "{s:?}");
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
    let flooder = register(&mut c, 1).await;
    let other = register(&mut c, 2).await;
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
