//! Live attacks against the real client: a devnet whose order servers or
//! router are malicious variants over real gRPC (the real servers with
//! their answers changed, a forking router in front of one real router per
//! group, order servers that equivocate with one real server per branch),
//! and members using the client library. Every attack is caught by the
//! members, never by trusting a server; where the quorum bound allows a
//! fork, the tests say which members can prove it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use grompi_client::client::Client;
use grompi_client::local_store::{KdfParams, StoreSecret};
use grompi_client_core::head_proof::HeadProofOutcome;
use grompi_proto::{ConversationId, Head, Index, Misbehaviour};
use grompi_simulator::live::control::AttackPlan;
use grompi_simulator::live::devnet::{Devnet, DevnetOptions, Launcher, refused_equivocations};
use grompi_simulator::live::evil_order::EvilStrategy;
use grompi_simulator::live::evil_router::RouterStrategy;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
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
        order_extra: String::new(),
        evil: [(evil, strategy)].into(),
    })
    .unwrap();
    assert!(net.summary().contains("MALICIOUS"), "{}", net.summary());
    let text = std::fs::read_to_string(&net.descriptor_path).unwrap();
    let mut members = crate::registered_clients(dir.path(), &text, &["alice", "bob"], 1).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    let id = alice
        .create_conversation(Some("t"), &[bob.account()])
        .await
        .unwrap();
    bob.sync(id).await.unwrap();
    (dir, net, alice, bob, id)
}

fn bad_attestations_from(alerts: &[grompi_client_core::alert::Alert], server: u32) -> usize {
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
    // The router counts the forger's answer towards its quorum of answers,
    // so it may deliver (and acknowledge) with one honest tag and the
    // forged one; the second honest tag follows as a tag update. Sync until
    // it is in (bounded), keeping every alert seen on the way. A send whose
    // reply timed out (a slow machine) is resumed by Alice's sync.
    let mut p = bob.sync(id).await.unwrap();
    for _ in 0..50 {
        if bob.summary(&id).unwrap().next_index >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let _ = alice.sync(id).await;
        let more = bob.sync(id).await.unwrap();
        p.alerts.extend(more.alerts);
    }
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

// ---- Malicious routers ------------------------------------------------

const SQUARE: &str = "Meet at the square at noon.";
const STATION: &str = "We meet at the station instead.";
const WATER: &str = "Square, noon. Bring water.";

fn bins() -> PathBuf {
    grompi_tests::binary("grompi-sim")
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A devnet of three order servers at `quorum`, the router running
/// `router`, order servers in `evil` malicious.
fn evil_network(
    dir: &Path,
    quorum: usize,
    router: RouterStrategy,
    evil: &[(usize, EvilStrategy)],
) -> Devnet {
    let bins = bins();
    let net = Devnet::start_with(
        &DevnetOptions {
            dir: dir.join("net"),
            order_servers: 3,
            quorum: Some(quorum),
            binaries: bins.clone(),
            router_extra: "submit_timeout_ms = 3000\n".into(),
            order_extra: String::new(),
            evil: evil.iter().copied().collect(),
        },
        &Launcher::Binaries(bins),
        Some(router),
    )
    .unwrap();
    assert!(
        net.summary()
            .contains(&format!("MALICIOUS {}", router.name())),
        "{}",
        net.summary()
    );
    net
}

/// Registered members, one home each under `dir`.
async fn members<const N: usize>(net: &Devnet, dir: &Path, names: [&str; N]) -> [Client; N] {
    let text = std::fs::read_to_string(&net.descriptor_path).unwrap();
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let secret = StoreSecret::KeyFile(Zeroizing::new([i as u8 + 40; 32]));
        let mut c = Client::init(&dir.join(name), &text, &secret, KdfParams::default()).unwrap();
        c.register().await.unwrap();
        out.push(c);
    }
    out.try_into().unwrap()
}

/// Fetches until the member accepted `index` (fails after a generous
/// deadline; nothing here measures time).
async fn accept(c: &mut Client, id: ConversationId, index: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        c.sync(id).await.unwrap();
        if c.summary(&id).map_or(0, |s| s.next_index) > index {
            return;
        }
        assert!(Instant::now() < deadline, "index {index} never accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which order servers' tags the member verified for `index` (bit s for
/// server s).
fn attested_by(c: &Client, id: ConversationId, index: u64) -> u32 {
    c.conversation(&id)
        .and_then(|conv| conv.transcript().get(Index(index)).map(|e| e.attested_by))
        .unwrap_or(0)
}

/// Fetches until every one of `n` order servers' tags for `index` arrived.
async fn fully_attested(c: &mut Client, id: ConversationId, index: u64, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        c.sync(id).await.unwrap();
        if attested_by(c, id, index).count_ones() == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "index {index} never fully attested"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn texts(c: &Client, id: ConversationId) -> Vec<String> {
    c.history(&id)
        .unwrap()
        .into_iter()
        .filter_map(|r| r.text)
        .collect()
}

fn head(c: &Client, id: ConversationId, index: u64) -> Option<Head> {
    c.conversation(&id)
        .and_then(|conv| conv.transcript().get(Index(index)).map(|e| e.head))
}

/// The protest example over real gRPC: the router forks the group into
/// Alice and Bob / Charlie and Dave, order servers 0 and 1 equivocate (one
/// real server per branch), order server 2 is honest. At quorum 2 of 3 two
/// equivocating servers are more than the bound (2t - N = 1), so each
/// group accepts its own history; the honest server attests Alice and
/// Bob's, so Charlie and Dave lack its tag, and its head proof shows them
/// what they were not given. Alice and Bob, whose history every server
/// attested, hold nothing that shows the fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forking_router_with_two_colluding_order_servers_is_detected_by_the_real_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = evil_network(
        dir.path(),
        2,
        RouterStrategy::Fork,
        &[(0, EvilStrategy::Equivocate), (1, EvilStrategy::Equivocate)],
    );
    let [mut alice, mut bob, mut charlie, mut dave] =
        members(&net, dir.path(), ["alice", "bob", "charlie", "dave"]).await;
    let id = alice
        .create_conversation(
            Some("protest"),
            &[bob.account(), charlie.account(), dave.account()],
        )
        .await
        .unwrap();
    for c in [&mut bob, &mut charlie, &mut dave] {
        accept(c, id, 0).await;
    }
    fully_attested(&mut alice, id, 0, 3).await;
    let groups = vec![
        vec![alice.account(), bob.account()],
        vec![charlie.account(), dave.account()],
    ];
    tokio::task::block_in_place(|| net.fork(&groups)).unwrap();

    alice.send(id, SQUARE).await.unwrap();
    // The honest server attests Alice and Bob's index 1 first.
    fully_attested(&mut alice, id, 1, 3).await;
    charlie.send(id, STATION).await.unwrap();
    bob.send(id, WATER).await.unwrap();
    accept(&mut alice, id, 2).await;
    accept(&mut dave, id, 1).await;

    // Each group accepted its own history: a fork.
    for c in [&alice, &bob] {
        assert_eq!(texts(c, id), [SQUARE, WATER]);
    }
    for c in [&charlie, &dave] {
        assert_eq!(texts(c, id), [STATION]);
    }
    assert_eq!(head(&alice, id, 0), head(&charlie, id, 0));
    assert_ne!(head(&alice, id, 1), head(&charlie, id, 1));
    assert_eq!(head(&charlie, id, 1), head(&dave, id, 1));
    // Charlie's index carries the two equivocating servers' tags, never the
    // honest server's; Alice's carries all three.
    assert_eq!(attested_by(&charlie, id, 1), 0b011);
    assert_eq!(attested_by(&alice, id, 1), 0b111);

    // The honest server's head proof contradicts Charlie's and Dave's
    // transcripts; the equivocating servers' proofs (their branch) agree.
    for c in [&mut charlie, &mut dave] {
        let (outcomes, progress) = c.prove_heads(id).await.unwrap();
        assert_eq!(outcomes.len(), 3, "{outcomes:?}");
        for o in &outcomes {
            match o {
                HeadProofOutcome::Consistent { server, .. } => {
                    assert_ne!(*server, 2, "{outcomes:?}")
                }
                HeadProofOutcome::Misbehaviour(
                    Misbehaviour::Withheld { server: 2, .. }
                    | Misbehaviour::HeadProofFork { server: 2, .. },
                ) => {}
                other => panic!("unexpected outcome {other:?} in {outcomes:?}"),
            }
        }
        assert!(
            progress.alerts.iter().any(|a| a.server == Some(2)),
            "{:?}",
            progress.alerts
        );
    }
    // Alice and Bob: every server proves their history. At this quorum the
    // fork is beyond what they can see (the quorum bound).
    for c in [&mut alice, &mut bob] {
        let (outcomes, progress) = c.prove_heads(id).await.unwrap();
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, HeadProofOutcome::Consistent { count: 3, .. })),
            "{outcomes:?}"
        );
        assert!(progress.alerts.is_empty(), "{:?}", progress.alerts);
    }

    // The honest server refused Charlie's history and kept the evidence.
    drop((alice, bob, charlie, dave));
    net.stop();
    assert!(refused_equivocations(&net.order_servers[2].data_dir).unwrap() > 0);
    for i in [0, 1] {
        assert_eq!(
            refused_equivocations(&net.order_servers[i].data_dir).unwrap(),
            0
        );
    }
}

/// A malicious router over three honest order servers, and Alice and Bob
/// in a conversation whose Setup Bob accepted; the router is told never to
/// deliver index 2 to Bob. Keep the network alive for the test's length.
async fn bob_loses_index_two(dir: &Path) -> (Devnet, Client, Client, ConversationId) {
    let mut net = evil_network(dir, 3, RouterStrategy::Drop, &[]);
    let [mut alice, mut bob] = members(&net, dir, ["alice", "bob"]).await;
    let id = alice
        .create_conversation(Some("t"), &[bob.account()])
        .await
        .unwrap();
    accept(&mut bob, id, 0).await;
    let plan = AttackPlan {
        victims: vec![bob.account().to_hex()],
        indices: vec![2],
        ..AttackPlan::default()
    };
    tokio::task::block_in_place(|| net.attack(plan)).unwrap();
    (net, alice, bob, id)
}

/// A router that never delivers index 2 to Bob: Bob accepts index 1 and
/// nothing after, and every order server's head proof shows him an index
/// attested but not delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_that_drops_an_index_is_caught_by_the_head_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let (_net, mut alice, mut bob, id) = bob_loses_index_two(dir.path()).await;
    alice.send(id, "one").await.unwrap();
    alice.send(id, "two").await.unwrap();
    accept(&mut bob, id, 1).await;
    bob.sync(id).await.unwrap();
    assert_eq!(texts(&bob, id), ["one"]);
    assert_eq!(texts(&alice, id), ["one", "two"]);
    let (outcomes, progress) = bob.prove_heads(id).await.unwrap();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    for o in &outcomes {
        assert!(
            matches!(
                o,
                HeadProofOutcome::Misbehaviour(Misbehaviour::Withheld {
                    attested: 3,
                    delivered: 2,
                    ..
                })
            ),
            "{outcomes:?}"
        );
    }
    assert_eq!(progress.alerts.len(), 3, "{:?}", progress.alerts);
    assert_eq!(bob.summary(&id).unwrap().next_index, 2);
}

/// A router that drops an index in the middle of the conversation (it
/// delivers the ones after it): Bob's sync, asking from the missing index
/// and getting only later ones, raises a gap, and the head proofs then
/// show the servers attested what Bob never got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_that_drops_an_index_in_the_middle_is_caught_by_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let (_net, mut alice, mut bob, id) = bob_loses_index_two(dir.path()).await;
    alice.send(id, "one").await.unwrap();
    alice.send(id, "two").await.unwrap();
    alice.send(id, "three").await.unwrap();
    accept(&mut bob, id, 1).await;
    let mut alerts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !alerts
        .iter()
        .any(|a: &grompi_client_core::alert::Alert| matches!(a.kind, Misbehaviour::Gap { .. }))
    {
        alerts.extend(bob.sync(id).await.unwrap().alerts);
        assert!(Instant::now() < deadline, "no gap raised: {alerts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        texts(&bob, id),
        ["one"],
        "nothing after the hole is accepted"
    );
    assert_eq!(bob.gaps(), vec![id]);
    let (outcomes, _) = bob.prove_heads(id).await.unwrap();
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            HeadProofOutcome::Misbehaviour(Misbehaviour::Withheld { .. })
        )),
        "{outcomes:?}"
    );
}

/// A router that replays to Bob every earlier envelope with each later one,
/// verbatim and relabelled to the later index: Bob accepts exactly what
/// Alice sent, once each, in Alice's order, and names the relabelled copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_relabelled_deliveries_are_refused_by_the_real_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = evil_network(dir.path(), 3, RouterStrategy::Replay, &[]);
    let [mut alice, mut bob] = members(&net, dir.path(), ["alice", "bob"]).await;
    let id = alice
        .create_conversation(Some("t"), &[bob.account()])
        .await
        .unwrap();
    accept(&mut bob, id, 0).await;
    let plan = AttackPlan {
        victims: vec![bob.account().to_hex()],
        ..AttackPlan::default()
    };
    tokio::task::block_in_place(|| net.attack(plan)).unwrap();
    let mut alerts = Vec::new();
    for (i, text) in ["one", "two", "three"].into_iter().enumerate() {
        alice.send(id, text).await.unwrap();
        // One index at a time, so each page replays the one before.
        let deadline = Instant::now() + Duration::from_secs(60);
        while bob.summary(&id).unwrap().next_index <= i as u64 + 1 {
            alerts.extend(bob.sync(id).await.unwrap().alerts);
            assert!(Instant::now() < deadline, "index {} never accepted", i + 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(texts(&bob, id), ["one", "two", "three"]);
    for i in 0..4 {
        assert_eq!(head(&bob, id, i), head(&alice, id, i), "index {i}");
    }
    assert_eq!(bob.summary(&id).unwrap().next_index, 4);
    assert!(
        alerts
            .iter()
            .any(|a| matches!(a.kind, Misbehaviour::RewrittenIndex { .. })),
        "{alerts:?}"
    );
    drop(net);
}

/// Attack 1 over real gRPC, against the real client: Alice adds Dave to a
/// conversation of four; the router (`substitute-join`) has registered an
/// account of its own through its backend, as any client does, and
/// started an Olm session with Dave from his published bundle. Before the
/// genuine Update it delivers to Dave the same Update as its puppet
/// composes it: the genuine header fields, the genuine next slot set with a
/// padding slot re-roled Admin, the genuine member list plus the puppet as
/// that slot's Admin, Dave's genuine next-epoch tags, and no previous head (or, with `keep_previous_head`, the genuine
/// one). Dave raises `alert` for the substitute, never lists anyone but the
/// five real members, joins with the genuine Update and reads what Alice
/// sends next.
async fn a_substituted_join(keep_previous_head: bool, alert: &str) {
    use grompi_client_core::content::Change;
    use grompi_proto::{AccountId, SlotRole};
    let dir = tempfile::tempdir().unwrap();
    let mut net = evil_network(dir.path(), 3, RouterStrategy::SubstituteJoin, &[]);
    let [mut alice, mut bob, charlie, erin, mut dave] = members(
        &net,
        dir.path(),
        ["alice", "bob", "charlie", "erin", "dave"],
    )
    .await;
    let id = alice
        .create_conversation(
            Some("t"),
            &[bob.account(), charlie.account(), erin.account()],
        )
        .await
        .unwrap();
    accept(&mut bob, id, 0).await;
    let plan = AttackPlan {
        victims: vec![dave.account().to_hex()],
        keep_previous_head,
        ..AttackPlan::default()
    };
    tokio::task::block_in_place(|| net.attack(plan)).unwrap();
    alice
        .update_members(
            id,
            Change::Add {
                account: dave.account(),
                role: SlotRole::Member,
            },
        )
        .await
        .unwrap();
    let real: std::collections::BTreeSet<AccountId> = [&alice, &bob, &charlie, &erin, &dave]
        .iter()
        .map(|c| c.account())
        .collect();
    let listed = |c: &Client| -> Option<std::collections::BTreeSet<AccountId>> {
        c.conversation(&id)
            .and_then(|conv| conv.membership())
            .map(|m| m.members().keys().copied().collect())
    };
    let mut alerts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match dave.sync(id).await {
            Ok(p) => alerts.extend(p.alerts),
            Err(e) => eprintln!("dave's sync: {e}"),
        }
        // Never anyone but the five, at any point.
        if let Some(m) = listed(&dave) {
            assert_eq!(m, real, "dave lists someone who is not a member");
        }
        if dave.summary(&id).is_some_and(|s| s.next_index > 1) {
            break;
        }
        assert!(Instant::now() < deadline, "dave never joined: {alerts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        alerts.iter().any(|a| a.kind.kind().name() == alert),
        "no {alert} alert: {alerts:?}"
    );
    assert_eq!(head(&dave, id, 1), head(&alice, id, 1));
    alice.send(id, "welcome, dave").await.unwrap();
    accept(&mut dave, id, 2).await;
    assert_eq!(texts(&dave, id), ["welcome, dave"]);
    assert_eq!(listed(&dave), Some(real.clone()));
    assert_eq!(listed(&alice), Some(real));
    let log = std::fs::read_to_string(net.router.process.log()).unwrap_or_default();
    assert!(
        log.contains("SUBSTITUTED"),
        "the router never substituted the Update:\n{log}"
    );
}

/// Attack 1 with the delivery's previous head left empty: `malformed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_substituted_join_without_a_previous_head_is_refused_by_the_real_client() {
    a_substituted_join(false, "malformed").await;
}

/// Attack 1 with the genuine previous head: `unattested_envelope`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_substituted_join_with_the_genuine_previous_head_is_refused_by_the_real_client() {
    a_substituted_join(true, "unattested_envelope").await;
}

/// The README's demo, live and self-hosted (every server from the
/// `grompi-sim` executable): honestly, one history everywhere and no
/// alert; forked, Alice and Bob on one history, Charlie and Dave on
/// another, and Charlie and Dave holding the honest server's proof of it.
#[test]
fn the_live_demo_shows_each_group_its_history_and_who_detected_the_fork() {
    use grompi_simulator::demo::{LiveOptions, render_live, run_live};
    let dir = tempfile::tempdir().unwrap();
    let options = LiveOptions {
        dir: dir.path().to_path_buf(),
        launcher: Launcher::SelfHosted(bins().join("grompi-sim")),
        quorum: 2,
    };
    let mut steps = Vec::new();
    let (honest, forked) = run_live(&options, |s| steps.push(s.to_owned())).unwrap();
    assert!(steps.iter().any(|s| s.contains("fork")), "{steps:?}");

    assert_eq!(honest.views.len(), 4);
    for v in &honest.views {
        assert_eq!(v.accepted.len(), 4, "{v:?}");
        assert!(
            v.accepted.iter().all(|e| e.history == 'A' && e.tags == 3),
            "{v:?}"
        );
        assert!(v.alerts.is_empty(), "{v:?}");
    }
    assert_eq!(forked.members_on('A'), ["alice", "bob"]);
    assert_eq!(forked.members_on('B'), ["charlie", "dave"]);
    for v in &forked.views {
        let fork_alert = v.raised("withheld", Some(2)) || v.raised("head_proof_fork", Some(2));
        match v.name.as_str() {
            "alice" | "bob" => {
                assert!(v.accepted_text(SQUARE) && v.accepted_text(WATER), "{v:?}");
                assert!(!v.accepted_text(STATION), "{v:?}");
                assert!(v.alerts.is_empty(), "{v:?}");
            }
            _ => {
                assert!(
                    v.accepted_text(STATION) && !v.accepted_text(SQUARE),
                    "{v:?}"
                );
                assert!(fork_alert, "{v:?}");
            }
        }
    }
    assert!(
        forked.evidence.iter().any(|(i, n)| *i == 2 && *n > 0),
        "{:?}",
        forked.evidence
    );
    let text = render_live(&honest, &forked);
    assert!(
        text.contains(
            "outcome: FORK: alice and bob accepted history A; charlie and dave accepted history B."
        ),
        "{text}"
    );
    assert!(
        text.contains("detected by: charlie, dave; not detected by: alice, bob."),
        "{text}"
    );
}
