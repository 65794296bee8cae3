//! A send survives a crash exactly once: the real router and three real
//! order servers (quorum 2 of 3), two members using the client library.
//! Alice sends a numbered sequence of messages while the router is killed
//! with SIGKILL and restarted at seeded random moments; once, the router is
//! killed for certain between committing her envelope and replying (two
//! order servers are down, so no quorum can answer before the kill). Every
//! failed send is retried through the library's resume path (the saved
//! envelope is resubmitted, never composed again). Bob, the receiving
//! member, must then hold every message exactly once: none lost, none twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use grompi_client::client::{ApiError, Client, ResumeOutcome, Resumed};
use grompi_client::local_store::StoreSecret;
use grompi_proto::ConversationId;
use grompi_simulator::live::devnet::{Devnet, DevnetOptions};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const SEED: u64 = 0x0e_c0de_0001;
/// At least this many messages, and on until the router was killed
/// [`KILLS`] times (at most [`MAX_MESSAGES`]).
const MESSAGES: usize = 30;
const KILLS: usize = 10;
const MAX_MESSAGES: usize = 400;
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// What sending one message took.
#[derive(Debug, Default)]
struct Attempts {
    /// Calls that failed.
    failures: usize,
    /// Failures after which the envelope was saved and unacknowledged.
    unacknowledged: usize,
    /// Saved envelopes resumed, with what became of them.
    resumed: Vec<ResumeOutcome>,
}

fn outcomes(resumed: Vec<Resumed>) -> Vec<ResumeOutcome> {
    resumed.into_iter().map(|r| r.outcome).collect()
}

/// Sends `text` the way a careful program does: `send` until the envelope
/// is composed and saved; after that only syncs, which resubmit the saved
/// envelope, until nothing is pending.
async fn send_exactly_once(c: &mut Client, id: ConversationId, text: &str) -> Attempts {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempts = Attempts::default();
    let mut composed = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "{text:?} was never acknowledged: {attempts:?}"
        );
        let call = async {
            if composed {
                c.sync(id).await
            } else {
                c.send(id, text).await
            }
        };
        let result = tokio::time::timeout(CALL_LIMIT, call)
            .await
            .unwrap_or_else(|_| panic!("a call for {text:?} hung"));
        match result {
            Ok(p) => {
                attempts.resumed.extend(outcomes(p.resumed));
                if c.pending_sends(Some(id)).unwrap().is_empty() {
                    return attempts;
                }
            }
            Err(e) => {
                assert!(
                    !matches!(e, ApiError::Router { ref status, .. }
                        if !matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)),
                    "{text:?}: the router refused, not just failed: {e}"
                );
                attempts.failures += 1;
                if !c.pending_sends(Some(id)).unwrap().is_empty() {
                    composed = true;
                    attempts.unacknowledged += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_kills_between_commit_and_reply_deliver_every_send_exactly_once() {
    let started = Instant::now();
    let bins = grompi_tests::binary("router")
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let mut net = Devnet::start(&DevnetOptions {
        dir: dir.path().join("net"),
        order_servers: 3,
        quorum: Some(2),
        binaries: bins,
        router_extra: String::new(),
        order_extra: String::new(),
        evil: Default::default(),
    })
    .unwrap();
    let text = std::fs::read_to_string(&net.descriptor_path).unwrap();
    let mut clients = crate::registered_clients(dir.path(), &text, &["alice", "bob"], 40).await;
    let mut bob = clients.pop().unwrap();
    let mut alice = clients.pop().unwrap();
    let id = alice
        .create_conversation(Some("t"), &[bob.account()])
        .await
        .unwrap();
    bob.sync(id).await.unwrap();

    // 1. For certain between commit and reply: two of three order servers
    // are down, so the router commits Alice's envelope and waits for a
    // quorum; it is killed while it waits, then everything restarts.
    net.kill_order_server(1).unwrap();
    net.kill_order_server(2).unwrap();
    let restarter = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(1500));
        net.kill_router();
        net.restart_order_server(1).unwrap();
        net.restart_order_server(2).unwrap();
        net.restart_router().unwrap();
        net
    });
    let first = tokio::time::timeout(CALL_LIMIT, alice.send(id, "message 0"))
        .await
        .expect("the send returns when the router dies");
    assert!(first.is_err(), "no acknowledgement without a quorum");
    let saved = alice.pending_sends(Some(id)).unwrap();
    assert_eq!(saved.len(), 1, "the envelope is saved until acknowledged");
    assert_eq!(saved[0].text.as_deref(), Some("message 0"));
    let mut net = restarter.await.unwrap();
    // A restarted client (a new process) resumes from its store.
    let home = alice.home().to_path_buf();
    drop(alice);
    let mut alice = Client::open(&home, &StoreSecret::KeyFile(Zeroizing::new([40; 32]))).unwrap();
    let mut resumed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !alice.pending_sends(Some(id)).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "message 0 never resumed");
        if let Ok(r) = alice.resume_pending(id).await {
            resumed.extend(outcomes(r));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        matches!(
            resumed.as_slice(),
            [ResumeOutcome::Acknowledged | ResumeOutcome::AlreadyAccepted(_)]
        ),
        "{resumed:?}"
    );

    // 2. Random kills of the router while Alice sends one message after
    // another.
    let done = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let chaos = {
        let done = done.clone();
        let kills = kills.clone();
        tokio::task::spawn_blocking(move || {
            let mut rng = StdRng::seed_from_u64(SEED);
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(rng.random_range(20..400)));
                if done.load(Ordering::SeqCst) {
                    break;
                }
                net.kill_router();
                kills.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(rng.random_range(10..150)));
                net.restart_router().unwrap();
            }
            net
        })
    };
    let mut total = Attempts::default();
    let mut sent = 1;
    while sent < MAX_MESSAGES && (sent < MESSAGES || kills.load(Ordering::SeqCst) < KILLS) {
        let a = send_exactly_once(&mut alice, id, &format!("message {sent}")).await;
        sent += 1;
        total.failures += a.failures;
        total.unacknowledged += a.unacknowledged;
        total.resumed.extend(a.resumed);
    }
    done.store(true, Ordering::SeqCst);
    let net = chaos.await.unwrap();
    let kills = kills.load(Ordering::SeqCst);
    eprintln!(
        "{sent} messages through {kills} router kills: {} failed calls, {} unacknowledged \
         sends resumed: {:?}",
        total.failures, total.unacknowledged, total.resumed
    );
    assert!(kills >= KILLS, "only {kills} kills");
    assert!(
        !total
            .resumed
            .iter()
            .any(|o| matches!(o, ResumeOutcome::Refused(_))),
        "a resubmission was refused: {:?}",
        total.resumed
    );

    // Bob holds every message exactly once.
    let want: Vec<String> = (0..sent).map(|i| format!("message {i}")).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let counts = loop {
        let _ = bob.sync(id).await;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for r in bob.history(&id).unwrap() {
            if let Some(t) = r.text {
                *counts.entry(t).or_default() += 1;
            }
        }
        if want.iter().all(|t| counts.contains_key(t)) || Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "accepted more than once: {twice:?}");
    let missing: Vec<_> = want.iter().filter(|t| !counts.contains_key(*t)).collect();
    assert!(missing.is_empty(), "never accepted: {missing:?}");
    assert_eq!(counts.len(), sent, "{counts:?}");
    assert!(alice.pending_sends(None).unwrap().is_empty());
    eprintln!("done in {:?}", started.elapsed());
    drop(net);
}
