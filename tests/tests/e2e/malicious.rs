//! Live attacks against the real client: a devnet whose order server is a
//! malicious variant over real gRPC (the real server with its answers
//! changed), the real router, and two members using the client library.
//! Every attack is caught by the members, never by trusting a server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use grompi_client::client::Client;
use grompi_client::head_proof::HeadProofOutcome;
use grompi_client::local_store::{KdfParams, StoreSecret};
use grompi_proto::{ConversationId, Misbehaviour};
use grompi_simulator::live::devnet::{Devnet, DevnetOptions};
use grompi_simulator::live::evil_order::EvilStrategy;
use zeroize::Zeroizing;

/// A devnet of three order servers at quorum `quorum`, order server
/// `evil` running `strategy`, and Alice and Bob in one conversation.
async fn network(
    quorum: usize,
    evil: usize,
    strategy: EvilStrategy,
) -> (tempfile::TempDir, Devnet, Client, Client, ConversationId) {
    let bins = grompi_tests::binary("router")
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let net = Devnet::start(&DevnetOptions {
        dir: dir.path().join("net"),
        order_servers: 3,
        quorum: Some(quorum),
        binaries: bins,
        router_extra: "submit_timeout_ms = 3000\n".into(),
        evil: [(evil, strategy)].into(),
    })
    .unwrap();
    assert!(net.summary().contains("MALICIOUS"), "{}", net.summary());
    let text = std::fs::read_to_string(&net.descriptor_path).unwrap();
    let mut members = Vec::new();
    for (i, name) in ["alice", "bob"].iter().enumerate() {
        let secret = StoreSecret::KeyFile(Zeroizing::new([i as u8 + 1; 32]));
        let mut c =
            Client::init(&dir.path().join(name), &text, &secret, KdfParams::default()).unwrap();
        c.register().await.unwrap();
        members.push(c);
    }
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    let id = alice
        .create_conversation(Some("t"), &[bob.account()])
        .await
        .unwrap();
    bob.sync(id).await.unwrap();
    (dir, net, alice, bob, id)
}

fn bad_attestations_from(alerts: &[grompi_client::alert::Alert], server: u32) -> usize {
    alerts
        .iter()
        .filter(|a| {
            a.server == Some(server) && matches!(a.kind, Misbehaviour::BadAttestation { .. })
        })
        .count()
}

/// At 2 of 3, a server that forges tags is named in an alert on every
/// index, and members still accept on the two honest servers' tags (as
/// quorum-attested, never fully attested).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tags_are_caught_and_the_quorum_carries_on() {
    let (_dir, _net, mut alice, mut bob, id) = network(2, 2, EvilStrategy::ForgeTags).await;
    // Alice sends; the router acknowledges once two servers attested.
    let _ = alice.send(id, "despite server 2").await;
    let p = bob.sync(id).await.unwrap();
    let all_alerts: Vec<_> = bob
        .alerts()
        .unwrap()
        .into_iter()
        .filter(|a| a.server == Some(2))
        .collect();
    assert!(
        bad_attestations_from(&p.alerts, 2) > 0 || !all_alerts.is_empty(),
        "no alert names the forging server: {:?}",
        p.alerts
    );
    let texts: Vec<String> = bob
        .history(&id)
        .unwrap()
        .into_iter()
        .filter_map(|r| r.text)
        .collect();
    assert!(texts.contains(&"despite server 2".to_owned()), "{texts:?}");
    let s = bob.summary(&id).unwrap();
    assert_eq!(s.fully_attested, 0, "an index counted a forged tag");
}

/// At 3 of 3 the same server stops the conversation instead: nothing, not
/// even the Setup, is accepted, and the alert names the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tags_at_t_equals_n_accept_nothing() {
    let (_dir, _net, mut alice, mut bob, id) = network(3, 1, EvilStrategy::ForgeTags).await;
    assert_eq!(
        bob.summary(&id).unwrap().next_index,
        0,
        "the Setup was accepted"
    );
    let _ = alice.send(id, "never accepted").await;
    let p = bob.sync(id).await.unwrap();
    assert_eq!(bob.summary(&id).unwrap().next_index, 0);
    assert!(
        bad_attestations_from(&p.alerts, 1) > 0
            || bob.alerts().unwrap().iter().any(|a| a.server == Some(1)),
        "{:?}",
        p.alerts
    );
}

/// A server that lies about its head in head proofs (correctly MACed, so
/// it is the server and not the router) is caught by the member's own
/// transcript; the honest servers' proofs are consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_head_proofs_contradict_the_transcript() {
    let (_dir, _net, mut alice, mut bob, id) = network(3, 1, EvilStrategy::LieHeads).await;
    alice.send(id, "one").await.unwrap();
    bob.sync(id).await.unwrap();
    let (outcomes, progress) = bob.prove_heads(id).await.unwrap();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    for o in &outcomes {
        match o {
            HeadProofOutcome::Consistent { server, .. } => assert_ne!(*server, 1, "{outcomes:?}"),
            HeadProofOutcome::Misbehaviour(m) => {
                eprintln!("caught: {m:?}");
                assert!(format!("{m:?}").contains("server: 1"), "{m:?}");
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, HeadProofOutcome::Misbehaviour(_))),
        "{outcomes:?}"
    );
    assert!(!progress.alerts.is_empty(), "no alert for the lie");
}
