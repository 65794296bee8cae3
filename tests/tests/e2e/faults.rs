//! A bounded fault run: the real router and three real order servers
//! (quorum 2 of 3) under steady load from three members while the router
//! and the order servers are killed with SIGKILL and restarted at seeded
//! random moments. Afterwards every member's transcript is identical,
//! dense, verified (head chain and a quorum of its own tags at every
//! index), and holds every envelope whose submission was acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use grompi_proto::pb::router_client::RouterClient;
use grompi_proto::{ConversationId, EnvelopeHash, EnvelopeKind, pb};
use grompi_simulator::live::bench_client::{
    Acceptor, BenchAccount, MemberSlot, connect_router, fetch_all,
};
use grompi_simulator::live::devnet::{Devnet, DevnetOptions};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const SEED: u64 = 0x5eed_fa17;
const CHAOS: Duration = Duration::from_secs(20);
const MEMBERS: usize = 3;

/// Submits until the router acknowledges (the same envelope each time, so
/// a retry after a crash is idempotent), or gives up after `limit`.
async fn submit_until_acked(
    client: &mut RouterClient<Channel>,
    account: &BenchAccount,
    req: pb::SubmitRequest,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match tokio::time::timeout(
            Duration::from_secs(10),
            client.submit(account.authed(req.clone())),
        )
        .await
        {
            Ok(Ok(_)) => return true,
            Ok(Err(s)) => assert!(
                matches!(
                    s.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::DeadlineExceeded
                ),
                "a submission was refused, not just delayed: {s:?}"
            ),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_restarts_under_load_lose_nothing_acknowledged() {
    let bins = grompi_tests::binary("router")
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let net = Devnet::start(&DevnetOptions {
        dir: dir.path().join("net"),
        order_servers: 3,
        quorum: Some(2),
        binaries: bins,
        router_extra: "submit_timeout_ms = 5000\n".into(),
        order_extra: String::new(),
        evil: Default::default(),
    })
    .unwrap();
    let descriptor = net.descriptor.clone();
    let servers: Vec<_> = descriptor
        .order_servers
        .iter()
        .map(|s| s.public_key)
        .collect();
    let mut client = connect_router(&descriptor).await.unwrap();
    let network = grompi_proto::ids::NetworkBinding::of_descriptor(&descriptor);
    let mut accounts = Vec::new();
    for i in 0..MEMBERS {
        accounts.push(Arc::new(
            BenchAccount::register(&mut client, &network, 7000 + i as u64, 2)
                .await
                .unwrap(),
        ));
    }
    let id = ConversationId::from_bytes([0x77; 32]);
    let created = client
        .create_conversation(
            accounts[0].authed(pb::CreateConversationRequest {
                conversation_id: id.to_vec(),
                members: accounts
                    .iter()
                    .enumerate()
                    .map(|(i, a)| pb::MemberSpec {
                        account: a.account().to_vec(),
                        role: if i == 0 { 2 } else { 1 },
                    })
                    .collect(),
            }),
        )
        .await
        .unwrap()
        .into_inner();
    let slots: Vec<_> = accounts
        .iter()
        .map(|a| MemberSlot::new(a, id, &created, &servers).unwrap())
        .collect();
    let (setup, setup_hash) = slots[0]
        .envelope(EnvelopeKind::Setup, 1, b"setup", 32)
        .unwrap();
    assert!(submit_until_acked(&mut client, &accounts[0], setup, Duration::from_secs(30)).await);

    // Steady load: every member sends, one message at a time.
    let acked = Arc::new(Mutex::new(BTreeSet::<EnvelopeHash>::from([setup_hash])));
    let stop_at = Instant::now() + CHAOS;
    let mut senders = Vec::new();
    for (m, slot) in slots.into_iter().enumerate() {
        let account = accounts[m].clone();
        let mut client = client.clone();
        let acked = acked.clone();
        senders.push(tokio::spawn(async move {
            let mut sequence = if m == 0 { 1 } else { 0 };
            let mut sent = 0usize;
            while Instant::now() < stop_at {
                sequence += 1;
                let body = format!("member {m} message {sequence}");
                let (req, hash) = slot
                    .envelope(EnvelopeKind::Message, sequence, body.as_bytes(), 32)
                    .unwrap();
                if submit_until_acked(&mut client, &account, req, Duration::from_secs(60)).await {
                    acked.lock().unwrap().insert(hash);
                    sent += 1;
                } else {
                    panic!("member {m}: message {sequence} never acknowledged");
                }
            }
            sent
        }));
    }

    // Chaos: kill one server (or the router) at a time, restart it.
    let chaos = tokio::task::spawn_blocking(move || {
        let mut net = net;
        let mut rng = StdRng::seed_from_u64(SEED);
        let mut kills = Vec::new();
        while Instant::now() < stop_at {
            std::thread::sleep(Duration::from_millis(rng.random_range(300..1200)));
            let target = rng.random_range(0..4usize);
            if target == 3 {
                net.kill_router();
                kills.push("router".to_owned());
                std::thread::sleep(Duration::from_millis(rng.random_range(50..500)));
                net.restart_router().unwrap();
            } else {
                net.kill_order_server(target).unwrap();
                kills.push(format!("order-{target}"));
                std::thread::sleep(Duration::from_millis(rng.random_range(50..800)));
                net.restart_order_server(target).unwrap();
            }
        }
        (net, kills)
    });
    let (net, kills) = chaos.await.unwrap();
    let mut total = 0;
    for s in senders {
        total += s.await.unwrap();
    }
    assert!(kills.len() >= 8, "only {} kills: {kills:?}", kills.len());
    assert!(
        kills.iter().any(|k| k == "router"),
        "the seed never killed the router: {kills:?}"
    );
    assert!(total >= 10, "only {total} messages got through");

    eprintln!(
        "{total} messages acknowledged through {} kills: {kills:?}",
        kills.len()
    );

    // Everything acknowledged is delivered, identically, to every member.
    let acked = acked.lock().unwrap().clone();
    let mut client = connect_router(&descriptor).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut transcripts = Vec::new();
    for account in &accounts {
        let transcript = loop {
            let deliveries = fetch_all(&mut client, account, id).await.unwrap();
            if deliveries.len() >= acked.len() || Instant::now() > deadline {
                break deliveries;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut acceptor =
            Acceptor::new(MemberSlot::new(account, id, &created, &servers).unwrap(), 2);
        let hashes: Vec<EnvelopeHash> = transcript
            .iter()
            .map(|d| acceptor.accept(d).unwrap())
            .collect();
        transcripts.push(hashes);
    }
    for t in &transcripts[1..] {
        assert_eq!(t, &transcripts[0], "two members hold different transcripts");
    }
    let delivered: BTreeSet<_> = transcripts[0].iter().copied().collect();
    assert_eq!(
        delivered.len(),
        transcripts[0].len(),
        "an envelope appears twice"
    );
    let missing: Vec<_> = acked.difference(&delivered).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged envelopes are missing after {} kills",
        missing.len(),
        kills.len()
    );
    drop(net);
}
