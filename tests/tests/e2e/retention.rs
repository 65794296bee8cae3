//! Router retention with the real router and order servers over TLS: a
//! router keeping only the last 16 indices of each conversation
//! (`[limits] keep_envelopes = 16`); a member added later reads the kept
//! suffix of a `shared` history, verified against the head it accepted and
//! byte for byte what an original member read, and nothing removed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use grompi_client::client::{Record, Status};
use grompi_client_core::content::{Change, Visibility};
use grompi_proto::SlotRole;
use grompi_simulator::live::devnet::{Devnet, DevnetOptions};

/// Indices the router keeps per conversation.
const KEEP: u64 = 16;
/// Messages before the join: well past what the router keeps.
const BEFORE: usize = 30;

/// The Messages at or above `from` and below `below`: index and text.
/// (Not the sender: the reference client names senders from the Setup or
/// an Update the history holds, and the Setup is among what was removed.)
fn messages(records: &[Record], from: u64, below: u64) -> Vec<(u64, String)> {
    records
        .iter()
        .filter(|r| r.index >= from && r.index < below && r.kind == "message")
        .map(|r| (r.index, r.text.clone().unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_member_reads_the_kept_suffix_of_the_history_verified() {
    let dir = tempfile::tempdir().unwrap();
    let bins = grompi_tests::binary("router")
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let net = Devnet::start(&DevnetOptions {
        dir: dir.path().join("net"),
        order_servers: 3,
        quorum: None,
        binaries: bins,
        router_extra: format!("[limits]\nmax_fetch = 8\nkeep_envelopes = {KEEP}\n"),
        order_extra: String::new(),
        evil: Default::default(),
    })
    .unwrap();
    let text = std::fs::read_to_string(&net.descriptor_path).unwrap();
    let mut clients =
        crate::registered_clients(dir.path(), &text, &["alice", "bob", "carol"], 70).await;
    let mut carol = clients.pop().unwrap();
    let mut bob = clients.pop().unwrap();
    let mut alice = clients.pop().unwrap();
    let id = alice
        .create_conversation_with(Some("kept"), &[bob.account()], Some(8), Visibility::Shared)
        .await
        .unwrap();
    bob.sync_all().await.unwrap();
    for i in 0..BEFORE {
        if i % 2 == 0 {
            alice.send(id, &format!("alice {i}")).await.unwrap();
        } else {
            bob.sync(id).await.unwrap();
            bob.send(id, &format!("bob {i}")).await.unwrap();
        }
    }
    alice.sync(id).await.unwrap();
    alice
        .update_members(
            id,
            Change::Add {
                account: carol.account(),
                role: SlotRole::Member,
            },
        )
        .await
        .unwrap();
    let join = alice
        .conversation(&id)
        .unwrap()
        .transcript()
        .last()
        .unwrap()
        .index
        .0;
    assert!(join > KEEP + 8, "the history is longer than what is kept");
    carol.sync_all().await.unwrap();
    // The router delivered 0..=join and keeps the last KEEP of them.
    let first = join + 1 - KEEP;
    let shown = carol.read_history(id).await.unwrap();
    assert_eq!(
        shown.first().map(|r| r.index),
        Some(first),
        "the history starts at the first index the router keeps"
    );
    let indices: Vec<u64> = shown.iter().map(|r| r.index).collect();
    assert_eq!(indices, (first..=join).collect::<Vec<_>>());
    bob.sync(id).await.unwrap();
    let bobs = bob.history(&id).unwrap();
    let expected = messages(&bobs, first, join);
    assert!(expected.len() >= (KEEP as usize) - 2, "{expected:?}");
    assert_eq!(messages(&shown, first, join), expected);
    for r in shown.iter().filter(|r| r.index < join) {
        assert_eq!(r.status, Status::BeforeJoin, "{r:?}");
        assert!(!r.undecryptable, "{r:?}");
    }
    // Loading it into Carol's transcript keeps the same suffix.
    let added = carol.load_history_before_join(id).await.unwrap();
    assert_eq!(added as u64, join - first);
    // Once: loading again fetches nothing more.
    assert_eq!(carol.load_history_before_join(id).await.unwrap(), 0);
    let carols = carol.history(&id).unwrap();
    assert!(carols.iter().all(|r| r.index >= first));
    assert_eq!(messages(&carols, first, join), expected);
    drop(net);
}
