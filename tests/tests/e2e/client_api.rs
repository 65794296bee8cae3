//! The client library against the real router and order servers: a member
//! added late, after more indices than one fetch page holds, learns of the
//! conversation from the router's list, finds the Update that adds it and
//! reads what follows, nothing before.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use grompi_client_core::content::Change;
use grompi_client_core::conversation::Phase;
use grompi_proto::SlotRole;
use grompi_simulator::live::devnet::{Devnet, DevnetOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_after_many_pages_joins_and_reads_only_what_follows() {
    let bins = grompi_tests::binary("router")
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    // Pages of 4 deliveries, so a dozen messages span several pages.
    let net = Devnet::start(&DevnetOptions {
        dir: dir.path().join("net"),
        order_servers: 3,
        quorum: None,
        binaries: bins,
        router_extra: "[limits]\nmax_fetch = 4\n".into(),
        order_extra: String::new(),
        evil: Default::default(),
    })
    .unwrap();
    let text = std::fs::read_to_string(&net.descriptor_path).unwrap();
    let mut clients =
        crate::registered_clients(dir.path(), &text, &["alice", "bob", "carol"], 10).await;
    let mut carol = clients.pop().unwrap();
    let mut bob = clients.pop().unwrap();
    let mut alice = clients.pop().unwrap();
    let id = alice
        .create_conversation(Some("t"), &[bob.account()])
        .await
        .unwrap();
    for i in 0..12 {
        alice.send(id, &format!("before {i}")).await.unwrap();
    }
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
    alice.send(id, "after carol joined").await.unwrap();
    // Carol was never told the id: the router lists it, and she scans to
    // the Update that adds her.
    carol.sync_all().await.unwrap();
    assert_eq!(carol.conversation(&id).unwrap().phase(), &Phase::Active);
    let texts: Vec<String> = carol
        .history(&id)
        .unwrap()
        .into_iter()
        .filter_map(|r| r.text)
        .collect();
    assert!(
        texts.contains(&"after carol joined".to_owned()),
        "{texts:?}"
    );
    assert!(!texts.iter().any(|t| t.starts_with("before")), "{texts:?}");
    // Bob, a member from the start, reads everything across the pages.
    bob.sync(id).await.unwrap();
    let bobs = bob.history(&id).unwrap();
    assert_eq!(
        bobs.iter().filter(|r| r.text.is_some()).count(),
        13,
        "{bobs:?}"
    );
    drop(net);
}
