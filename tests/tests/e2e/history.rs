//! Shared history with the real router and order servers over TLS: a
//! member added later reads what came before exactly as an original member
//! read it, marked as before its join and verified; in a `joined`
//! conversation it reads nothing earlier; a thin terminal keeps no message
//! text on disk and still shows the whole history, fetched and verified.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use grompi_client::client::{Client, Record, Status};
use grompi_client_core::content::{Change, Visibility};
use grompi_client_core::conversation::Phase;
use grompi_proto::{ConversationId, SlotRole};
use grompi_simulator::live::devnet::{Devnet, DevnetOptions};
use std::path::Path;

/// Messages before the join: enough for several history pages of the
/// router's `max_fetch = 16`, few enough for CI (the 10,000-message
/// catch-up is the `history` benchmark's).
const BEFORE: usize = 24;

fn start(dir: &Path) -> Devnet {
    let bins = grompi_tests::binary("router")
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    Devnet::start(&DevnetOptions {
        dir: dir.join("net"),
        order_servers: 3,
        quorum: None,
        binaries: bins,
        router_extra: "[limits]\nmax_fetch = 16\n".into(),
        order_extra: String::new(),
        evil: Default::default(),
    })
    .unwrap()
}

/// Alice and Bob talk (with a key renewal and a role change in between),
/// then Alice adds Carol. Returns the join index.
async fn talk_then_add(
    alice: &mut Client,
    bob: &mut Client,
    carol: &Client,
    id: ConversationId,
) -> u64 {
    for i in 0..BEFORE {
        if i % 2 == 0 {
            alice.send(id, &format!("alice {i} ✓")).await.unwrap();
        } else {
            bob.sync(id).await.unwrap();
            bob.send(id, &format!("bob {i}")).await.unwrap();
        }
        if i == BEFORE / 2 {
            alice.sync(id).await.unwrap();
            alice.rekey(id).await.unwrap();
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
    alice
        .conversation(&id)
        .unwrap()
        .transcript()
        .last()
        .unwrap()
        .index
        .0
}

/// What a person sees of the Messages: index, sender, text.
fn messages(records: &[Record], below: u64) -> Vec<(u64, Option<String>, String)> {
    records
        .iter()
        .filter(|r| r.index < below && r.kind == "message")
        .map(|r| {
            (
                r.index,
                r.sender.clone(),
                r.text.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_later_reads_the_shared_history_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path());
    let text = std::fs::read_to_string(&net.descriptor_path).unwrap();
    let mut clients =
        crate::registered_clients(dir.path(), &text, &["alice", "bob", "carol"], 40).await;
    let mut carol = clients.pop().unwrap();
    let mut bob = clients.pop().unwrap();
    let mut alice = clients.pop().unwrap();
    let id = alice
        .create_conversation_with(
            Some("shared"),
            &[bob.account()],
            Some(8),
            Visibility::Shared,
        )
        .await
        .unwrap();
    bob.sync_all().await.unwrap();
    let join = talk_then_add(&mut alice, &mut bob, &carol, id).await;
    carol.sync_all().await.unwrap();
    assert_eq!(carol.conversation(&id).unwrap().phase(), &Phase::Active);
    assert_eq!(carol.summary(&id).unwrap().history, Visibility::Shared);
    // Before loading, Carol has nothing from before her join.
    assert!(carol.history(&id).unwrap().iter().all(|r| r.index >= join));
    let added = carol.load_history_before_join(id).await.unwrap();
    assert_eq!(added as u64, join);
    let carols = carol.history(&id).unwrap();
    bob.sync(id).await.unwrap();
    let bobs = bob.history(&id).unwrap();
    // Bob's own messages are in his transcript with their text as sent.
    let expected = messages(&bobs, join);
    assert_eq!(expected.len(), BEFORE);
    assert_eq!(messages(&carols, join), expected);
    for r in carols.iter().filter(|r| r.index < join) {
        assert_eq!(r.status, Status::BeforeJoin, "{r:?}");
        assert!(!r.undecryptable, "{r:?}");
    }
    // Loading again adds nothing; what Carol reads from now on is live.
    assert_eq!(carol.load_history_before_join(id).await.unwrap(), 0);
    alice.send(id, "welcome, carol").await.unwrap();
    carol.sync(id).await.unwrap();
    assert!(
        carol
            .history(&id)
            .unwrap()
            .iter()
            .any(|r| r.text.as_deref() == Some("welcome, carol"))
    );
    // Every history block was delivered and checked live: nobody was
    // warned of a bad one.
    for (name, c) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        assert!(c.alerts().unwrap().is_empty(), "{name}: {:?}", c.alerts());
    }
    // Only a current member may read the stored history: once removed,
    // Bob is refused by the router.
    alice
        .update_members(
            id,
            Change::Remove {
                account: bob.account(),
            },
        )
        .await
        .unwrap();
    bob.sync(id).await.unwrap();
    assert_eq!(bob.conversation(&id).unwrap().phase(), &Phase::Removed);
    let refused = bob.read_history(id).await;
    assert!(
        matches!(refused, Err(grompi_client::client::ApiError::Router { .. })),
        "{refused:?}"
    );
    drop(net);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_conversation_shows_a_later_member_nothing_earlier() {
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path());
    let text = std::fs::read_to_string(&net.descriptor_path).unwrap();
    let mut clients =
        crate::registered_clients(dir.path(), &text, &["alice", "bob", "carol"], 50).await;
    let mut carol = clients.pop().unwrap();
    let mut bob = clients.pop().unwrap();
    let mut alice = clients.pop().unwrap();
    let id = alice
        .create_conversation(Some("joined"), &[bob.account()])
        .await
        .unwrap();
    bob.sync_all().await.unwrap();
    let join = talk_then_add(&mut alice, &mut bob, &carol, id).await;
    carol.sync_all().await.unwrap();
    assert_eq!(carol.summary(&id).unwrap().history, Visibility::Joined);
    assert_eq!(carol.load_history_before_join(id).await.unwrap(), 0);
    assert!(carol.history(&id).unwrap().iter().all(|r| r.index >= join));
    // Read from the router all the same, the chain verifies and nothing
    // before the join has text.
    let all = carol.read_history(id).await.unwrap();
    assert_eq!(all.len() as u64, join + 1);
    assert!(
        all.iter()
            .filter(|r| r.index < join)
            .all(|r| r.text.is_none())
    );
    drop(net);
}

/// Every file under `dir`, read raw.
fn raw_files(dir: &Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            raw_files(&p, out);
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thin_terminal_keeps_no_message_text_and_still_shows_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path());
    let text = std::fs::read_to_string(&net.descriptor_path).unwrap();
    let mut clients =
        crate::registered_clients(dir.path(), &text, &["alice", "bob", "carol"], 60).await;
    let mut carol = clients.pop().unwrap();
    let mut bob = clients.pop().unwrap();
    let mut alice = clients.pop().unwrap();
    bob.set_thin(true).unwrap();
    carol.set_thin(true).unwrap();
    let id = alice
        .create_conversation_with(Some("thin"), &[bob.account()], Some(8), Visibility::Shared)
        .await
        .unwrap();
    bob.sync_all().await.unwrap();
    let join = talk_then_add(&mut alice, &mut bob, &carol, id).await;
    carol.sync_all().await.unwrap();
    carol.send(id, "carol's own words").await.unwrap();
    bob.sync(id).await.unwrap();
    // Both thin terminals show the whole history, read and verified.
    let alices = alice.history(&id).unwrap();
    for thin in [&mut bob, &mut carol] {
        let shown = thin.read_history(id).await.unwrap();
        assert_eq!(messages(&shown, join), messages(&alices, join));
        assert!(
            shown
                .iter()
                .any(|r| r.text.as_deref() == Some("carol's own words"))
        );
    }
    let plaintexts: Vec<String> = (0..BEFORE)
        .map(|i| {
            if i % 2 == 0 {
                format!("alice {i} ✓")
            } else {
                format!("bob {i}")
            }
        })
        .chain(["carol's own words".to_owned()])
        .collect();
    // The store keeps no text, and neither do the raw files.
    for (name, c) in [("bob", &bob), ("carol", &carol)] {
        assert!(
            c.history(&id).unwrap().iter().all(|r| r.text.is_none()),
            "{name}"
        );
    }
    drop((bob, carol));
    for name in ["bob", "carol"] {
        let mut files = Vec::new();
        raw_files(&dir.path().join(name), &mut files);
        assert!(!files.is_empty());
        for (path, bytes) in &files {
            for p in &plaintexts {
                assert!(
                    !bytes.windows(p.len()).any(|w| w == p.as_bytes()),
                    "{} holds {p:?}",
                    path.display()
                );
            }
        }
    }
    // The control: a full terminal does keep the text (in its encrypted
    // store), so the check above could fail.
    assert!(
        alice
            .history(&id)
            .unwrap()
            .iter()
            .any(|r| r.text.as_deref() == Some("bob 1"))
    );
    drop(net);
}
