//! Shared history (`docs/PROTOCOL.md` section 4.6) through the in-memory
//! world with the real order server cores: a member added later reads what
//! came before, exactly as an original member read it, verified from the
//! genesis against the head it joined at; every way of tampering with the
//! stored envelopes is a `HistoryMismatch` with nothing shown; a `joined`
//! conversation shares nothing; a removed member opens nothing sent after.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step fails the test

use grompi_client_core::Conversation;
use grompi_client_core::content::{Change, Content, Visibility};
use grompi_client_core::conversation::Event;
use grompi_client_core::history::{
    Capsule, ForgedHistory, HistoryEntry, HistoryItem, HistoryKeyId, HistoryVerifier, Unread,
};
use grompi_client_core::testkit::World;
use grompi_proto::{AccountId, EnvelopeKind, Index, Misbehaviour, SlotRole};
use proptest::prelude::*;

fn msg(s: &str) -> Content {
    Content::Message(s.as_bytes().to_vec())
}

fn items(w: &World, through: Index) -> Vec<HistoryItem> {
    w.history_items(through)
}

fn verify(conv: &Conversation, items: Vec<HistoryItem>) -> Result<Vec<HistoryEntry>, Misbehaviour> {
    let mut v = HistoryVerifier::new(conv.history_anchor().unwrap());
    for i in items {
        v.push(i)?;
    }
    v.finish()
}

/// The Messages an original member read live: (index, sender, text).
fn live_messages(conv: &mut Conversation) -> Vec<(Index, AccountId, Vec<u8>)> {
    conv.drain_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Message {
                index,
                sender,
                plaintext,
                ..
            } => Some((index, sender, plaintext)),
            _ => None,
        })
        .collect()
}

fn history_messages(entries: &[HistoryEntry], below: Index) -> Vec<(Index, AccountId, Vec<u8>)> {
    entries
        .iter()
        .filter(|e| e.index < below)
        .filter_map(|e| match &e.content {
            Ok(Content::Message(m)) => Some((e.index, e.sender.unwrap(), m.clone())),
            _ => None,
        })
        .collect()
}

/// Members 0 and 1 talk (with a key period boundary, a Rekey, a role
/// change), then 0 adds member 2. Returns the world and the join index.
fn shared_world(seed: u64, history: Visibility) -> (World, Index) {
    let mut w = World::new(seed, 3, 3, 3);
    w.group_period = Some(3);
    w.history = history;
    w.setup_with(0, &[0, 1]);
    for i in 0..4 {
        w.send(i % 2, msg(&format!("before rekey {i}")));
    }
    w.send(0, Content::Rekey);
    w.send(1, msg("after rekey"));
    let mut next = w.roster();
    next.insert(1, SlotRole::Admin);
    w.update(
        0,
        Change::SetRole {
            account: w.accounts[1],
            role: SlotRole::Admin,
        },
        next,
    );
    w.send(1, msg("in epoch 1"));
    w.send(0, Content::Rekey);
    w.send(0, msg("in epoch 1, generation 1"));
    let mut next = w.roster();
    next.insert(2, SlotRole::Member);
    let join = w.update(
        1,
        Change::Add {
            account: w.accounts[2],
            role: SlotRole::Member,
        },
        next,
    );
    w.catch_up(2);
    (w, join)
}

#[test]
fn a_member_added_later_reads_the_shared_history_as_the_original_members_did() {
    let (mut w, join) = shared_world(1, Visibility::Shared);
    let original = live_messages(w.convs[0].as_mut().unwrap());
    let other = live_messages(w.convs[1].as_mut().unwrap());
    assert!(original.len() >= 3 && other.len() >= 3);
    let joiner = w.convs[2].as_ref().unwrap();
    assert_eq!(joiner.transcript().first(), join);
    assert_eq!(joiner.history_visibility(), Visibility::Shared);
    let entries = verify(joiner, items(&w, join)).unwrap();
    assert_eq!(entries.len() as u64, join.0 + 1);
    // Every Message before the join reads as the members who were there
    // read it: the union of what 0 and 1 saw from each other, plus what
    // each sent (which a sender does not see as an event).
    let shown = history_messages(&entries, join);
    let mut expected: Vec<_> = original
        .into_iter()
        .chain(other)
        .filter(|(i, _, _)| *i < join)
        .collect();
    expected.sort();
    // A sender sees its own Message accepted too: one of each.
    expected.dedup();
    assert_eq!(shown, expected);
    let texts = w
        .log
        .iter()
        .filter(|o| o.index < join && o.envelope.header().kind() == EnvelopeKind::Message)
        .count();
    assert_eq!(shown.len(), texts);
    // The Setup, the Updates and the Rekeys read too.
    for e in &entries {
        assert!(
            e.content.is_ok(),
            "index {} did not read: {:?}",
            e.index,
            e.content
        );
    }
    // The joiner's own later messages stay in its history as well.
    let after = w.send(2, msg("hello from the new member"));
    w.catch_up(2);
    let joiner = w.convs[2].as_ref().unwrap();
    let entries = verify(joiner, items(&w, after)).unwrap();
    assert!(
        matches!(&entries[after.0 as usize].content, Ok(Content::Message(m)) if m == b"hello from the new member")
    );
}

#[test]
fn a_joined_conversation_shares_nothing_with_a_later_member() {
    let (w, join) = shared_world(2, Visibility::Joined);
    assert!(w.log.iter().all(|o| o.envelope.history_block().is_none()));
    let joiner = w.convs[2].as_ref().unwrap();
    assert_eq!(joiner.history_visibility(), Visibility::Joined);
    // The chain still verifies; nothing before the join reads.
    let entries = verify(joiner, items(&w, join)).unwrap();
    for e in entries.iter().filter(|e| e.index < join) {
        assert!(
            matches!(e.content, Err(Unread::NotShared | Unread::Noise)),
            "index {} read in a joined conversation",
            e.index
        );
    }
}

#[test]
fn switching_to_joined_seals_everything_before_from_later_members() {
    let mut w = World::new(3, 4, 3, 3);
    w.group_period = Some(4);
    w.history = Visibility::Shared;
    w.setup_with(0, &[0, 1]);
    w.send(1, msg("shared once"));
    w.history = Visibility::Joined;
    let roster = w.roster();
    let cut = w.update(0, Change::SetHistory, roster);
    w.send(1, msg("not shared"));
    w.history = Visibility::Shared;
    let roster = w.roster();
    w.update(0, Change::SetHistory, roster);
    w.send(1, msg("shared again"));
    let mut next = w.roster();
    next.insert(2, SlotRole::Member);
    let join = w.update(
        0,
        Change::Add {
            account: w.accounts[2],
            role: SlotRole::Member,
        },
        next,
    );
    w.catch_up(2);
    assert_eq!(
        w.convs[1].as_ref().unwrap().history_visibility(),
        Visibility::Shared
    );
    let entries = verify(w.convs[2].as_ref().unwrap(), items(&w, join)).unwrap();
    let shown: Vec<_> = history_messages(&entries, join)
        .into_iter()
        .map(|(_, _, m)| String::from_utf8(m).unwrap())
        .collect();
    assert_eq!(shown, vec!["shared again".to_string()]);
    assert!(
        entries[..=cut.0 as usize]
            .iter()
            .all(|e| e.content.is_err())
    );
}

#[test]
fn every_tampering_with_the_stored_history_is_a_mismatch_and_shows_nothing() {
    let (w, join) = shared_world(4, Visibility::Shared);
    let joiner = w.convs[2].as_ref().unwrap();
    let honest = items(&w, join);
    assert!(verify(joiner, honest.clone()).is_ok());
    let mismatch = |tampered: Vec<HistoryItem>, what: &str| match verify(joiner, tampered) {
        Err(Misbehaviour::HistoryMismatch(_)) => {}
        other => panic!("{what}: {other:?}"),
    };
    // Dropped: each index in turn.
    for drop in 0..join.0 as usize {
        let mut t = honest.clone();
        t.remove(drop);
        mismatch(t, &format!("drop {drop}"));
        // Dropped and renumbered, so the indices look whole.
        let mut t = honest.clone();
        t.remove(drop);
        for (i, item) in t.iter_mut().enumerate() {
            item.index = Index(i as u64);
        }
        mismatch(t, &format!("drop and renumber {drop}"));
    }
    // Altered: a body byte, a history block byte, a digest, the header.
    for at in 0..join.0 as usize {
        let mut t = honest.clone();
        if let Some(b) = t[at].body.first_mut() {
            *b ^= 1;
            mismatch(t, &format!("body of {at}"));
        }
        let mut t = honest.clone();
        if let Some(b) = t[at].history_block.as_mut() {
            b[0] ^= 1;
            mismatch(t, &format!("history block of {at}"));
        }
        let mut t = honest.clone();
        if !t[at].block_digests.is_empty() {
            t[at].block_digests.pop();
            mismatch(t, &format!("digests of {at}"));
        }
        let mut t = honest.clone();
        t[at].history_block = None;
        if honest[at].history_block.is_some() {
            // An emptied history block: the digest still binds it, so the
            // envelope reads as not shared only if the chain allowed it.
            let r = verify(joiner, t);
            assert!(
                r.as_ref().map(|e| e[at].content.is_err()).unwrap_or(true),
                "an emptied history block still read at {at}"
            );
        }
    }
    // Reordered: two neighbours swapped, with and without their indices.
    for at in 1..join.0 as usize {
        let mut t = honest.clone();
        t.swap(at - 1, at);
        mismatch(t.clone(), &format!("swap {at}"));
        t[at - 1].index = Index(at as u64 - 1);
        t[at].index = Index(at as u64);
        mismatch(t, &format!("swap and renumber {at}"));
    }
    // Injected: a copy of another envelope at each position, renumbered.
    for at in 0..join.0 as usize {
        let mut t = honest.clone();
        t.insert(at, honest[(at + 1) % honest.len()].clone());
        for (i, item) in t.iter_mut().enumerate() {
            item.index = Index(i as u64);
        }
        mismatch(t, &format!("inject at {at}"));
    }
    // Cut short.
    mismatch(honest[..honest.len() - 1].to_vec(), "cut short");
}

#[test]
fn a_router_that_keeps_only_recent_envelopes_shows_the_rest_verified() {
    let (w, join) = shared_world(8, Visibility::Shared);
    let joiner = w.convs[2].as_ref().unwrap();
    let all = items(&w, join);
    let first = Index(5);
    let kept: Vec<HistoryItem> = all[first.0 as usize..].to_vec();
    let with_retention = |kept: Vec<HistoryItem>, declared: Option<Index>| {
        let mut v = HistoryVerifier::new(joiner.history_anchor().unwrap());
        if let Some(f) = declared {
            v.router_keeps_from(f);
        }
        for i in kept {
            v.push(i)?;
        }
        v.finish()
    };
    // Declared: the history starts there, every entry verified and read.
    let entries = with_retention(kept.clone(), Some(first)).unwrap();
    assert_eq!(entries.first().unwrap().index, first);
    assert_eq!(entries.len() as u64, join.0 + 1 - first.0);
    assert!(
        entries
            .iter()
            .filter(|e| e.kind == EnvelopeKind::Message)
            .all(|e| e.content.is_ok())
    );
    // Not declared: a missing prefix is a mismatch, as before.
    assert!(matches!(
        with_retention(kept.clone(), None),
        Err(Misbehaviour::HistoryMismatch(_))
    ));
    // The head the router gives for the start is bound by the chain.
    let mut wrong = kept.clone();
    wrong[0].previous_head = Some(grompi_proto::Head::from_bytes([7; 32]));
    assert!(matches!(
        with_retention(wrong, Some(first)),
        Err(Misbehaviour::HistoryMismatch(_))
    ));
    let mut none = kept.clone();
    none[0].previous_head = None;
    assert!(matches!(
        with_retention(none, Some(first)),
        Err(Misbehaviour::HistoryMismatch(_))
    ));
    // And so is every envelope after it.
    let mut altered = kept.clone();
    altered[2].body[0] ^= 1;
    assert!(matches!(
        with_retention(altered, Some(first)),
        Err(Misbehaviour::HistoryMismatch(_))
    ));
    let mut dropped = kept;
    dropped.remove(3);
    assert!(matches!(
        with_retention(dropped, Some(first)),
        Err(Misbehaviour::HistoryMismatch(_))
    ));
}

#[test]
fn a_removed_member_opens_nothing_sent_after_its_removal() {
    let mut w = World::new(5, 3, 3, 3);
    w.group_period = Some(3);
    w.history = Visibility::Shared;
    w.setup(0);
    w.send(1, msg("while 1 is here"));
    let mut next = w.roster();
    next.remove(&1);
    let removal = w.update(
        0,
        Change::Remove {
            account: w.accounts[1],
        },
        next,
    );
    w.send(0, msg("after the removal"));
    w.send(0, Content::Rekey);
    w.send(2, msg("later still"));
    w.send(2, msg("and later"));
    // Everything member 1 can reach: the history it read up to its
    // removal, and every key its anchor and the chain give.
    let gone = w.convs[1].as_ref().unwrap();
    let anchor = gone.history_anchor().unwrap();
    assert_eq!(anchor.through, removal);
    let before = verify(gone, items(&w, removal)).unwrap();
    assert!(!history_messages(&before, removal).is_empty());
    // With the router's whole store, none of its keys opens a later
    // envelope's history block.
    for o in w.log.iter().filter(|o| o.index > removal) {
        let Some(block) = o.envelope.history_block() else {
            continue;
        };
        for (_, key) in &anchor.keys {
            assert!(Capsule::open(key, &o.envelope.header().core_hash(), block).is_err());
        }
        let id = HistoryKeyId::sealing(o.envelope.header()).unwrap();
        assert!(
            !anchor.keys.iter().any(|(k, _)| *k == id),
            "member 1 holds the key sealing index {}",
            o.index
        );
    }
    // And its verifier refuses a history past where it stopped: it has no
    // head there to check against, so the history it could show ends at
    // its removal.
    let more = verify(gone, items(&w, Index(removal.0 + 3))).unwrap();
    assert_eq!(more.len() as u64, removal.0 + 1);
}

fn history_alerts(w: &mut World, m: usize) -> Vec<&'static str> {
    w.convs[m]
        .as_mut()
        .unwrap()
        .drain_alerts()
        .into_iter()
        .filter_map(|a| match a.kind {
            Misbehaviour::BadHistoryBlock(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn honest_senders_raise_no_history_alert_and_forged_blocks_are_caught_live() {
    let (mut w, _) = shared_world(7, Visibility::Shared);
    for m in 0..3 {
        let all = w.convs[m].as_mut().unwrap().drain_alerts();
        assert!(all.is_empty(), "member {m}: {all:?}");
    }
    // Member 1 (an Admin since the role change) forges its blocks.
    let check = |w: &mut World, how: ForgedHistory| {
        for m in [0, 2] {
            let alerts = history_alerts(w, m);
            assert_eq!(alerts.len(), 1, "member {m}, {how:?}: {alerts:?}");
        }
        // The sender's own envelope is not checked against itself.
        assert!(history_alerts(w, 1).is_empty());
    };
    let omitted = w.send_forged_history(1, msg("no block"), ForgedHistory::Omit);
    check(&mut w, ForgedHistory::Omit);
    let wrong = w.send_forged_history(1, msg("wrong key"), ForgedHistory::WrongKey);
    check(&mut w, ForgedHistory::WrongKey);
    let fine = w.send(0, msg("honest again"));
    // Read from the genesis, the chain verifies; the forged indices do not
    // read (and say why), the rest does.
    let through = w.convs[0]
        .as_ref()
        .unwrap()
        .transcript()
        .last()
        .unwrap()
        .index;
    let entries = verify(w.convs[0].as_ref().unwrap(), items(&w, through)).unwrap();
    assert!(matches!(
        entries[omitted.0 as usize].content,
        Err(Unread::NotShared)
    ));
    assert!(matches!(
        entries[wrong.0 as usize].content,
        Err(Unread::Bad(_))
    ));
    assert!(
        matches!(&entries[fine.0 as usize].content, Ok(Content::Message(m)) if m == b"honest again")
    );
    // A Rekey whose link or key is forged cuts the chain for later
    // joiners; every other member sees it at once.
    w.send_forged_history(1, Content::Rekey, ForgedHistory::WrongLink);
    check(&mut w, ForgedHistory::WrongLink);
    w.send_forged_history(1, Content::Rekey, ForgedHistory::WrongKey);
    check(&mut w, ForgedHistory::WrongKey);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Any single-byte change anywhere in the returned history (header,
    /// body, digests, history block) is a mismatch or changes nothing.
    #[test]
    fn any_flipped_byte_is_caught(seed in 0u64..4, pick in any::<u64>(), bit in 0u8..8) {
        let (w, join) = shared_world(100 + seed, Visibility::Shared);
        let joiner = w.convs[2].as_ref().unwrap();
        let mut t = items(&w, join);
        let at = (pick % t.len() as u64) as usize;
        let item = &mut t[at];
        let mut flipped = false;
        let choice = (pick >> 32) % 3;
        if choice == 0 && !item.body.is_empty() {
            let n = item.body.len();
            item.body[(pick as usize >> 8) % n] ^= 1 << bit;
            flipped = true;
        } else if choice == 1 && item.history_block.is_some() {
            let b = item.history_block.as_mut().unwrap();
            let n = b.len();
            b[(pick as usize >> 8) % n] ^= 1 << bit;
            flipped = true;
        } else if let Some(d) = item.block_digests.first_mut() {
            let mut bytes = d.to_vec();
            bytes[0] ^= 1 << bit;
            *d = grompi_proto::BlockDigest::parse("test", &bytes).unwrap();
            flipped = true;
        }
        let r = verify(joiner, t);
        if flipped {
            prop_assert!(matches!(r, Err(Misbehaviour::HistoryMismatch(_))), "{:?}", r.map(|e| e.len()));
        }
    }
}
